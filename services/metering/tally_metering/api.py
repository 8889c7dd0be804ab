"""The spend API (port 8083): running totals for dashboards, tenant-scoped.

It holds no state of its own: a background thread reads the compacted ``billing.running_totals``
topic (read_committed, from the beginning) into a dict keyed by ``<contract>/<period>`` and
wakes the server-sent-event streams on every change. Any number of API processes can run.

* ``GET /v1/spend?contract_id=&advertiser_id=&period_key=&status=`` — the current totals.
* ``GET /v1/spend/stream`` (same filters) — ``event: total`` with every matching total now,
  then one per change, as they are committed.
* ``GET /v1/earnings?contract_id=&partner_id=&period_key=&status=`` — a partner's own payouts
  per contract and period, from the same totals (``running_total`` v2 ``payouts``): provisional
  while the period is open, with when they were computed and when the period closes.

An advertiser token sees only its own advertiser's totals (a filter naming another advertiser
answers an empty list, never someone else's data; ``contract_id`` naming another advertiser's
contract answers 404, like every Tally API for an id outside the caller's scope); partner
tokens are refused (spend is advertiser data); internal roles see everything. The partners'
payouts in a total are partner data: an advertiser's spend answers leave them out.

Earnings are the other way round: a partner token sees only its own payout lines (never the
advertiser's prices, lines or counts, nor another partner), advertiser tokens are refused, and
internal roles see every partner's (or one's, with ``partner_id``). Metering knows which partners
a contract pays only from its totals' payout lines, so a contract is a partner's once one of them
pays it: ``contract_id`` naming a contract whose totals pay other partners only answers 404, like
every Tally API for an id outside the caller's scope; one that pays no one yet (or has no totals)
is an empty list for every partner, which tells nothing of it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from aiohttp import web
from aiohttp_sse import sse_response
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from tally_billing.bounds import ID_LEN_MAX
from tally_billing.money import exact, format_decimal
from tally_billing.periods import PeriodKind, close_time, is_period_key, period_by_key
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
EARNINGS_ROLES = ("admin", "ops", "approver", "finance", "partner")
EARNINGS_FILTERS = ("contract_id", "partner_id", "period_key", "status")


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


def _query(request: web.Request, names: tuple[str, ...], *, period_key_checked: bool = False) -> dict[str, str]:
    """The query's filters among ``names``: an unknown one is a 422 of its own; a ``status``
    other than open/closed, a value over the id bound and (when checked) a ``period_key`` no
    period has are a 422 naming each."""
    unknown = sorted(set(request.query) - set(names))
    if unknown:
        raise validation_error([(k, "unknown filter; use " + ", ".join(names)) for k in unknown])
    problems = check_lengths({k: request.query.get(k) for k in names}, ID_LEN_MAX, prefix="")
    status = request.query.get("status")
    if status is not None and status not in {"open", "closed"}:
        problems.append(("status", "must be open or closed"))
    period_key = request.query.get("period_key")
    if period_key_checked and period_key is not None and not is_period_key(period_key):
        problems.append(("period_key", "must be a month (2026-03) or an ISO week (2026-W10)"))
    if problems:
        raise validation_error(sorted(set(problems)), "invalid query parameters")
    return {k: v for k, v in request.query.items() if k in names}


def _filters(request: web.Request, who: Principal) -> dict[str, str]:
    who.require(*READ_ROLES)
    if who.tenant_type == "partner":
        raise ApiError(403, "spend is advertiser data; partners read their payout statements")
    filters = _query(request, FILTERS)
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


def _public(rec: RunningTotalRecord, who: Principal) -> dict[str, Any]:
    """A total as JSON-ready data: amounts are decimal strings, never floats. What partners are
    paid is not the advertiser's to see (it would give away the platform's margin)."""
    out = _plain(rec)
    assert isinstance(out, dict)
    if who.is_tenant:
        out.pop("payouts", None)
    return out


async def list_spend(request: web.Request) -> web.Response:
    who = kweb.principal(request)
    filters = _filters(request, who)
    view = request.app[VIEW_KEY]
    items = sorted((_public(r, who) for r in list(view.totals.values()) if _visible(r, who, filters)),
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
                    await resp.send(dumps(_public(rec, who)), event="total", id=rec["total_id"])
            while resp.is_connected():
                rec = await queue.get()
                if _visible(rec, who, filters):
                    await resp.send(dumps(_public(rec, who)), event="total", id=rec["total_id"])
            return resp
    finally:
        view.unsubscribe(queue)


def _earnings_filters(request: web.Request, who: Principal) -> dict[str, str]:
    who.require(*EARNINGS_ROLES)
    if who.tenant_type == "advertiser":
        raise ApiError(403, "earnings are partner data; advertisers read their spend")
    return _query(request, EARNINGS_FILTERS, period_key_checked=True)


def _partners_by_contract(totals: list[RunningTotalRecord]) -> dict[str, set[str]]:
    """The partners each contract has paid, in any of its periods (what metering knows of them)."""
    out: dict[str, set[str]] = {}
    for r in totals:
        out.setdefault(r["contract_id"], set()).update(p["partner_id"] for p in r.get("payouts") or [])
    return out


def _closes_at(rec: RunningTotalRecord, grace: timedelta) -> datetime:
    """When metering closes the period (its end plus the grace for late events), as the worker decides it."""
    try:
        return close_time(period_by_key(rec["period_key"], rec["time_zone"], PeriodKind(rec["period_kind"])), grace)
    except (ValueError, KeyError):  # a key or zone metering never writes: the end the record gives, plus the grace
        return rec["period_end"] + grace


def earning(rec: RunningTotalRecord, partner_id: str, grace: timedelta) -> dict[str, Any]:
    """One partner's earnings in one contract's period: its own payout lines of the total and
    their exact sum. Nothing of the advertiser's side (prices, lines, counts, caps) and nothing of
    another partner."""
    own = sorted((p for p in rec.get("payouts") or [] if p["partner_id"] == partner_id),
                 key=lambda p: (p["event_type"], p["contract_version"]))
    lines = [{"contract_version": p["contract_version"], "event_type": p["event_type"], "quantity": p["quantity"],
              "amount_exact": p["amount_exact"]} for p in own]
    with exact():
        amount = sum((p["amount_exact"] for p in own), Decimal(0))
    out = _plain({
        "contract_id": rec["contract_id"], "partner_id": partner_id, "contract_type": rec["contract_type"],
        "currency": rec["currency"], "time_zone": rec["time_zone"], "period_kind": rec["period_kind"],
        "period_key": rec["period_key"], "period_start": rec["period_start"], "period_end": rec["period_end"],
        "closes_at": _closes_at(rec, grace), "status": rec["status"], "provisional": rec["status"] == "open",
        "conversions": sum(p["quantity"] for p in own), "amount_exact": amount, "lines": lines,
        "latest_event_time": rec["latest_event_time"], "updated_at": rec["updated_at"],
    })
    assert isinstance(out, dict)
    return out


GRACE_KEY: web.AppKey[timedelta] = web.AppKey("metering_close_grace", timedelta)


async def list_earnings(request: web.Request) -> web.Response:
    who = kweb.principal(request)
    filters = _earnings_filters(request, who)
    totals = list(request.app[VIEW_KEY].totals.values())
    paid = _partners_by_contract(totals)
    mine = who.tenant_id if who.tenant_type == "partner" else None
    contract_id = filters.get("contract_id")
    if mine is not None and contract_id is not None and paid.get(contract_id) and mine not in paid[contract_id]:
        raise ApiError(404, "contract not found")
    wanted = filters.get("partner_id")
    grace = request.app[GRACE_KEY]
    items = []
    for rec in totals:
        if any(str(rec.get(k)) != filters[k] for k in ("contract_id", "period_key", "status") if k in filters):
            continue
        for partner in sorted(paid.get(rec["contract_id"], ())):
            if (mine is None or partner == mine) and (wanted is None or partner == wanted):
                items.append(earning(rec, partner, grace))
    items.sort(key=lambda e: (e["contract_id"], e["period_key"], e["partner_id"]))
    return kweb.json_ok({"items": items, "count": len(items)})


def create_api(settings: MeteringSettings, *, verifier: TokenVerifier | None = None,
               catalog: SchemaCatalog | None = None) -> web.Application:
    app = kweb.create_app("metering", verifier=verifier or TokenVerifier.from_env())
    view = TotalsView(settings.kafka_bootstrap, settings.metering_topic_running_totals, catalog or SchemaCatalog.load())
    app[VIEW_KEY] = view
    app[GRACE_KEY] = timedelta(seconds=settings.metering_grace_seconds)

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
    app.router.add_get("/v1/earnings", list_earnings)
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
