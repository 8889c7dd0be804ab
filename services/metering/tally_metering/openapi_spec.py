"""The OpenAPI 3.1 document of the spend API (served at /openapi.json and /docs).

A total is ``schemas/running_total`` as JSON: exact amounts as decimal strings, instants as
ISO 8601. ``tests/unit/metering/test_metering_openapi.py`` fails when a route and this document
disagree, and ``tests/integration/fuzz`` checks every answer against it.
"""

from __future__ import annotations

from typing import Any

from tally_billing.bounds import ID_LEN_MAX
from tally_kit.apidoc import document, errors, json_body, ref

_DECIMAL = {"type": "string", "pattern": r"^-?\d+(\.\d+)?$", "description": "exact decimal string, never a JSON number"}
_DECIMAL_OR_NULL = {"type": ["string", "null"], "pattern": r"^-?\d+(\.\d+)?$"}
_TS = {"type": "string", "format": "date-time"}
_FILTER = {"type": "string", "maxLength": ID_LEN_MAX}

FILTER_PARAMS: list[dict[str, Any]] = [
    {"name": "contract_id", "in": "query", "required": False, "schema": _FILTER,
     "description": "a contract outside an advertiser token's scope is 404"},
    {"name": "advertiser_id", "in": "query", "required": False, "schema": _FILTER,
     "description": "an advertiser token sees only its own advertiser (another's is an empty list)"},
    {"name": "period_key", "in": "query", "required": False, "schema": _FILTER, "description": "e.g. 2026-03"},
    {"name": "status", "in": "query", "required": False, "schema": {"enum": ["open", "closed"]}},
]
_ERRORS = errors(401, 403, 404, 422, _403="partner tokens and roles without spend access are refused",
                 _404="the contract named by contract_id is outside the caller's scope",
                 _422="an unknown filter, a filter longer than its bound, or a status other than open/closed")


def _schemas() -> dict[str, Any]:
    line = {"type": "object", "required": ["line_type", "contract_version", "price_point", "quantity", "unit",
                                           "unit_price", "amount_exact"], "properties": {
        "line_type": {"enum": ["cpm_impressions", "cpm_over_delivery", "cpa_conversions"]},
        "contract_version": {"type": "integer"}, "price_point": {"type": "string"},
        "event_type": {"type": ["string", "null"]}, "quantity": {"type": "integer"},
        "unit": {"enum": ["per_thousand", "per_unit"]}, "unit_price": _DECIMAL, "amount_exact": _DECIMAL}}
    total = {"type": "object", "description": "a provisional (open) or final (closed) total of one contract and period",
             "required": ["total_id", "contract_id", "advertiser_id", "contract_type", "currency", "period_key",
                          "period_start", "period_end", "status", "amount_exact", "lines", "updated_at"],
             "properties": {
                 "total_id": {"type": "string", "description": "<contract>/<period>"}, "contract_id": {"type": "string"},
                 "advertiser_id": {"type": "string"}, "contract_type": {"enum": ["cpm", "cpa"]},
                 "currency": {"type": "string"}, "time_zone": {"type": "string"}, "period_kind": {"type": "string"},
                 "period_key": {"type": "string"}, "period_start": _TS, "period_end": _TS,
                 "status": {"enum": ["open", "closed"]}, "amount_exact": _DECIMAL,
                 "budget_cap_per_period": _DECIMAL_OR_NULL, "budget_cap_total": _DECIMAL_OR_NULL,
                 "minimum_commitment": _DECIMAL_OR_NULL, "lines": {"type": "array", "items": line},
                 "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
                 "latest_event_time": {"type": ["string", "null"], "format": "date-time"}, "updated_at": _TS}}
    return {"RunningTotal": total,
            "SpendList": {"type": "object", "required": ["items", "count"], "properties": {
                "items": {"type": "array", "items": ref("RunningTotal")}, "count": {"type": "integer", "minimum": 0}}}}


def spec() -> dict[str, Any]:
    paths = {
        "/v1/spend": {"get": {
            "summary": "The current running totals matching the filters",
            "description": "Roles admin, ops, approver, finance, advertiser (its own advertiser only). Sorted by contract "
                           "and period.",
            "parameters": FILTER_PARAMS,
            "responses": {"200": json_body(ref("SpendList"), "the matching totals"), **_ERRORS}}},
        "/v1/spend/stream": {"get": {
            "summary": "Server-sent events: every matching total now, then one per change",
            "description": "Each event is `event: total`, `id: <total_id>`, `data: <RunningTotal as JSON>`. The stream "
                           "stays open until the client leaves.",
            "parameters": FILTER_PARAMS,
            "responses": {"200": {"description": "the event stream",
                                  "content": {"text/event-stream": {"schema": {"type": "string"}}}}, **_ERRORS}}},
    }
    return document(
        title="Tally spend", version="1",
        description="Running totals per contract and period for dashboards, tenant-scoped, read from the compacted "
                    "billing.running_totals topic. Bearer JWT; amounts are decimal strings; errors are "
                    "application/problem+json; a path called with a method it does not serve answers 405 with Allow.",
        server="http://127.0.0.1:8083", paths=paths, schemas=_schemas())
