"""The metering worker: one consume → transform → produce → commit loop, one Kafka transaction per batch.

Stage one (per impressions partition): decode, mark repeated impression ids, and count the
batch's impressions as usage per (advertiser, campaign, 15-minute event-time bucket, ledger
class) — no contract is consulted. Attributed conversions are forwarded as they are. Both go
to the internal deltas topic, partitioned by advertiser.

Stage two (per deltas partition, so one owner per advertiser and its contracts): add usage to
the ledger and to the period totals of the contracts it reaches under today's terms (usage no
contract covers waits in the ledger), dedupe conversions, re-derive a contract's periods from
the ledger whenever its terms change (a late IO, a backdated amendment or termination), close
periods whose end + grace has passed on the clock, turn every change to a closed period into
adjustments (the difference from what it billed), emit running totals (throttled) and budget
alerts (once per threshold).

Every effect of a batch — outputs, the dedupe and totals changelog records, and the consumed
offsets of all three input topics — commits in ONE transaction, so a crash at any point leaves
either all of a batch or none of it. See the README for why this is exact.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from tally_billing.money import exact
from tally_billing.periods import Period, close_time, next_period, period_by_key
from tally_billing.usage import BUCKET_US, BUCKETS_PER_DAY
from tally_streams import topics as catalog_topics
from tally_streams.avro import AvroCodec, DecodeError, SchemaCatalog
from tally_streams.kafka import consumer_config, dead_letter_record, ensure_topics, producer_config
from tally_streams.topics import TopicSpec

from . import domain as d
from .clock import Clock
from .codec import ImpressionDecoder
from .contracts import Contract, ContractBook, from_micros, to_micros
from .metrics import WorkerMetrics
from .state import DAY_US, ContractState, ConversionState, DedupeStore, PeriodState, TotalsStore

log = logging.getLogger("tally.metering.worker")

_CLOSE_CHECK_S = 0.2
_CPM_LINES = ("cpm_impressions", "cpm_over_delivery")


class ResetRequired(Exception):
    """The transaction failed or was fenced: drop in-memory state and start over from the changelogs."""


def _where(m: Message) -> tuple[str, int, int]:
    """topic, partition and offset of a consumed record (never None for a record)."""
    topic, partition, offset = m.topic(), m.partition(), m.offset()
    assert topic is not None and partition is not None and offset is not None
    return topic, partition, offset


_offset: Callable[[Message], int] = Message.offset  # type: ignore[assignment]


def _value(m: Message) -> bytes:
    v = m.value()
    return v if v is not None else b""


def _key(m: Message) -> bytes:
    k = m.key()
    return k if k is not None else b""


def delta_partition(advertiser_id: str, partitions: int) -> int:
    """Stage two's partition of an advertiser: it owns the advertiser's usage and every contract of it."""
    return zlib.crc32(advertiser_id.encode()) % partitions


@dataclass
class _Usage:
    """Stage-one aggregate of one batch of one impressions partition for one advertiser."""

    advertiser_id: str
    partition: int
    first_offset: int
    first_id: str
    last_offset: int = 0
    #: (campaign, bucket, ledger class) -> [count, newest event time µs]
    rows: dict[tuple[str, int, str], list[int]] = field(default_factory=dict)
    #: (campaign, UTC day) -> offset of the last record of that day in the batch
    days: dict[tuple[str, int], int] = field(default_factory=dict)


def _read_to_end(consumer: Consumer, partitions: list[TopicPartition], on_record: Callable[[Message], None],
                 timeout_s: float = 120.0) -> int:
    """Read ``partitions`` from the beginning to their end (partition EOF); returns the record count."""
    if not partitions:
        return 0
    consumer.assign([TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in partitions])
    pending = {(tp.topic, tp.partition) for tp in partitions}
    deadline = time.monotonic() + timeout_s
    n = 0
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"changelog restore did not reach the end of {sorted(pending)} in {timeout_s}s")
        for m in consumer.consume(5000, 0.5):
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    pending.discard((m.topic(), m.partition()))
                    continue
                raise KafkaException(err)
            on_record(m)
            n += 1
    consumer.unassign()
    return n


class Worker:
    def __init__(self, settings: Any, clock: Clock, catalog: SchemaCatalog | None = None,
                 metrics: WorkerMetrics | None = None) -> None:
        self.s = settings
        self.clock = clock
        self.catalog = catalog or SchemaCatalog.load()
        self.metrics = metrics or WorkerMetrics()
        self.grace = timedelta(seconds=settings.metering_grace_seconds)
        self.horizon_us = settings.metering_dedupe_horizon_days * DAY_US
        self.rerate_horizon_us = settings.metering_rerate_horizon_days * DAY_US
        self.future_us = settings.metering_max_future_seconds * 1_000_000
        self.totals_interval_s = settings.metering_totals_interval_ms / 1000
        self.batch_wait_s = settings.metering_batch_wait_ms / 1000
        self.t_imp = settings.metering_topic_impressions
        self.t_att = settings.metering_topic_attributed
        self.t_ivt = settings.metering_topic_ivt_reports
        self.t_deltas = settings.metering_topic_deltas
        self.n_deltas = settings.metering_delta_partitions
        self.imp_decoder = ImpressionDecoder(self.catalog)
        self.att_codec: AvroCodec = self.catalog.codec("attributed_conversion")
        self.ivt_codec: AvroCodec = self.catalog.codec("ivt_report")
        self.terms_codec = self.catalog.codec("contract_terms")
        self.codecs = {n: self.catalog.codec(n) for n in ("running_total", "period_closed", "adjustment", "budget_alert",
                                                           "dead_letter", "ivt_report_outcome")}
        self.book = ContractBook()
        self.dedupe: dict[int, DedupeStore] = {}
        self.stores: dict[int, TotalsStore] = {}
        #: next offset committed by us, per input (topic, partition), to tell whether held state is still current
        self.committed_by_us: dict[tuple[str, int], int] = {}
        self.last_published: dict[tuple[str, str], float] = {}
        self.dirty_totals: set[tuple[str, str]] = set()
        self.empty_checked: dict[str, str] = {}
        #: contracts whose terms changed since their periods were last derived (checked every step)
        self.terms_changed: set[str] = set()
        self._last_housekeeping = 0.0
        self._last_close_check = 0.0
        self._txn_open = False
        self.ready = threading.Event()

    # ------------------------------------------------------------------ setup

    def ensure_internal_topics(self) -> None:
        from confluent_kafka.admin import AdminClient

        md = AdminClient({"bootstrap.servers": self.s.kafka_bootstrap}).list_topics(timeout=10)
        if self.t_imp not in md.topics:
            raise RuntimeError(f"input topic {self.t_imp} does not exist")
        n_imp = len(md.topics[self.t_imp].partitions)
        ensure_topics(self.s.kafka_bootstrap, [
            catalog_topics.IVT_REPORTS.renamed(self.t_ivt),
            catalog_topics.IVT_REPORT_OUTCOMES.renamed(self.s.metering_topic_ivt_outcomes),
            TopicSpec(self.t_deltas, "contract id", "internal-json", partitions=self.n_deltas, retention_ms=7 * 86_400_000),
            TopicSpec(self.s.metering_topic_state, "state key", "internal-json", partitions=self.n_deltas, compacted=True),
            TopicSpec(self.s.metering_topic_dedupe, "event day", "internal-ids", partitions=n_imp,
                      retention_ms=self.s.metering_dedupe_horizon_days * 86_400_000 + 7 * 86_400_000),
            TopicSpec(self.s.metering_topic_dlq_impressions, "as source", "dead_letter", partitions=1, retention_ms=-1),
            TopicSpec(self.s.metering_topic_dlq_attributed, "as source", "dead_letter", partitions=1, retention_ms=-1),
        ])

    def _new_clients(self) -> None:
        s = self.s
        cfg = consumer_config(s.kafka_bootstrap, s.metering_group, **{
            "fetch.min.bytes": 1, "fetch.wait.max.ms": 100, "queued.max.messages.kbytes": 65536,
            "max.poll.interval.ms": 300_000, "partition.assignment.strategy": "range",
        })
        if s.metering_static_membership:
            cfg["group.instance.id"] = s.metering_worker_id
        self.consumer = Consumer(cfg)
        self.producer = Producer(producer_config(s.kafka_bootstrap, f"metering-{s.metering_worker_id}", **{
            "transactional.id": f"tally-metering-{s.metering_group}-{s.metering_worker_id}",
            "transaction.timeout.ms": s.metering_txn_timeout_ms, "message.timeout.ms": s.metering_txn_timeout_ms,
            "linger.ms": 10,
        }))
        self.producer.init_transactions(60)
        self.restorer = Consumer(consumer_config(s.kafka_bootstrap, f"{s.metering_group}-restore",
                                                 **{"enable.partition.eof": True}))
        self.terms_consumer = Consumer(consumer_config(s.kafka_bootstrap, f"{s.metering_group}-terms",
                                                       **{"enable.partition.eof": True}))

    def _close_clients(self) -> None:
        for closer in (getattr(self, "consumer", None), getattr(self, "restorer", None), getattr(self, "terms_consumer", None)):
            if closer is not None:
                try:
                    closer.close()
                except Exception:  # noqa: S110 - closing a client that may already be broken
                    pass

    # ------------------------------------------------------------------ terms

    def catch_up_terms(self) -> None:
        md = self.terms_consumer.list_topics(self.s.metering_topic_terms, timeout=10)
        parts = [TopicPartition(self.s.metering_topic_terms, p) for p in md.topics[self.s.metering_topic_terms].partitions]
        self.terms_consumer.assign([TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in parts])
        pending = {tp.partition for tp in parts}
        deadline = time.monotonic() + 60
        while pending and time.monotonic() < deadline:
            for m in self.terms_consumer.consume(1000, 0.5):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(m.partition())
                        continue
                    raise KafkaException(err)
                self._apply_terms(m)
        if pending:
            raise TimeoutError("contract terms not read to the end within 60 s")

    def poll_terms(self, timeout_s: float = 0.0) -> int:
        n = 0
        for m in self.terms_consumer.consume(1000, timeout_s):
            if m.error() is None:
                self._apply_terms(m)
                n += 1
        return n

    def _apply_terms(self, m: Message) -> None:
        try:
            rec = self.terms_codec.decode(m.value())
            if self.book.apply(rec):
                self.terms_changed.add(rec["contract_id"])
        except Exception:
            log.exception("unusable contract terms record", extra={"offset": m.offset(), "partition": m.partition()})

    def contract(self, contract_id: str, wait_s: float = 10.0) -> Contract | None:
        """The contract, polling the terms topic a while when it is not known yet."""
        c = self.book.get(contract_id)
        deadline = time.monotonic() + wait_s
        while c is None and time.monotonic() < deadline:
            self.poll_terms(0.2)
            c = self.book.get(contract_id)
        return c

    # ------------------------------------------------------------------ rebalance

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        committed = {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(partitions, timeout=60)}
        imp_restore, state_restore = [], []
        for tp in partitions:
            k = (tp.topic, tp.partition)
            current = self.committed_by_us.get(k) == committed.get(k) and k in self.committed_by_us
            if tp.topic == self.t_imp and not (current and tp.partition in self.dedupe):
                imp_restore.append(tp.partition)
            elif tp.topic == self.t_deltas and not (current and tp.partition in self.stores):
                state_restore.append(tp.partition)
        assigned = {(tp.topic, tp.partition) for tp in partitions}
        for p in list(self.dedupe):
            if (self.t_imp, p) not in assigned or p in imp_restore:
                del self.dedupe[p]
        for q in list(self.stores):
            if (self.t_deltas, q) not in assigned or q in state_restore:
                del self.stores[q]
        self.committed_by_us = {k: v for k, v in self.committed_by_us.items() if k in assigned}
        self._restore_dedupe(imp_restore)
        self._restore_state(state_restore)
        log.info("partitions assigned", extra={"worker": self.s.metering_worker_id, "partitions": sorted(f"{t}[{p}]" for t, p in assigned),
                                               "restored_dedupe": imp_restore, "restored_state": state_restore})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # State is kept: if the same partitions come back unchanged (committed offset equals ours)
        # it is still exact; otherwise _on_assign rebuilds it from the changelog.
        log.info("partitions revoked", extra={"worker": self.s.metering_worker_id, "count": len(partitions)})

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.committed_by_us.pop((tp.topic, tp.partition), None)
            if tp.topic == self.t_imp:
                self.dedupe.pop(tp.partition, None)
            elif tp.topic == self.t_deltas:
                self.stores.pop(tp.partition, None)

    def _restore_dedupe(self, partitions: list[int]) -> None:
        if not partitions:
            return
        cutoff_day = (to_micros(self.clock.now()) - self.horizon_us) // DAY_US
        stores = {p: DedupeStore() for p in partitions}

        def apply(m: Message) -> None:
            day = int(_key(m))
            if day >= cutoff_day:
                stores[_where(m)[1]].add(day, DedupeStore.decode(_value(m)))

        _read_to_end(self.restorer, [TopicPartition(self.s.metering_topic_dedupe, p) for p in partitions], apply)
        self.dedupe.update(stores)
        self.metrics.restores.labels("dedupe").inc(len(partitions))

    def _restore_state(self, partitions: list[int]) -> None:
        if not partitions:
            return
        stores = {q: TotalsStore(q) for q in partitions}

        def apply(m: Message) -> None:
            stores[_where(m)[1]].apply_changelog(_key(m).decode(), m.value())

        _read_to_end(self.restorer, [TopicPartition(self.s.metering_topic_state, q) for q in partitions], apply)
        self.stores.update(stores)
        self.empty_checked.clear()  # re-derived from the restored state on the next step
        self.terms_changed.update(self.book.contracts)  # the next step compares each contract's revision
        for q in partitions:
            for key in stores[q].periods:
                self.last_published.pop(key, None)
        self.metrics.restores.labels("state").inc(len(partitions))

    # ------------------------------------------------------------------ the loop

    def run(self, stop: threading.Event) -> None:
        self.ensure_internal_topics()
        while not stop.is_set():
            self._new_clients()
            try:
                self.catch_up_terms()
                self.consumer.subscribe([self.t_imp, self.t_att, self.t_ivt, self.t_deltas], on_assign=self._on_assign,
                                        on_revoke=self._on_revoke, on_lost=self._on_lost)
                self.ready.set()
                while not stop.is_set():
                    self.step()
                return
            except ResetRequired:
                log.warning("transaction failed; rebuilding state from the changelogs")
                self.dedupe.clear()
                self.stores.clear()
                self.committed_by_us.clear()
                self.empty_checked.clear()
                self.dirty_totals.clear()
                self.terms_changed.update(self.book.contracts)
            finally:
                self._close_clients()

    def _begin(self) -> None:
        if not self._txn_open:
            self.producer.begin_transaction()
            self._txn_open = True

    def _produce(self, topic: str, value: bytes | None, key: str | bytes, partition: int | None = None) -> None:
        self._begin()
        while True:
            try:
                if partition is None:
                    self.producer.produce(topic, value=value, key=key)
                else:
                    self.producer.produce(topic, value=value, key=key, partition=partition)
                return
            except BufferError:
                self.producer.poll(0.05)

    def _emit(self, kind: str, topic: str, record: dict[str, Any], key: str | bytes) -> None:
        self._produce(topic, self.codecs[kind].encode(record), key)
        self.metrics.outputs.labels(kind).inc()

    def step(self) -> None:
        self.poll_terms()
        msgs = self.consumer.consume(self.s.metering_batch_max, self.batch_wait_s)
        started = time.perf_counter()
        now = self.clock.now()
        now_us = to_micros(now)
        # Records grouped per (topic, partition), each group in offset order as consumed; a
        # partition's records mostly come in runs, so the key is built once per run.
        groups: dict[tuple[str, int], list[Message]] = {}
        group: list[Message] = []
        last_topic, last_partition = "", -1
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(err)
            topic, partition = m.topic(), m.partition()
            if partition != last_partition or topic != last_topic:
                key = (topic, partition)
                group = groups.setdefault(key, [])  # type: ignore[arg-type]
                last_topic, last_partition = topic, partition  # type: ignore[assignment]
            group.append(m)
        offsets: dict[tuple[str, int], int] = {}
        by_topic: dict[str, list[Message]] = {self.t_imp: [], self.t_att: [], self.t_ivt: [], self.t_deltas: []}
        imp_groups: list[tuple[int, list[Message]]] = []
        for (topic, partition), group in groups.items():
            offsets[(topic, partition)] = max(map(_offset, group)) + 1
            if topic == self.t_imp:
                imp_groups.append((partition, group))
            else:
                by_topic[topic].extend(group)
        try:
            if imp_groups:
                self.stage_one_impressions(imp_groups, now_us)
            if by_topic[self.t_att]:
                self.stage_one_conversions(by_topic[self.t_att], now_us)
            if by_topic[self.t_ivt]:
                self.stage_one_ivt_reports(by_topic[self.t_ivt])
            if by_topic[self.t_deltas]:
                self.stage_two_deltas(by_topic[self.t_deltas], now)
            if self.terms_changed:
                self.rederive_changed_terms(now)
            self.housekeeping(now)
            self._flush_changelogs()
            if offsets:
                self._begin()  # a batch that produced nothing (e.g. only uncovered campaigns) still commits
            if self._txn_open:
                if offsets:
                    tps = [TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())]
                    self.producer.send_offsets_to_transaction(tps, self.consumer.consumer_group_metadata(), 60)
                self.producer.commit_transaction(60)
                self._txn_open = False
                self.committed_by_us.update(offsets)
        except KafkaException as exc:
            log.warning("transaction failed", extra={"error": str(exc)})
            self._abort()
            raise ResetRequired from exc
        except Exception:
            self._abort()
            raise
        if msgs:
            self.metrics.batch_seconds.observe(time.perf_counter() - started)

    def _abort(self) -> None:
        if self._txn_open:
            try:
                self.producer.abort_transaction(30)
            except KafkaException:
                log.exception("abort failed")
            self._txn_open = False

    def _flush_changelogs(self) -> None:
        for q, store in self.stores.items():
            for key, value in store.take_dirty().items():
                self._produce(self.s.metering_topic_state, value, key, partition=q)  # None: a tombstone

    # ------------------------------------------------------------------ stage one

    def stage_one_impressions(self, groups: list[tuple[int, list[Message]]], now_us: int) -> None:
        """``groups``: the batch's impressions per partition, each in offset order."""
        # one usage delta per advertiser *per source partition*: its src names one partition's
        # offset range, which the delta id (adjustment ids) and the ledger's source offsets come from
        all_usage: list[dict[str, _Usage]] = []
        new_ids: dict[int, dict[int, list[str]]] = {}
        batch_seen: set[str] = set()
        lo, hi = now_us - self.horizon_us, now_us + self.future_us
        classes, duplicate = d.LEDGER_CLASSES, d.LEDGER_DUPLICATE
        received = dupes = 0
        for partition, msgs in groups:
            store = self.dedupe.get(partition)
            if store is None:  # assigned without restore would be a bug: never count blind
                raise RuntimeError(f"no dedupe state for {self.t_imp}[{partition}]")
            seen = store.seen
            ids_by_day = new_ids.setdefault(partition, {})
            usage: dict[str, _Usage] = {}
            all_usage.append(usage)
            # Only the six fields used, per batch (compiled reader; fastavro for anything unusual).
            decoded = self.imp_decoder.decode_fields([m.value() for m in msgs])
            for m, rec in zip(msgs, decoded, strict=True):
                if rec.__class__ is not tuple:
                    assert isinstance(rec, DecodeError)
                    self._dead_letter(self.s.metering_topic_dlq_impressions, m, rec.kind, rec.reason)
                    continue
                iid, t, advertiser, campaign, ivt, source = rec
                if t > hi or t < lo:
                    why = "future_event_time" if t > hi else "beyond_dedupe_horizon"
                    self._dead_letter(self.s.metering_topic_dlq_impressions, m, why,
                                      f"event_time {from_micros(t).isoformat()} is outside what metering can count exactly",
                                      field="event_time")
                    continue
                offset: int = m.offset()  # type: ignore[assignment]
                u = usage.get(advertiser)
                if u is None:
                    u = usage[advertiser] = _Usage(advertiser, partition, offset, iid)
                u.last_offset = offset
                received += 1
                day = t // DAY_US
                if iid in seen or iid in batch_seen:
                    cls = duplicate
                    dupes += 1
                else:
                    batch_seen.add(iid)
                    day_ids = ids_by_day.get(day)
                    if day_ids is None:
                        day_ids = ids_by_day[day] = []
                    day_ids.append(iid)
                    cls = classes[(ivt, source)]
                key = (campaign, t // BUCKET_US, cls)
                row = u.rows.get(key)
                if row is None:
                    u.rows[key] = [1, t]
                else:
                    row[0] += 1
                    if t > row[1]:
                        row[1] = t
                u.days[(campaign, day)] = offset
        for u in (x for usage in all_usage for x in usage.values()):
            self._produce_delta({
                "kind": "usage", "advertiser_id": u.advertiser_id,
                "src": {"topic": self.t_imp, "partition": u.partition, "first": u.first_offset, "last": u.last_offset,
                        "first_id": u.first_id},
                "rows": [[c, b, cls, n, newest] for (c, b, cls), (n, newest) in u.rows.items()],
                "days": [[c, day, last + 1] for (c, day), last in u.days.items()],
            }, u.advertiser_id)
        for partition, days in new_ids.items():
            store = self.dedupe[partition]
            for day, ids in days.items():
                store.add(day, ids)
                self._produce(self.s.metering_topic_dedupe, DedupeStore.encode(ids), str(day), partition=partition)
        if received:
            self.metrics.events.labels("impression", d.RECEIVED).inc(received)
        if dupes:
            self.metrics.events.labels("impression", d.DUPLICATE).inc(dupes)

    def stage_one_conversions(self, msgs: list[Message], now_us: int) -> None:
        for m in msgs:
            try:
                rec = self.att_codec.decode(m.value())
            except DecodeError as exc:
                self._dead_letter(self.s.metering_topic_dlq_attributed, m, exc.kind, exc.reason)
                continue
            if to_micros(rec["event_time"]) > now_us + self.future_us:
                self._dead_letter(self.s.metering_topic_dlq_attributed, m, "future_event_time",
                                  "event_time is ahead of the clock", field="event_time")
                continue
            self._produce_delta({
                "kind": "cpa",
                "src": {"topic": m.topic(), "partition": m.partition(), "offset": m.offset()},
                "rec": _conversion_json(rec),
            }, rec["advertiser_id"])

    def stage_one_ivt_reports(self, msgs: list[Message]) -> None:
        """IVT reports go, whole, to the stage-two partition that owns their advertiser's ledger."""
        for m in msgs:
            try:
                rec = self.ivt_codec.decode(m.value())
            except DecodeError as exc:
                self._dead_letter(self.s.metering_topic_dlq_impressions, m, exc.kind, exc.reason)
                continue
            self._produce_delta({
                "kind": "ivt",
                "src": {"topic": m.topic(), "partition": m.partition(), "offset": m.offset()},
                "rec": {"report_id": rec["report_id"], "vendor": rec["vendor"], "advertiser_id": rec["advertiser_id"],
                        "entries": [[e["campaign_id"], to_micros(e["window_start"]), to_micros(e["window_end"]),
                                     e["ivt_class"], e["measurement_source"], e["count"]] for e in rec["entries"]]},
            }, rec["advertiser_id"])

    def _produce_delta(self, payload: dict[str, Any], advertiser_id: str) -> None:
        self._produce(self.t_deltas, json.dumps(payload, separators=(",", ":")).encode(), advertiser_id,
                      partition=delta_partition(advertiser_id, self.n_deltas))

    def _dead_letter(self, topic: str, m: Message, kind: str, reason: str, field: str | None = None) -> None:
        src, partition, offset = _where(m)
        rec = dead_letter_record(src, error_kind=kind, reason=reason, key=m.key(), value=m.value(),
                                 partition=partition, offset=offset, field=field, failed_at=self.clock.now())
        self._emit("dead_letter", topic, rec, _key(m))

    # ------------------------------------------------------------------ stage two

    def stage_two_deltas(self, msgs: list[Message], now: datetime) -> None:
        for m in msgs:
            partition = _where(m)[1]
            store = self.stores.get(partition)
            if store is None:
                raise RuntimeError(f"no totals state for {self.t_deltas}[{partition}]")
            payload = json.loads(_value(m))
            if payload["kind"] == "usage":
                self._apply_usage(store, payload, now)
            elif payload["kind"] == "cpa":
                self._apply_cpa(store, payload, now)
            elif payload["kind"] == "ivt":
                self._apply_ivt(store, payload, now)
            else:  # a delta of the pre-ledger worker: drain metering.deltas with it before upgrading
                raise RuntimeError(f"unknown delta kind {payload['kind']!r} at {self.t_deltas}[{partition}]")

    def _apply_usage(self, store: TotalsStore, payload: dict[str, Any], now: datetime) -> None:
        """Add one usage delta to the ledger, and to the totals of every period it reaches under
        today's terms; a closed period it reaches is re-rated into ``late_event`` adjustments."""
        advertiser, src = payload["advertiser_id"], payload["src"]
        source = f"{src['topic']}{d.SEP}{src['partition']}"
        next_offset: dict[tuple[str, int], int] = {}
        for campaign, day, nxt in payload["days"]:
            u = store.usage_day(advertiser, campaign, day)
            u.include_offset(source, nxt)
            next_offset[(campaign, day)] = nxt
        changed: dict[tuple[str, str], tuple[Contract, PeriodState]] = {}
        waiting = 0
        newest_us = 0
        route_of = self.book.route
        for campaign, bucket, cls, n, newest in payload["rows"]:
            day, i = divmod(bucket, BUCKETS_PER_DAY)
            u = store.usage_day(advertiser, campaign, day)
            u.add(i, cls, n)
            if newest > u.max_event_us:
                u.max_event_us = newest
            store.mark(u)
            route = route_of(advertiser, campaign, bucket * BUCKET_US)
            if route is None:
                waiting += n
                continue
            entry = changed.get(route.key)
            if entry is None:
                ps = store.period(*route.key)
                if ps.closed:
                    self._ensure_billed(store, route.contract, ps)
                entry = changed[route.key] = (route.contract, ps)
            tot = entry[1].totals
            d.classify(tot, cls, n, route)
            if newest > tot.max_event_us:
                tot.max_event_us = newest
            newest_us = max(newest_us, newest)
            nxt = next_offset[(campaign, day)]
            if nxt > tot.offsets.get(source, -1):
                tot.offsets[source] = nxt
        if waiting:
            self.metrics.events.labels("impression", "no_contract").inc(waiting)
        if newest_us:
            self.metrics.event_to_total_seconds.observe(max(0.0, (to_micros(now) - newest_us) / 1e6))
        delta_id = f"{src['topic']}:{src['partition']}:{src['first']}-{src['last']}"
        for contract, ps in changed.values():
            store.mark(ps)
            self.dirty_totals.add((ps.contract_id, ps.period_key))
            if ps.closed:
                self._rerate_closed(store, contract, ps, now, kind="late_event", id_part=delta_id,
                                    source_event_id=src["first_id"], topic=src["topic"], partition=src["partition"],
                                    offset=src["first"],
                                    reason=f"impressions of {ps.period_key} arrived after it closed "
                                           f"({src['topic']}[{src['partition']}]@{src['first']}..{src['last']})")
            else:
                self._check_alerts(store, contract, ps, now)

    def _apply_ivt(self, store: TotalsStore, payload: dict[str, Any], now: datetime) -> None:
        """Apply one IVT report whole, or refuse it whole: each entry moves ``count`` impressions of
        its window from valid to IVT usage (the window's latest buckets first). Every period it
        reaches is re-rated: open ones get a lower running total, closed ones ``ivt_credit``
        adjustments at the marginal price (tiers and caps re-rated, so under a binding cap the
        credit is zero)."""
        rec, src = payload["rec"], payload["src"]
        report_id, adv = rec["report_id"], rec["advertiser_id"]
        outcome: dict[str, Any] = {"report_id": report_id, "advertiser_id": adv, "vendor": rec["vendor"],
                                   "status": "applied", "reason": None, "campaign_id": None, "window_start": None,
                                   "window_end": None, "credited": 0, "decided_at": now}
        if report_id in store.ivt_reports:
            self._emit("ivt_report_outcome", self.s.metering_topic_ivt_outcomes, {**outcome, "status": "duplicate"},
                       report_id)
            return
        plan, refusal = d.plan_ivt_credit(store.usage, adv, rec["entries"],
                                          not_before_us=to_micros(now) - self.rerate_horizon_us)
        if refusal is not None:
            k, reason = refusal
            campaign, start_us, end_us = rec["entries"][k][:3]
            store.decide_ivt_report(report_id, "refused")
            self._emit("ivt_report_outcome", self.s.metering_topic_ivt_outcomes, {
                **outcome, "status": "refused", "reason": reason, "campaign_id": campaign,
                "window_start": from_micros(start_us), "window_end": from_micros(end_us)}, report_id)
            return
        changed: dict[tuple[str, str], tuple[Contract, PeriodState]] = {}
        for campaign, bucket, valid_cls, ivt_cls, n in plan:
            day, i = divmod(bucket, BUCKETS_PER_DAY)
            u = store.usage_day(adv, campaign, day)
            u.add(i, valid_cls, -n)
            u.add(i, ivt_cls, n)
            store.mark(u)
            route = self.book.route(adv, campaign, bucket * BUCKET_US)
            if route is None:
                continue  # not billed to anyone yet: the ledger alone changes
            entry = changed.get(route.key)
            if entry is None:
                ps = store.period(*route.key)
                if ps.closed:
                    self._ensure_billed(store, route.contract, ps)
                entry = changed[route.key] = (route.contract, ps)
            d.classify(entry[1].totals, valid_cls, -n, route)
            d.classify(entry[1].totals, ivt_cls, n, route)
        for contract, ps in changed.values():
            store.mark(ps)
            self.dirty_totals.add((ps.contract_id, ps.period_key))
            if ps.closed:
                self._rerate_closed(store, contract, ps, now, kind="ivt_credit", id_part=f"ivt:{report_id}",
                                    source_event_id=report_id, topic=src["topic"], partition=src["partition"],
                                    offset=src["offset"],
                                    reason=f"IVT report {report_id} from {rec['vendor']} found invalid impressions "
                                           f"of {ps.period_key} after it closed")
            else:
                self._check_alerts(store, contract, ps, now)
        credited = sum(n for *_, n in plan)
        store.decide_ivt_report(report_id, "applied")
        self.metrics.events.labels("ivt_report", "applied").inc()
        self._emit("ivt_report_outcome", self.s.metering_topic_ivt_outcomes, {**outcome, "credited": credited}, report_id)

    def _ensure_billed(self, store: TotalsStore, contract: Contract, ps: PeriodState) -> None:
        """A closed period restored from a changelog written before ``billed`` existed bills what it rates to now."""
        if ps.billed is None:
            ps.billed = self._cpm_lines(store, contract, ps)

    def _cpm_lines(self, store: TotalsStore, contract: Contract, ps: PeriodState) -> list[d.Line]:
        rating = self.rate(store, contract, ps, self._period(contract, ps.period_key))
        return [ln for ln in rating.lines if ln.line_type in _CPM_LINES]

    def _rerate_closed(self, store: TotalsStore, contract: Contract, ps: PeriodState, now: datetime, *, kind: str,
                       id_part: str, source_event_id: str, topic: str, partition: int, offset: int, reason: str) -> None:
        """Each CPM price point whose rating now differs from what the closed period billed
        becomes one adjustment; closed lines + adjustments = the rating of the final picture."""
        assert ps.billed is not None
        after = self._cpm_lines(store, contract, ps)
        for line in d.diff_lines(ps.billed, after):
            self._adjustment(contract, ps, now, kind=kind, line=line, payout=None, partner_id=None,
                             source_event_id=source_event_id, id_part=id_part, topic=topic, partition=partition,
                             offset=offset, reason=reason)
        ps.billed = after
        store.mark(ps)

    def rederive_changed_terms(self, now: datetime) -> None:
        """Re-derive from the ledger every period of each advertiser whose contracts' terms changed
        since their totals were derived (a new contract, an amendment, a termination): open
        periods get new running totals, closed ones ``backdated_amendment`` adjustments.

        Idempotent and exactly-once: the revision a contract was derived under is state (its
        changelog commits with the effects), so a restart re-derives exactly what was not committed.
        """
        changed, self.terms_changed = self.terms_changed, set()
        advertisers: dict[int, set[str]] = {}
        for cid in changed:
            contract = self.book.get(cid)
            if contract is None:
                continue
            q = delta_partition(contract.advertiser_id, self.n_deltas)
            store = self.stores.get(q)
            if store is None:
                continue  # another worker owns it
            cs = store.contracts.get(cid)
            if cs is None or cs.revision is None or cs.revision < contract.revision:
                advertisers.setdefault(q, set()).add(contract.advertiser_id)
        for q, advs in sorted(advertisers.items()):
            for adv in sorted(advs):
                self._rederive(self.stores[q], adv, now)

    def _rederive(self, store: TotalsStore, advertiser: str, now: datetime) -> None:
        contracts = self.book.of_advertiser(advertiser)
        locked_before = to_micros(now) - self.rerate_horizon_us
        derived = d.derive(self.book, store.usage_of(advertiser), not_before_us=locked_before)
        touched: list[tuple[datetime, Contract, PeriodState]] = []
        for contract in contracts:
            keys = {k for c, k in derived if c == contract.contract_id}
            keys |= {ps.period_key for ps in store.periods_of(contract.contract_id)}
            for key in keys:
                period = self._period(contract, key)
                if to_micros(period.end) <= locked_before:
                    continue  # locked: past the re-rating horizon
                ps = store.period(contract.contract_id, key)
                if ps.closed:
                    self._ensure_billed(store, contract, ps)  # before the totals change
                touched.append((period.start, contract, ps))
        for _, contract, ps in touched:
            ps.totals.replace_usage(derived.get((contract.contract_id, ps.period_key), d.PeriodTotals()), self.t_imp)
            store.mark(ps)
            self.dirty_totals.add((ps.contract_id, ps.period_key))
        # in period order: a lifetime tier or total cap carries from one period into the next
        for _, contract, ps in sorted(touched, key=lambda x: (x[1].contract_id, x[0])):
            if ps.closed:
                self._rerate_closed(store, contract, ps, now, kind="backdated_amendment", id_part=f"rev{contract.revision}",
                                    source_event_id=f"{contract.contract_id}@{contract.revision}",
                                    topic=self.s.metering_topic_terms, partition=0, offset=0,
                                    reason=f"contract terms revision {contract.revision} re-rated {ps.period_key} "
                                           f"after it closed")
            else:
                self._check_alerts(store, contract, ps, now)
        for contract in contracts:
            cs = store.contract(contract.contract_id)
            cs.revision = contract.revision
            store.mark(cs)

    def _apply_cpa(self, store: TotalsStore, payload: dict[str, Any], now: datetime) -> None:
        rec = payload["rec"]
        src = payload["src"]
        contract = self.contract(rec["contract_id"])
        if contract is None:
            raise RuntimeError(f"attributed conversion for unknown contract {rec['contract_id']}")
        conv_key = (contract.contract_id, rec["conversion_id"])
        if conv_key in store.conversions:
            ps = self._cpa_period(store, contract, rec)
            ps.totals.count(d.DUPLICATE_CONVERSIONS)
            store.mark(ps)
            self.metrics.events.labels(rec["kind"], "duplicate").inc()
            return
        amount, payout = Decimal(rec["advertiser_amount"]), Decimal(rec["partner_payout"])
        version, event_type, partner = int(rec["contract_version"]), rec["event_type"], rec.get("partner_id")
        quantity = 1
        original = None
        if rec["kind"] == "reversal":
            original = store.conversions.get((contract.contract_id, rec.get("original_conversion_id") or ""))
            quantity = 0
            if original is not None:
                version, event_type, partner = original.version, original.event_type, original.partner_id
                with exact():
                    original.reversed_amount += amount
                    original.reversed_payout += payout
                    remaining = original.advertiser_amount + original.reversed_amount
                if not original.fully_reversed and remaining == 0 and original.advertiser_amount != 0:
                    original.fully_reversed = True
                    quantity = -1
                store.mark(original)
        ps = self._cpa_period(store, contract, rec, original)
        ps.totals.add_cpa(version, event_type, quantity, amount, partner, payout)
        ps.totals.count(d.CONVERSIONS_ATTRIBUTED if rec["kind"] == "conversion" else d.REVERSAL_RECORDS)
        if quantity == -1:
            ps.totals.count(d.CONVERSIONS_REVERSED)
        ps.totals.include_offset(src["topic"], src["partition"], src["offset"] + 1)
        ps.totals.max_event_us = max(ps.totals.max_event_us, rec["event_time_us"])
        cv = ConversionState(contract.contract_id, rec["conversion_id"], rec["kind"], ps.period_key, version, event_type,
                             partner, amount, payout)
        store.conversions[conv_key] = cv
        store.mark(cv)
        self.metrics.events.labels(rec["kind"], "counted").inc()
        if ps.closed:
            kind = "late_event" if rec["kind"] == "conversion" else "reversal_after_close"
            line = d.Line("cpa_conversions", version, f"event:{event_type}", event_type, quantity, "per_unit",
                          d.display_unit_price(amount, quantity) if quantity else amount, amount)
            what = "conversion" if rec["kind"] == "conversion" else f"reversal of {rec.get('original_conversion_id')}"
            self._adjustment(contract, ps, now, kind=kind, line=line, payout=payout if partner else None,
                             partner_id=partner, source_event_id=rec["conversion_id"], id_part=rec["conversion_id"],
                             topic=src["topic"], partition=src["partition"], offset=src["offset"],
                             reason=f"{what} {rec['conversion_id']} for {ps.period_key} arrived after it closed")
        store.mark(ps)
        self.dirty_totals.add((ps.contract_id, ps.period_key))
        if not ps.closed:
            self._check_alerts(store, contract, ps, now)

    def _cpa_period(self, store: TotalsStore, contract: Contract, rec: dict[str, Any],
                    original: ConversionState | None = None) -> PeriodState:
        """A reversal belongs to the period its original was billed in."""
        if rec["kind"] == "reversal":
            if original is not None:
                return store.period(contract.contract_id, original.period_key)
            if rec.get("original_event_time_us") is not None:
                return store.period(contract.contract_id, contract.period_at(rec["original_event_time_us"]).key)
        return store.period(contract.contract_id, contract.period_at(rec["event_time_us"]).key)

    def _adjustment(self, contract: Contract, ps: PeriodState, now: datetime, *, kind: str, line: d.Line,
                    payout: Decimal | None, partner_id: str | None, source_event_id: str, id_part: str, topic: str,
                    partition: int, offset: int, reason: str) -> None:
        applies_to = contract.period_at(to_micros(now)).key
        adjustment_id = (f"{contract.contract_id}/{ps.period_key}/{kind}/{id_part}/{line.line_type}/"
                         f"{line.contract_version}/{line.price_point}")
        self._emit("adjustment", self.s.metering_topic_adjustments, {
            "adjustment_id": adjustment_id, "kind": kind, "contract_id": contract.contract_id,
            "advertiser_id": contract.advertiser_id, "currency": contract.currency,
            "corrects_period_key": ps.period_key, "applies_to_period_key": applies_to, "line_type": line.line_type,
            "contract_version": line.contract_version, "price_point": line.price_point, "event_type": line.event_type,
            "partner_id": partner_id, "quantity": line.quantity, "unit": line.unit, "unit_price": line.unit_price,
            "amount_exact": line.amount_exact, "partner_payout_exact": payout, "source_event_id": source_event_id,
            "source_topic": topic, "source_partition": partition, "source_offset": offset, "reason": reason,
            "created_at": now,
        }, contract.contract_id)

    # ------------------------------------------------------------------ rating, alerts, closes, totals

    def _period(self, contract: Contract, key: str) -> Period:
        return period_by_key(key, contract.time_zone, contract.period_kind)

    def rate(self, store: TotalsStore, contract: Contract, ps: PeriodState, period: Period) -> d.Rating:
        prior_n, prior_amount = self._prior(store, contract, period)
        return d.rate_period(contract, period, ps.totals, prior_lifetime_impressions=prior_n, prior_billed_total=prior_amount)

    def _prior(self, store: TotalsStore, contract: Contract, period: Period) -> tuple[int, Decimal]:
        """Billed impressions and exact amount of the contract's earlier periods (lifetime tiers, total cap)."""
        if not _needs_chain(contract):
            return 0, d.ZERO
        n, amount = 0, d.ZERO
        earlier = [(self._period(contract, ps.period_key), ps) for ps in store.periods_of(contract.contract_id)]
        for p, ps in sorted((x for x in earlier if x[0].start < period.start), key=lambda x: x[0].start):
            r = d.rate_period(contract, p, ps.totals, prior_lifetime_impressions=n, prior_billed_total=amount)
            n += r.quantity("cpm_impressions")
            with exact():
                amount += r.amount
        return n, amount

    def _check_alerts(self, store: TotalsStore, contract: Contract, ps: PeriodState, now: datetime) -> None:
        period = self._period(contract, ps.period_key)
        terms = d.terms_at_end(contract, period).terms
        rating = self.rate(store, contract, ps, period)
        caps: list[tuple[str, Decimal | None, Decimal]] = []
        if terms.cpm is not None:
            prior_amount = self._prior(store, contract, period)[1]
            with exact():
                lifetime_spent = prior_amount + rating.amount
            caps = [("per_period", terms.cpm.budget_caps.per_period, rating.amount),
                    ("total", terms.cpm.budget_caps.total, lifetime_spent)]
        elif terms.cpa is not None:
            caps = [("cpa_amount_per_period", terms.cpa.caps.contract.max_amount_per_period, rating.amount)]
        cs: ContractState | None = None
        for cap_kind, cap, spent in caps:
            for pct in d.alert_thresholds(spent, cap):
                if cap_kind == "total":
                    cs = store.contract(contract.contract_id)
                    if pct in cs.total_alerts:
                        continue
                    cs.total_alerts.add(pct)
                    store.mark(cs)
                    alert_id = f"{contract.contract_id}/total/{pct}"
                else:
                    mark = f"{cap_kind}:{pct}"
                    if mark in ps.alerts:
                        continue
                    ps.alerts.add(mark)
                    alert_id = f"{contract.contract_id}/{ps.period_key}/{cap_kind}/{pct}"
                assert cap is not None
                self._emit("budget_alert", self.s.metering_topic_budget_alerts, {
                    "alert_id": alert_id, "contract_id": contract.contract_id, "advertiser_id": contract.advertiser_id,
                    "currency": contract.currency, "cap_kind": cap_kind, "period_key": ps.period_key,
                    "threshold_pct": pct, "cap": cap, "spent_exact": spent,
                    "latest_event_time": from_micros(ps.totals.max_event_us) if ps.totals.max_event_us else None,
                    "emitted_at": now,
                }, contract.contract_id)
        store.mark(ps)

    def housekeeping(self, now: datetime) -> None:
        """Closes due periods and publishes throttled running totals (runs on every step)."""
        mono = time.monotonic()
        if mono - self._last_close_check >= _CLOSE_CHECK_S:
            # Closing is decided by the clock, not by the batch: checking a few times a second is
            # enough, and keeps an idle worker (a step every BATCH_WAIT_MS) cheap with many contracts.
            self._last_close_check = mono
            self._close_due(now)
        due = [k for k in self.dirty_totals if mono - self.last_published.get(k, 0.0) >= self.totals_interval_s]
        for key in sorted(due):
            self.dirty_totals.discard(key)
            known = self.book.get(key[0])
            if known is None:
                continue
            store = self.stores.get(delta_partition(known.advertiser_id, self.n_deltas))
            if store is None or key not in store.periods:
                continue
            self._publish_total(store, known, store.periods[key], now)
            self.last_published[key] = mono
        if mono - self._last_housekeeping >= 5:
            self._last_housekeeping = mono
            self._forget_old_ids(now)
            self._forget_old_usage(now)
            self._report_state()

    def _close_due(self, now: datetime) -> None:
        for q, store in self.stores.items():
            for contract in self.book.contracts.values():
                if delta_partition(contract.advertiser_id, self.n_deltas) == q:
                    self._ensure_empty_periods(store, contract, now)
            due = []
            for ps in store.periods.values():
                if ps.closed:
                    continue
                owner = self.book.get(ps.contract_id)
                if owner is None:
                    continue
                period = self._period(owner, ps.period_key)
                if close_time(period, self.grace) <= now:
                    due.append((period.start, ps.contract_id, ps, owner, period))
            for _, _, ps, owner, period in sorted(due, key=lambda x: (x[0], x[1])):
                self._close(store, owner, ps, period, now)

    def _ensure_empty_periods(self, store: TotalsStore, contract: Contract, now: datetime) -> None:
        """A period of the flight with no event still closes (its minimum commitment is owed)."""
        first = contract.versions[0]
        p = contract.period_at(to_micros(max(first.effective_from, _flight_start(contract))))
        checked = self.empty_checked.get(contract.contract_id)
        if checked is not None:
            p = self._period(contract, checked)
        while close_time(p, self.grace) <= now:
            if d.versions_governing(contract, p) and _flight_overlaps(contract, p):
                store.period(contract.contract_id, p.key)
            self.empty_checked[contract.contract_id] = p.key
            p = next_period(p)

    def _close(self, store: TotalsStore, contract: Contract, ps: PeriodState, period: Period, now: datetime) -> None:
        rating = self.rate(store, contract, ps, period)
        record = d.period_closed_record(contract, period, ps.totals, rating, now)
        self._emit("period_closed", self.s.metering_topic_periods_closed, record, contract.contract_id)
        ps.closed = True
        ps.closed_at_us = to_micros(now)
        ps.billed = [ln for ln in rating.lines if ln.line_type in _CPM_LINES]
        store.mark(ps)
        self.dirty_totals.add((ps.contract_id, ps.period_key))
        log.info("period closed", extra={"close_id": record["close_id"], "lines": len(record["lines"])})

    def _publish_total(self, store: TotalsStore, contract: Contract, ps: PeriodState, now: datetime) -> None:
        period = self._period(contract, ps.period_key)
        rating = self.rate(store, contract, ps, period)
        terms = d.terms_at_end(contract, period).terms
        counts = {k: v for k, v in sorted(ps.totals.counts.items())}
        if contract.contract_type == "cpm":
            counts[d.BILLABLE] = rating.quantity("cpm_impressions")
            counts[d.OVER_DELIVERY] = rating.quantity("cpm_over_delivery")
        caps = terms.cpm.budget_caps if terms.cpm is not None else None
        record = {
            "total_id": f"{contract.contract_id}/{ps.period_key}", "contract_id": contract.contract_id,
            "advertiser_id": contract.advertiser_id, "contract_type": contract.contract_type,
            "currency": contract.currency, "time_zone": contract.time_zone, "period_kind": str(period.kind),
            "period_key": ps.period_key, "period_start": period.start, "period_end": period.end,
            "status": "closed" if ps.closed else "open", "amount_exact": rating.amount,
            "budget_cap_per_period": caps.per_period if caps else None, "budget_cap_total": caps.total if caps else None,
            "minimum_commitment": rating.minimum_commitment,
            "lines": [{"line_type": ln.line_type, "contract_version": ln.contract_version, "price_point": ln.price_point,
                       "event_type": ln.event_type, "quantity": ln.quantity, "unit": ln.unit,
                       "unit_price": ln.unit_price, "amount_exact": ln.amount_exact} for ln in rating.lines],
            "counts": counts,
            "latest_event_time": from_micros(ps.totals.max_event_us) if ps.totals.max_event_us else None,
            "updated_at": now,
        }
        self._emit("running_total", self.s.metering_topic_running_totals, record, record["total_id"])

    def _forget_old_ids(self, now: datetime) -> None:
        cutoff_day = (to_micros(now) - self.horizon_us) // DAY_US
        for store in self.dedupe.values():
            store.forget_before(cutoff_day)

    def _forget_old_usage(self, now: datetime) -> None:
        """Ledger days past the re-rating horizon are dropped (their periods are locked)."""
        cutoff_day = (to_micros(now) - self.rerate_horizon_us) // DAY_US
        for store in self.stores.values():
            store.forget_usage_before(cutoff_day)

    def _report_state(self) -> None:
        self.metrics.state_size.labels("dedupe_ids").set(sum(len(s) for s in self.dedupe.values()))
        self.metrics.state_size.labels("ledger_rows").set(sum(s.ledger_cells() for s in self.stores.values()))
        self.metrics.state_size.labels("periods").set(sum(len(s.periods) for s in self.stores.values()))
        self.metrics.state_size.labels("conversions").set(sum(len(s.conversions) for s in self.stores.values()))
        try:
            for tp in self.consumer.assignment():
                if tp.topic == self.t_deltas:
                    continue
                _, high = self.consumer.get_watermark_offsets(tp, cached=True)
                pos = self.consumer.position([tp])[0].offset
                if pos >= 0 and high >= 0:
                    self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, high - pos))
        except KafkaException:
            log.debug("lag not available yet")


def _needs_chain(contract: Contract) -> bool:
    from tally_billing.terms import TierBasis

    for v in contract.versions:
        cpm = v.terms.cpm
        if cpm is not None and (cpm.rate_card.tier_basis is TierBasis.LIFETIME or cpm.budget_caps.total is not None):
            return True
    return False


def _flight_start(contract: Contract) -> datetime:
    from tally_billing.periods import flight_start_instant

    c = contract.first.common
    return flight_start_instant(c.flight_start, c.time_zone)


def _flight_overlaps(contract: Contract, p: Period) -> bool:
    from tally_billing.periods import flight_end_instant

    starts = []
    for v in contract.versions:
        c = v.terms.common
        start = _flight_start(contract) if v is contract.versions[0] else v.effective_from
        end = flight_end_instant(c.flight_end, c.time_zone) if c.flight_end is not None else None
        starts.append((start, end))
    return any(s < p.end and (e is None or e >= p.start) for s, e in starts)


def _conversion_json(rec: dict[str, Any]) -> dict[str, Any]:
    """An attributed conversion as JSON for the deltas topic (times as micros, amounts as strings)."""
    out = {k: v for k, v in rec.items() if not isinstance(v, (datetime, Decimal))}
    out["event_time_us"] = to_micros(rec["event_time"])
    out["original_event_time_us"] = to_micros(rec["original_event_time"]) if rec.get("original_event_time") else None
    out["advertiser_amount"] = str(rec["advertiser_amount"])
    out["partner_payout"] = str(rec["partner_payout"])
    return out


def now_utc() -> datetime:
    return datetime.now(UTC)
