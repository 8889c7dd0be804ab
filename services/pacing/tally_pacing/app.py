"""The faust application: agents over running totals, budget alerts and terms; tables; the API.

``build(settings)`` wires everything and returns the app; nothing is created at import time.
Agents are decode → pure step (``tally_pacing.state``) → table writes (and an alert) — at
least once: faust commits offsets after the records were processed, and every table value is
an absolute total under its natural key, so a record processed twice writes the same values.
The tables live in memory (``store="memory://"``) and are rebuilt from their changelog topics
(``<app id>-<table>-changelog``, compacted, partitioned like the inputs) when a worker starts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import faust
from aiohttp import web
from faust.serializers import codecs
from faust.transport.drivers import TRANSPORTS
from faust.types import TP, EventT, StreamT
from mode import Service

from tally_kit.auth import TokenVerifier
from tally_kit.clock import Clock
from tally_kit.settings import Settings
from tally_streams.avro import DecodeError, SchemaCatalog
from tally_streams.faust_codec import register_avro_codecs
from tally_streams.kafka import dead_letter_record

from .api import create_api
from .metrics import PacingMetrics
from .state import (
    Flight,
    InvalidRecord,
    PacingRules,
    PeriodState,
    TotalUpdate,
    alert_due,
    apply_total,
    budget_value,
    evaluate,
    flight_from_terms,
    hour_key,
    hour_value,
    newer,
    next_alert,
)

log = logging.getLogger("tally.pacing")

TRANSPORTS.aliases.setdefault("tallykafka", "tally_pacing.transport:Transport")


def rules_of(settings: Settings) -> PacingRules:
    return PacingRules(curve=settings.pacing_curve, tolerance_pct=settings.pacing_tolerance_pct,
                       under_alert_pct=settings.pacing_under_alert_pct,
                       alert_min_elapsed_pct=settings.pacing_alert_min_elapsed_pct)


class TableStore:
    """The API's view of the faust tables (``tally_pacing.api.PacingStore``)."""

    def __init__(self, app: faust.App, hourly: Any, periods: Any, budget: Any, flights: Any) -> None:
        self.app, self.hourly, self._periods, self._budget, self._flights = app, hourly, periods, budget, flights

    def periods(self) -> Iterable[PeriodState]:
        return [PeriodState.from_json(v) for v in list(self._periods.values())]

    def period(self, total_id: str) -> PeriodState | None:
        v = self._periods.get(total_id)
        return None if v is None else PeriodState.from_json(v)

    def hour(self, key: str) -> Mapping[str, Any] | None:
        v = self.hourly.get(key)
        return None if v is None else dict(v)

    def flight(self, contract_id: str) -> Flight | None:
        v = self._flights.get(contract_id)
        return None if v is None else Flight.from_json(v)

    def budget(self, total_id: str) -> Mapping[str, Any] | None:
        v = self._budget.get(total_id)
        return None if v is None else dict(v)

    def not_ready(self) -> str | None:
        if self.app.in_recovery:
            return "recovering tables from their changelogs"
        if self.app.rebalancing:
            return "the consumer group is rebalancing"
        return None


class ApiServer(Service):
    """The aiohttp API (``tally_kit.web``: auth, problems, /metrics) in the worker's event loop;
    faust starts it after table recovery (``App.web_server``)."""

    def __init__(self, make: Any, host: str, port: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._make, self.host, self.port = make, host, port
        self._runner: web.AppRunner | None = None

    async def on_start(self) -> None:
        self._runner = web.AppRunner(self._make(), access_log=None)  # requests are counted in /metrics
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        log.info("pacing API listening on %s:%s", self.host, self.port)

    async def on_stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class Built:
    app: faust.App
    store: TableStore
    metrics: PacingMetrics


def build(settings: Settings, clock: Clock, *, catalog: SchemaCatalog | None = None,
          metrics: PacingMetrics | None = None, verifier: TokenVerifier | None = None) -> Built:
    catalog = catalog or SchemaCatalog.load()
    register_avro_codecs(catalog)
    metrics = metrics or PacingMetrics()
    rules = rules_of(settings)
    brokers = ";".join(f"tallykafka://{h.strip()}" for h in settings.kafka_bootstrap.split(",") if h.strip())
    app = faust.App(
        settings.pacing_app_id, broker=brokers, store="memory://", autodiscover=False,
        datadir=settings.pacing_datadir, topic_partitions=settings.pacing_partitions, table_standby_replicas=0,
        consumer_auto_offset_reset="earliest", broker_commit_interval=1.0, web_enabled=True,
        broker_session_timeout=float(settings.pacing_session_timeout_s), broker_heartbeat_interval=1.0,
        key_serializer="raw", value_serializer="json",
        # Tally's producer settings (tally_streams.kafka.producer_config): acks=all, lz4, and a 5 ms
        # linger so that changelog records leave in batches rather than a request each
        producer_linger=0.005, producer_compression_type="lz4", producer_acks=-1,
    )
    json_table = {"schema": faust.Schema(key_type=str, key_serializer="json", value_serializer="json"),
                  "partitions": settings.pacing_partitions}
    hourly = app.Table("hourly", help="cumulative totals per (contract, period, UTC hour)", **json_table)
    periods = app.Table("periods", help="latest total, hour range and alert state per (contract, period)", **json_table)
    budget = app.Table("budget", help="budget-alert thresholds reached per (contract, period)", **json_table)
    flights = app.Table("flights", help="each contract's flight", **json_table)
    store = TableStore(app, hourly, periods, budget, flights)

    # Values are read raw and decoded in the agents with the registered faust Avro codecs: with a
    # value_serializer on the topic, faust 0.15.3 raises the decode error inside the stream (its
    # Cython conductor does not call Topic.on_value_decode_error), the agent crashes and is
    # restarted past the record — lost, where Tally dead-letters it with its reason.
    totals_topic = app.topic(settings.pacing_topic_running_totals, key_serializer="raw", value_serializer="raw")
    budget_topic = app.topic(settings.pacing_topic_budget_alerts, key_serializer="raw", value_serializer="raw")
    terms_topic = app.topic(settings.pacing_topic_terms, key_serializer="raw", value_serializer="raw")
    alerts_topic = app.topic(settings.pacing_topic_pacing_alerts, key_serializer="raw",
                             value_serializer="avro:pacing_alert")
    dlq_topic = app.topic(settings.pacing_topic_dlq, key_serializer="raw", value_serializer="avro:dead_letter")
    kinds = {settings.pacing_topic_running_totals: "running_total", settings.pacing_topic_budget_alerts: "budget_alert",
             settings.pacing_topic_terms: "terms"}
    positions: dict[tuple[str, int], int] = {}

    async def dead_letter(message: Any, kind: str, reason: str, field: str | None = None) -> None:
        rec = dead_letter_record(message.topic, error_kind=kind, reason=reason, key=message.key, value=message.value,
                                 partition=message.partition, offset=message.offset, field=field)
        await dlq_topic.send(key=message.key, value=rec)
        metrics.records.labels(kinds.get(message.topic, message.topic), "dead_letter").inc()
        log.warning("dead-lettered %s[%s]@%s: %s", message.topic, message.partition, message.offset, reason)

    async def decoded(event: EventT, schema: str) -> dict[str, Any] | None:
        """The event's value through the ``avro:<schema>`` faust codec; None once dead-lettered."""
        raw = event.message.value
        if raw is None:
            await dead_letter(event.message, "truncated", "no value (null record)")
            return None
        try:
            value = codecs.get_codec(f"avro:{schema}").loads(raw)
        except DecodeError as exc:
            await dead_letter(event.message, exc.kind, exc.reason)
            return None
        assert isinstance(value, dict)
        return value

    def _seen(event: EventT) -> None:
        m = event.message
        positions[(m.topic, m.partition)] = m.offset + 1

    @app.agent(totals_topic)
    async def on_totals(stream: StreamT[Any]) -> AsyncIterator[None]:
        async for event in stream.events():
            _seen(event)
            rec = await decoded(event, "running_total")
            if rec is None:
                continue
            try:
                u = TotalUpdate.from_record(rec)
            except InvalidRecord as exc:
                await dead_letter(event.message, "invalid", str(exc), field=exc.field)
                continue
            hk = hour_key(u.total_id, u.hour)
            if newer(hourly.get(hk), u):
                hourly[hk] = hour_value(u)
            raw = periods.get(u.total_id)
            prev = None if raw is None else PeriodState.from_json(raw)
            state = apply_total(prev, u)
            stale = prev is not None and prev.updated_at > u.updated_at
            # alerts judge the total as of when metering computed it, so a backlog replayed later
            # tells the same story it would have told live (the API evaluates at the clock)
            alert = None
            if not stale and alert_due(state, u.updated_at, settings.pacing_alert_interval_s):
                raw_flight = flights.get(u.contract_id)
                flight = None if raw_flight is None else Flight.from_json(raw_flight)
                state, alert = next_alert(state, evaluate(state, flight, u.updated_at, rules), rules, clock.now())
            if alert is not None:
                # acknowledged before the state that remembers it is written: an alert is never lost
                await (await alerts_topic.send(key=state.contract_id.encode(), value=alert))
                metrics.alerts.labels(alert["state"]).inc()
            periods[u.total_id] = state.to_json()
            metrics.records.labels("running_total", "stale" if stale else "applied").inc()
            metrics.update_seconds.observe(max(0.0, (datetime.now(UTC) - u.updated_at).total_seconds()))
            yield None

    @app.agent(budget_topic)
    async def on_budget_alerts(stream: StreamT[Any]) -> AsyncIterator[None]:
        async for event in stream.events():
            _seen(event)
            rec = await decoded(event, "budget_alert")
            if rec is None:
                continue
            try:
                key = f"{rec['contract_id']}/{rec['period_key']}"
                budget[key] = budget_value(budget.get(key), rec)
            except InvalidRecord as exc:
                await dead_letter(event.message, "invalid", str(exc), field=exc.field)
                continue
            metrics.records.labels("budget_alert", "applied").inc()
            yield None

    @app.agent(terms_topic)
    async def on_terms(stream: StreamT[Any]) -> AsyncIterator[None]:
        async for event in stream.events():
            _seen(event)
            rec = await decoded(event, "contract_terms")
            if rec is None:
                continue
            try:
                f = flight_from_terms(rec)
            except InvalidRecord as exc:
                await dead_letter(event.message, "invalid", str(exc), field=exc.field)
                continue
            cid = str(rec["contract_id"])
            held = flights.get(cid)
            if held is not None and int(held["revision"]) > f.revision:
                metrics.records.labels("terms", "stale").inc()
            else:
                flights[cid] = f.to_json()
                metrics.records.labels("terms", "applied").inc()
            yield None

    @app.timer(5.0)
    async def export_gauges() -> None:
        for (topic, partition), pos in list(positions.items()):
            try:
                high = app.consumer.highwater(TP(topic, partition))
            except (KeyError, AssertionError):  # not assigned any more
                high = None
            if high is not None:
                metrics.lag.labels(topic, str(partition)).set(max(0, high - pos))
        for name, table in (("hourly", hourly), ("periods", periods), ("budget", budget), ("flights", flights)):
            metrics.entries.labels(name).set(len(table))

    app.web_server(ApiServer(lambda: create_api(store, clock, rules, verifier=verifier, registry=metrics.registry),
                             settings.pacing_host, settings.pacing_port))
    return Built(app, store, metrics)


def run(settings: Settings, clock: Clock) -> None:
    """Run the worker (and its API) until SIGTERM/SIGINT; faust's Worker owns the event loop."""
    from faust.worker import Worker

    from tally_streams.kafka import ensure_topics
    from tally_streams.topics import TopicSpec

    # its own dead-letter topic, as metering creates its internal ones (the broker does not
    # auto-create topics); faust creates the table changelogs itself
    ensure_topics(settings.kafka_bootstrap, [TopicSpec(settings.pacing_topic_dlq, "as source", "dead_letter",
                                                       partitions=1, retention_ms=-1)])
    built = build(settings, clock)
    started = time.monotonic()
    log.info("starting pacing worker", extra={"app_id": settings.pacing_app_id})
    Worker(built.app, loglevel="info", quiet=True, redirect_stdouts=False).execute_from_commandline()
    log.info("pacing worker stopped after %.0f s", time.monotonic() - started)
