"""HTTP ingest: batches of impressions and conversions, partner postbacks, and verification
vendors' IVT reports.

Each event is answered on its own: ``accepted`` (produced and acknowledged by the broker,
acks=all), or ``rejected`` with every offending field (and kept on ``dlq.ingest`` with the
reason). One bad event never rejects the good ones beside it. Memory stays bounded: a body
is at most ``MAX_BODY_BYTES``, a batch at most ``MAX_EVENTS_PER_REQUEST`` events, and when
the producer's queue cannot take the batch the caller gets 429 with ``Retry-After``.

An IVT report is one JSON object answered as a whole: ``202 accepted`` once it is on its topic
(acknowledged), or 422 naming every bad field, and then nothing is written (no dead letter).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import orjson
from aiohttp import web
from confluent_kafka.admin import AdminClient
from prometheus_client import CollectorRegistry

from tally_kit import web as kit_web
from tally_kit.auth import TokenVerifier, bearer_token
from tally_kit.clock import Clock, WallClock
from tally_kit.inputs import JsonRefused, loads_strict
from tally_kit.openapi import add_openapi
from tally_kit.problems import ApiError, validation_error
from tally_streams.avro import EncodeError, SchemaCatalog
from tally_streams.kafka import AsyncProducer, admin_config, dead_letter_record, producer_config

from .metrics import IngestMetrics
from .openapi_spec import spec
from .settings import AttributionSettings
from .validation import Checked, check_conversion, check_impression, check_ivt_report, event_id

log = logging.getLogger("tally.attribution.ingest")

NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"})
POSTBACK_PARAMS = frozenset({
    "conversion_id", "order_id", "event_type", "value", "currency", "household_id", "timestamp", "event_time",
    "advertiser_id", "kind", "reverses_conversion_id", "reversal_amount",
})

PRODUCER_KEY: web.AppKey[AsyncProducer] = web.AppKey("attribution_producer", AsyncProducer)
CONFIG_KEY: web.AppKey[IngestConfig] = web.AppKey("attribution_ingest_config")


@dataclass
class IngestConfig:
    bootstrap: str
    topic_impressions: str
    topic_conversions: str
    topic_ivt_reports: str
    topic_dlq: str
    max_events: int
    queue_max: int
    retry_after_s: int
    max_future: timedelta
    catalog: SchemaCatalog
    metrics: IngestMetrics
    clock: Clock = field(default_factory=WallClock)


@dataclass(slots=True)
class _Event:
    index: int
    raw: bytes | None  # the event as received; None: re-serialise ``obj`` if it must be dead-lettered
    checked: Checked
    ident: str | None
    status: str = "pending"
    obj: Any = None  # the parsed event
    encoded: bytes | None = None  # its Avro record, once encoded

    def raw_bytes(self) -> bytes:
        return self.raw if self.raw is not None else json.dumps(self.obj, default=str).encode()


def create_ingest_app(
    settings: AttributionSettings,
    catalog: SchemaCatalog,
    *,
    verifier: TokenVerifier | None = None,
    registry: CollectorRegistry | None = None,
    clock: Clock | None = None,
) -> web.Application:
    verifier = verifier or TokenVerifier.from_env()
    app = kit_web.create_app("attribution", verifier=verifier, public_paths={"/v1/postback"}, registry=registry,
                             client_max_size=settings.attribution_max_body_bytes)
    cfg = IngestConfig(
        bootstrap=settings.kafka_bootstrap,
        topic_impressions=settings.attribution_topic_impressions,
        topic_conversions=settings.attribution_topic_conversions,
        topic_ivt_reports=settings.attribution_topic_ivt_reports,
        topic_dlq=settings.attribution_topic_dlq_ingest,
        max_events=settings.attribution_max_events_per_request,
        queue_max=settings.attribution_producer_queue_max,
        retry_after_s=settings.attribution_retry_after_s,
        max_future=timedelta(seconds=settings.attribution_max_future_s),
        catalog=catalog,
        metrics=IngestMetrics(app[kit_web.REGISTRY_KEY]),
    )
    if clock is not None:
        cfg.clock = clock
    app[CONFIG_KEY] = cfg

    async def start_producer(app: web.Application) -> None:
        app[PRODUCER_KEY] = AsyncProducer(producer_config(
            cfg.bootstrap, client_id="tally-attribution-ingest",
            **{"queue.buffering.max.messages": cfg.queue_max, "linger.ms": 2},
        ))

    async def stop_producer(app: web.Application) -> None:
        await app[PRODUCER_KEY].close()

    async def broker_answers(app: web.Application) -> None:
        admin = AdminClient(admin_config(cfg.bootstrap))
        md = await asyncio.to_thread(admin.list_topics, cfg.topic_impressions, 2)
        if not md.brokers:
            raise RuntimeError("no Kafka broker answered")

    app.on_startup.append(start_producer)
    app.on_cleanup.append(stop_producer)
    kit_web.add_readiness_check(app, broker_answers)
    app.router.add_post("/v1/impressions", post_impressions)
    app.router.add_post("/v1/conversions", post_conversions)
    app.router.add_get("/v1/postback", postback)
    app.router.add_post("/v1/postback", postback)
    app.router.add_post("/v1/ivt-reports", post_ivt_report)
    add_openapi(app, spec())
    return app


# --------------------------------------------------------------------------- batch endpoints


async def post_impressions(request: web.Request) -> web.Response:
    kit_web.principal(request).require("ingest")
    cfg = request.app[CONFIG_KEY]
    events = await _checked_events(request, "impression", check_impression)
    return await _answer(request, "impression", cfg.topic_impressions, "impression", events)


async def post_conversions(request: web.Request) -> web.Response:
    kit_web.principal(request).require("ingest")
    cfg = request.app[CONFIG_KEY]
    events = await _checked_events(request, "conversion", check_conversion)
    return await _answer(request, "conversion", cfg.topic_conversions, "conversion", events)


async def _checked_events(request: web.Request, kind: str, check: Callable[..., Checked]) -> list[_Event]:
    """The request's events, each checked field by field.

    A JSON array of flat objects is parsed by orjson (``_loads_flat_batch``); when any of its
    events is rejected, the batch is parsed again by ``loads_strict`` and checked again, so a
    rejected event is answered and dead-lettered exactly as on the plain path (its numbers as
    ``Decimal``; an accepted event never holds a number).
    """
    cfg = request.app[CONFIG_KEY]
    now = cfg.clock.now()
    body = await request.read()
    objs, raws = _read_batch(body, request.content_type, cfg.max_events, fast=True)
    while True:
        events = [_Event(i, raws[i] if raws else None,
                         _unparsable(obj) or check(obj, now=now, max_future=cfg.max_future),
                         event_id(kind, obj), obj=obj)
                  for i, obj in enumerate(objs)]
        if raws is not _FAST or all(e.checked.record is not None for e in events):
            return events
        objs, raws = _read_batch(body, request.content_type, cfg.max_events, fast=False)


class _NotJson:
    def __init__(self, error: str) -> None:
        self.error = error


def _refusal(exc: JsonRefused) -> str:
    """Why a body (or NDJSON line) cannot be read, naming where when the JSON parsed."""
    if exc.message.startswith("not valid JSON"):
        return f"body is {exc.message}"
    return exc.message if exc.field == "body" else f"{exc.field}: {exc.message}"


def _unparsable(obj: Any) -> Checked | None:
    return Checked(None, [("$", f"not valid JSON: {obj.error}")]) if isinstance(obj, _NotJson) else None


#: ``_read_batch``'s raws when orjson parsed the batch (``_loads_flat_batch``); like None, no raw lines
_FAST: list[bytes] = []


def _read_batch(body: bytes, ctype: str, max_events: int, *, fast: bool) -> tuple[list[Any], list[bytes] | None]:
    """The parsed events, and for NDJSON each one's raw line; an unparsable line is its own bad event.

    The raw bytes of an array element are not kept (None, or ``_FAST`` when ``fast`` let orjson
    parse the array): only a rejected event needs them, for its dead letter, and
    ``_Event.raw_bytes`` re-serialises it then.
    """
    if ctype in NDJSON_TYPES:
        lines = [ln.strip() for ln in body.split(b"\n") if ln.strip()]
        if len(lines) > max_events:
            raise ApiError(413, f"at most {max_events} events per request; split the batch")
        objs: list[Any] = []
        for line in lines:
            try:  # a line too deep or with a duplicate key is its own bad event, like one that does not parse
                objs.append(loads_strict(line, text=False))
            except JsonRefused as exc:
                objs.append(_NotJson(_refusal(exc).removeprefix("body is not valid JSON: ")))
        return objs, lines
    if ctype != "application/json":
        raise ApiError(415, "send application/json (an array of events) or application/x-ndjson (one event per line)")
    flat = _loads_flat_batch(body) if fast else None
    if flat is not None:
        if len(flat) > max_events:
            raise ApiError(413, f"at most {max_events} events per request; split the batch")
        return flat, _FAST
    try:
        parsed = loads_strict(body, text=False)
    except JsonRefused as exc:
        raise validation_error([("$", _refusal(exc))], "the batch could not be read") from None
    items = parsed if isinstance(parsed, list) else [parsed]
    if len(items) > max_events:
        raise ApiError(413, f"at most {max_events} events per request; split the batch")
    return items, None


def _loads_flat_batch(body: bytes) -> list[dict[str, Any]] | None:
    """A JSON array of objects without nested values or duplicate keys, parsed by orjson (~4x
    faster than ``loads_strict``), or None: then ``loads_strict`` decides, with its answers.

    orjson refuses what ``loads_strict`` refuses except nesting up to its own limit and
    duplicate keys (it keeps the last), so both are ruled out by counting bytes: the body holds
    exactly the brackets of one array of n objects (so nothing nests), and exactly as many
    commas as separate the n objects and their parsed keys (a duplicate key is one more comma
    than parsed keys). A bracket or comma inside a string only sends the body to the plain path.
    A lone surrogate (``\\ud800``) makes orjson fail, so that body too. Numbers are orjson's
    (a float where ``loads_strict`` gives a ``Decimal``, and for an integer beyond 64 bits): no
    accepted event holds a number, and ``_checked_events`` reads a batch with a rejected event
    again with ``loads_strict``.
    """
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(parsed) is not list or not parsed:
        return None
    n = len(parsed)
    if body.count(b"[") + body.count(b"{") != n + 1:
        return None
    keys = 0
    for item in parsed:
        if type(item) is not dict or not item:
            return None
        keys += len(item)
    if body.count(b",") != keys - 1:  # (keys - 1 per object) + (n - 1 between the objects)
        return None
    return parsed


async def _answer(request: web.Request, kind: str, topic: str, schema: str, events: list[_Event]) -> web.Response:
    cfg = request.app[CONFIG_KEY]
    producer = request.app[PRODUCER_KEY]
    if producer.queue_length() + len(events) > cfg.queue_max:
        cfg.metrics.throttled.labels(kind).inc()
        raise ApiError(429, "the ingest queue is full; retry later", headers={"Retry-After": str(cfg.retry_after_s)})
    results = await _produce_all(request, kind, topic, schema, events)
    status = 200
    if any(e.status == "retry" for e in events):
        status = 429
    elif any(e.status == "failed" for e in events):
        status = 503
    headers = {"Retry-After": str(cfg.retry_after_s)} if status in (429, 503) else None
    body = {
        "accepted": sum(e.status == "accepted" for e in events),
        "rejected": sum(e.status == "rejected" for e in events),
        "results": results,
    }
    return _json_response(body, status=status, headers=headers)


def _json_response(body: dict[str, Any], *, status: int, headers: dict[str, str] | None) -> web.Response:
    """The batch answer as ``kit_web.json_ok`` writes it (compact, sorted keys), with orjson:
    one result per event makes this answer large, and orjson writes it ~10x faster than the
    standard library. Non-ASCII text comes out as UTF-8 instead of ``\\u`` escapes (the same
    JSON). A string orjson refuses (a lone surrogate, from a ``\\ud800`` escape in the request)
    falls back to the standard library, which escapes it.
    """
    try:
        data = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return kit_web.json_ok(body, status=status, headers=headers)
    return web.Response(body=data, status=status, content_type="application/json", charset="utf-8", headers=headers)


async def _produce_all(request: web.Request, kind: str, topic: str, schema: str,
                       events: list[_Event]) -> list[dict[str, Any]]:
    """Produce every good event and dead-letter every bad one as one batch; answer after the acks.

    The batch is encoded in one pass, handed to the producer in event order and awaited as a
    whole (one future, woken once when the broker has answered for the last record). If the
    producer queue fills mid-batch, the events from there on are not produced: ``retry``.
    """
    cfg = request.app[CONFIG_KEY]
    producer = request.app[PRODUCER_KEY]
    codec = cfg.catalog.codec(schema)
    dlq_codec = cfg.catalog.codec("dead_letter")
    source = f"http:{request.path}"
    now = cfg.clock.now()
    good = [e for e in events if e.checked.record is not None]
    encoded = codec.encode_many([e.checked.record for e in good if e.checked.record is not None])
    for e, data in zip(good, encoded, strict=True):
        if isinstance(data, EncodeError):
            e.checked = Checked(None, [("$", f"cannot be encoded: {data}")])
        else:
            e.encoded = data
    records: list[tuple[str, bytes | None, bytes | str | None]] = []
    for e in events:
        rec = e.checked.record
        if rec is not None:
            records.append((topic, e.encoded, rec["household_id"]))
        else:
            first_field = e.checked.problems[0][0]
            reason = "; ".join(f"{f}: {m}" for f, m in e.checked.problems)
            dl = dead_letter_record(source, error_kind="invalid", reason=reason, value=e.raw_bytes(), field=first_field,
                                    failed_at=now)
            records.append((cfg.topic_dlq, dlq_codec.encode(dl), None))
    queued, acks = producer.produce_batch(records)
    failures = await acks  # already resolved when nothing was queued
    results: list[dict[str, Any]] = []
    counts: Counter[tuple[str, str]] = Counter()
    for i, e in enumerate(events):
        good_event = e.checked.record is not None
        if i >= queued:
            status = "retry"
        elif failures and i in failures:
            log.error("delivery failed", extra={"kind": kind, "index": e.index, "error": str(failures[i])})
            status = "failed"
        else:
            status = "accepted" if good_event else "rejected"
        e.status = status
        if good_event:
            results.append({"index": e.index, "id": e.ident, "status": status})
            counts[(status, "-")] += 1
        else:
            problems = e.checked.problems
            results.append({"index": e.index, "id": e.ident, "status": status,
                            "errors": [{"field": f, "message": m} for f, m in problems]})
            counts[(status, problems[0][0] if problems else "-")] += 1
    for (status, reason), n in counts.items():
        cfg.metrics.events.labels(kind, status, reason).inc(n)
    cfg.metrics.queue.set(producer.queue_length())
    return results


# --------------------------------------------------------------------------- postback


async def postback(request: web.Request) -> web.Response:
    """A partner's server-to-server postback: one conversion (or reversal) as query or form
    parameters, authenticated by the partner's token (``Authorization: Bearer`` or ``token``)."""
    params: dict[str, str] = dict(request.query)
    if request.method == "POST":
        form = await request.post()
        params.update({k: str(v) for k, v in form.items()})
    token = params.pop("token", None)
    verifier = request.app[kit_web.VERIFIER_KEY]
    principal = verifier.verify(token if token else bearer_token(request.headers.get("Authorization")))
    principal.require("partner")
    if principal.tenant_type != "partner" or not principal.tenant_id:
        raise ApiError(403, "a postback token must name its partner (tenant_type=partner)")
    cfg = request.app[CONFIG_KEY]
    obj: dict[str, Any] = {k: v for k, v in params.items() if k != "timestamp"}
    if "timestamp" in params and "event_time" not in params:
        obj["event_time"] = params["timestamp"]
    unknown = sorted(set(params) - POSTBACK_PARAMS)
    checked = check_conversion(obj, now=cfg.clock.now(), max_future=cfg.max_future, source="postback",
                               partner_id=principal.tenant_id, allowed_sources=("postback",))
    if unknown:
        # check_conversion already names unknown fields; keep the partner's own parameter names
        checked = Checked(None, [p for p in checked.problems if p[0] not in unknown] + [(u, "unknown parameter") for u in unknown])
    event = _Event(0, json.dumps(params).encode(), checked, params.get("conversion_id"), obj=params)
    producer = request.app[PRODUCER_KEY]
    if producer.queue_length() + 1 > cfg.queue_max:
        cfg.metrics.throttled.labels("postback").inc()
        raise ApiError(429, "the ingest queue is full; retry later", headers={"Retry-After": str(cfg.retry_after_s)})
    await _produce_all(request, "postback", cfg.topic_conversions, "conversion", [event])
    if event.status == "rejected":
        raise validation_error(checked.problems, "the postback has invalid parameters")
    if event.status == "retry":
        raise ApiError(429, "the ingest queue is full; retry later", headers={"Retry-After": str(cfg.retry_after_s)})
    if event.status == "failed":
        raise ApiError(503, "the event could not be stored; retry", headers={"Retry-After": str(cfg.retry_after_s)})
    return kit_web.json_ok({"status": "accepted", "conversion_id": event.ident})


# --------------------------------------------------------------------------- IVT reports


async def post_ivt_report(request: web.Request) -> web.Response:
    """A verification vendor's report of invalid impressions, found after they were counted.

    Validated whole: one bad field refuses the report (422, every bad field by JSON path) and
    nothing is written. A good one is produced to the IVT reports topic (key: report id) and
    answered 202 once the broker acknowledged it; metering decides it later (applied whole or
    refused whole, once per report id) and publishes that on ``billing.ivt_report_outcomes``.
    The ingest never reads the ledger, so a report claiming more than was counted is accepted
    here and refused there.
    """
    principal = kit_web.principal(request)
    principal.require("verification", "ingest")
    cfg = request.app[CONFIG_KEY]
    now = cfg.clock.now()
    if request.content_type != "application/json":
        raise ApiError(415, "send the report as one JSON object (application/json)")
    body = await request.read()
    try:
        raw = loads_strict(body, text=False)
    except JsonRefused as exc:
        raise validation_error([("$", _refusal(exc))], "the report could not be read") from None
    checked = check_ivt_report(raw, now=now, max_future=cfg.max_future, vendor=principal.subject)
    record = checked.record
    if record is not None:
        try:
            encoded = cfg.catalog.codec("ivt_report").encode(record)
        except EncodeError as exc:  # e.g. a lone surrogate in an id: no UTF-8, so no Avro string
            checked, record = Checked(None, [("$", f"cannot be encoded: {exc}")]), None
    if record is None:
        problems = checked.problems
        cfg.metrics.events.labels("ivt_report", "rejected", problems[0][0] if problems else "-").inc()
        raise validation_error(problems, "the IVT report has invalid fields; nothing of it was accepted")
    producer = request.app[PRODUCER_KEY]
    retry = {"Retry-After": str(cfg.retry_after_s)}
    if producer.queue_length() + 1 > cfg.queue_max:
        cfg.metrics.throttled.labels("ivt_report").inc()
        raise ApiError(429, "the ingest queue is full; retry later", headers=retry)
    report_id = record["report_id"]
    queued, acks = producer.produce_batch([(cfg.topic_ivt_reports, encoded, report_id)])
    if queued == 0:
        cfg.metrics.events.labels("ivt_report", "retry", "-").inc()
        raise ApiError(429, "the ingest queue is full; retry later", headers=retry)
    failures = await acks
    cfg.metrics.queue.set(producer.queue_length())
    if failures:
        log.error("delivery failed", extra={"kind": "ivt_report", "report_id": report_id, "error": str(failures[0])})
        cfg.metrics.events.labels("ivt_report", "failed", "-").inc()
        raise ApiError(503, "the report could not be stored; retry (a report id applies once)", headers=retry)
    cfg.metrics.events.labels("ivt_report", "accepted", "-").inc()
    return kit_web.json_ok({"report_id": report_id, "entries": len(record["entries"]), "status": "accepted"}, status=202)
