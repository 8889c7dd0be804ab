"""The faust application: agents over running totals, budget alerts and terms; tables; the API.

``build(settings)`` wires everything and returns the app; nothing is created at import time.
Agents are decode → pure step (``tally_pacing.state``) → table writes (and an alert) — at
least once: faust commits offsets after the records were processed, and every table value is
an absolute total under its natural key, so a record processed twice writes the same values.
The tables live in memory (``store="memory://"``) and are rebuilt from their changelog topics
(``<app id>-<table>-changelog``, compacted, partitioned like the inputs) when a worker starts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import faust
from aiohttp import web
from faust.serializers import codecs
from faust.streams import Stream
from faust.transport.drivers import TRANSPORTS
from faust.types import TP, EventT, StreamT
from mode import Service

from tally_billing.usage import to_micros
from tally_kit.auth import TokenVerifier
from tally_kit.clock import Clock
from tally_streams.avro import DecodeError, SchemaCatalog
from tally_streams.faust_codec import FaustAvroCodec, register_avro_codecs
from tally_streams.kafka import dead_letter_record, topic_replication
from tally_streams.records import BudgetAlertRecord, ContractTermsRecord, RunningTotalRecord

from .api import create_api
from .metrics import PacingMetrics
from .settings import PacingSettings
from .state import (
    Flight,
    InvalidRecord,
    PacingRules,
    PeriodState,
    PeriodStep,
    TotalUpdate,
    budget_value,
    evaluate,
    flight_from_terms,
    fold_period,
    hours_to_write,
    newer,
    next_alert,
    stalled,
)

log = logging.getLogger("tally.pacing")
R = TypeVar("R", bound=Mapping[str, Any])  # a decoded record (tally_streams.records)

TRANSPORTS.aliases.setdefault("tallykafka", "tally_pacing.transport:Transport")

#: running totals are processed in batches of at most this many records, or what arrived
#: within ``TOTALS_BATCH_WITHIN_S`` (each total is absolute: only the last per key is written)
TOTALS_BATCH_MAX = 10_000
TOTALS_BATCH_WITHIN_S = 0.25


class RoutedTable(faust.Table):
    """faust's ``Table``, whose writes name the source partition they belong to and leave in
    batches.

    faust sends a table write to the changelog partition of the *current event*
    (``Collection.partition_for_key``: ``current_event().message.partition``). In a batch from
    ``stream.take_events`` the current event is whichever was buffered last, so a write for a
    record of another partition would land in the wrong changelog partition — and be restored
    by the wrong worker. ``put`` and ``put_many`` name the record's own partition; a plain
    ``table[key] = value`` inside ``stream.events()`` keeps faust's routing.

    ``put_many`` is the batch path (issue 17: faust's per-write path — ``send_soon``, its
    producer buffer sending one record per event-loop turn, a sensor call and a task each — was
    a third of the worker's CPU at 5,000 updates/s). It sets the values in the table's store
    as ``Table.__setitem__`` does, serializes each changelog record with the changelog topic's
    own schema (what faust's recovery reads back), and hands each changelog partition's records
    to aiokafka as whole batches: one produce request carries hundreds of writes.
    """

    _pinned: int | None = None

    def put(self, tp: TP, key: str, value: Any) -> None:
        self._verify_source_topic_partitions(tp.topic)  # the check faust's routing makes
        self._pinned = tp.partition
        try:
            self[key] = value
        finally:
            self._pinned = None

    async def put_many(self, source_topic: str, writes: Iterable[tuple[int, str, Any]]) -> list[asyncio.Future[Any]]:
        """Write ``(partition, key, value)``s; the futures resolve when the broker acknowledged
        them (the changelog records of one partition keep the order given)."""
        self._verify_source_topic_partitions(source_topic)
        topic = self.changelog_topic
        name = topic.get_topic_name()
        producer = cast(Any, self.app.producer)._ensure_producer()  # faust's aiokafka AIOKafkaProducer
        store = self.data
        batches: dict[int, Any] = {}
        sent: list[asyncio.Future[Any]] = []
        for partition, key, value in writes:
            store[key] = value
            k, _ = topic.prepare_key(key, None)
            v, _ = topic.prepare_value(value, None)
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = producer.create_batch()
            if batch.append(key=k, value=v, timestamp=None) is None:  # full: send it, start the next
                sent.append(await producer.send_batch(batch, name, partition=partition))
                batch = batches[partition] = producer.create_batch()
                batch.append(key=k, value=v, timestamp=None)
        for partition, batch in batches.items():
            sent.append(await producer.send_batch(batch, name, partition=partition))
        return sent

    def find(self, key: str) -> Any:
        """The value under ``key``, else None — without ``get``'s KeyError (a missing key raised
        through faust's dict layers costs more than the lookup itself)."""
        return self[key] if key in self else None

    def partition_for_key(self, key: Any) -> int | None:
        if self._pinned is not None:
            return self._pinned
        return super().partition_for_key(key)


def rules_of(settings: PacingSettings) -> PacingRules:
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


def build(settings: PacingSettings, clock: Clock, *, catalog: SchemaCatalog | None = None,
          metrics: PacingMetrics | None = None, verifier: TokenVerifier | None = None) -> Built:
    catalog = catalog or SchemaCatalog.load()
    register_avro_codecs(catalog)
    metrics = metrics or PacingMetrics()
    rules = rules_of(settings)
    # faust creates its table changelogs itself, with its own replication factor (default 1): the
    # one every service's own topics take (3 and 2 on a cluster), so a broker loss loses no changelog
    replication, min_insync = topic_replication()
    brokers = ";".join(f"tallykafka://{h.strip()}" for h in settings.kafka_bootstrap.split(",") if h.strip())
    app = faust.App(
        settings.pacing_app_id, broker=brokers, store="memory://", autodiscover=False,
        datadir=settings.pacing_datadir, topic_partitions=settings.pacing_partitions, table_standby_replicas=0,
        consumer_auto_offset_reset="earliest", broker_commit_interval=1.0, web_enabled=True,
        broker_session_timeout=float(settings.pacing_session_timeout_s), broker_heartbeat_interval=1.0,
        key_serializer="raw", value_serializer="json", Table=RoutedTable, topic_replication_factor=replication,
        # Tally's producer settings (tally_streams.kafka.producer_config): acks=all, lz4, and a 5 ms
        # linger so that changelog records leave in batches rather than a request each
        producer_linger=0.005, producer_compression_type="lz4", producer_acks=-1,
        # RoutedTable.put_many hands a changelog partition's writes to aiokafka as whole batches:
        # 256 KiB (before lz4) carries ~500 periods values, so a batch of totals is a request or two
        producer_max_batch_size=256 * 1024,
    )
    # faust's conductor stops fetching while more than max_messages (100) table writes wait in its
    # producer buffer, logging a warning per fetched record: a batch writes up to two per period
    app.producer.buffer.max_messages = 2 * TOTALS_BATCH_MAX + 100
    json_table: dict[str, Any] = {"schema": faust.Schema(key_type=str, key_serializer="json", value_serializer="json"),
                  "partitions": settings.pacing_partitions,
                  "extra_topic_configs": {"min.insync.replicas": str(min_insync)}}
    hourly = cast(RoutedTable, app.Table("hourly", help="cumulative totals per (contract, period, UTC hour)",
                                         **json_table))
    periods = cast(RoutedTable, app.Table("periods", help="latest total, hour range and alert state per "
                                          "(contract, period)", **json_table))
    budget = app.Table("budget", help="budget-alert thresholds reached per (contract, period)", **json_table)
    flights = cast(RoutedTable, app.Table("flights", help="each contract's flight", **json_table))
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
    newest_seen = [0]  # the newest updated_at (µs) of a total processed, for caught_up()

    async def dead_letter(message: Any, kind: str, reason: str, field: str | None = None) -> None:
        rec = dead_letter_record(message.topic, error_kind=kind, reason=reason, key=message.key, value=message.value,
                                 partition=message.partition, offset=message.offset, field=field)
        await dlq_topic.send(key=message.key, value=rec)
        metrics.records.labels(kinds.get(message.topic, message.topic), "dead_letter").inc()
        log.warning("dead-lettered %s[%s]@%s: %s", message.topic, message.partition, message.offset, reason)

    totals_codec = cast(FaustAvroCodec, codecs.get_codec("avro:running_total")).avro

    async def decoded(event: EventT, schema: str, record: type[R]) -> R | None:
        """The event's value through the ``avro:<schema>`` faust codec, typed as its record
        (``tally_streams.records``); None once dead-lettered. Running totals, the hot path, are
        read plain (``AvroCodec.decode_plain``, for ``TotalUpdate.from_plain``)."""
        raw = event.message.value
        if raw is None:
            await dead_letter(event.message, "truncated", "no value (null record)")
            return None
        try:
            if schema == "running_total":
                value = totals_codec.decode_plain(raw)
            else:
                value = codecs.get_codec(f"avro:{schema}").loads(raw)
        except DecodeError as exc:
            await dead_letter(event.message, exc.kind, exc.reason)
            return None
        assert isinstance(value, dict)
        return cast(R, value)

    #: the PeriodState of each ``periods`` value this worker wrote, by total: a batch decodes a
    #: held value again only when it is not the one written here (restored, or the timer's)
    states: dict[str, tuple[Any, PeriodState]] = {}

    def decoded_period(total_id: str, raw: Any) -> PeriodState:
        held = states.get(total_id)
        if held is not None and held[0] is raw:
            return held[1]
        return PeriodState.from_json(raw)

    def _seen(event: EventT) -> None:
        m = event.message
        positions[(m.topic, m.partition)] = m.offset + 1

    async def apply_totals(events: list[EventT]) -> None:
        """One batch of running totals: decoded and typed per record, then per (partition, total)
        folded in offset order (``fold_period``: the values record-by-record processing gives)
        and written once; an unchanged value (a redelivery) is not written again."""
        groups: dict[tuple[TP, str], list[TotalUpdate]] = {}
        for event in events:
            _seen(event)
            rec = await decoded(event, "running_total", RunningTotalRecord)
            if rec is None:
                continue
            try:
                u = TotalUpdate.from_plain(rec)
            except InvalidRecord as exc:
                await dead_letter(event.message, "invalid", str(exc), field=exc.field)
                continue
            groups.setdefault((event.message.tp, u.total_id), []).append(u)
        now = clock.now()
        steps: list[PeriodStep] = []
        # per total: the partition of its last group, its stored value before the batch, its state now
        # (a key found on two partitions — a producer that changed its partitioner — is folded once)
        folded: dict[str, tuple[TP, Any, PeriodState]] = {}
        hourly_writes: list[tuple[int, str, Any]] = []
        for (tp, total_id), updates in groups.items():
            prev: PeriodState | None
            if total_id in folded:
                _, raw, prev = folded[total_id]
            else:
                raw = periods.find(total_id)
                prev = None if raw is None else decoded_period(total_id, raw)
            raw_flight = flights.find(updates[0].contract_id)
            step = fold_period(prev, updates, None if raw_flight is None else Flight.from_json(raw_flight), rules,
                               settings.pacing_alert_interval_s, now)
            for hk, value in hours_to_write(prev, updates, step.state).items():
                held = hourly.find(hk)
                if newer(held, value) and value != held:
                    hourly_writes.append((tp.partition, hk, value))
            steps.append(step)
            folded[total_id] = (tp, raw, step.state)
        # every alert acknowledged before the state that remembers it is written: never lost
        sent = [await alerts_topic.send(key=a["contract_id"].encode(), value=a) for step in steps for a in step.alerts]
        # ... and every hourly write acknowledged before the period states: a period state that
        # survives a SIGKILL implies the hours before it did (state.hours_to_write leaves the newest
        # hour to the period state). One round trip per batch.
        sent += await hourly.put_many(settings.pacing_topic_running_totals, hourly_writes)
        if sent:
            await asyncio.gather(*sent)
        for step in steps:
            for a in step.alerts:
                metrics.alerts.labels(a["state"]).inc()
        period_writes: list[tuple[int, str, Any]] = []
        for total_id, (tp, raw, state) in folded.items():
            # with the partition of its source, for the writes of the stalled-delivery timer
            value = {**state.to_json(), "partition": tp.partition}
            if value != raw:
                period_writes.append((tp.partition, total_id, value))
                states[total_id] = (value, state)
            newest_seen[0] = max(newest_seen[0], value["updated_at_us"])
        # not awaited: the next batch's hourly acknowledgements (or faust's commit, which flushes the
        # producer) come after these are sent, and a redelivered batch rewrites the same values
        await periods.put_many(settings.pacing_topic_running_totals, period_writes)
        written = datetime.now(UTC)
        for updates, step in zip(groups.values(), steps, strict=True):
            stale = sum(step.stale)
            metrics.records.labels("running_total", "applied").inc(len(updates) - stale)
            if stale:
                metrics.records.labels("running_total", "stale").inc(stale)
            for u in updates:
                metrics.update_seconds.observe(max(0.0, (written - u.updated_at).total_seconds()))

    @app.agent(totals_topic)
    async def on_totals(stream: StreamT[Any]) -> AsyncIterator[None]:
        # take_events is faust.Stream's (StreamT does not declare it)
        async for events in cast(Stream[Any], stream).take_events(TOTALS_BATCH_MAX, within=TOTALS_BATCH_WITHIN_S):
            await apply_totals(list(events))
            yield None

    @app.agent(budget_topic)
    async def on_budget_alerts(stream: StreamT[Any]) -> AsyncIterator[None]:
        async for event in stream.events():
            _seen(event)
            rec = await decoded(event, "budget_alert", BudgetAlertRecord)
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
            rec = await decoded(event, "contract_terms", ContractTermsRecord)
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

    def caught_up() -> bool:
        """Whether the totals read are live: a total computed within the alert interval was
        processed, or every totals partition was read to its end (a worker replaying a backlog
        after a restart must not judge periods on spend it has not read yet)."""
        if app.in_recovery or app.rebalancing:
            return False
        if to_micros(clock.now()) - newest_seen[0] < max(1, settings.pacing_alert_interval_s) * 1_000_000:
            return True
        # a partition nothing was read from since the start counts as read: the timer first fires an
        # interval after the start, by when a backlog is being read (and then has a position)
        for (topic, partition), pos in list(positions.items()):
            if topic != settings.pacing_topic_running_totals:
                continue
            try:
                high = app.consumer.highwater(TP(topic, partition))
            except (KeyError, AssertionError):  # not assigned any more
                continue
            # (a transaction's commit marker takes the offset after its last record: one more is read)
            if high is not None and high - pos > 1:
                return False
        return True

    @app.timer(float(max(1, settings.pacing_alert_interval_s)))
    async def stalled_delivery() -> None:
        """Alert on periods whose delivery stopped: no total arrives to be judged, so the timer
        judges them at this service's clock (``under_pacing`` as the expected spend moves on)."""
        if not caught_up():
            return
        now = clock.now()
        for total_id, raw in list(periods.items()):
            if raw.get("partition") is None or not stalled(raw, now, settings.pacing_alert_interval_s):
                continue
            p = PeriodState.from_json(raw)
            raw_flight = flights.find(p.contract_id)
            state, alert = next_alert(p, evaluate(p, None if raw_flight is None else Flight.from_json(raw_flight),
                                                  now, rules), rules, now)
            if alert is None:
                continue  # nothing is written: the next tick judges it again (stalled periods are few)
            # acknowledged before the state that remembers it is written, as on the totals path
            await (await alerts_topic.send(key=p.contract_id.encode(), value=alert))
            metrics.alerts.labels(alert["state"]).inc()
            current = periods.find(total_id)
            if current != raw:  # a batch of totals wrote the period while the alert was on its way
                now_held = PeriodState.from_json(current)
                if now_held.alert_seq != p.alert_seq:
                    continue  # ... and told a state change itself: that one stands
                state = replace(now_held, alert_state=state.alert_state, alert_seq=state.alert_seq,
                                evaluated_at=state.evaluated_at)
            periods.put(TP(settings.pacing_topic_running_totals, int(raw["partition"])), total_id,
                        {**state.to_json(), "partition": raw["partition"]})

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


def run(settings: PacingSettings, clock: Clock) -> None:
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
