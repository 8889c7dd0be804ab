"""The OpenAPI 3.1 description of the invoicing API (served at /openapi.json and /docs)."""

from __future__ import annotations

from typing import Any

_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
_LINE = {"name": "line_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
_PAGE = [
    {"name": "limit", "in": "query", "required": False, "description": "page size (1-200)", "schema": {"type": "integer"}},
    {"name": "cursor", "in": "query", "required": False, "description": "next_cursor of the previous page",
     "schema": {"type": "string"}},
]
_IDEM = {"name": "Idempotency-Key", "in": "header", "required": False,
         "description": "replays the first response for the same key and request", "schema": {"type": "string"}}
_PROBLEM = {"content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}


def _json(ref: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _get(summary: str, ref: str, params: list[dict[str, Any]], description: str = "") -> dict[str, Any]:
    return {"get": {"summary": summary, "description": description, "parameters": params,
                    "responses": {"200": {"description": "OK", **_json(ref)}, "404": {"description": "not found", **_PROBLEM}}}}


def _post(summary: str, ref: str, params: list[dict[str, Any]], body: str | None = None, description: str = "",
          extra: dict[str, Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "description": description, "parameters": [*params, _IDEM],
                          "responses": {"200": {"description": "OK", **_json(ref)},
                                        "403": {"description": "role or four-eyes rule", **_PROBLEM},
                                        "404": {"description": "not found", **_PROBLEM},
                                        "409": {"description": "invalid transition", **_PROBLEM},
                                        "422": {"description": "invalid field", **_PROBLEM}, **(extra or {})}}
    if body:
        op["requestBody"] = {"required": False, **_json(body)}
    return {"post": op}


def _export(what: str) -> dict[str, Any]:
    return {"get": {"summary": f"{what} as CSV or PDF", "parameters": [_ID, {"name": "fmt", "in": "path", "required": True,
                                                                             "schema": {"enum": ["csv", "pdf"]}}],
                    "responses": {"200": {"description": "the document", "content": {
                        "text/csv": {"schema": {"type": "string"}},
                        "application/pdf": {"schema": {"type": "string", "format": "binary"}}}}}}}


_AMOUNT = {"type": "string", "pattern": r"^-?\d+(\.\d+)?$", "description": "decimal string, never a JSON number"}


def build_spec() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/invoices": _get("List invoices (an advertiser sees its own)", "Page",
                          [*_PAGE, *({"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
                                     for n in ("status", "advertiser_id", "period_key", "currency"))]),
        "/invoices/{id}": _get("An invoice with its lines", "Invoice", [_ID]),
        "/invoices/{id}/export.{fmt}": _export("An invoice"),
        "/invoices/{id}/history": _get("The invoice's audit entries", "AuditEntries", [_ID]),
        "/invoices/{id}/lines/{line_id}/lineage": _get(
            "Where a line comes from: its closed period and source offsets, or its adjustments", "Lineage", [_ID, _LINE]),
        "/invoices/{id}/finalize": _post(
            "Finalize a draft: gap-free number, journal entry", "Invoice", [_ID],
            description="Above the four-eyes threshold the first finance user prepares (202) and a second finance "
                        "user, not the preparer, finalizes.",
            extra={"202": {"description": "prepared; awaiting a second finance user", **_json("Invoice")}}),
        "/invoices/{id}/send": _post("Mark a finalized invoice sent", "Invoice", [_ID]),
        "/invoices/{id}/mark-paid": _post("Record the payment", "Invoice", [_ID], "PaymentBody"),
        "/invoices/{id}/void": _post("Void through a full credit note", "CreditNote", [_ID], "VoidBody",
                                     extra={"201": {"description": "credit note issued", **_json("CreditNote")}}),
        "/manual-credits": _post("Credit granted by finance on the advertiser's open draft", "Invoice", [], "ManualCredit",
                                 extra={"201": {"description": "credit line added", **_json("Invoice")}}),
        "/credit-notes": _get("List credit notes", "Page", _PAGE),
        "/credit-notes/{id}": _get("A credit note", "CreditNote", [_ID]),
        "/credit-notes/{id}/export.{fmt}": _export("A credit note"),
        "/statements": _get("List payout statements (a partner sees its own)", "Page", _PAGE),
        "/statements/{id}": _get("A payout statement with its lines", "Statement", [_ID]),
        "/statements/{id}/export.{fmt}": _export("A payout statement"),
        "/statements/{id}/history": _get("The statement's audit entries", "AuditEntries", [_ID]),
        "/statements/{id}/lines/{line_id}/lineage": _get("Where a statement line comes from", "Lineage", [_ID, _LINE]),
        "/statements/{id}/finalize": _post("Finalize: carry-forward, number, journal entry", "Statement", [_ID]),
        "/statements/{id}/send": _post("Mark sent", "Statement", [_ID]),
        "/statements/{id}/mark-paid": _post("Record the payout", "Statement", [_ID], "PaymentBody"),
        "/ledger/accounts": _get("Account balances (by currency; ?by=party per advertiser/partner)", "Balances",
                                 [{"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
                                  for n in ("currency", "party_id", "account", "by")]),
        "/ledger/trial-balance": _get("Trial balance per currency", "TrialBalance", []),
        "/ledger/entries": _get("Journal entries with their lines", "Page", _PAGE),
        "/rejected-records": _get("Consumed records that could not be applied, with the reason", "Page", []),
        "/audit/verify": _get("Verify the hash-chained audit log", "AuditVerify", []),
    }
    line = {"type": "object", "properties": {
        "id": {"type": "string"}, "kind": {"enum": ["cpm_impressions", "cpm_over_delivery", "minimum_commitment_shortfall",
                                                     "cpa_conversions", "adjustment", "cpa_payout"]},
        "adjustment_kind": {"type": ["string", "null"]}, "description": {"type": "string"},
        "quantity": {"type": ["integer", "null"]}, "unit_price": _AMOUNT, "amount_exact": _AMOUNT,
        "amount": {**_AMOUNT, "description": "amount_exact rounded once, half-even, to the currency's minor unit"},
        "close_id": {"type": ["string", "null"]}, "corrects_line_id": {"type": ["string", "null"]},
        "corrects_period_key": {"type": ["string", "null"]}}}
    schemas: dict[str, Any] = {
        "Problem": {"type": "object", "description": "RFC 9457 problem details",
                    "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                                   "detail": {"type": "string"}, "errors": {"type": "array"}}},
        "Page": {"type": "object", "properties": {"items": {"type": "array"}, "next_cursor": {"type": ["string", "null"]}}},
        "Line": line,
        "Invoice": {"type": "object", "properties": {
            "id": {"type": "string"}, "number": {"type": ["string", "null"]}, "status": {
                "enum": ["draft", "finalized", "sent", "paid", "void"]}, "advertiser_id": {"type": "string"},
            "currency": {"type": "string"}, "period_key": {"type": "string"},
            "total": {**_AMOUNT, "description": "sum of the rounded lines"},
            "lines": {"type": "array", "items": {"$ref": "#/components/schemas/Line"}}}},
        "Statement": {"type": "object", "properties": {
            "id": {"type": "string"}, "number": {"type": ["string", "null"]}, "partner_id": {"type": "string"},
            "lines_total": _AMOUNT, "carried_in": _AMOUNT, "balance": _AMOUNT, "amount_payable": _AMOUNT,
            "carried_out": _AMOUNT, "lines": {"type": "array", "items": {"$ref": "#/components/schemas/Line"}}}},
        "CreditNote": {"type": "object", "properties": {
            "id": {"type": "string"}, "number": {"type": "string"}, "invoice_id": {"type": "string"}, "total": _AMOUNT,
            "reason": {"type": "string"}, "lines": {"type": "array"}}},
        "Lineage": {"type": "object", "properties": {"close": {"type": ["object", "null"]}, "adjustments": {"type": "array"}}},
        "AuditEntries": {"type": "object", "properties": {"items": {"type": "array"}}},
        "AuditVerify": {"type": "object", "properties": {"ok": {"type": "boolean"}, "checked": {"type": "integer"}}},
        "Balances": {"type": "object", "properties": {"items": {"type": "array"}}},
        "TrialBalance": {"type": "object", "properties": {"currencies": {"type": "array"}, "balanced": {"type": "boolean"}}},
        "PaymentBody": {"type": "object", "properties": {"payment_reference": {"type": "string"}}},
        "VoidBody": {"type": "object", "required": ["reason"], "properties": {"reason": {"type": "string"}}},
        "ManualCredit": {"type": "object", "required": ["corrects_line_id", "amount", "period_key", "reason"],
                         "properties": {"corrects_line_id": {"type": "string"}, "amount": _AMOUNT,
                                        "period_key": {"type": "string"}, "reason": {"type": "string"}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tally invoicing", "version": "1",
                 "description": "Invoices, payout statements, credit notes, the double-entry ledger and exports. "
                                "Bearer JWT; amounts are decimal strings."},
        "servers": [{"url": "http://127.0.0.1:8084"}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
                       "schemas": schemas},
        "security": [{"bearer": []}],
        "paths": paths,
    }
