"""The OpenAPI 3.1 document of the contracts API (served at /openapi.json and /docs)."""

from __future__ import annotations

from typing import Any

from .domain import STATUSES, VERSION_KINDS, VERSION_STATES


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


PROBLEM = {"description": "problem details", "content": {"application/problem+json": {"schema": _ref("Problem")}}}


def _errors(*codes: int) -> dict[str, Any]:
    meaning = {400: "malformed request or Idempotency-Key", 401: "missing or invalid bearer token",
               403: "role not allowed, or maker-checker", 404: "no such contract or version (or not yours)",
               409: "state conflict, or the same Idempotency-Key is still in flight",
               412: "stale If-Match ETag", 422: "invalid fields (every one named by path), or Idempotency-Key reused "
               "with a different body", 428: "If-Match required"}
    return {str(c): {**PROBLEM, "description": meaning[c]} for c in codes}


ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}, "description": "contract id"}
VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string", "maxLength": 255},
               "description": "makes the POST safe to retry: the first response is replayed for 24 h"}
IF_MATCH = {"name": "If-Match", "in": "header", "schema": {"type": "string"}, "description": "the version's ETag"}


def _post(summary: str, body: str | None, ok: dict[str, Any], *errors: int, params: list[dict[str, Any]] | None = None,
          description: str = "") -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "parameters": [IDEMPOTENCY, *(params or [])],
                          "responses": {**ok, **_errors(400, 401, 403, 404, 409, 422, *errors)}}
    if description:
        op["description"] = description
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    return op


def spec() -> dict[str, Any]:
    version_ok = {"200": _json(_ref("Version"), "the version (ETag header set)")}
    version_created = {"201": _json(_ref("Version"), "the new version (Location and ETag headers set)")}
    paths: dict[str, Any] = {
        "/contracts": {
            "get": {
                "summary": "List contracts", "description": "Cursor-paginated, oldest first. Tenants see only their own.",
                "parameters": [
                    {"name": "status", "in": "query", "schema": {"enum": list(STATUSES)},
                     "description": "derived status (as of the last lifecycle step or scheduler tick)"},
                    {"name": "advertiser_id", "in": "query", "schema": {"type": "string"}},
                    {"name": "partner_id", "in": "query", "schema": {"type": "string"}},
                    {"name": "contract_type", "in": "query", "schema": {"enum": ["cpm", "cpa"]}},
                    {"name": "effective_on", "in": "query", "schema": {"type": "string", "format": "date"},
                     "description": "an approved version is in force on that local date"},
                    {"name": "q", "in": "query", "schema": {"type": "string"}, "description": "name contains (case-insensitive)"},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200}},
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}, "description": "next_cursor of the previous page"},
                ],
                "responses": {"200": _json(_ref("ContractPage"), "a page of contracts"), **_errors(401, 403, 422)},
            },
            "post": _post("Create a contract (draft version 1)", "CreateContract",
                          {"201": _json(_ref("Contract"), "the contract, with its draft under 'draft'")},
                          description="Roles: ops, admin."),
        },
        "/contracts/{id}": {"parameters": [ID], "get": {
            "summary": "Get a contract", "responses": {"200": _json(_ref("Contract"), "the contract"), **_errors(401, 403, 404)}}},
        "/contracts/{id}/versions": {"parameters": [ID], "get": {
            "summary": "List versions (tenants: approved only)",
            "responses": {"200": _json({"type": "object", "properties": {"items": {"type": "array", "items": _ref("Version")}}},
                                       "versions, oldest first"), **_errors(401, 403, 404)}}},
        "/contracts/{id}/versions/{version}": {
            "parameters": [ID, VERSION],
            "get": {"summary": "Get a version", "responses": {**version_ok, **_errors(401, 403, 404)}},
            "put": {"summary": "Edit a draft (or withdrawn) version", "parameters": [{**IF_MATCH, "required": True}],
                    "description": "Replaces the terms. A withdrawn version becomes a draft again; approvals never carry over.",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("EditVersion")}}},
                    "responses": {**version_ok, **_errors(401, 403, 404, 409, 412, 422, 428)}},
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
            "parameters": [{"name": "from", "in": "query", "required": True, "schema": {"type": "integer"}},
                           {"name": "to", "in": "query", "required": True, "schema": {"type": "integer"}}],
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
            "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer"}},
                           {"name": "cursor", "in": "query", "schema": {"type": "string"}}],
            "responses": {"200": _json({"type": "object"}, "audit entries in chain order"), **_errors(401, 403, 404)}}},
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
        "Terms": {"type": "object", "description": "The billing library's terms JSON (tally_billing.terms): amounts are "
                  "decimal strings, dates YYYY-MM-DD. See libs/tally_billing/README.md."},
        "CreateContract": {"type": "object", "required": ["name", "terms"], "additionalProperties": False,
                           "properties": {"name": {"type": "string", "maxLength": 200}, "terms": _ref("Terms"),
                                          "partner_ids": {"type": "array", "items": {"type": "string"}},
                                          "comment": {"type": "string"}}},
        "Amend": {"type": "object", "required": ["terms"], "additionalProperties": False,
                  "properties": {"terms": _ref("Terms"), "effective_from": {"type": "string", "format": "date"},
                                 "backdated": {"type": "boolean"}, "comment": {"type": "string"}}},
        "EditVersion": {"type": "object", "required": ["terms"], "additionalProperties": False,
                        "properties": {"terms": _ref("Terms"), "effective_from": {"type": "string", "format": "date"},
                                       "backdated": {"type": "boolean"}, "comment": {"type": "string"}}},
        "Approve": {"type": "object", "additionalProperties": False,
                    "properties": {"comment": {"type": "string"},
                                   "role": {"type": "string", "description": "which required role this approval counts for"}}},
        "Reject": {"type": "object", "required": ["comment"], "properties": {"comment": {"type": "string"}}},
        "Renew": {"type": "object", "properties": {"apply_escalator": {"type": "boolean", "default": True},
                                                   "comment": {"type": "string"}}},
        "CancelAutoRenewal": {"type": "object", "properties": {"reason": {"type": "string"}}},
        "Terminate": {"type": "object", "required": ["effective_date", "reason"],
                      "properties": {"effective_date": {"type": "string", "format": "date"}, "reason": {"type": "string"}}},
        "Contract": {"type": "object", "properties": {
            "id": {"type": "string"}, "name": {"type": "string"}, "contract_type": {"enum": ["cpm", "cpa"]},
            "advertiser_id": {"type": "string"}, "partner_ids": {"type": "array", "items": {"type": "string"}},
            "currency": {"type": "string"}, "time_zone": {"type": "string"},
            "status": {"enum": list(STATUSES), "description": "derived from the versions and the clock"},
            "current_version": {"type": ["integer", "null"]}, "revision": {"type": "integer"},
            "created_at": ts, "created_by": {"type": "string"}, "terminated_at": {**ts, "type": ["string", "null"]},
            "versions": {"type": "array", "items": {"type": "object"}},
            "renewal": {"type": "object", "description": "auto_renew, term_ends_at, notice_deadline, cancelled"},
            "published": {"type": "boolean", "description": "GET /contracts/{id} only: every change of the contract is "
                          "on Kafka (contracts.events, contracts.terms); false while the outbox relay has one to publish"}}},
        "ContractPage": {"type": "object", "properties": {"items": {"type": "array", "items": _ref("Contract")},
                                                          "next_cursor": {"type": ["string", "null"]}}},
        "Version": {"type": "object", "properties": {
            "contract_id": {"type": "string"}, "version": {"type": "integer"}, "kind": {"enum": list(VERSION_KINDS)},
            "state": {"enum": list(VERSION_STATES)}, "terms": _ref("Terms"), "effective_from": ts,
            "ends_at": {**ts, "type": ["string", "null"], "description": "term end (exclusive)"},
            "backdated": {"type": "boolean"}, "committed_value": {"type": ["string", "null"]}, "etag": {"type": "string"},
            "authors": {"type": "array", "items": {"type": "string"}}, "submitted_by": {"type": ["string", "null"]},
            "required_approvals": {"type": "object"}, "approvals": {"type": "array", "items": {"type": "object"}},
            "missing_approvals": {"type": "object"}}},
        "Diff": {"type": "object", "properties": {"changes": {"type": "array", "items": {"type": "object", "properties": {
            "path": {"type": "string"}, "from": {}, "to": {}, "change": {"enum": ["added", "removed", "changed"]}}}}}},
        "AuditVerification": {"type": "object", "properties": {
            "ok": {"type": "boolean"}, "checked": {"type": "integer"},
            "first_broken_link": {"type": ["object", "null"]}}},
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
