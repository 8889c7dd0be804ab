"""The spend API (port 8083): running totals for dashboards, tenant-scoped.

It holds no state of its own: a background thread reads the compacted ``billing.running_totals``
topic (read_committed, from the beginning) into a dict keyed by ``<contract>/<period>`` and
wakes the server-sent-event streams on every change. Any number of API processes can run.

* ``GET /v1/spend?contract_id=&advertiser_id=&period_key=&status=`` — the current totals.
* ``GET /v1/spend/stream`` (same filters) — ``event: total`` with every matching total now,
  then one per change, as they are committed.

An advertiser token sees only its own advertiser's totals (a filter naming another advertiser
answers an empty list, never someone else's data; ``contract_id`` naming another advertiser's
contract answers 404, like every Tally API for an id outside the caller's scope); partner
tokens are refused (spend is advertiser data); internal roles see everything.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

from aiohttp import web
from aiohttp_sse import sse_response
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from tally_billing.bounds import ID_LEN_MAX
from tally_billing.money import format_decimal
from tally_kit import web as kweb
from tally_kit.auth import Principal, TokenVerifier
from tally_kit.db import dumps
from tally_kit.inputs import check_lengths
from tally_kit.openapi import add_openapi
from tally_kit.problems import ApiError, validation_error
from tally_streams.avro import SchemaCatalog
from tally_streams.kafka import consumer_config
from tally_streams.records import RunningTotalRecord

from .openapi_spec import spec
from .settings import MeteringSettings

log = logging.getLogger("tally.metering.api")

READ_ROLES = ("admin", "ops", "approver", "finance", "advertiser")
FILTERS = ("contract_id", "advertiser_id", "period_key", "status")


class TotalsView:
    """The latest running total per key, fed by a consumer thread."""

    def __init__(self, bootstrap: str, topic: str, catalog: SchemaCatalog) -> None:
        self.topic = topic
        self.codec = catalog.codec("running_total", record=RunningTotalRecord)
        self.totals: dict[str, RunningTotalRecord] = {}
        self.caught_up = threading.Event()
        self._stop = threading.Event()
        self._subscribers: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[RunningTotalRecord]]] = set()
        self._lock = threading.Lock()
        # A short broker wait: an idle fetch is answered as soon as a commit moves the stable offset anyway.
        self._consumer = Consumer(consumer_config(bootstrap, "tally-metering-api", **{"enable.partition.eof": True,
                                                                                      "fetch.wait.max.ms": 100}))
        self._thread = threading.Thread(target=self._run, name="running-totals-reader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        md = self._consumer.list_topics(self.topic, timeout=10)
        parts = list(md.topics[self.topic].partitions)
        self._consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in parts])
        pending = set(parts)
        while not self._stop.is_set():
            # consume(n, timeout) waits the whole timeout unless n records arrive, which would delay every
            # update by up to the timeout; poll() returns on the first record, then take what is queued.
            first = self._consumer.poll(0.5)
            if first is None:
                continue
            for m in [first, *self._consumer.consume(1000, 0)]:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(m.partition())
                        if not pending:
                            self.caught_up.set()
                    continue
                try:
                    rec = self.codec.decode(m.value())
                except Exception:
                    log.exception("undecodable running total", extra={"offset": m.offset()})
                    continue
                self.totals[rec["total_id"]] = rec
                with self._lock:
                    subscribers = list(self._subscribers)
                for loop, queue in subscribers:
                    loop.call_soon_threadsafe(_offer, queue, rec)
        self._consumer.close()

    def subscribe(self) -> asyncio.Queue[RunningTotalRecord]:
        queue: asyncio.Queue[RunningTotalRecord] = asyncio.Queue(maxsize=10_000)
        with self._lock:
            self._subscribers.add((asyncio.get_running_loop(), queue))
        return queue

    def unsubscribe(self, queue: asyncio.Queue[RunningTotalRecord]) -> None:
        with self._lock:
            self._subscribers = {s for s in self._subscribers if s[1] is not queue}


def _offer(queue: asyncio.Queue[RunningTotalRecord], rec: RunningTotalRecord) -> None:
    if queue.full():  # a stalled client loses the oldest update, never blocks the reader
        queue.get_nowait()
    queue.put_nowait(rec)


VIEW_KEY: web.AppKey[TotalsView] = web.AppKey("metering_totals_view", TotalsView)


def _filters(request: web.Request, who: Principal) -> dict[str, str]:
    who.require(*READ_ROLES)
    if who.tenant_type == "partner":
        raise ApiError(403, "spend is advertiser data; partners read their payout statements")
    unknown = sorted(set(request.query) - set(FILTERS))
    if unknown:
        raise validation_error([(k, "unknown filter; use " + ", ".join(FILTERS)) for k in unknown])
    status = request.query.get("status")
    if status is not None and status not in {"open", "closed"}:
        raise validation_error([("status", "must be open or closed")])
    too_long = check_lengths({k: request.query.get(k) for k in FILTERS}, ID_LEN_MAX, prefix="")
    if too_long:
        raise validation_error(too_long, "invalid query parameters")
    filters = {k: v for k, v in request.query.items() if k in FILTERS}
    _contract_in_scope(request.app[VIEW_KEY], who, filters.get("contract_id"))
    return filters


def _contract_in_scope(view: TotalsView, who: Principal, contract_id: str | None) -> None:
    """404 for a contract whose totals belong to another advertiser, as every Tally API answers
    for an id outside the caller's scope. The spend API knows a contract only by its totals, so
    one with none yet is an empty list for everyone (its id alone reveals nothing)."""
    if contract_id is None or not who.is_tenant:
        return
    of_contract = [r for r in list(view.totals.values()) if r["contract_id"] == contract_id]
    if of_contract and not any(who.sees_advertiser(r["advertiser_id"]) for r in of_contract):
        raise ApiError(404, "contract not found")


def _visible(rec: RunningTotalRecord, who: Principal, filters: dict[str, str]) -> bool:
    if not who.sees_advertiser(rec["advertiser_id"]):
        return False
    return all(str(rec.get(k)) == v for k, v in filters.items())


def _plain(value: Any) -> Any:
    """Exact decimals as plain strings without the schema's trailing zeros (12.345, not 12.345000000000)."""
    if isinstance(value, Decimal):
        return format_decimal(value, trailing_zeros=False)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _public(rec: RunningTotalRecord) -> dict[str, Any]:
    """A total as JSON-ready data: amounts are decimal strings, never floats."""
    out = _plain(rec)
    assert isinstance(out, dict)
    return out


async def list_spend(request: web.Request) -> web.Response:
    who = kweb.principal(request)
    filters = _filters(request, who)
    view = request.app[VIEW_KEY]
    items = sorted((_public(r) for r in list(view.totals.values()) if _visible(r, who, filters)),
                   key=lambda r: (r["contract_id"], r["period_key"]))
    return kweb.json_ok({"items": items, "count": len(items)})


async def stream_spend(request: web.Request) -> web.StreamResponse:
    who = kweb.principal(request)
    filters = _filters(request, who)
    view = request.app[VIEW_KEY]
    queue = view.subscribe()
    try:
        async with sse_response(request) as resp:
            for rec in sorted(list(view.totals.values()), key=lambda r: r["total_id"]):
                if _visible(rec, who, filters):
                    await resp.send(dumps(_public(rec)), event="total", id=rec["total_id"])
            while resp.is_connected():
                rec = await queue.get()
                if _visible(rec, who, filters):
                    await resp.send(dumps(_public(rec)), event="total", id=rec["total_id"])
            return resp
    finally:
        view.unsubscribe(queue)


def create_api(settings: MeteringSettings, *, verifier: TokenVerifier | None = None,
               catalog: SchemaCatalog | None = None) -> web.Application:
    app = kweb.create_app("metering", verifier=verifier or TokenVerifier.from_env())
    view = TotalsView(settings.kafka_bootstrap, settings.metering_topic_running_totals, catalog or SchemaCatalog.load())
    app[VIEW_KEY] = view

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        view.start()
        yield
        await asyncio.to_thread(view.stop)

    async def caught_up(app: web.Application) -> None:
        if not app[VIEW_KEY].caught_up.is_set():
            raise RuntimeError("still reading the running totals topic")

    app.cleanup_ctx.append(lifecycle)
    kweb.add_readiness_check(app, caught_up)
    app.router.add_get("/v1/spend", list_spend)
    app.router.add_get("/v1/spend/stream", stream_spend)
    add_openapi(app, spec())
    return app


def serve(settings: MeteringSettings, stop: threading.Event) -> None:
    async def main() -> None:
        runner = web.AppRunner(create_api(settings))
        await runner.setup()
        site = web.TCPSite(runner, settings.metering_host, settings.metering_port)
        await site.start()
        log.info("spend API listening", extra={"port": settings.metering_port})
        try:
            while not stop.is_set():
                await asyncio.sleep(0.2)
        finally:
            await runner.cleanup()

    asyncio.run(main())
