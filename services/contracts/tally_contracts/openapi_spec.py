"""The OpenAPI 3.1 document of the contracts API (served at /openapi.json and /docs)."""

from __future__ import annotations

from typing import Any

from tally_billing import bounds
from tally_billing import terms as tb
from tally_kit.inputs import MAX_JSON_DEPTH

from .commands import MAX_NAME, MAX_PARTY_IDS, PARTY_TYPES
from .domain import PARTNER_COMMON_FIELDS, PARTNER_VERSION_FIELDS, STATUSES, VERSION_KINDS, VERSION_STATES


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


PROBLEM = {"description": "problem details", "content": {"application/problem+json": {"schema": _ref("Problem")}}}


def _errors(*codes: int) -> dict[str, Any]:
    meaning = {400: "malformed request or Idempotency-Key", 401: "missing or invalid bearer token",
               403: "role not allowed, or maker-checker", 404: "no such contract or version (or not yours)",
               409: "state conflict, or the same Idempotency-Key is still in flight",
               412: "stale If-Match ETag", 413: "the body is larger than 1 MiB", 415: "the body is not application/json",
               422: "invalid fields (every one named by path; beyond a bound, a NUL or lone surrogate, JSON nested "
               f"deeper than {MAX_JSON_DEPTH} or with a duplicate key), or Idempotency-Key reused with a different body",
               428: "If-Match required (and not *)"}
    return {str(c): {**PROBLEM, "description": meaning[c]} for c in codes}


ID_PATTERN = f"^{bounds.ID_PATTERN.pattern}$"
LIMIT, CURSOR = bounds.limit("limit"), bounds.limit("cursor")
ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": bounds.ID_LEN_MAX},
      "description": "contract id (one no contract can have is 404)"}
VERSION = {"name": "version", "in": "path", "required": True,
           "schema": {"type": "integer", "minimum": 1, "maximum": bounds.VERSION_MAX}}
IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string", "maxLength": 255},
               "description": "makes the POST safe to retry: the first response is replayed for 24 h"}
IF_MATCH = {"name": "If-Match", "in": "header", "schema": {"type": "string"}, "description": "the version's ETag"}


def _post(summary: str, body: str | None, ok: dict[str, Any], *errors: int, params: list[dict[str, Any]] | None = None,
          description: str = "") -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "parameters": [IDEMPOTENCY, *(params or [])],
                          "responses": {**ok, **_errors(400, 401, 403, 404, 409, 413, 415, 422, *errors)}}
    if description:
        op["description"] = description
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    return op


def spec() -> dict[str, Any]:
    version_ok = {"200": _json(_ref("Version"), "the version (ETag header set)")}
    _read_version = {"oneOf": [_ref("Version"), _ref("PartnerVersion")]}
    version_created = {"201": _json(_ref("Version"), "the new version (Location and ETag headers set)")}
    paths: dict[str, Any] = {
        "/contracts": {
            "get": {
                "summary": "List contracts", "description": "Cursor-paginated, oldest first. Tenants see only their own.",
                "parameters": [
                    {"name": "status", "in": "query", "schema": {"enum": list(STATUSES)},
                     "description": "derived status (as of the last lifecycle step or scheduler tick)"},
                    {"name": "advertiser_id", "in": "query", "schema": {"type": "string", "maxLength": bounds.ID_LEN_MAX}},
                    {"name": "partner_id", "in": "query", "schema": {"type": "string", "maxLength": bounds.ID_LEN_MAX}},
                    {"name": "contract_type", "in": "query", "schema": {"enum": ["cpm", "cpa"]}},
                    {"name": "effective_on", "in": "query", "schema": {"type": "string", "format": "date"},
                     "description": "an approved version is in force on that local date"},
                    {"name": "q", "in": "query", "schema": {"type": "string", "maxLength": 200},
                     "description": "name contains (case-insensitive)"},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200}},
                    {"name": "cursor", "in": "query", "schema": {"type": "string", "maxLength": 1024},
                     "description": "next_cursor of the previous page"},
                ],
                "responses": {"200": _json(_ref("ContractPage"), "a page of contracts"), **_errors(401, 403, 422)},
            },
            "post": _post("Create a contract (draft version 1)", "CreateContract",
                          {"201": _json(_ref("Contract"), "the contract, with its draft under 'draft'")},
                          description="Roles: ops, admin."),
        },
        "/contracts/{id}": {"parameters": [ID], "get": {
            "summary": "Get a contract", "description": "A partner user reads the partner view (PartnerContract).",
            "responses": {"200": _json({"oneOf": [_ref("Contract"), _ref("PartnerContract")]}, "the contract"),
                          **_errors(401, 403, 404)}}},
        "/contracts/{id}/versions": {"parameters": [ID], "get": {
            "summary": "List versions (tenants: approved only; partners: the partner view)",
            "responses": {"200": _json(_ref("VersionList"), "versions, oldest first"), **_errors(401, 403, 404)}}},
        "/contracts/{id}/versions/{version}": {
            "parameters": [ID, VERSION],
            "get": {"summary": "Get a version", "description": "A partner user reads the partner view (PartnerVersion).",
                    "responses": {"200": _json(_read_version, "the version (ETag header set)"), **_errors(401, 403, 404)}},
            "put": {"summary": "Edit a draft (or withdrawn) version", "parameters": [{**IF_MATCH, "required": True}],
                    "description": "Replaces the terms. A withdrawn version becomes a draft again; approvals never carry over.",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("EditVersion")}}},
                    "responses": {**version_ok, **_errors(400, 401, 403, 404, 409, 412, 413, 415, 422, 428)}},
        },
        "/contracts/{id}/versions/{version}/submit": {"parameters": [ID, VERSION], "post": _post(
            "Submit for approval", None, version_ok, 412, params=[IF_MATCH],
            description="Computes the approvals the policy requires for this version.")},
        "/contracts/{id}/versions/{version}/withdraw": {"parameters": [ID, VERSION], "post": _post(
            "Withdraw a submitted version", None, version_ok, description="Discards the approvals given so far.")},
        "/contracts/{id}/versions/{version}/approve": {"parameters": [ID, VERSION], "post": _post(
            "Approve", "Approve", version_ok, 412, params=[IF_MATCH],
            description="Maker-checker: the authors and the submitter cannot approve. Roles per the approval policy.")},
        "/contracts/{id}/versions/{version}/reject": {"parameters": [ID, VERSION], "post": _post(
            "Reject with a comment", "Reject", version_ok)},
        "/contracts/{id}/diff": {"parameters": [ID], "get": {
            "summary": "Diff two versions field by field",
            "description": "A partner user compares the partner views of the two versions.",
            "parameters": [{"name": "from", "in": "query", "required": True,
                            "schema": {"type": "integer", "minimum": 1, "maximum": bounds.VERSION_MAX}},
                           {"name": "to", "in": "query", "required": True,
                            "schema": {"type": "integer", "minimum": 1, "maximum": bounds.VERSION_MAX}}],
            "responses": {"200": _json(_ref("Diff"), "changes by path"), **_errors(401, 403, 404, 422)}}},
        "/contracts/{id}/amendments": {"parameters": [ID], "post": _post(
            "Create an amendment draft", "Amend", version_created,
            description="effective_from must be in the open billing period or later, unless backdated: true "
                        "(then finance must approve).")},
        "/contracts/{id}/renew": {"parameters": [ID], "post": _post(
            "Create a draft renewal for the next term", "Renew", version_created)},
        "/contracts/{id}/cancel-auto-renewal": {"parameters": [ID], "post": _post(
            "Cancel the auto-renewal of the current term", "CancelAutoRenewal",
            {"200": _json(_ref("Contract"), "the contract")},
            description="Refused (409) inside the notice period.")},
        "/contracts/{id}/terminate": {"parameters": [ID], "post": _post(
            "Request termination at a date", "Terminate", version_created,
            description="Creates a submitted termination version; once approved the contract is terminating, "
                        "then ended at the start of effective_date (contract time zone).")},
        "/contracts/{id}/audit": {"parameters": [ID], "get": {
            "summary": "The contract's audit trail (internal roles)",
            "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200}},
                           {"name": "cursor", "in": "query", "schema": {"type": "string", "maxLength": 1024}}],
            "responses": {"200": _json(_ref("AuditPage"), "audit entries in chain order"), **_errors(401, 403, 404, 422)}}},
        "/approvals": {"get": {
            "summary": "The approvals queue: submitted versions, oldest submission first",
            "description": "Roles: approver, finance, admin (tenant tokens 403). waiting_for=me (the default): the "
                           "versions where one of the caller's roles still has a missing approval and the caller is "
                           "not an author, the submitter or a prior approver of the submission; waiting_for=any: "
                           "every submitted version, each saying whether the caller can decide and why not.",
            "parameters": [
                {"name": "waiting_for", "in": "query", "schema": {"enum": ["me", "any"], "default": "me"}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": LIMIT.min_int,
                                                            "maximum": LIMIT.max_int}},
                {"name": "cursor", "in": "query", "schema": {"type": "string", "maxLength": CURSOR.max_int},
                 "description": "next_cursor of the previous page"}],
            "responses": {"200": _json(_ref("ApprovalQueuePage"), "a page of the queue"), **_errors(401, 403, 422)}}},
        "/parties": {"get": {
            "summary": "Display names of parties (advertisers, partners) by id",
            "description": "The registry entries among ids; an id without one (or not yours) is left out, so a "
                           "client shows it alone. Tenants read only their own party; internal roles every one.",
            "parameters": [
                {"name": "type", "in": "query", "schema": {"enum": list(PARTY_TYPES)},
                 "description": "only parties of this type (default: both)"},
                {"name": "ids", "in": "query", "required": True,
                 "schema": {"type": "string", "minLength": 1,
                            "maxLength": MAX_PARTY_IDS * (bounds.ID_LEN_MAX + 1) - 1},
                 "description": f"1 to {MAX_PARTY_IDS} comma-separated ids"}],
            "responses": {"200": _json(_ref("PartyList"), "the named parties among the ids"),
                          **_errors(401, 403, 422)}}},
        "/parties/{type}/{id}": {
            "parameters": [{"name": "type", "in": "path", "required": True, "schema": {"enum": list(PARTY_TYPES)}},
                           {"name": "id", "in": "path", "required": True,
                            "schema": {"type": "string", "maxLength": bounds.ID_LEN_MAX},
                            "description": "party id (one no party can have is 404)"}],
            "put": {"summary": "Name a party, or rename it (admin)",
                    "description": "Audited in the contracts audit chain (entity party, id <type>/<id>); the same "
                                   "name again changes and records nothing.",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("NameParty")}}},
                    "responses": {"200": _json(_ref("Party"), "the renamed (or unchanged) party"),
                                  "201": _json(_ref("Party"), "the newly named party"),
                                  **_errors(400, 401, 403, 404, 413, 415, 422)}}},
        "/audit/verify": {"get": {
            "summary": "Verify the whole audit hash chain (admin)",
            "responses": {"200": _json(_ref("AuditVerification"), "the verification result"), **_errors(401, 403)}}},
    }
    ts = {"type": "string", "format": "date-time"}
    schemas: dict[str, Any] = {
        "Problem": {"type": "object", "description": "RFC 9457 problem details",
                    "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                                   "detail": {"type": "string"}, "instance": {"type": "string"},
                                   "errors": {"type": "array", "items": {"type": "object", "properties": {
                                       "field": {"type": "string", "description": "path, e.g. terms.common.currency"},
                                       "message": {"type": "string"}}}}}},
        **terms_schemas(),
        "CreateContract": {"type": "object", "required": ["name", "terms"], "additionalProperties": False,
                           "properties": {"name": {**TEXT, "maxLength": 200}, "terms": _ref("Terms"),
                                          "partner_ids": {"type": "array", "maxItems": 100, "items": _ref("Id")},
                                          "comment": COMMENT}},
        "Amend": {"type": "object", "required": ["terms"], "additionalProperties": False,
                  "properties": {"terms": _ref("Terms"), "effective_from": _ref("Day"),
                                 "backdated": {"type": "boolean"}, "comment": COMMENT}},
        "EditVersion": {"type": "object", "required": ["terms"], "additionalProperties": False,
                        "properties": {"terms": _ref("Terms"), "effective_from": _ref("Day"),
                                       "backdated": {"type": "boolean"}, "comment": COMMENT}},
        "Approve": {"type": "object", "additionalProperties": False,
                    "properties": {"comment": COMMENT,
                                   "role": {**TEXT, "maxLength": 40,
                                            "description": "which required role this approval counts for"}}},
        "Reject": {"type": "object", "required": ["comment"], "additionalProperties": False,
                   "properties": {"comment": COMMENT}},
        "Renew": {"type": "object", "additionalProperties": False,
                  "properties": {"apply_escalator": {"type": "boolean", "default": True}, "comment": COMMENT}},
        "CancelAutoRenewal": {"type": "object", "additionalProperties": False, "properties": {"reason": COMMENT}},
        "NameParty": {"type": "object", "required": ["name"], "additionalProperties": False,
                      "properties": {"name": {**TEXT, "maxLength": MAX_NAME, "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]*$",
                                              "description": "the display name: no control characters"}}},
        "Terminate": {"type": "object", "required": ["effective_date", "reason"], "additionalProperties": False,
                      "properties": {"effective_date": _ref("Day"), "reason": COMMENT}},
        **response_schemas(ts),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tally contracts API", "version": "1.0.0",
                 "description": "Contracts, versions, approvals, renewals and terminations. Bearer JWT on every call; "
                                "errors are application/problem+json; every POST accepts Idempotency-Key."},
        "servers": [{"url": "http://127.0.0.1:8081"}],
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                                          "bearerFormat": "JWT"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }


# --------------------------------------------------------------------------- the terms, typed

TEXT: dict[str, Any] = {"type": "string", "minLength": 1, "description": "no NUL character, no lone surrogate"}
COMMENT: dict[str, Any] = {**TEXT, "maxLength": 2000}


def _int(minimum: int, maximum: int, **extra: Any) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "maximum": maximum, **extra}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"oneOf": [schema, {"type": "null"}]}


def _obj(properties: dict[str, Any], required: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": list(required), "properties": properties, **extra}


def _days_map() -> dict[str, Any]:
    return {"type": "object", "maxProperties": tb.BY_EVENT_TYPE_MAX, "propertyNames": _ref("EventType"),
            "additionalProperties": _int(1, tb.DAYS_WINDOW_MAX)}


def terms_schemas() -> dict[str, Any]:
    """``Terms`` in full (``tally_billing.terms``), every bound of ``tally_billing.bounds`` as a
    JSON Schema keyword, and the partner view of them."""
    amount = {"type": "string", "pattern": r"^[0-9]{1,13}(\.[0-9]{1,12})?$", "maxLength": 26,
              "description": f"a decimal string, 0 to {bounds.AMOUNT_MAX}, at most {bounds.DECIMAL_PLACES_MAX} decimals "
                             "(money: at most the currency's minor unit)"}
    percent = {"type": "string", "pattern": r"^[0-9]{1,3}(\.[0-9]{1,12})?$", "description": "0 to 100"}
    price = {"oneOf": [_obj({"kind": {"const": "flat"}, "amount": _ref("Amount")}, ("kind", "amount")),
                       _obj({"kind": {"const": "percent"}, "percent": _ref("Percent")}, ("kind", "percent"))]}
    caps = _obj({"max_conversions_per_period": _nullable(_int(1, tb.CONVERSIONS_MAX)),
                 "max_amount_per_period": _nullable(_ref("Amount"))})
    tier = _obj({"from_conversions": _int(1, tb.CONVERSIONS_MAX), "advertiser_price": _ref("Price"),
                 "partner_payout": _ref("Price")}, ("from_conversions", "advertiser_price", "partner_payout"))
    payout = _obj({"event_type": _ref("EventType"), "advertiser_price": _ref("Price"), "partner_payout": _ref("Price"),
                   "tiers": {"type": "array", "maxItems": tb.TIERS_MAX, "items": tier}},
                  ("event_type", "advertiser_price", "partner_payout"))
    override = _obj({"partner_id": _ref("Id"), "event_type": _nullable(_ref("EventType")), "effective_from": _ref("Day"),
                     "partner_payout": _nullable(_ref("Price")), "lookback_days": _nullable(_int(1, tb.DAYS_WINDOW_MAX)),
                     "caps": _nullable(_ref("CapLimits"))}, ("partner_id", "effective_from"),
                    description="replaces at least one of partner_payout, lookback_days, caps")
    attribution = _obj({"lookback_days": _int(1, tb.DAYS_WINDOW_MAX, default=7),
                        "lookback_days_by_event_type": _days_map(),
                        "model": {"enum": ["last_touch", "first_touch"], "default": "last_touch"},
                        "min_delay_seconds": _int(0, tb.DAYS_WINDOW_MAX * 86_400, default=0,
                                                  description="shorter than the lookback window")})
    common = _obj({
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$", "description": "ISO 4217"},
        "time_zone": {**TEXT, "maxLength": tb.TIME_ZONE_LEN_MAX, "description": "IANA time zone"},
        "billing_period": {"enum": ["month", "week"], "default": "month"},
        "payment_terms_days": _int(0, tb.PAYMENT_TERMS_DAYS_MAX, default=30),
        "flight_start": _ref("Day"),
        "flight_end": {**_nullable(_ref("Day")), "description": f"on or after flight_start, at most "
                       f"{bounds.FLIGHT_DAYS_MAX} days of flight; null: evergreen"},
        "campaign_ids": {"type": "array", "minItems": 1, "maxItems": tb.CAMPAIGNS_MAX, "uniqueItems": True,
                         "items": _ref("Id")},
        "po_reference": _nullable({**TEXT, "maxLength": tb.PO_REFERENCE_LEN_MAX}),
        "measurement": {"enum": ["first_party", "third_party"], "default": "first_party"},
        "advertiser_id": _ref("Id"),
        "auto_renew": {"type": "boolean", "default": False},
        "renewal_term_months": {**_nullable(_int(1, tb.RENEWAL_TERM_MONTHS_MAX)), "description": "required with auto_renew"},
        "notice_period_days": _int(0, tb.NOTICE_PERIOD_DAYS_MAX, default=0),
        "escalator_pct": _nullable(_ref("Percent")),
        "attribution_tail": {"type": "boolean", "default": True},
        "committed_value": _nullable(_ref("Amount")),
    }, ("currency", "time_zone", "advertiser_id", "flight_start", "campaign_ids"))
    cpm = _obj({
        "rate_card": _obj({"kind": {"enum": ["flat", "graduated", "volume"]},
                           "tier_basis": {"enum": ["period", "lifetime"], "default": "period"},
                           "bands": {"type": "array", "minItems": 1, "maxItems": tb.BANDS_MAX, "items": _obj(
                               {"from_impressions": _int(0, tb.IMPRESSIONS_MAX), "rate_cpm": _ref("Amount")},
                               ("from_impressions", "rate_cpm")),
                               "description": "the first band starts at 0, each later one higher; flat: one band"}},
                          ("kind", "bands")),
        "budget_caps": _obj({"total": _nullable(_ref("Amount")), "per_period": _nullable(_ref("Amount"))}),
        "minimum_commitment_per_period": _nullable(_ref("Amount")),
    }, ("rate_card",))
    cpa = _obj({
        "payouts": {"type": "array", "minItems": 1, "maxItems": tb.PAYOUTS_MAX, "items": payout},
        "partner_overrides": {"type": "array", "maxItems": tb.OVERRIDES_MAX, "items": override},
        "attribution": attribution,
        "dedupe": _obj({"household_window_days_by_event_type": _days_map()}),
        "caps": _obj({"contract": _ref("CapLimits"), "per_partner": _ref("CapLimits")}),
        "reversal_lock_days": _nullable(_int(1, tb.DAYS_WINDOW_MAX)),
    }, ("payouts",))
    partner_payout = _obj({"event_type": _ref("EventType"), "partner_payout": _ref("Price"),
                           "tiers": {"type": "array", "items": _obj({"from_conversions": _int(1, tb.CONVERSIONS_MAX),
                                                                     "partner_payout": _ref("Price")},
                                                                    ("from_conversions", "partner_payout"))}},
                          ("event_type", "partner_payout", "tiers"))
    return {
        "Id": {"type": "string", "pattern": ID_PATTERN, "maxLength": bounds.ID_LEN_MAX,
               "description": f"1 to {bounds.ID_LEN_MAX} characters of {bounds.ID_CHARSET}"},
        "EventType": {"type": "string", "pattern": ID_PATTERN, "maxLength": tb.EVENT_TYPE_LEN_MAX},
        "Day": {"type": "string", "format": "date", "pattern": "^2[01][0-9]{2}-[0-9]{2}-[0-9]{2}$",
                "description": f"YYYY-MM-DD, {bounds.DATE_MIN.isoformat()} to {bounds.DATE_MAX.isoformat()}"},
        "Amount": amount,
        "Percent": percent,
        "Price": price,
        "CapLimits": caps,
        "CommonTerms": common,
        "CpmTerms": cpm,
        "CpaTerms": cpa,
        "Terms": _obj({"contract_type": {"enum": ["cpm", "cpa"]}, "common": _ref("CommonTerms"),
                       "cpm": _nullable(_ref("CpmTerms")), "cpa": _nullable(_ref("CpaTerms"))},
                      ("contract_type", "common"),
                      description="The billing library's terms (tally_billing.terms; examples in "
                                  "libs/tally_billing/README.md): a cpm contract has cpm terms, a cpa contract cpa "
                                  "terms. Amounts are decimal strings, dates YYYY-MM-DD; every bound is "
                                  "tally_billing.bounds'."),
        "PartnerTerms": _obj({
            "view": {"const": "partner"}, "contract_type": {"enum": ["cpm", "cpa"]},
            "common": _obj({k: common["properties"][k] for k in PARTNER_COMMON_FIELDS}, PARTNER_COMMON_FIELDS),
            "cpa": _nullable(_obj({
                "payouts": {"type": "array", "items": partner_payout},
                "partner_overrides": {"type": "array", "items": override,
                                      "description": "the reading partner's own overrides only"},
                "attribution": _nullable(attribution),
                "caps": _obj({"per_partner": _nullable(_ref("CapLimits"))}, ("per_partner",))},
                ("payouts", "partner_overrides", "attribution", "caps"))),
        }, ("view", "contract_type", "common", "cpa"), description="The terms as a partner named on the contract "
            "reads them: flight, currency and campaigns, its payouts (never the advertiser price), the attribution "
            "windows, the per-partner caps and its own overrides only."),
    }


# --------------------------------------------------------------------------- the answers, typed


def _closed(properties: dict[str, Any], *optional: str, **extra: Any) -> dict[str, Any]:
    """A closed object (``views.py`` writes exactly these keys) whose keys are all required but ``optional``."""
    return {"type": "object", "additionalProperties": False,
            "required": [k for k in properties if k not in optional], "properties": properties, **extra}


def response_schemas(ts: dict[str, Any]) -> dict[str, Any]:
    """What ``views.py`` answers, every key it writes required (nullable where it can be null),
    closed where the view is; ``tests/unit/contracts/test_contracts_openapi_responses.py``
    renders the views and validates them against these."""
    ts_or_null = {**ts, "type": ["string", "null"]}
    text = {"type": "string"}
    text_or_null = {"type": ["string", "null"]}
    role_counts = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1},
                   "description": "role -> number of approvals"}
    version_ref = _closed({"version": {"type": "integer"}, "kind": {"enum": list(VERSION_KINDS)},
                           "state": {"enum": list(VERSION_STATES)}})
    contract_props: dict[str, Any] = {
        "id": text, "name": text, "contract_type": {"enum": ["cpm", "cpa"]}, "advertiser_id": text,
        "partner_ids": {"type": "array", "items": text}, "currency": text, "time_zone": text,
        "status": {"enum": list(STATUSES), "description": "derived from the versions and the clock"},
        "current_version": {"type": ["integer", "null"], "description": "the approved version in force"},
        "revision": {"type": "integer"}, "created_at": ts, "created_by": text, "terminated_at": ts_or_null,
        "versions": {"type": "array", "items": version_ref,
                     "description": "every version, oldest first (tenants: approved ones only)"},
        "renewal": _ref("Renewal"),
        "published": {"type": "boolean", "description": "GET /contracts/{id} and the steps' answers only: every "
                      "change of the contract is on Kafka (contracts.events, contracts.terms); false while the outbox "
                      "relay has one to publish"},
    }
    renewal_props = {"auto_renew": {"type": "boolean"}, "term_ends_at": ts_or_null, "notice_deadline": ts_or_null,
                     "cancelled": {"type": "boolean"}, "cancelled_at": ts_or_null, "cancelled_by": text_or_null}
    approval = _closed({"approver": text, "role": text, "comment": text_or_null, "at": ts})
    version_props: dict[str, Any] = {
        "contract_id": text, "version": {"type": "integer"}, "kind": {"enum": list(VERSION_KINDS)},
        "state": {"enum": list(VERSION_STATES)}, "terms": _ref("Terms"), "effective_from": ts,
        "ends_at": {**ts_or_null, "description": "term end (exclusive)"}, "backdated": {"type": "boolean"},
        "committed_value": {**text_or_null, "description": "a decimal string (the terms' committed value)"}, "etag": text,
        "authors": {"type": "array", "items": text}, "submitted_by": text_or_null, "submitted_at": ts_or_null,
        "submission": {"type": "integer", "minimum": 0, "description": "how often the version was submitted"},
        "required_approvals": {**role_counts, "description": "what the approval policy requires (role -> count)"},
        "approvals": {"type": "array", "items": approval, "description": "of the current submission"},
        "missing_approvals": {**role_counts, "description": "still missing while submitted; {} otherwise"},
        "decided_at": ts_or_null, "decided_by": text_or_null, "decision_comment": text_or_null,
        "comment": text_or_null, "created_at": ts, "updated_at": ts,
    }
    partner_version = {k: version_props[k] for k in PARTNER_VERSION_FIELDS}
    queue_version = {k: version_props[k] for k in (
        "version", "kind", "effective_from", "ends_at", "backdated", "committed_value", "etag", "authors",
        "submitted_by", "submitted_at", "submission", "required_approvals", "approvals", "missing_approvals")}
    audit_entry = _closed({"seq": {"type": "integer"}, "entity_type": text, "entity_id": text, "action": text,
                           "actor": text, "tenant_type": text_or_null, "tenant_id": text_or_null,
                           "before": {"description": "the entity before the step (any JSON)"},
                           "after": {"description": "the entity after the step (any JSON)"},
                           "at": ts, "prev_hash": text, "hash": text})
    return {
        "Renewal": _closed(renewal_props, "term_ends_at", "notice_deadline", "cancelled", "cancelled_at",
                           "cancelled_by", description="only auto_renew (false) until a version is approved; a "
                           "partner user never sees cancelled_by"),
        "VersionRef": version_ref,
        "Approval": approval,
        "Contract": _closed({**contract_props, "draft": _ref("Version")}, "renewal", "published", "draft",
                            description="renewal and published: the contract's own answers, not the list's; draft: "
                                        "POST /contracts only (version 1)"),
        "PartnerContract": _closed({"view": {"const": "partner"},
                                    **{k: v for k, v in contract_props.items() if k != "created_by"},
                                    "partner_ids": {"type": "array", "maxItems": 1, "items": text}},
                                   "renewal", "published",
                                   description="A contract as a partner named on it reads it: no staff names, and "
                                               "itself as the only partner."),
        "ContractPage": _closed({"items": {"type": "array", "items": {"oneOf": [_ref("Contract"), _ref("PartnerContract")]}},
                                 "next_cursor": text_or_null}),
        "Version": _closed(version_props),
        "PartnerVersion": _closed({**partner_version, "view": {"const": "partner"}, "terms": _ref("PartnerTerms")},
                                  description="A version as a partner reads it: no authors, approvals, comments or "
                                              "committed value; terms in the partner view."),
        "VersionList": _closed({"items": {"type": "array", "items": {"oneOf": [_ref("Version"), _ref("PartnerVersion")]}}}),
        "Diff": _closed({"contract_id": text, "from_version": {"type": "integer"}, "to_version": {"type": "integer"},
                         "changes": {"type": "array", "items": _closed({
                             "path": text, "from": {}, "to": {}, "change": {"enum": ["added", "removed", "changed"]}})}}),
        "AuditEntry": audit_entry,
        "AuditPage": _closed({"items": {"type": "array", "items": _ref("AuditEntry")}, "next_cursor": text_or_null}),
        "AuditVerification": _closed({"ok": {"type": "boolean"}, "checked": {"type": "integer"},
                                      "first_broken_link": {"oneOf": [
                                          _closed({"seq": {"type": "integer"}, "reason": text}), {"type": "null"}]}}),
        "ApprovalQueueItem": _closed({
            "contract": _closed({k: contract_props[k] for k in
                                 ("id", "name", "advertiser_id", "status", "currency", "time_zone")}),
            "version": _closed(queue_version),
            "can_decide": {"type": "boolean", "description": "the caller may approve (or reject) it now"},
            "why_not": {**text_or_null, "description": "why the caller cannot (null when it can)"}}),
        "Party": _closed({"type": {"enum": list(PARTY_TYPES)}, "id": text, "name": text, "updated_at": ts}),
        "PartyList": _closed({"items": {"type": "array", "items": _ref("Party")}}),
        "ApprovalQueuePage": _closed({"items": {"type": "array", "items": _ref("ApprovalQueueItem")},
                                      "next_cursor": text_or_null}),
    }
