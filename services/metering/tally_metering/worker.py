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
from array import array
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from tally_billing.bounds import record_problem
from tally_billing.routing import Contract, ContractBook, from_micros, to_micros
from tally_billing.usage import BUCKET_US
from tally_kit.clock import Clock
from tally_streams import topics as catalog_topics
from tally_streams.avro import DecodeError, SchemaCatalog
from tally_streams.eos import ChangelogRecord, Consumed, ExactlyOnceLoop, TableFollower, TransactionFailed, restore
from tally_streams.kafka import (
    admin_config,
    classify_rejection,
    consumer_config,
    dead_letter_record,
    ensure_topics,
    out_of_bounds,
    producer_config,
    reader_config,
)
from tally_streams.records import AttributedConversionRecord, ContractTermsRecord, IvtReportRecord
from tally_streams.topics import TopicSpec

from . import domain as d
from .codec import DeltaCodec, ImpressionDecoder
from .engine import StageTwo, delta_partition
from .metrics import WorkerMetrics
from .settings import MeteringSettings
from .state import DAY_US, LEDGER_PREFIX, DedupeStore, TotalsStore
from .store import DiskDedupeStore, DiskLedgerStore

log = logging.getLogger("tally.metering.worker")

_LEDGER_KEY = LEDGER_PREFIX.encode()


class ResetRequired(Exception):
    """The transaction failed or was fenced: drop in-memory state and start over from the changelogs."""


def _where(m: Message) -> tuple[str, int, int]:
    """topic, partition and offset of a consumed record (never None for a record)."""
    topic, partition, offset = m.topic(), m.partition(), m.offset()
    assert topic is not None and partition is not None and offset is not None
    return topic, partition, offset


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
    #: (campaign, ledger class, UTC day) -> [{bucket of the day: count}, newest event time µs,
    #: offset of its last record]
    groups: dict[tuple[str, str, int], list[Any]] = field(default_factory=dict)


class Worker:
    def __init__(self, settings: MeteringSettings, clock: Clock, catalog: SchemaCatalog | None = None,
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
        self.delta_codec = DeltaCodec(self.catalog)
        self.att_codec = self.catalog.codec("attributed_conversion", record=AttributedConversionRecord)
        self.ivt_codec = self.catalog.codec("ivt_report", record=IvtReportRecord)
        self.terms_codec = self.catalog.codec("contract_terms", record=ContractTermsRecord)
        self.codecs = {n: self.catalog.codec(n) for n in ("running_total", "period_closed", "adjustment", "budget_alert",
                                                           "dead_letter", "ivt_report_outcome")}
        self.book = ContractBook()
        #: stage one's dedupe set per impressions partition: on disk (a RocksDB each, under STORE_DIR;
        #: tests and benches of stage one alone may put the in-memory DedupeStore here)
        self.dedupe: dict[int, DiskDedupeStore | DedupeStore] = {}
        self.topic_of = {"running_total": settings.metering_topic_running_totals,
                         "period_closed": settings.metering_topic_periods_closed,
                         "adjustment": settings.metering_topic_adjustments,
                         "budget_alert": settings.metering_topic_budget_alerts,
                         "ivt_report_outcome": settings.metering_topic_ivt_outcomes}
        #: stage two: the ledger, the totals and every billing effect; no I/O of its own
        self.two = StageTwo(settings, self.book, self._emit_effect, self.metrics, lookup_contract=self.contract)
        self.metrics.period_close_overdue.set_function(lambda: self.two.close_overdue_s(self.clock.now()))
        self.stores = self.two.stores  # the same dict: the rebalance code below keeps it current
        self._last_housekeeping = 0.0
        #: impression ids first seen in the open batch, per impressions partition and event day
        self._new_ids: dict[int, dict[int, list[str]]] = {}
        #: ... taken by the batch's changelog: written to the stores once its transaction committed
        self._pending_ids: dict[int, dict[int, list[str]]] = {}
        #: the deltas partitions the open batch consumed (their ledgers' checkpoints move with it)
        self._deltas_in_batch: set[int] = set()
        self.ready = threading.Event()

    # ------------------------------------------------------------------ setup

    def ensure_internal_topics(self) -> None:
        from confluent_kafka.admin import AdminClient

        md = AdminClient(admin_config(self.s.kafka_bootstrap)).list_topics(timeout=10)
        if self.t_imp not in md.topics:
            raise RuntimeError(f"input topic {self.t_imp} does not exist")
        n_imp = len(md.topics[self.t_imp].partitions)
        ensure_topics(self.s.kafka_bootstrap, [
            catalog_topics.IVT_REPORTS.renamed(self.t_ivt),
            catalog_topics.IVT_REPORT_OUTCOMES.renamed(self.s.metering_topic_ivt_outcomes),
            TopicSpec(self.t_deltas, "advertiser id", "metering_delta", partitions=self.n_deltas, retention_ms=7 * 86_400_000),
            # one schema per key prefix: ug metering_ledger_day, cp metering_period_state, ct
            # metering_contract_state, ir metering_ivt_decision (cv: ConversionState, still JSON)
            TopicSpec(self.s.metering_topic_state, "state key", "metering_period_state", partitions=self.n_deltas,
                      compacted=True),
            TopicSpec(self.s.metering_topic_dedupe, "event day", "metering_dedupe_ids", partitions=n_imp,
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
        self.producer.init_transactions(60)  # fences an earlier incarnation and aborts its open transaction
        #: the exactly-once loop: every effect of a step and its offsets in one transaction
        self.loop = ExactlyOnceLoop(self.producer, self.consumer)
        self.restorer = Consumer(reader_config(s.kafka_bootstrap, f"{s.metering_group}-restore"))
        self.terms_consumer = Consumer(consumer_config(s.kafka_bootstrap, f"{s.metering_group}-terms",
                                                       **{"enable.partition.eof": True}))
        self.terms = TableFollower(self.terms_consumer, s.metering_topic_terms, self._apply_terms)

    def _close_clients(self) -> None:
        for closer in (getattr(self, "consumer", None), getattr(self, "restorer", None), getattr(self, "terms_consumer", None)):
            if closer is not None:
                try:
                    closer.close()
                except Exception:  # noqa: S110 - closing a client that may already be broken
                    pass

    # ------------------------------------------------------------------ terms

    def catch_up_terms(self) -> None:
        self.terms.catch_up(timeout_s=60)

    def poll_terms(self, timeout_s: float = 0.0) -> int:
        return self.terms.poll(timeout_s)

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
        assigned = {(tp.topic, tp.partition) for tp in partitions}
        for p in list(self.dedupe):
            if (self.t_imp, p) not in assigned:
                self.dedupe.pop(p).close()  # kept on disk: trusted again if it comes back unchanged
        to_open = [tp.partition for tp in partitions if tp.topic == self.t_imp and tp.partition not in self.dedupe]
        if to_open:  # in parallel: after a SIGKILL each store replays its write-ahead log
            with ThreadPoolExecutor(min(8, len(to_open)), thread_name_prefix="open-store") as pool:
                self.dedupe.update(zip(to_open, pool.map(self._open_dedupe, to_open), strict=True))
        for tp in partitions:
            k = (tp.topic, tp.partition)
            current = k in self.loop.committed and self.loop.committed[k] == committed.get(k)
            if tp.topic == self.t_imp:
                # Kafka Streams' checkpoint rule under exactly-once: the local store is trusted only
                # when the offset it reflects is the group's committed one; else it is rebuilt
                store = self.dedupe[tp.partition]
                if store.checkpoint is not None and store.checkpoint == committed.get(k):
                    outcome = "trusted"
                else:  # missing or stale: wiped and rebuilt from the changelog
                    outcome = "missing" if store.checkpoint is None else "stale"
                    imp_restore.append(tp.partition)
                self.metrics.store_opens.labels("dedupe", outcome).inc()
                log.info("dedupe store opened", extra={"worker": self.s.metering_worker_id, "partition": tp.partition,
                                                       "outcome": outcome, "checkpoint": store.checkpoint,
                                                       "committed": committed.get(k)})
            elif tp.topic == self.t_deltas and not (current and tp.partition in self.stores):
                state_restore.append(tp.partition)
        for q in list(self.stores):
            if (self.t_deltas, q) not in assigned or q in state_restore:
                self.stores.pop(q).close()  # its ledger is kept on disk: trusted again if nothing moved
        self.loop.forget(assigned.__contains__)
        self._restore_dedupe(imp_restore, committed)
        self._restore_state(state_restore, committed)
        log.info("partitions assigned", extra={"worker": self.s.metering_worker_id, "partitions": sorted(f"{t}[{p}]" for t, p in assigned),
                                               "restored_dedupe": imp_restore, "restored_state": state_restore})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # State is kept: if the same partitions come back unchanged (committed offset equals ours)
        # it is still exact; otherwise _on_assign rebuilds it from the changelog.
        log.info("partitions revoked", extra={"worker": self.s.metering_worker_id, "count": len(partitions)})

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lost = {(tp.topic, tp.partition) for tp in partitions}
        self.loop.forget(lambda k: k not in lost)
        for tp in partitions:
            if tp.topic == self.t_imp:
                store = self.dedupe.pop(tp.partition, None)
                if store is not None:
                    store.close()
            elif tp.topic == self.t_deltas:
                lost_store = self.stores.pop(tp.partition, None)
                if lost_store is not None:
                    lost_store.close()

    def _open_dedupe(self, partition: int) -> DiskDedupeStore:
        return DiskDedupeStore(self.s.store_dir / f"dedupe-{self.t_imp}-{partition}", self.s.metering_store_memory_mb)

    def _close_dedupe(self) -> None:
        for store in self.dedupe.values():
            store.close()
        self.dedupe.clear()

    def _restore_dedupe(self, partitions: list[int], committed: dict[tuple[str, int], int]) -> None:
        """Wipe the stores of ``partitions`` and rebuild them from the dedupe changelog; their
        checkpoint (the committed offset the changelog reflects) is written last."""
        if not partitions:
            return
        cutoff_day = (to_micros(self.clock.now()) - self.horizon_us) // DAY_US
        for p in partitions:
            self.dedupe[p].wipe()

        def apply(m: Message) -> None:
            day = int(_key(m))
            if day >= cutoff_day:
                _, partition, offset = _where(m)
                self.dedupe[partition].add_restored(day, DedupeStore.decode(_value(m)), offset)

        started = time.monotonic()
        n = restore(self.restorer, self.s.metering_topic_dedupe, partitions, apply)
        for p in partitions:
            self.dedupe[p].set_checkpoint(committed[(self.t_imp, p)])
        self.metrics.restores.labels("dedupe").inc(len(partitions))
        log.info("dedupe stores rebuilt", extra={"partitions": partitions, "records": n,
                                                 "seconds": round(time.monotonic() - started, 3)})

    def _open_ledger(self, partition: int) -> DiskLedgerStore:
        return DiskLedgerStore(self.s.store_dir / f"ledger-{self.t_deltas}-{partition}", self.s.metering_ledger_memory_mb)

    def _close_stores(self) -> None:
        """Stage two's state is dropped; its ledgers are closed and kept on disk."""
        for store in self.stores.values():
            store.close()
        self.stores.clear()

    def _restore_state(self, partitions: list[int], committed: dict[tuple[str, int], int]) -> None:
        """Stage two's state of ``partitions`` from the state changelog. Each partition's ledger
        store is trusted when its checkpoint equals the committed deltas offset (its ledger
        records in the changelog are then skipped), else wiped and rebuilt from them; the rest of
        the state is always read from the changelog (it is in memory)."""
        if not partitions:
            return
        ledgers: dict[int, DiskLedgerStore] = {}
        trusted: set[int] = set()
        try:
            for q in partitions:
                ledger = ledgers[q] = self._open_ledger(q)
                offset = committed.get((self.t_deltas, q))
                if ledger.checkpoint is not None and ledger.checkpoint == offset:
                    outcome = "trusted"
                    trusted.add(q)
                else:  # missing or stale (a kill between commit and store write, another owner in between)
                    outcome = "missing" if ledger.checkpoint is None else "stale"
                    ledger.wipe()
                self.metrics.store_opens.labels("ledger", outcome).inc()
                log.info("ledger store opened", extra={"worker": self.s.metering_worker_id, "partition": q,
                                                       "outcome": outcome, "checkpoint": ledger.checkpoint,
                                                       "committed": offset})
            stores = {q: TotalsStore(q, ledgers[q]) for q in partitions}

            def apply(m: Message) -> None:
                q, key = _where(m)[1], _key(m)
                if q in trusted and key.startswith(_LEDGER_KEY):
                    return  # already in the trusted store
                stores[q].apply_changelog(key.decode(), m.value())

            restore(self.restorer, self.s.metering_topic_state, partitions, apply)
            for q in partitions:
                if q not in trusted:
                    ledgers[q].set_checkpoint(committed[(self.t_deltas, q)])
        except BaseException:
            for ledger in ledgers.values():
                ledger.close()
            raise
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
                self._new_ids, self._pending_ids = {}, {}
                self.two.reset()
            finally:
                self._close_dedupe()  # on disk: trusted again on assignment if still current
                self._close_stores()
                self._close_clients()

    def _produce(self, topic: str, value: bytes | None, key: str | bytes, partition: int | None = None) -> None:
        self.loop.produce(topic, value, key, partition)

    def _emit_effect(self, kind: str, record: dict[str, Any], key: str) -> None:
        self._emit(kind, self.topic_of[kind], record, key)

    def _emit(self, kind: str, topic: str, record: dict[str, Any], key: str | bytes) -> None:
        self._produce(topic, self.codecs[kind].encode(record), key)
        self.metrics.outputs.labels(kind).inc()

    def step(self) -> None:
        """One batch: consume, stage one and stage two, housekeeping; every effect, the changelog
        records and the offsets in one transaction (``tally_streams.eos``)."""
        self.poll_terms()
        msgs = self.consumer.consume(self.s.metering_batch_max, self.batch_wait_s)
        started = time.perf_counter()
        try:
            consumed = self.loop.step(msgs, self._process, self._changelog)
        except TransactionFailed as exc:
            log.warning("transaction failed", extra={"error": str(exc), "fenced": exc.fenced})
            raise ResetRequired from exc
        self._store_committed_ids(consumed)
        self._store_committed_ledgers(consumed)
        if msgs:
            self.metrics.batch_seconds.observe(time.perf_counter() - started)

    def _process(self, consumed: Consumed) -> None:
        """The effects of one batch, handed to the loop (``_produce``)."""
        now = self.clock.now()
        now_us = to_micros(now)
        self._new_ids = {}
        imp_groups: list[tuple[int, list[Message]]] = []
        att: list[Message] = []
        ivt: list[Message] = []
        deltas: list[tuple[int, list[Message]]] = []
        for (topic, partition), group in consumed.by_partition.items():
            if topic == self.t_imp:
                imp_groups.append((partition, group))
            elif topic == self.t_deltas:
                deltas.append((partition, group))
            elif topic == self.t_att:
                att.extend(group)
            elif topic == self.t_ivt:
                ivt.extend(group)
        if imp_groups:
            self.stage_one_impressions(imp_groups, now_us)
        if att:
            self.stage_one_conversions(att, now_us)
        if ivt:
            self.stage_one_ivt_reports(ivt)
        for partition, group in deltas:
            for m in group:
                self.two.apply(partition, self._decode_delta(m.value()), now)
        # only partitions whose offsets this batch commits (see forget_old_usage); a no-op unless
        # the horizon's day moved
        self._deltas_in_batch = {partition for partition, _ in deltas}
        self.two.forget_old_usage(now, self._deltas_in_batch)
        if self.two.terms_changed:
            self.two.rederive_changed_terms(now)
        self.housekeeping(now)

    def _store_committed_ids(self, consumed: Consumed) -> None:
        """After the commit: the batch's new ids and the committed offset (the checkpoint) into
        each impressions partition's store, in one write batch. A failed write leaves the store
        behind the committed offset, so it is rebuilt (and never used half-written)."""
        pending, self._pending_ids = self._pending_ids, {}
        try:
            for partition, _ in consumed.of_topic(self.t_imp):
                self.dedupe[partition].add_committed(pending.get(partition, {}),
                                                     self.loop.committed[(self.t_imp, partition)])
        except Exception as exc:
            log.exception("dedupe store write failed after the commit")
            raise ResetRequired from exc

    def _store_committed_ledgers(self, consumed: Consumed) -> None:
        """After the commit: each consumed deltas partition's changed ledger days and its committed
        offset (the checkpoint) into its ledger store, in one write batch. A failed write leaves
        the store behind the committed offset, so it is rebuilt (and never used half-written)."""
        try:
            for q, _ in consumed.of_topic(self.t_deltas):
                store = self.stores.get(q)
                if store is not None:
                    store.ledger.write_committed(self.loop.committed[(self.t_deltas, q)])
        except Exception as exc:
            log.exception("ledger store write failed after the commit")
            raise ResetRequired from exc

    def _changelog(self) -> Iterator[ChangelogRecord]:
        """What changed in this batch's state: the dedupe ids seen, then every stage-two entry
        (each encoded once however often it changed; None: a tombstone)."""
        new_ids, self._new_ids = self._new_ids, {}
        self._pending_ids = new_ids
        unvouched = [q for q, store in self.stores.items() if q not in self._deltas_in_batch and store.ledger.pending()]
        for partition, days in new_ids.items():
            for day, ids in days.items():
                yield self.s.metering_topic_dedupe, partition, str(day), DedupeStore.encode(ids)
        for q, store in self.stores.items():
            for key, value in store.take_dirty().items():
                yield self.s.metering_topic_state, q, key, value
        for q in unvouched:
            # A ledger changed in a batch without an offset of its partition (never expected: only
            # its deltas and the expiry on its batches change it) would be trusted with changes the
            # checkpoint cannot tell apart: written now, before the commit, with its checkpoint
            # removed, so it is rebuilt unless a later batch of its partition writes one again.
            log.warning("ledger changed without an offset of its partition", extra={"partition": q})
            self.stores[q].ledger.write_committed(None)

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
            ids_by_day = new_ids.setdefault(partition, {})
            usage: dict[str, _Usage] = {}
            all_usage.append(usage)
            # Only the six fields used, per batch (compiled reader; fastavro for anything unusual or
            # beyond its limits, which then names the field, as attribution does for the same bytes).
            decoded = self.imp_decoder.decode_fields([m.value() for m in msgs], now_us)
            # the ids of the batch the store already holds: one multi-get per partition and batch
            seen = store.seen_among([rec[0] for rec in decoded if rec.__class__ is tuple])
            for m, rec in zip(msgs, decoded, strict=True):
                if rec.__class__ is not tuple:
                    assert isinstance(rec, DecodeError)
                    self._dead_letter(self.s.metering_topic_dlq_impressions, m, classify_rejection(rec), rec.reason,
                                      field=rec.field)
                    continue
                iid, t, advertiser, campaign, ivt, source = rec
                if t > hi or t < lo:
                    why = classify_rejection(field="event_time", event_time=from_micros(t), now=from_micros(now_us))
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
                    cls = valid_first_party if ivt == "none" and source == "first_party" else classes[(ivt, source)]
                bucket = (t - day * DAY_US) // BUCKET_US
                key = (campaign, cls, day)
                g = u.groups.get(key)
                if g is None:
                    u.groups[key] = [{bucket: 1}, t, offset]
                else:
                    cells = g[0]
                    cells[bucket] = cells.get(bucket, 0) + 1
                    if t > g[1]:
                        g[1] = t
                    g[2] = offset  # in offset order: the group's last record
        for u in (x for usage in all_usage for x in usage.values()):
            self._produce(self.t_deltas, self._usage_delta(u), u.advertiser_id,
                          partition=delta_partition(u.advertiser_id, self.n_deltas))
        # written by _changelog with the batch's other changelog records, and into the stores
        # once the transaction committed (_store_committed_ids)
        self._new_ids = new_ids
        if received:
            self.metrics.events.labels("impression", d.RECEIVED).inc(received)
        if dupes:
            self.metrics.events.labels("impression", d.DUPLICATE).inc(dupes)

    def stage_one_conversions(self, msgs: list[Message], now_us: int) -> None:
        for m in msgs:
            try:
                rec = self.att_codec.decode(m.value())
            except DecodeError as exc:
                self._dead_letter(self.s.metering_topic_dlq_attributed, m, classify_rejection(exc), exc.reason)
                continue
            if to_micros(rec["event_time"]) > now_us + self.future_us:
                self._dead_letter(self.s.metering_topic_dlq_attributed, m, classify_rejection(
                                      field="event_time", event_time=rec["event_time"], now=from_micros(now_us)),
                                  "event_time is ahead of the clock", field="event_time")
                continue
            self._forward("attributed_conversion", m, rec["advertiser_id"])

    def stage_one_ivt_reports(self, msgs: list[Message]) -> None:
        """IVT reports go, whole, to the stage-two partition that owns their advertiser's ledger."""
        for m in msgs:
            try:
                rec = self.ivt_codec.decode(m.value())
            except DecodeError as exc:
                self._dead_letter(self.s.metering_topic_dlq_impressions, m, classify_rejection(exc), exc.reason)
                continue
            problem = record_problem("ivt_report", rec)  # ads.ivt_reports may come from vendors' own producers
            if problem is not None:
                refused = out_of_bounds(problem, rec, self.clock.now())
                self._dead_letter(self.s.metering_topic_dlq_impressions, m, refused.kind, refused.reason, field=refused.field)
                continue
            self._forward("ivt_report", m, rec["advertiser_id"])

    def _usage_delta(self, u: _Usage) -> bytes:
        """One usage delta (``schemas/metering_delta``): a group per (campaign, UTC day, ledger
        class) with its buckets' counts, its newest event time, and the next offset after the
        day's last record in the batch (any class)."""
        day_last: dict[tuple[str, int], int] = {}
        for (c, _, day), (_, _, last) in u.groups.items():
            k = (c, day)
            if last > day_last.get(k, -1):
                day_last[k] = last
        campaigns: dict[str, int] = {}
        classes: dict[str, int] = {}
        packed, counts, buckets = array("q"), array("q"), bytearray()
        for (c, cls, day), (cells, newest, _) in u.groups.items():
            ascending = sorted(cells)
            packed.extend((campaigns.setdefault(c, len(campaigns)), classes.setdefault(cls, len(classes)), day,
                           len(ascending), newest, day_last[(c, day)] + 1))
            buckets += bytes(ascending)
            counts.extend(map(cells.__getitem__, ascending))
        return self.delta_codec.usage(self.t_imp, u.partition, u.first_offset, u.last_offset, u.advertiser_id, u.first_id,
                                      list(campaigns), list(classes), packed, buckets, counts)

    def _forward(self, kind: str, m: Message, advertiser_id: str) -> None:
        """A validated input record, as consumed, to the stage-two partition of its advertiser."""
        topic, partition, offset = _where(m)
        self._produce(self.t_deltas, self.delta_codec.forwarded(kind, topic, partition, offset, _value(m)), advertiser_id,
                      partition=delta_partition(advertiser_id, self.n_deltas))

    def _decode_delta(self, value: bytes | None) -> dict[str, Any]:
        """A delta as the payload stage two applies (``StageTwo.apply``)."""
        if value is not None and value[:1] == b"{":  # JSON, from a worker before the deltas had their schema
            legacy: dict[str, Any] = json.loads(value)
            return legacy
        payload, kind, raw = self.delta_codec.decode(value)
        if kind == "attributed_conversion":
            payload["rec"] = _conversion_json(self.att_codec.decode(raw))
        elif kind == "ivt_report":
            payload["rec"] = _ivt_json(self.ivt_codec.decode(raw))
        return payload

    def _dead_letter(self, topic: str, m: Message, kind: str, reason: str, field: str | None = None) -> None:
        src, partition, offset = _where(m)
        rec = dead_letter_record(src, error_kind=kind, reason=reason, key=m.key(), value=m.value(),
                                 partition=partition, offset=offset, field=field, failed_at=self.clock.now(),
                                 consumer_group=self.s.metering_group)
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
            self._report_state()

    def _forget_old_ids(self, now: datetime) -> None:
        cutoff_day = (to_micros(now) - self.horizon_us) // DAY_US
        for store in self.dedupe.values():
            store.forget_before(cutoff_day)

    def _report_state(self) -> None:
        self.metrics.state_size.labels("dedupe_ids").set(sum(len(s) for s in self.dedupe.values()))
        disk = [s.memory() for s in self.dedupe.values()]
        self.metrics.store_memory.labels("dedupe", "used").set(sum(u for u, _ in disk))
        self.metrics.store_memory.labels("dedupe", "capacity").set(sum(c for _, c in disk))
        self.metrics.state_size.labels("ledger_rows").set(sum(s.ledger_cells() for s in self.stores.values()))
        ledgers = [s.ledger.memory() for s in self.stores.values()]
        self.metrics.store_memory.labels("ledger", "used").set(sum(u for u, _ in ledgers))
        self.metrics.store_memory.labels("ledger", "capacity").set(sum(c for _, c in ledgers))
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


def _conversion_json(rec: AttributedConversionRecord) -> dict[str, Any]:
    """An attributed conversion as JSON for the deltas topic (times as micros, amounts as strings)."""
    out = {k: v for k, v in rec.items() if not isinstance(v, (datetime, Decimal))}
    out["event_time_us"] = to_micros(rec["event_time"])
    original = rec["original_event_time"]
    out["original_event_time_us"] = None if original is None else to_micros(original)
    out["advertiser_amount"] = str(rec["advertiser_amount"])
    out["partner_payout"] = str(rec["partner_payout"])
    # v2 facts (None in v1 records, read into v2): what a backdated amendment re-prices the conversion from
    order_value = rec["order_value"]
    out["order_value"] = None if order_value is None else str(order_value)
    out["tier_position"] = rec["tier_position"]
    out["reversal_completes"] = rec["reversal_completes"]
    return out


def _ivt_json(rec: IvtReportRecord) -> dict[str, Any]:
    """An IVT report as stage two applies it (window times as micros)."""
    return {"report_id": rec["report_id"], "vendor": rec["vendor"], "advertiser_id": rec["advertiser_id"],
            "entries": [[e["campaign_id"], to_micros(e["window_start"]), to_micros(e["window_end"]),
                         e["ivt_class"], e["measurement_source"], e["count"]] for e in rec["entries"]]}


def now_utc() -> datetime:
    return datetime.now(UTC)
