"""The OpenAPI 3.1 document of the ingest API (served at /openapi.json and /docs).

Field names and rules are those of ``validation.py`` (README "Ingest API"); every status each
operation can answer is listed. ``tests/unit/attribution/test_attribution_openapi.py`` fails
when a route and this document disagree, and ``tests/integration/fuzz`` checks every answer.
"""

from __future__ import annotations

from typing import Any

from tally_kit.apidoc import RETRY_AFTER, document, errors, json_body, problem, ref

from .validation import (
    CONVERSION_KINDS,
    DEVICE_TYPES,
    IVT_FLAGS,
    MAX_ID_LEN,
    MAX_IVT_COUNT,
    MAX_IVT_ENTRIES,
    MEASUREMENT_SOURCES,
)

_ID = {"type": "string", "minLength": 1, "maxLength": MAX_ID_LEN}
_ID_OR_NULL = {"type": ["string", "null"], "minLength": 1, "maxLength": MAX_ID_LEN}
_INSTANT = {"type": "string", "format": "date-time", "maxLength": 64,
            "description": "ISO 8601 with a zone, at most TALLY_ATTRIBUTION_MAX_FUTURE_S ahead of the server clock"}
_DECIMAL = {"type": ["string", "null"], "pattern": r"^\d{1,12}(\.\d{1,6})?$",
            "description": "a decimal string (never a JSON number), at most 6 decimals, below 10^12"}

_BATCH_ERRORS = {"_403": "requires the ingest role", "_413": "more events than TALLY_ATTRIBUTION_MAX_EVENTS_PER_REQUEST "
                 "or a body above TALLY_ATTRIBUTION_MAX_BODY_BYTES; nothing produced",
                 "_415": "send application/json or application/x-ndjson",
                 "_422": "the JSON array could not be read"}


def _batch(summary: str, event: str) -> dict[str, Any]:
    answer = ref("BatchAnswer")
    retry = {"description": "the producer queue is full: nothing produced (problem), or filled mid-batch (the batch answer: "
                            "resend the events whose status is retry)",
             "headers": RETRY_AFTER, "content": {"application/json": {"schema": answer},
                                                 "application/problem+json": {"schema": ref("Problem")}}}
    return {"post": {
        "summary": summary,
        "description": "One answer per event: accepted (on the topic, acknowledged), or rejected naming every bad field "
                       "(and kept on dlq.ingest). One bad event never rejects the good ones beside it.",
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"oneOf": [{"type": "array", "items": ref(event)}, ref(event)]}},
            "application/x-ndjson": {"schema": {"type": "string", "description": "one JSON event per line"}}}},
        "responses": {
            "200": json_body(answer, "every event answered"),
            **errors(401, 403, 413, 415, 422, **_BATCH_ERRORS),
            "429": retry,
            "503": json_body(answer, "the broker refused some events (status failed); resend them", headers=RETRY_AFTER),
        }}}


_POSTBACK_PARAMS = [
    {"name": "conversion_id", "in": "query", "required": False, "schema": _ID},
    {"name": "order_id", "in": "query", "required": False, "schema": _ID},
    {"name": "event_type", "in": "query", "required": False, "schema": _ID},
    {"name": "value", "in": "query", "required": False, "schema": {"type": "string"}},
    {"name": "currency", "in": "query", "required": False, "schema": {"type": "string"}},
    {"name": "household_id", "in": "query", "required": False, "schema": _ID},
    {"name": "timestamp", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "the event time (or event_time)"},
    {"name": "event_time", "in": "query", "required": False, "schema": {"type": "string"}},
    {"name": "advertiser_id", "in": "query", "required": False, "schema": _ID},
    {"name": "kind", "in": "query", "required": False, "schema": {"enum": list(CONVERSION_KINDS)}},
    {"name": "reverses_conversion_id", "in": "query", "required": False, "schema": _ID},
    {"name": "reversal_amount", "in": "query", "required": False, "schema": {"type": "string"}},
]
_POSTBACK_RESPONSES = {
    "200": json_body(ref("PostbackAnswer"), "on the topic and acknowledged"),
    **errors(401, 403, 413, 422, 429, 503, _403="a partner token naming its partner is required",
             _422="invalid parameters, every one named (also dead-lettered)",
             _413="body above TALLY_ATTRIBUTION_MAX_BODY_BYTES"),
}
_POSTBACK_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"token": []}]


def _schemas() -> dict[str, Any]:
    return {
        "Impression": {"type": "object", "additionalProperties": False,
                       "required": ["impression_id", "event_time", "advertiser_id", "campaign_id", "household_id"],
                       "description": "schemas/impression (Avro); unknown fields are refused",
                       "properties": {"impression_id": _ID, "event_time": _INSTANT, "advertiser_id": _ID,
                                      "campaign_id": _ID, "partner_id": _ID_OR_NULL, "household_id": _ID,
                                      "device_type": {"enum": [*DEVICE_TYPES, None]}, "ivt": {"enum": [*IVT_FLAGS, None]},
                                      "measurement_source": {"enum": [*MEASUREMENT_SOURCES, None]}}},
        "Conversion": {"type": "object", "additionalProperties": False,
                       "required": ["conversion_id", "event_time", "advertiser_id", "household_id", "event_type"],
                       "description": "schemas/conversion (Avro); unknown fields are refused. A reversal names "
                                      "reverses_conversion_id (and reversal_amount for a partial one).",
                       "properties": {"conversion_id": _ID, "kind": {"enum": [*CONVERSION_KINDS, None]},
                                      "order_id": _ID_OR_NULL, "event_time": _INSTANT, "advertiser_id": _ID,
                                      "household_id": _ID, "event_type": _ID, "value": _DECIMAL,
                                      "currency": {"type": ["string", "null"], "description": "ISO 4217, required with value"},
                                      "source": {"enum": ["api", "pixel", None]}, "partner_id": _ID_OR_NULL,
                                      "reverses_conversion_id": _ID_OR_NULL, "reversal_amount": _DECIMAL}},
        "BatchAnswer": {"type": "object", "required": ["accepted", "rejected", "results"], "properties": {
            "accepted": {"type": "integer", "minimum": 0}, "rejected": {"type": "integer", "minimum": 0},
            "results": {"type": "array", "items": {"type": "object", "required": ["index", "id", "status"], "properties": {
                "index": {"type": "integer", "minimum": 0},
                "id": {"type": ["string", "null"], "description": "the event's own id, when it has a readable one"},
                "status": {"enum": ["accepted", "rejected", "retry", "failed"]},
                "errors": {"type": "array", "items": {"type": "object", "required": ["field", "message"], "properties": {
                    "field": {"type": "string"}, "message": {"type": "string"}}}}}}}}},
        "PostbackAnswer": {"type": "object", "required": ["status", "conversion_id"], "properties": {
            "status": {"const": "accepted"}, "conversion_id": {"type": ["string", "null"]}}},
        "PostbackForm": {"type": "object", "description": "the query parameters, as a form (the form wins)",
                         "properties": {p["name"]: p["schema"] for p in _POSTBACK_PARAMS} | {"token": {"type": "string"}}},
        "IvtEntry": {"type": "object", "additionalProperties": False, "required": ["campaign_id", "ivt_class", "count"],
                     "description": "the window as window_start + window_end (15-minute boundaries of UTC, start < end, "
                                    "at most 31 days) or as date + time_zone (that local day), not both",
                     "properties": {"campaign_id": _ID, "ivt_class": {"enum": ["givt", "sivt"]},
                                    "measurement_source": {"enum": list(MEASUREMENT_SOURCES)},
                                    "count": {"type": "integer", "minimum": 1, "maximum": MAX_IVT_COUNT},
                                    "window_start": _INSTANT, "window_end": _INSTANT,
                                    "date": {"type": "string", "format": "date"},
                                    "time_zone": {"type": "string", "maxLength": 64, "description": "IANA zone"}}},
        "IvtReport": {"type": "object", "additionalProperties": False, "required": ["report_id", "advertiser_id", "entries"],
                      "properties": {"report_id": _ID, "advertiser_id": _ID,
                                     "entries": {"type": "array", "minItems": 1, "maxItems": MAX_IVT_ENTRIES,
                                                 "items": ref("IvtEntry")}}},
        "IvtAccepted": {"type": "object", "required": ["report_id", "entries", "status"], "properties": {
            "report_id": {"type": "string"}, "entries": {"type": "integer", "minimum": 1}, "status": {"const": "accepted"}}},
    }


def spec() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/v1/impressions": _batch("A batch of impressions (role ingest)", "Impression"),
        "/v1/conversions": _batch("A batch of conversions and reversals (role ingest)", "Conversion"),
        "/v1/postback": {
            "get": {"summary": "A partner's server-to-server postback: one conversion as query parameters",
                    "description": "The partner id comes from the token (role partner, tenant_type partner), never from "
                                   "the request; source is postback.",
                    "security": _POSTBACK_SECURITY, "parameters": _POSTBACK_PARAMS, "responses": _POSTBACK_RESPONSES},
            "post": {"summary": "The same postback as form parameters", "security": _POSTBACK_SECURITY,
                     "parameters": _POSTBACK_PARAMS,
                     "requestBody": {"required": False, "content": {
                         "application/x-www-form-urlencoded": {"schema": ref("PostbackForm")}}},
                     "responses": _POSTBACK_RESPONSES},
        },
        "/v1/ivt-reports": {"post": {
            "summary": "A verification vendor's report of invalid impressions (role verification or ingest)",
            "description": "Validated whole: one bad field refuses the report and nothing is written. Accepted is not "
                           "applied: metering decides every report and publishes the outcome.",
            "requestBody": {"required": True, "content": {"application/json": {"schema": ref("IvtReport")}}},
            "responses": {
                "202": json_body(ref("IvtAccepted"), "on the IVT reports topic and acknowledged"),
                **errors(401, 403, 413, 415, 422, 429, _403="requires the verification or ingest role",
                         _413="body above TALLY_ATTRIBUTION_MAX_BODY_BYTES", _415="send one JSON object (application/json)",
                         _422="invalid fields, every one named by JSON path; nothing of the report was accepted"),
                "503": problem("the broker refused the report; resend it (a report id applies once)", headers=RETRY_AFTER),
            }}},
    }
    return document(
        title="Tally ingest", version="1",
        description="Impressions, conversions, partner postbacks and IVT reports over HTTP, produced to Kafka. Bearer JWT "
                    "(postbacks: the partner's token as a bearer or as the token parameter); errors are "
                    "application/problem+json; a path called with a method it does not serve answers 405 with Allow.",
        server="http://127.0.0.1:8082", paths=paths, schemas=_schemas(),
        security_schemes={"token": {"type": "apiKey", "in": "query", "name": "token",
                                    "description": "the partner's JWT, for platforms that cannot set headers"}})
