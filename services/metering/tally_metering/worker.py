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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from tally_billing.routing import Contract, ContractBook, from_micros, to_micros
from tally_billing.usage import BUCKET_US, BUCKETS_PER_DAY
from tally_streams import topics as catalog_topics
from tally_streams.avro import AvroCodec, DecodeError, SchemaCatalog
from tally_streams.kafka import consumer_config, dead_letter_record, ensure_topics, producer_config
from tally_streams.topics import TopicSpec

from . import domain as d
from .clock import Clock
from .codec import ImpressionDecoder
from .engine import StageTwo, delta_partition
from .metrics import WorkerMetrics
from .state import DAY_US, DedupeStore, TotalsStore

log = logging.getLogger("tally.metering.worker")



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


@dataclass
class _Usage:
    """Stage-one aggregate of one batch of one impressions partition for one advertiser."""

    advertiser_id: str
    partition: int
    first_offset: int
    first_id: str
    last_offset: int = 0
    #: (campaign, bucket, ledger class) -> [count, newest event time µs, offset of its last record]
    rows: dict[tuple[str, int, str], list[int]] = field(default_factory=dict)


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
        self.horizon_us = settings.metering_dedupe_horizon_days * DAY_US
        self.future_us = settings.metering_max_future_seconds * 1_000_000
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
        #: next offset committed by us, per input (topic, partition), to tell whether held state is still current
        self.committed_by_us: dict[tuple[str, int], int] = {}
        self.topic_of = {"running_total": settings.metering_topic_running_totals,
                         "period_closed": settings.metering_topic_periods_closed,
                         "adjustment": settings.metering_topic_adjustments,
                         "budget_alert": settings.metering_topic_budget_alerts,
                         "ivt_report_outcome": settings.metering_topic_ivt_outcomes}
        #: stage two: the ledger, the totals and every billing effect; no I/O of its own
        self.two = StageTwo(settings, self.book, self._emit_effect, self.metrics, lookup_contract=self.contract)
        self.stores = self.two.stores  # the same dict: the rebalance code below keeps it current
        self._last_housekeeping = 0.0
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
                self.two.terms_changed.add(rec["contract_id"])
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
        self.two.empty_checked.clear()  # re-derived from the restored state on the next step
        self.two.terms_changed.update(self.book.contracts)  # the next step compares each contract's revision
        for q in partitions:
            for key in stores[q].periods:
                self.two.last_published.pop(key, None)
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
                self.two.reset()
                self.committed_by_us.clear()
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

    def _emit_effect(self, kind: str, record: dict[str, Any], key: str) -> None:
        self._emit(kind, self.topic_of[kind], record, key)

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
                for m in by_topic[self.t_deltas]:
                    self.two.apply(_where(m)[1], json.loads(_value(m)), now)
            if self.two.terms_changed:
                self.two.rederive_changed_terms(now)
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
        valid_first_party = classes[("none", "first_party")]
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
                if iid in seen or iid in batch_seen:
                    cls = duplicate
                    dupes += 1
                else:
                    batch_seen.add(iid)
                    day = t // DAY_US
                    day_ids = ids_by_day.get(day)
                    if day_ids is None:
                        day_ids = ids_by_day[day] = []
                    day_ids.append(iid)
                    cls = valid_first_party if ivt == "none" and source == "first_party" else classes[(ivt, source)]
                key = (campaign, t // BUCKET_US, cls)
                row = u.rows.get(key)
                if row is None:
                    u.rows[key] = [1, t, offset]
                else:
                    row[0] += 1
                    row[2] = offset  # in offset order: the row's last record
                    if t > row[1]:
                        row[1] = t
        for u in (x for usage in all_usage for x in usage.values()):
            # one group per (campaign, UTC day, ledger class): its buckets' counts, its newest event
            # time, and the next offset after the day's last record in the batch
            day_last: dict[tuple[str, int], int] = {}
            for (c, b, _), (_, _, last) in u.rows.items():
                k = (c, b // BUCKETS_PER_DAY)
                if last > day_last.get(k, -1):
                    day_last[k] = last
            by_day: dict[tuple[str, int, str], list[Any]] = {}
            for (c, b, cls), (n, newest, _) in u.rows.items():
                day, i = divmod(b, BUCKETS_PER_DAY)
                g = by_day.get((c, day, cls))
                if g is None:
                    g = by_day[(c, day, cls)] = [c, day, cls, [], newest, day_last[(c, day)] + 1]
                g[3].append([i, n])
                if newest > g[4]:
                    g[4] = newest
            for g in by_day.values():
                g[3].sort()
            self._produce_delta({
                "kind": "usage", "advertiser_id": u.advertiser_id,
                "src": {"topic": self.t_imp, "partition": u.partition, "first": u.first_offset, "last": u.last_offset,
                        "first_id": u.first_id},
                "groups": list(by_day.values()),
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

    # ------------------------------------------------------------------ rating, alerts, closes, totals

    def housekeeping(self, now: datetime) -> None:
        """Closes due periods and publishes throttled running totals (every step); every 5 s forgets
        what is past its horizon and reports the state's size."""
        self.two.close_and_publish(now)
        mono = time.monotonic()
        if mono - self._last_housekeeping >= 5:
            self._last_housekeeping = mono
            self._forget_old_ids(now)
            self.two.forget_old_usage(now)
            self._report_state()

    def _forget_old_ids(self, now: datetime) -> None:
        cutoff_day = (to_micros(now) - self.horizon_us) // DAY_US
        for store in self.dedupe.values():
            store.forget_before(cutoff_day)

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
