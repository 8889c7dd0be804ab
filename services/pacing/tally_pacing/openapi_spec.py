"""The OpenAPI 3.1 document of the pacing API (served at /openapi.json and /docs).

``tests/unit/pacing/test_pacing_api.py`` fails when a route and this document disagree.
"""

from __future__ import annotations

from typing import Any

from tally_kit.apidoc import document, errors, json_body, ref

_DECIMAL = {"type": "string", "pattern": r"^-?\d+(\.\d+)?$", "description": "exact decimal string, never a JSON number"}
_DECIMAL_OR_NULL = {"type": ["string", "null"], "pattern": r"^-?\d+(\.\d+)?$"}
_TS = {"type": "string", "format": "date-time"}
_TS_OR_NULL = {"type": ["string", "null"], "format": "date-time"}

_FILTERS: list[dict[str, Any]] = [
    {"name": "contract_id", "in": "query", "required": False, "schema": {"type": "string", "maxLength": 200}},
    {"name": "advertiser_id", "in": "query", "required": False, "schema": {"type": "string", "maxLength": 200},
     "description": "an advertiser token sees only its own advertiser"},
    {"name": "period_key", "in": "query", "required": False, "schema": {"type": "string"}, "description": "e.g. 2026-03"},
    {"name": "status", "in": "query", "required": False, "schema": {"enum": ["open", "closed"]},
     "description": "the period's status in metering"},
]
_SERIES_PARAMS: list[dict[str, Any]] = [
    {"name": "contract", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 200}},
    {"name": "period_key", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "the contract's latest period when left out"},
    {"name": "granularity", "in": "query", "required": False, "schema": {"enum": ["hour", "day"], "default": "hour"},
     "description": "hour: UTC hours; day: local days of the contract's time zone"},
]


def _schemas() -> dict[str, Any]:
    pacing = {
        "type": "object", "description": "the pacing of one contract in one billing period, evaluated at as_of",
        "required": ["contract_id", "advertiser_id", "currency", "period_key", "status", "spend", "alert_state"],
        "properties": {
            "contract_id": {"type": "string"}, "advertiser_id": {"type": "string"},
            "contract_type": {"enum": ["cpm", "cpa"]}, "currency": {"type": "string"}, "time_zone": {"type": "string"},
            "period_key": {"type": "string"}, "period_start": _TS, "period_end": _TS,
            "period_status": {"enum": ["open", "closed"]}, "flight_start": _TS_OR_NULL, "flight_end": _TS_OR_NULL,
            "spend": _DECIMAL, "billable": {"type": "integer"}, "over_delivery": {"type": "integer"},
            "budget": {**_DECIMAL_OR_NULL, "description": "what the period is paced against: the per-period budget cap "
                                                          "(CPA: the amount cap per period of the terms), else the "
                                                          "minimum commitment"},
            "budget_cap_per_period": _DECIMAL_OR_NULL, "budget_cap_total": _DECIMAL_OR_NULL,
            "cpa_amount_cap_per_period": {**_DECIMAL_OR_NULL, "description": "a CPA contract's amount cap per period"},
            "minimum_commitment": _DECIMAL_OR_NULL, "latest_event_time": _TS_OR_NULL, "updated_at": _TS,
            "status": {"enum": ["no_budget", "not_started", "on_pace", "under", "over", "outside_flight"]},
            "as_of": _TS_OR_NULL, "window_start": _TS_OR_NULL, "window_end": _TS_OR_NULL,
            "curve": {"type": ["string", "null"]},
            "elapsed_share": {**_DECIMAL_OR_NULL, "description": "0 to 1, 6 places"},
            "expected_spend": {**_DECIMAL_OR_NULL, "description": "budget x the curve's share at the elapsed share"},
            "pace_pct": {**_DECIMAL_OR_NULL, "description": "spend / expected x 100, 2 places"},
            "projected_spend": {**_DECIMAL_OR_NULL, "description": "at the end of the window, at the current pace"},
            "projected_cap_at": {**_TS_OR_NULL, "description": "when the cap is projected to be reached in the window"},
            "cap_reached": {"type": "boolean"},
            "alert_state": {"enum": ["on_pace", "cap_exhaustion_projected", "under_pacing"]},
            "budget_alerts": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "integer"}},
                              "description": "thresholds metering's budget alerts reported, per cap kind"},
            "lifetime": {"oneOf": [{"type": "null"}, ref("LifetimePacing")],
                         "description": "the total (lifetime) cap paced over the whole flight; null without a total "
                                        "cap or a flight with an end"},
        }}
    lifetime = {
        "type": "object", "description": "the contract's spend over all its periods against its total cap, spread over "
                                         "the flight by the pacing curve",
        "required": ["cap_total", "spend", "status", "as_of", "window_start", "window_end"],
        "properties": {
            "cap_total": _DECIMAL, "spend": {**_DECIMAL, "description": "the sum of the contract's period totals"},
            "status": {"enum": ["not_started", "on_pace", "under", "over"]}, "as_of": _TS,
            "window_start": {**_TS, "description": "the flight's start"},
            "window_end": {**_TS, "description": "the flight's end, exclusive"}, "curve": {"type": "string"},
            "elapsed_share": _DECIMAL, "expected_spend": _DECIMAL_OR_NULL, "pace_pct": _DECIMAL_OR_NULL,
            "projected_spend": _DECIMAL_OR_NULL, "projected_cap_at": _TS_OR_NULL, "cap_reached": {"type": "boolean"},
        }}
    point = {"type": "object", "required": ["start", "end", "spend", "cumulative_spend", "billable",
                                             "cumulative_billable"], "properties": {
        "start": _TS, "end": _TS, "spend": _DECIMAL, "cumulative_spend": _DECIMAL, "billable": {"type": "integer"},
        "cumulative_billable": {"type": "integer"}}}
    return {
        "Pacing": pacing,
        "LifetimePacing": lifetime,
        "PacingList": {"type": "object", "required": ["items", "count"], "properties": {
            "items": {"type": "array", "items": ref("Pacing")}, "count": {"type": "integer", "minimum": 0}}},
        "SeriesPoint": point,
        "Series": {"type": "object", "required": ["contract_id", "period_key", "granularity", "points"], "properties": {
            "contract_id": {"type": "string"}, "period_key": {"type": "string"}, "currency": {"type": "string"},
            "time_zone": {"type": "string"}, "granularity": {"enum": ["hour", "day"]}, "period_start": _TS,
            "period_end": _TS, "points": {"type": "array", "items": ref("SeriesPoint")}}},
    }


def spec() -> dict[str, Any]:
    paths = {
        "/v1/pacing": {"get": {
            "summary": "Pacing of every matching contract and period",
            "description": "Roles admin, ops, approver, finance, advertiser (its own advertiser only). Sorted by contract "
                           "and period start. Evaluated at the service's clock.",
            "parameters": _FILTERS,
            "responses": {"200": json_body(ref("PacingList"), "the matching pacing"),
                          **errors(401, 403, 422, _403="partner tokens and roles without spend access are refused",
                                   _422="an unknown or repeated parameter, a bad period_key or status")}}},
        "/v1/pacing/{contract}/series": {"get": {
            "summary": "Spend and billable counts per hour or per day of one contract's period",
            "description": "Points run from the period's start to its last hour with data; an hour without an update "
                           "has spend 0 and carries the cumulative totals.",
            "parameters": _SERIES_PARAMS,
            "responses": {"200": json_body(ref("Series"), "the series"),
                          **errors(401, 403, 404, 422, _404="no such contract or period (or not the caller's)",
                                   _422="an unknown or repeated parameter, a bad period_key or granularity")}}},
    }
    return document(
        title="Tally pacing", version="1",
        description="Spend history per hour, pacing against budget and flight, and forecasts per contract and period, "
                    "tenant-scoped, from the pacing service's faust tables. Bearer JWT; amounts are decimal strings; "
                    "errors are application/problem+json.",
        server="http://127.0.0.1:8085", paths=paths, schemas=_schemas())
