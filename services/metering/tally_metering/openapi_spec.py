"""The OpenAPI 3.1 document of the spend API (served at /openapi.json and /docs).

A total is ``schemas/running_total`` as JSON: exact amounts as decimal strings, instants as
ISO 8601. An earning is one partner's share of a total (its ``payouts`` lines), for partners.
``tests/unit/metering/test_metering_openapi.py`` fails when a route and this document disagree,
and ``tests/integration/fuzz`` checks every answer against it.
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
_PERIOD_KEY = {"type": "string", "maxLength": 8, "pattern": r"^\d{4}-(0[1-9]|1[0-2]|W(0[1-9]|[1-4]\d|5[0-3]))$"}
EARNINGS_PARAMS: list[dict[str, Any]] = [
    {"name": "contract_id", "in": "query", "required": False, "schema": _FILTER,
     "description": "to a partner token, a contract whose totals pay only other partners is 404"},
    {"name": "partner_id", "in": "query", "required": False, "schema": _FILTER,
     "description": "internal roles: one partner; a partner token sees only its own (another's is an empty list)"},
    {"name": "period_key", "in": "query", "required": False, "schema": _PERIOD_KEY,
     "description": "a month (2026-03) or an ISO week (2026-W10)"},
    {"name": "status", "in": "query", "required": False, "schema": {"enum": ["open", "closed"]}},
]
_EARNINGS_ERRORS = errors(401, 403, 404, 422, _403="advertiser tokens and roles without earnings access are refused",
                          _404="the contract named by contract_id is outside the partner's scope",
                          _422="an unknown filter, a filter longer than its bound, a period_key that is not a month "
                               "or ISO week, or a status other than open/closed")
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
    payout = {"type": "object", "required": ["partner_id", "contract_version", "event_type", "quantity", "amount_exact"],
              "properties": {"partner_id": {"type": "string"}, "contract_version": {"type": "integer"},
                             "event_type": {"type": "string"}, "quantity": {"type": "integer"}, "amount_exact": _DECIMAL}}
    earning_line = {"type": "object", "required": ["contract_version", "event_type", "quantity", "amount_exact"],
                    "properties": {"contract_version": {"type": "integer"}, "event_type": {"type": "string"},
                                   "quantity": {"type": "integer", "description": "net conversions"},
                                   "amount_exact": _DECIMAL}}
    earning = {"type": "object", "additionalProperties": False,
               "description": "one partner's earnings in one contract's period: its own payout lines and their exact sum; "
                              "provisional while the period is open",
               "required": ["contract_id", "partner_id", "contract_type", "currency", "time_zone", "period_kind",
                            "period_key", "period_start", "period_end", "closes_at", "status", "provisional",
                            "conversions", "amount_exact", "lines", "latest_event_time", "updated_at"],
               "properties": {
                   "contract_id": {"type": "string"}, "partner_id": {"type": "string"},
                   "contract_type": {"enum": ["cpm", "cpa"]}, "currency": {"type": "string"},
                   "time_zone": {"type": "string"}, "period_kind": {"type": "string"}, "period_key": {"type": "string"},
                   "period_start": _TS, "period_end": {**_TS, "description": "end of the period (exclusive)"},
                   "closes_at": {**_TS, "description": "when metering closes the period: its end plus the grace for "
                                                       "late events; the payout statement is drafted then"},
                   "status": {"enum": ["open", "closed"]},
                   "provisional": {"type": "boolean", "description": "true while the period is open"},
                   "conversions": {"type": "integer", "description": "the partner's net conversions"},
                   "amount_exact": {**_DECIMAL, "description": "exact sum of the lines (unrounded)"},
                   "lines": {"type": "array", "items": earning_line},
                   "latest_event_time": {"type": ["string", "null"], "format": "date-time"},
                   "updated_at": {**_TS, "description": "when metering computed the total"}}}
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
                 "payouts": {"type": "array", "items": payout,
                             "description": "partners' payouts so far (CPA); internal roles only, never an advertiser"},
                 "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
                 "latest_event_time": {"type": ["string", "null"], "format": "date-time"}, "updated_at": _TS}}
    return {"RunningTotal": total,
            "SpendList": {"type": "object", "required": ["items", "count"], "properties": {
                "items": {"type": "array", "items": ref("RunningTotal")}, "count": {"type": "integer", "minimum": 0}}},
            "Earning": earning,
            "EarningsList": {"type": "object", "required": ["items", "count"], "properties": {
                "items": {"type": "array", "items": ref("Earning")}, "count": {"type": "integer", "minimum": 0}}}}


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
        "/v1/earnings": {"get": {
            "summary": "A partner's earnings per contract and period, from the running totals",
            "description": "Roles admin, ops, approver, finance, partner (its own payouts only: never the advertiser's "
                           "prices, lines or counts, nor another partner). One item per contract, period and partner "
                           "the contract has paid; provisional while the period is open. Sorted by contract, period and "
                           "partner.",
            "parameters": EARNINGS_PARAMS,
            "responses": {"200": json_body(ref("EarningsList"), "the matching earnings"), **_EARNINGS_ERRORS}}},
    }
    return document(
        title="Tally spend", version="1",
        description="Running totals per contract and period for dashboards, and partners' earnings from them, "
                    "tenant-scoped, read from the compacted billing.running_totals topic. Bearer JWT; amounts are "
                    "decimal strings; errors are application/problem+json; a path called with a method it does not "
                    "serve answers 405 with Allow.",
        server="http://127.0.0.1:8083", paths=paths, schemas=_schemas())
