"""The OpenAPI 3.1 description of the invoicing API (served at /openapi.json and /docs).

Every operation lists every status it can answer; ``tests/unit/invoicing/test_invoicing_openapi.py``
fails when a route and this document disagree, and ``tests/integration/fuzz`` checks every
answer against it.
"""

from __future__ import annotations

from typing import Any

from tally_kit.apidoc import document, errors, json_body, ref

from .api import NUMBER_QUERY, NUMBER_QUERY_LEN_MAX

_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"},
       "description": "the document's id (a UUID; anything else is 404)"}
_LINE = {"name": "line_id", "in": "path", "required": True, "schema": {"type": "string"},
         "description": "the line's id (a UUID; anything else is 404)"}
_PAGE = [
    {"name": "limit", "in": "query", "required": False, "description": "page size",
     "schema": {"type": "integer", "minimum": 1, "maximum": 200}},
    {"name": "cursor", "in": "query", "required": False, "description": "next_cursor of the previous page",
     "schema": {"type": "string"}},
]
_IDEM = {"name": "Idempotency-Key", "in": "header", "required": False,
         "description": "replays the first response for the same key and request (24 h)",
         "schema": {"type": "string", "minLength": 1, "maxLength": 255}}
_READ = (401, 403, 404)
_WRITE = (400, 401, 403, 404, 409, 413, 415, 422)
_WRITE_MEANINGS = {"_403": "requires finance; or the four-eyes rule (the preparer cannot finalize)",
                   "_409": "not allowed from the document's status, or the Idempotency-Key is still in flight",
                   "_422": "invalid field, or the Idempotency-Key was used for a different request"}


def _filter(name: str, description: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
    if description:
        out["description"] = description
    return out


def _number(prefix: str) -> dict[str, Any]:
    """The ``number`` list filter (``api._number_filter``) of documents numbered ``prefix-YYYY-NNNNNN``."""
    return {"name": "number", "in": "query", "required": False,
            "description": f"the document's whole number ({prefix}-2026-000042), or its start followed by one * "
                           f"({prefix}-2026-*); letters are compared in upper case; drafts have no number; "
                           "a tenant finds only its own documents; anything else is 422 naming query.number",
            "schema": {"type": "string", "minLength": 1, "maxLength": NUMBER_QUERY_LEN_MAX,
                       "pattern": f"^{NUMBER_QUERY.pattern}$"}}


def _get(summary: str, schema: dict[str, Any], params: list[dict[str, Any]], *codes: int,
         description: str = "") -> dict[str, Any]:
    return {"get": {"summary": summary, "description": description, "parameters": params,
                    "responses": {"200": json_body(schema, "OK"), **errors(*codes)}}}


def _post(summary: str, ok: dict[str, Any], params: list[dict[str, Any]], body: str | None = None,
          description: str = "") -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "description": description, "parameters": [*params, _IDEM],
                          "responses": {**ok, **errors(*_WRITE, **_WRITE_MEANINGS)}}
    if body:
        op["requestBody"] = {"required": False, "content": {"application/json": {"schema": ref(body)}}}
    return {"post": op}


def _export(what: str) -> dict[str, Any]:
    return {"get": {"summary": f"{what} as CSV or PDF",
                    "parameters": [_ID, {"name": "fmt", "in": "path", "required": True, "schema": {"enum": ["csv", "pdf"]}}],
                    "responses": {"200": {"description": "the document", "content": {
                        "text/csv": {"schema": {"type": "string"}},
                        "application/pdf": {"schema": {"type": "string", "format": "binary"}}}},
                        **errors(*_READ)}}}


def _page_of(item: str) -> dict[str, Any]:
    return {"type": "object", "required": ["items", "next_cursor"],
            "properties": {"items": {"type": "array", "items": ref(item)}, "next_cursor": {"type": ["string", "null"]}}}


_AMOUNT = {"type": "string", "pattern": r"^-?\d+(\.\d+)?$", "description": "decimal string, never a JSON number"}
_AMOUNT_OR_NULL = {"type": ["string", "null"], "pattern": r"^-?\d+(\.\d+)?$"}
_MONEY = {"type": ["string", "null"], "description": "at the currency's minor unit, a decimal string"}
_TEXT_OR_NULL = {"type": ["string", "null"]}
_TS = {"type": "string", "format": "date-time"}
_TS_OR_NULL = {"type": ["string", "null"], "format": "date-time"}
_DATE_OR_NULL = {"type": ["string", "null"], "format": "date"}
_INT_OR_NULL = {"type": ["integer", "null"]}
_ADJUSTMENT_KINDS = ["late_event", "reversal_after_close", "ivt_credit", "backdated_amendment", "manual_credit"]


def _closed(properties: dict[str, Any], *optional: str, **extra: Any) -> dict[str, Any]:
    """A closed object whose keys are all required but ``optional``."""
    return {"type": "object", "additionalProperties": False,
            "required": [k for k in properties if k not in optional], "properties": properties, **extra}


def _schemas() -> dict[str, Any]:
    # The documents are their tables' rows (``api.document_doc``, ``api._list``: every column but
    # ``aggregation_key``), so each schema is closed and names every column, required; the unit
    # test ``test_invoicing_openapi_responses.py`` renders rows built from the migrations' columns.
    uuid = {"type": "string", "format": "uuid"}
    uuid_or_null = {"type": ["string", "null"], "format": "uuid"}
    text = {"type": "string"}
    line_common = {
        "id": uuid, "line_no": {"type": "integer"},
        "kind": {"enum": ["cpm_impressions", "cpm_over_delivery", "minimum_commitment_shortfall", "cpa_conversions",
                          "adjustment", "cpa_payout"]},
        "adjustment_kind": {"enum": [*_ADJUSTMENT_KINDS, None]}, "description": text,
        "contract_id": _TEXT_OR_NULL, "contract_version": _INT_OR_NULL, "event_type": _TEXT_OR_NULL,
        "quantity": _INT_OR_NULL, "amount_exact": _AMOUNT,
        "amount": {**_AMOUNT, "description": "amount_exact rounded once, half-even, to the currency's minor unit"},
        "close_id": _TEXT_OR_NULL, "corrects_period_key": _TEXT_OR_NULL, "corrects_line_id": uuid_or_null,
        "created_at": _TS}
    #: invoice lines only / statement lines only (``Line`` is either)
    invoice_line_only = {"invoice_id": uuid, "price_point": _TEXT_OR_NULL, "unit": _TEXT_OR_NULL,
                         "unit_price": _AMOUNT_OR_NULL, "corrects_invoice_id": uuid_or_null, "created_by": _TEXT_OR_NULL}
    statement_line_only = {"statement_id": uuid, "advertiser_id": text, "corrects_statement_id": uuid_or_null}
    line = _closed({**line_common, **invoice_line_only, **statement_line_only}, *invoice_line_only,
                   *statement_line_only, description="A line of an invoice (invoice_id, price_point, unit, unit_price, "
                   "corrects_invoice_id, created_by) or of a payout statement (statement_id, advertiser_id, "
                   "corrects_statement_id).")
    party_doc = {
        "id": uuid, "number": _TEXT_OR_NULL, "number_year": _INT_OR_NULL, "number_seq": _INT_OR_NULL,
        "currency": text, "period_key": text, "issue_date": _DATE_OR_NULL, "payment_reference": _TEXT_OR_NULL,
        "prepared_by": _TEXT_OR_NULL, "prepared_at": _TS_OR_NULL, "finalized_by": _TEXT_OR_NULL,
        "approved_by": {**_TEXT_OR_NULL, "description": "four-eyes: the second finance user, when one was needed"},
        "finalized_at": _TS_OR_NULL, "sent_by": _TEXT_OR_NULL, "sent_at": _TS_OR_NULL, "paid_by": _TEXT_OR_NULL,
        "paid_at": _TS_OR_NULL, "created_at": _TS, "updated_at": _TS}
    invoice_props = {**party_doc, "advertiser_id": text, "period_start": _TS_OR_NULL, "period_end": _TS_OR_NULL,
                     "status": {"enum": ["draft", "finalized", "sent", "paid", "void"]},
                     "total": {**_AMOUNT, "description": "sum of the rounded lines, at the currency's minor unit"},
                     "due_date": _DATE_OR_NULL, "payment_terms_days": _INT_OR_NULL,
                     "po_references": {"type": "array", "items": text}, "voided_by": _TEXT_OR_NULL,
                     "voided_at": _TS_OR_NULL}
    statement_props = {**party_doc, "partner_id": text,
                       "status": {"enum": ["draft", "finalized", "sent", "paid"]},
                       "lines_total": {**_AMOUNT, "description": "at the currency's minor unit"},
                       "carried_in": _MONEY, "balance": _MONEY, "minimum_payout": _MONEY,
                       "amount_payable": _MONEY, "carried_out": _MONEY, "carried_in_from": uuid_or_null}
    credit_note_props = {"id": uuid, "number": text, "number_year": {"type": "integer"},
                         "number_seq": {"type": "integer"}, "invoice_id": uuid, "advertiser_id": text,
                         "currency": text, "total": {**_AMOUNT, "description": "at the currency's minor unit"},
                         "reason": text, "issue_date": {"type": "string", "format": "date"}, "created_by": text,
                         "created_at": _TS}
    credit_note_line = _closed({"id": uuid, "credit_note_id": uuid, "invoice_line_id": uuid, "description": text,
                                "quantity": _INT_OR_NULL, "unit_price": _AMOUNT_OR_NULL,
                                "amount": {**_AMOUNT, "description": "at the currency's minor unit"},
                                "position": {"type": "integer"}, "kind": {"const": "credit"}})
    audit_entry = _closed({"seq": {"type": "integer"}, "entity_type": text, "entity_id": text, "action": text,
                           "actor": text, "tenant_type": _TEXT_OR_NULL, "tenant_id": _TEXT_OR_NULL,
                           "before": {"description": "the entity before the action (any JSON; null when created)"},
                           "after": {"description": "the entity after it (any JSON)"}, "at": _TS,
                           "prev_hash": text, "hash": text})
    kafka_position = {"kafka_topic": {"type": "string"}, "kafka_partition": {"type": "integer"},
                      "kafka_offset": {"type": "integer"}}
    return {
        "Line": line,
        "Invoice": _closed({**invoice_props, "lines": {"type": "array", "items": ref("Line")},
                            "credit_note": {"oneOf": [_closed({"id": uuid, "number": text}), {"type": "null"}]},
                            "awaiting": {"type": "string", "description": "202 only: who must finalize next"}},
                           "awaiting"),
        "InvoiceSummary": _closed(invoice_props),
        "Statement": _closed({**statement_props, "lines": {"type": "array", "items": ref("Line")}}),
        "StatementSummary": _closed(statement_props),
        "CreditNote": _closed({**credit_note_props, "invoice_number": _TEXT_OR_NULL,
                               "lines": {"type": "array", "items": credit_note_line}}),
        "CreditNoteSummary": _closed(credit_note_props),
        "Lineage": _closed({
            "line_id": {"type": "string"}, "corrects_line_id": _TEXT_OR_NULL, "corrects_period_key": _TEXT_OR_NULL,
            "close": {"oneOf": [_closed({"close_id": text, "contract_id": text, "period_key": text, "closed_at": _TS,
                                         "source_offsets": {"type": "array", "description": "the input offsets the "
                                                            "close covered, as metering published them"},
                                         **kafka_position}),
                                {"type": "null"}]},
            "adjustments": {"type": "array", "items": _closed({
                "adjustment_id": text, "kind": {"enum": _ADJUSTMENT_KINDS}, "corrects_period_key": text,
                "amount_exact": _AMOUNT, "partner_payout_exact": _AMOUNT_OR_NULL, **kafka_position,
                "source_event_id": _TEXT_OR_NULL, "source_topic": _TEXT_OR_NULL,
                "source_partition": _INT_OR_NULL, "source_offset": _INT_OR_NULL})}}),
        "AuditEntries": _closed({"items": {"type": "array", "items": audit_entry}}),
        "AuditVerify": _closed({"ok": {"type": "boolean"}, "checked": {"type": "integer"},
                                "broken": {"oneOf": [_closed({"seq": {"type": "integer"}, "reason": text}),
                                                     {"type": "null"}]}}),
        "Balances": _closed({
            "sign": text,
            "items": {"type": "array", "items": _closed({
                "code": text, "name": text, "kind": {"enum": ["asset", "liability", "revenue", "expense"]},
                "currency": text, "party_type": _TEXT_OR_NULL, "party_id": _TEXT_OR_NULL,
                "debits": _AMOUNT, "credits": _AMOUNT, "balance": _AMOUNT}, "party_type", "party_id")}}),
        "TrialBalance": _closed({
            "balanced": {"type": "boolean"},
            "currencies": {"type": "array", "items": _closed({
                "currency": text, "balanced": {"type": "boolean"}, "total_debits": _AMOUNT, "total_credits": _AMOUNT,
                "accounts": {"type": "array", "items": _closed({
                    "currency": text, "code": text, "name": text,
                    "kind": {"enum": ["asset", "liability", "revenue", "expense"]},
                    "debits": _AMOUNT, "credits": _AMOUNT})}})}}),
        "JournalEntry": _closed({
            "id": uuid, "entry_no": {"type": "integer"}, "currency": text, "description": text, "source_type": text,
            "source_id": text, "posted_by": text, "posted_at": _TS,
            "lines": {"type": "array", "items": _closed({
                "account_code": text, "party_type": _TEXT_OR_NULL, "party_id": _TEXT_OR_NULL, "amount": _AMOUNT})}}),
        "RejectedRecords": _closed({"items": {"type": "array", "items": _closed({
            **kafka_position, "natural_key": _TEXT_OR_NULL, "error_kind": text, "reason": text, "rejected_at": _TS})}}),
        "PaymentBody": {"type": "object", "properties": {
            "payment_reference": {"type": "string", "minLength": 1, "maxLength": 500}}},
        "VoidBody": {"type": "object", "required": ["reason"], "properties": {
            "reason": {"type": "string", "minLength": 1, "maxLength": 500}}},
        "ManualCredit": {"type": "object", "required": ["corrects_line_id", "amount", "period_key", "reason"],
                         "properties": {"corrects_line_id": {"type": "string", "format": "uuid"},
                                        "amount": {**_AMOUNT, "description": "positive, at most the currency's minor unit"},
                                        "period_key": {"type": "string", "minLength": 1},
                                        "reason": {"type": "string", "minLength": 1}}},
    }


def build_spec() -> dict[str, Any]:
    finalize_note = ("Above the four-eyes threshold the first finance user prepares (202) and a second finance user, "
                     "not the preparer, finalizes.")
    paths: dict[str, Any] = {
        "/invoices": _get("List invoices (an advertiser sees its own)", _page_of("InvoiceSummary"),
                          [*_PAGE, *(_filter(n) for n in ("status", "advertiser_id", "period_key", "currency")),
                           _number("INV")], 401, 403, 422),
        "/invoices/{id}": _get("An invoice with its lines", ref("Invoice"), [_ID], *_READ),
        "/invoices/{id}/export.{fmt}": _export("An invoice"),
        "/invoices/{id}/history": _get("The invoice's audit entries", ref("AuditEntries"), [_ID], *_READ),
        "/invoices/{id}/lines/{line_id}/lineage": _get(
            "Where a line comes from: its closed period and source offsets, or its adjustments", ref("Lineage"),
            [_ID, _LINE], *_READ),
        "/invoices/{id}/finalize": _post(
            "Finalize a draft: gap-free number, journal entry",
            {"200": json_body(ref("Invoice"), "finalized"),
             "202": json_body(ref("Invoice"), "prepared; awaiting a second finance user")}, [_ID], description=finalize_note),
        "/invoices/{id}/send": _post("Mark a finalized invoice sent", {"200": json_body(ref("Invoice"), "sent")}, [_ID]),
        "/invoices/{id}/mark-paid": _post("Record the payment", {"200": json_body(ref("Invoice"), "paid")}, [_ID],
                                          "PaymentBody"),
        "/invoices/{id}/void": _post("Void through a full credit note",
                                     {"201": json_body(ref("CreditNote"), "credit note issued (Location set)")}, [_ID],
                                     "VoidBody"),
        "/manual-credits": _post("Credit granted by finance on the advertiser's open draft",
                                 {"201": json_body(ref("Invoice"), "credit line added (Location set)")}, [], "ManualCredit"),
        "/credit-notes": _get("List credit notes (an advertiser sees its own)", _page_of("CreditNoteSummary"),
                              [*_PAGE, _filter("advertiser_id"),
                               {**_filter("invoice_id"), "schema": {"type": "string", "format": "uuid"}},
                               _number("CN")], 401, 403, 422),
        "/credit-notes/{id}": _get("A credit note", ref("CreditNote"), [_ID], *_READ),
        "/credit-notes/{id}/export.{fmt}": _export("A credit note"),
        "/statements": _get("List payout statements (a partner sees its own)", _page_of("StatementSummary"),
                            [*_PAGE, *(_filter(n) for n in ("status", "partner_id", "period_key", "currency")),
                             _number("PS")], 401, 403, 422),
        "/statements/{id}": _get("A payout statement with its lines", ref("Statement"), [_ID], *_READ),
        "/statements/{id}/export.{fmt}": _export("A payout statement"),
        "/statements/{id}/history": _get("The statement's audit entries", ref("AuditEntries"), [_ID], *_READ),
        "/statements/{id}/lines/{line_id}/lineage": _get("Where a statement line comes from", ref("Lineage"),
                                                         [_ID, _LINE], *_READ),
        "/statements/{id}/finalize": _post(
            "Finalize: carry-forward, number, journal entry",
            {"200": json_body(ref("Statement"), "finalized"),
             "202": json_body(ref("Statement"), "prepared; awaiting a second finance user")}, [_ID],
            description=finalize_note),
        "/statements/{id}/send": _post("Mark sent", {"200": json_body(ref("Statement"), "sent")}, [_ID]),
        "/statements/{id}/mark-paid": _post("Record the payout", {"200": json_body(ref("Statement"), "paid")}, [_ID],
                                            "PaymentBody"),
        "/ledger/accounts": _get("Account balances (by currency; ?by=party per advertiser/partner)", ref("Balances"),
                                 [_filter("currency"), _filter("party_id"), _filter("account", "account code"),
                                  _filter("by", "party: one row per advertiser/partner")], 401, 403, 422),
        "/ledger/trial-balance": _get("Trial balance per currency", ref("TrialBalance"), [], 401, 403),
        "/ledger/entries": _get("Journal entries with their lines", _page_of("JournalEntry"),
                                [*_PAGE, _filter("source_id", "the invoice, statement or credit note id")], 401, 403, 422),
        "/rejected-records": _get("Consumed records that could not be applied, with the reason (newest 500)",
                                  ref("RejectedRecords"), [], 401, 403),
        "/audit/verify": _get("Verify the hash-chained audit log", ref("AuditVerify"), [], 401, 403),
    }
    return document(
        title="Tally invoicing", version="1",
        description="Invoices, payout statements, credit notes, the double-entry ledger and exports. Bearer JWT; "
                    "amounts are decimal strings; errors are application/problem+json; a path called with a method "
                    "it does not serve answers 405 with Allow.",
        server="http://127.0.0.1:8084", paths=paths, schemas=_schemas())
