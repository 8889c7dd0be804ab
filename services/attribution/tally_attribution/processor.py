"""The attribution processor: impressions + conversions + contract terms in, attributed
conversions and one outcome per conversion out, exactly once.

One Kafka transaction per cycle carries the outputs, the state changes (compacted changelog)
and the consumed input offsets. A SIGKILL at any point leaves either the whole cycle or none
of it; on restart ``init_transactions`` fences and aborts the dead incarnation's open
transaction, the state is rebuilt from the changelog, and consumption resumes from the
committed offsets — so a ``read_committed`` consumer sees each outcome once.

Settle delay: a conversion arriving at broker time ``a`` is decided only once every impression
partition is known complete up to ``a + settle`` (a record at or after that time was read, or
the partition was read to its end at a clock reading at or after it). Exposures that arrive
within the delay therefore count whatever the arrival order.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
import uuid
from datetime import timedelta
from typing import Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec
from prometheus_client import CollectorRegistry

from tally_billing.bounds import record_problem
from tally_billing.usage import from_micros, to_micros
from tally_kit.clock import Clock, WallClock
from tally_streams.avro import AvroCodec, DecodeError, EncodeError, SchemaCatalog
from tally_streams.eos import TableFollower, restore
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
from tally_streams.records import ContractTermsRecord, ConversionRecord
from tally_streams.topics import TopicSpec

from .domain import (
    FUTURE_IMPRESSION,
    IMPRESSION_DEAD_LETTER,
    ContractBook,
    DeadLetter,
    Decider,
    Decision,
    Source,
)
from .impression_reader import ImpressionReader
from .metrics import ProcessorMetrics
from .settings import AttributionSettings, shard_of
from .state import AttributionState
from .store import ExposureStore, encode_checkpoint

log = logging.getLogger("tally.attribution.processor")

PRUNE_INTERVAL_S = 300.0
LAG_INTERVAL_S = 5.0
#: how often, at most, the settle gate asks for the impression partitions' end offsets while a
#: conversion is due and no impression moved the watermark past it (one ListOffsets request)
CATCH_UP_CHECK_S = 0.02
#: a transaction that carries decisions is committed at the end of the cycle that made them once
#: it is this old (outcomes become visible to read_committed readers only then); one that
#: carries only index changes waits for the commit interval
DECIDED_COMMIT_S = 0.02
BATCH_MAX = 2000
KAFKA_TIMEOUT_S = 30.0
#: librdkafka's RD_KAFKA_PARTITION_UA, ``produce``'s default: the configured partitioner picks
ANY_PARTITION = -1


def state_topic_spec(name: str, shards: int = 1) -> TopicSpec:
    """The processor's own changelog (compacted; kept as long as the state it rebuilds): at
    least one partition per shard."""
    return TopicSpec(name, "state key", "none (JSON state values)", partitions=max(4, shards), compacted=True)


#: the state key naming the shard that built the state, and of how many: ``[shard, shards]``
SHARD_KEY = "s:shard"


class ProcessorFailed(RuntimeError):
    """A broken invariant (transaction failure, lost partitions): stop and restart from Kafka."""


class Processor:
    def __init__(
        self,
        settings: AttributionSettings,
        catalog: SchemaCatalog,
        *,
        clock: Clock | None = None,
        registry: CollectorRegistry | None = None,
        shard: int = 0,
        metrics: ProcessorMetrics | None = None,
    ) -> None:
        self.s = settings
        self.clock: Clock = clock or WallClock()
        self.registry = registry or CollectorRegistry()
        self.metrics = metrics or ProcessorMetrics(self.registry)
        #: this processor decides the conversions of the advertisers with ``shard_of(advertiser) == shard``
        self.shard, self.shards = shard, settings.attribution_shards
        if not 0 <= shard < self.shards:
            raise ValueError(f"shard {shard} is not one of the {self.shards} of TALLY_ATTRIBUTION_SHARDS")
        self.group = settings.shard_name(settings.attribution_group, shard)
        self.transactional_id = settings.shard_name(settings.attribution_transactional_id, shard)
        self._owners: dict[str, bool] = {}
        self.codecs: dict[str, AvroCodec] = {
            name: catalog.codec(name)
            for name in ("impression", "conversion", "contract_terms", "attributed_conversion", "conversion_outcome",
                         "dead_letter")
        }
        self.conversion_codec = catalog.codec("conversion", record=ConversionRecord)
        self.terms_codec = catalog.codec("contract_terms", record=ContractTermsRecord)
        self.impressions = ImpressionReader(catalog)
        self.book = ContractBook()
        self.state = AttributionState()
        self.decider = Decider(
            self.book, self.state,
            max_exposures_per_household=settings.attribution_max_exposures_per_household,
            max_future=timedelta(seconds=settings.attribution_max_future_s),
            dedupe_retention=timedelta(days=settings.attribution_dedupe_retention_days),
            late_allowance=timedelta(days=settings.attribution_late_allowance_days),
            precontract_window=timedelta(days=settings.attribution_precontract_days),
        )
        self.settle_ms = int(settings.attribution_settle_delay_ms)
        self.t_imp = settings.attribution_topic_impressions
        self.t_conv = settings.attribution_topic_conversions
        self.t_terms = settings.attribution_topic_terms
        self.t_state = settings.attribution_topic_state
        self.ready = threading.Event()
        self._decoded: dict[str, ConversionRecord] = {}
        #: pending conversions by (arrival, topic, partition, offset): the decision order
        self._due: list[tuple[int, str, int, int, str]] = []
        self._imp_seen_ms: dict[int, int] = {}
        self._imp_caught_up_ms: dict[int, int] = {}
        self._last_arrival: dict[tuple[str, int], int] = {}
        self._assigned: list[TopicPartition] = []
        #: for the impression partitions' end offsets (``_end_offsets``); None: ask the consumer
        self._admin: AdminClient | None = None
        self._lost = False
        self._failed = False
        self._in_txn = False
        self._txn_started = 0.0
        #: the open transaction carries decisions (``_emit``): commit it soon, not at the interval
        self._txn_decided = False
        self._last_catch_up = 0.0
        self._last_prune = time.monotonic()
        self._last_lag = 0.0
        #: the group's committed input offsets and their metadata, as of our last commit (the store's checkpoint)
        self._committed: dict[tuple[str, int], tuple[int, str]] = {}
        #: names each transaction in its offsets' commit metadata: ``<incarnation>:<sequence>``
        self._incarnation = uuid.uuid4().hex[:12]
        self._txn_seq = 0

    # ------------------------------------------------------------------ lifecycle

    def _now_ms(self) -> int:
        return to_micros(self.clock.now()) // 1000

    def run(self, stop: threading.Event) -> None:
        """Decide this shard until ``stop`` is set. Run it only where the shard's lease is held
        (``replica.Replica``): two incarnations fence each other at ``init_transactions``."""
        bootstrap = self.s.kafka_bootstrap
        ensure_topics(bootstrap, [state_topic_spec(self.t_state, self.shards)])
        self._run_active(bootstrap, stop)

    def _run_active(self, bootstrap: str, stop: threading.Event) -> None:
        self.producer = Producer(producer_config(
            bootstrap, client_id="tally-attribution-processor",
            **{"transactional.id": self.transactional_id, "transaction.timeout.ms": 60_000},
        ))
        # Fences any earlier incarnation and aborts its open transaction before we read state.
        self.producer.init_transactions(KAFKA_TIMEOUT_S)
        self._admin = AdminClient(admin_config(bootstrap, **{"client.id": "tally-attribution-processor"}))
        self.consumer = Consumer(consumer_config(
            bootstrap, self.group,
            **{"group.instance.id": self.transactional_id, "session.timeout.ms": 10_000,
               "max.poll.interval.ms": 120_000, "fetch.wait.max.ms": 100},
        ))
        store = ExposureStore(self.s.shard_store_dir(self.shard), self.s.attribution_store_memory_mb)
        self.state.use_store(store)
        try:
            self._run(bootstrap, stop)
        finally:
            store.close()

    def _run(self, bootstrap: str, stop: threading.Event) -> None:
        self._restore_state(bootstrap)
        self.terms_consumer = Consumer(consumer_config(bootstrap, f"{self.group}-terms", **{"enable.partition.eof": True}))
        self.terms = TableFollower(self.terms_consumer, self.t_terms, self._apply_terms)
        self.terms.catch_up(timeout_s=KAFKA_TIMEOUT_S)
        self.consumer.subscribe([self.t_imp, self.t_conv], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)
        log.info("processor started", extra={"shard": self.shard, "shards": self.shards, "state_keys": len(self.state.kv),
                                             "pending": len(self.state.pending)})
        try:
            while not stop.is_set():
                self._cycle()
            if self._in_txn:
                self._commit()
        except BaseException:
            # Memory may hold half a cycle: never commit it; the restart rebuilds from Kafka.
            self._failed = True
            if self._in_txn:
                try:
                    self.producer.abort_transaction(KAFKA_TIMEOUT_S)
                except KafkaException as exc:
                    log.error("abort failed", extra={"error": str(exc)})
            raise
        finally:
            self.consumer.close()
            self.terms_consumer.close()
            self.producer.flush(10)
            self.metrics.shard_gone(self.shard)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned = list(partitions)
        self.ready.set()
        log.info("partitions assigned", extra={"partitions": [f"{p.topic}[{p.partition}]" for p in partitions]})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._in_txn and not self._failed:
            self._commit()
        self._assigned = []

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._lost = True

    # ------------------------------------------------------------------ restore

    def _committed_offsets(self) -> dict[tuple[str, int], tuple[int, str]]:
        """The group's committed offsets of every input partition (those with one). The
        consumer is read_committed, so librdkafka asks for stable offsets (KIP-447): after
        ``init_transactions`` aborted a dead incarnation's transaction, nothing is pending."""
        tps = []
        for topic in (self.t_imp, self.t_conv):
            md = self.consumer.list_topics(topic, timeout=KAFKA_TIMEOUT_S).topics[topic]
            tps += [TopicPartition(topic, p) for p in sorted(md.partitions)]
        return {(tp.topic, tp.partition): (tp.offset, tp.metadata or "")
                for tp in self.consumer.committed(tps, timeout=KAFKA_TIMEOUT_S) if tp.offset >= 0}

    def _checkpoint(self) -> bytes:
        """The store's checkpoint: the committed input offsets, and what they are offsets of."""
        return b"%s|%s|" % (self.group.encode(), self.t_state.encode()) + encode_checkpoint(self._committed)

    def _restore_state(self, bootstrap: str) -> None:
        # Kafka Streams' checkpoint rule under exactly-once: the store is trusted only when its
        # checkpoint is the group's committed offsets (a kill between a commit and the store
        # write leaves it one transaction behind; no checkpoint: new, or a rebuild cut short).
        self._committed = self._committed_offsets()
        store = self.state.store
        assert store is not None
        checkpoint = self._checkpoint()
        outcome = "trusted" if store.checkpoint == checkpoint else "missing" if store.checkpoint is None else "stale"
        log.info("exposure store opened", extra={"outcome": outcome, "path": str(store.path),
                                                 "checkpoint": None if store.checkpoint is None else store.checkpoint.decode(),
                                                 "committed": checkpoint.decode(), "households": store.households})
        started = time.monotonic()
        self.state.begin_restore(trusted=outcome == "trusted")
        c = Consumer(reader_config(bootstrap, f"{self.group}-restore"))
        try:
            md = c.list_topics(self.t_state, timeout=KAFKA_TIMEOUT_S).topics[self.t_state]
            partitions = self._state_partitions(len(md.partitions))

            def apply(m: Message) -> None:
                key = m.key()
                if key is not None:
                    self.state.restore(key, m.value())

            # A trusted store is the whole state as of the committed offsets: nothing to read.
            # Otherwise every record, into memory and the store (a bound, not a budget: ten
            # million households restore in minutes).
            n = 0 if outcome == "trusted" else restore(c, self.t_state, partitions, apply, timeout_s=1800)
            self.state.end_restore(checkpoint)
            self._check_shard_key()
            for pending_key, pending in self.state.pending.items():
                self._queue(pending_key, pending)
                self._last_arrival[(pending["topic"], pending["p"])] = max(
                    self._last_arrival.get((pending["topic"], pending["p"]), 0), pending["arr"])
            log.info("state restored", extra={"records": n, "keys": len(self.state.kv), "store": outcome,
                                              "households": self.state.household_count,
                                              "seconds": round(time.monotonic() - started, 3)})
        finally:
            c.close()

    def _state_partitions(self, count: int) -> list[int]:
        """The changelog partitions this shard reads at a restore: all of them with one shard
        (its records are spread by key); shard k of K writes to partition k and reads every
        partition ≡ k (mod K), so a record another shard count left there is seen (and refused)."""
        if count < self.shards:
            raise ProcessorFailed(f"{self.t_state} has {count} partitions, fewer than the {self.shards} shards "
                                  "(TALLY_ATTRIBUTION_SHARDS): add partitions or use a new changelog topic")
        return list(range(count)) if self.shards == 1 else [p for p in range(count) if p % self.shards == self.shard]

    def _check_shard_key(self) -> None:
        """The state restored must be this shard's: the shard count is fixed for the life of the
        state (another count sends advertisers to other shards, whose state never saw them)."""
        mine = [self.shard, self.shards]
        held = self.state.kv.get(SHARD_KEY)
        if held == mine:
            return
        if held is not None:
            raise ProcessorFailed(f"the state in {self.t_state} was built as shard {held[0]} of {held[1]}, "
                                  f"not {self.shard} of {self.shards}")
        empty = not self.state.kv and not self.state.pending and self.state.household_count == 0
        if not empty and self.shards > 1:  # (one shard adopts state written before shards existed)
            raise ProcessorFailed(
                f"{self.t_state} holds state of another shard count than {self.shards}; TALLY_ATTRIBUTION_SHARDS is fixed "
                "for the life of the state (a new count needs a new changelog topic, group and transactional id)")
        self.state.put(SHARD_KEY, mine)  # written with the first transaction

    def _apply_terms(self, m: Message) -> None:
        try:
            record = self.terms_codec.decode(m.value())
        except DecodeError as exc:
            self.metrics.terms_ignored.inc()
            log.error("undecodable contracts.terms record", extra={"offset": m.offset(), "error": str(exc)})
            return
        why = self.book.apply(record)
        if why is not None:
            self.metrics.terms_ignored.inc()
            log.warning("terms record ignored", extra={"contract_id": record["contract_id"], "why": why})

    # ------------------------------------------------------------------ the cycle

    def _cycle(self) -> None:
        if self._lost:
            raise ProcessorFailed("partitions lost (session expired); restarting from the committed state")
        msgs = self.consumer.consume(num_messages=BATCH_MAX, timeout=0.05)
        self.terms.poll()
        impressions: list[Message] = []
        t_imp = self.t_imp
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(err)
            if m.topic() == t_imp:
                impressions.append(m)
            else:
                self._begin()
                self._on_conversion(m)
        if impressions:
            # After the conversions of the batch: they only wait in the settle queue, and the
            # index is read when they are decided (below), so the order within a batch is moot.
            self._on_impressions(impressions)
        self._decide_due()
        mono = time.monotonic()
        if mono - self._last_prune >= PRUNE_INTERVAL_S:
            self._last_prune = mono
            self._begin()
            now = self.clock.now()
            self.decider.prune(now)
            now_us = to_micros(now)
            self.state.prune_exposures(lambda rows: self.decider._kept(rows, now_us))
        if mono - self._last_lag >= LAG_INTERVAL_S:
            self._last_lag = mono
            self._report_lag()
        self.metrics.shard_sizes(self.shard, self.state.household_count, self.state.exposure_count, len(self.state.pending))
        if self._in_txn:
            age = mono - self._txn_started
            if age * 1000 >= self.s.attribution_commit_interval_ms or (self._txn_decided and age >= DECIDED_COMMIT_S):
                self._commit()

    def _begin(self) -> None:
        if not self._in_txn:
            self.producer.begin_transaction()
            self._in_txn = True
            self._txn_started = time.monotonic()

    def _arrival_ms(self, m: Message) -> int:
        kind, ts = m.timestamp()
        arrival = self._now_ms() if kind == TIMESTAMP_NOT_AVAILABLE else int(ts)
        key = _coords(m)[:2]
        # Monotone per partition, so records of one partition are decided in offset order.
        arrival = max(arrival, self._last_arrival.get(key, 0))
        self._last_arrival[key] = arrival
        return arrival

    def _on_impression(self, m: Message) -> None:
        self._on_impressions([m])

    def owns(self, advertiser_id: str) -> bool:
        """This shard decides the advertiser's conversions (and indexes its impressions)."""
        owned = self._owners.get(advertiser_id)
        if owned is None:
            owned = self._owners[advertiser_id] = shard_of(advertiser_id, self.shards) == self.shard
        return owned

    def _on_impressions(self, msgs: list[Message]) -> None:
        """Index a batch of impressions: one call of the compiled reader, then the index per record."""
        self._begin()
        rows = self.impressions.read([m.value() for m in msgs])
        owns = self.owns if self.shards > 1 else None  # one shard owns every advertiser
        if self.state.store is not None:  # the batch's households in one multi-get
            self.state.prefetch(["x:" + r[5] for r in rows
                                 if not isinstance(r, DecodeError) and r[6] == "none" and (owns is None or owns(r[2]))])
        index = self.decider.index_exposure
        first = self.shard == 0
        outcomes: dict[str, int] = {}
        last_arrival = self._last_arrival
        seen = self._imp_seen_ms
        for m, row in zip(msgs, rows, strict=True):
            kind, ts = m.timestamp()
            p = m.partition()
            assert p is not None
            key = (self.t_imp, p)
            arrival = self._now_ms() if kind == TIMESTAMP_NOT_AVAILABLE else int(ts)
            # Monotone per partition, so records of one partition are decided in offset order.
            held = last_arrival.get(key, 0)
            if arrival < held:
                arrival = held
            else:
                last_arrival[key] = arrival
            if arrival > seen.get(p, 0):
                seen[p] = arrival
            # Every shard reads every impression (the settle gate above needs them all) and
            # indexes its advertisers' only; an undecodable one (no advertiser) is shard 0's.
            if isinstance(row, DecodeError):
                if not first:
                    continue
                self._dead_letter(m, DeadLetter(classify_rejection(row), row.reason, row.field))
                outcome = IMPRESSION_DEAD_LETTER
            elif owns is not None and not owns(row[2]):
                continue
            else:
                iid, event_us, adv, campaign, partner, household, ivt = row
                outcome = index(iid, event_us, adv, campaign, partner, household, ivt, arrival * 1000)
                if outcome == IMPRESSION_DEAD_LETTER:
                    dl = FUTURE_IMPRESSION  # the kind metering gives the same impression (tally_streams.kafka.classify_rejection)
                    error_kind = classify_rejection(field=dl.field, event_time=from_micros(event_us), now=from_micros(arrival * 1000))
                    self._dead_letter(m, DeadLetter(error_kind, dl.reason, dl.field))
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        for outcome, n in outcomes.items():
            self.metrics.impressions.labels(outcome).inc(n)

    def _on_conversion(self, m: Message) -> None:
        try:
            conv = self.conversion_codec.decode(m.value())
        except DecodeError as exc:
            if self.shard == 0:  # no advertiser to tell whose it is: shard 0's
                self._dead_letter(m, DeadLetter(classify_rejection(exc), exc.reason))
            return
        problem = record_problem("conversion", conv)  # ads.conversions may come from partners' own producers
        if problem is not None:
            if self.owns(conv["advertiser_id"]):
                refused = out_of_bounds(problem, conv, self.clock.now())
                self._dead_letter(m, DeadLetter(refused.kind, refused.reason, refused.field))
            return
        # Another shard's conversion waits here too, and is "decided" in its place in the order,
        # only to remember its id (a conversion id is counted once across advertisers).
        src = Source(*_coords(m))
        key = "q:" + src.id
        raw = m.value()
        assert raw is not None
        pending = {"raw": raw, "arr": self._arrival_ms(m), "topic": src.topic, "p": src.partition, "o": src.offset,
                   "key": m.key()}
        self.state.put_pending(key, pending)
        self._queue(key, pending)
        self._decoded[key] = conv

    # ------------------------------------------------------------------ settle gate

    def impression_watermark(self) -> int | None:
        """Broker time up to which every assigned impression partition is known complete."""
        parts = [tp.partition for tp in self._assigned if tp.topic == self.t_imp]
        if not parts:
            return None
        return min(max(self._imp_seen_ms.get(p, 0), self._imp_caught_up_ms.get(p, 0)) for p in parts)

    def _end_offsets(self, parts: list[int]) -> dict[int, int]:
        """The log end (high watermark) of each impression partition: one ListOffsets request for
        all of them rather than a round trip per partition (the check runs up to ten times a
        second while conversions wait), else ``watermarks`` partition by partition."""
        if self._admin is not None:
            try:
                futures = self._admin.list_offsets(
                    {TopicPartition(self.t_imp, p): OffsetSpec.latest() for p in parts}, request_timeout=KAFKA_TIMEOUT_S)
                return {tp.partition: int(f.result().offset) for tp, f in futures.items()}
            except KafkaException as exc:  # leadership moving: the per-partition path retries
                log.info("list_offsets failed; asking partition by partition", extra={"error": str(exc)})
        return {p: watermarks(self.consumer, TopicPartition(self.t_imp, p))[1] for p in parts}

    def _refresh_caught_up(self) -> None:
        asked_at = self._now_ms()  # taken before asking: records older than this are below the end offsets
        parts = [tp.partition for tp in self._assigned if tp.topic == self.t_imp]
        ends = self._end_offsets(parts)
        for p in parts:
            part = TopicPartition(self.t_imp, p)
            hi = ends[p]
            pos = self.consumer.position([part])[0].offset
            if pos < 0:
                # Nothing read from it since the assignment: we stand at the committed offset
                # (or, with none, at the log start).
                pos = self.consumer.committed([part], timeout=KAFKA_TIMEOUT_S)[0].offset
                pos = watermarks(self.consumer, part)[0] if pos < 0 else pos
            if pos >= hi:
                self._imp_caught_up_ms[p] = asked_at

    def _decide_due(self) -> None:
        """Decide, in arrival order, every pending conversion whose settle delay has passed."""
        heap = self._due
        while heap and heap[0][-1] not in self.state.pending:
            heapq.heappop(heap)
        if not heap:
            return
        first_due = heap[0][0] + self.settle_ms
        wm = self.impression_watermark()
        if wm is None:
            return
        mono = time.monotonic()
        if first_due > wm and self._now_ms() >= first_due and mono - self._last_catch_up >= CATCH_UP_CHECK_S:
            self._last_catch_up = mono
            self._refresh_caught_up()
            wm = self.impression_watermark() or 0
        if first_due > wm:
            return
        self._begin()
        due: list[str] = []
        while heap and heap[0][0] + self.settle_ms <= wm:
            key = heapq.heappop(heap)[-1]
            if key in self.state.pending:
                due.append(key)
        if self.state.store is not None:  # their households in one multi-get
            decoded = self._decoded
            self.state.prefetch(["x:" + decoded[k]["household_id"] for k in due
                                 if k in decoded and self.owns(decoded[k]["advertiser_id"])])
        decisions = [self._decide(key) for key in due]
        self._emit([d for d in decisions if d is not None])

    def _queue(self, key: str, pending: dict[str, Any]) -> None:
        heapq.heappush(self._due, (pending["arr"], pending["topic"], pending["p"], pending["o"], key))

    def _decide(self, key: str) -> Decision | None:
        """Decide one pending conversion; its records are produced by ``_emit``, in decision order.
        Another shard's conversion: None (its id remembered)."""
        p = self.state.pending[key]
        raw = p["raw"]
        conv = self._decoded.pop(key, None) or self.conversion_codec.decode(raw)
        if not self.owns(conv["advertiser_id"]):
            self.decider.decided_elsewhere(conv)
            self.state.drop_pending(key)
            return None
        now = self.clock.now()
        src = Source(p["topic"], p["p"], p["o"])
        d = self.decider.decide(conv, src, from_micros(p["arr"] * 1000), now)
        if d.dead_letter is not None:
            dl = d.dead_letter
            kind = classify_rejection(field=dl.field, event_time=conv["event_time"], now=from_micros(p["arr"] * 1000))
            self._produce_dead_letter(src.topic, src.partition, src.offset, p["key"], raw, DeadLetter(kind, dl.reason, dl.field))
        self.state.drop_pending(key)
        self.metrics.decision_latency.observe(max(0.0, (now - conv["event_time"]).total_seconds()))
        return d

    def _emit(self, decisions: list[Decision]) -> None:
        """The outcomes and attributed conversions of a run of decisions, written as one batch."""
        if not decisions:
            return
        self._txn_decided = True
        outcomes = self.codecs["conversion_outcome"].encode_many([d.outcome for d in decisions])
        attributed = [d.attributed for d in decisions if d.attributed is not None]
        attributed_values = self.codecs["attributed_conversion"].encode_many(attributed)
        t_out, t_att = self.s.attribution_topic_outcomes, self.s.attribution_topic_attributed
        counts: dict[tuple[str, str, str], int] = {}
        for d, value in zip(decisions, outcomes, strict=True):
            if isinstance(value, EncodeError):
                raise value
            self._produce(t_out, value, d.outcome["conversion_id"])
            label = (d.outcome["kind"], d.outcome["outcome"], d.reason or "-")
            counts[label] = counts.get(label, 0) + 1
        for rec, value in zip(attributed, attributed_values, strict=True):
            if isinstance(value, EncodeError):
                raise value
            self._produce(t_att, value, rec["contract_id"])
        for label, n in counts.items():
            self.metrics.outcomes.labels(*label).inc(n)

    # ------------------------------------------------------------------ outputs

    def _produce(self, topic: str, value: bytes | None, key: bytes | str | None, partition: int = ANY_PARTITION) -> None:
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, partition=partition)
                return
            except BufferError:
                self.producer.poll(0.05)

    def _dead_letter(self, m: Message, dl: DeadLetter) -> None:
        self._produce_dead_letter(*_coords(m), m.key(), m.value(), dl)

    def _produce_dead_letter(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                             dl: DeadLetter) -> None:
        dlq = self.s.attribution_topic_dlq_impressions if topic == self.t_imp else self.s.attribution_topic_dlq_conversions
        record = dead_letter_record(topic, error_kind=dl.error_kind, reason=dl.reason, key=key, value=value,
                                    partition=partition, offset=offset, field=dl.field, failed_at=self.clock.now(),
                                    consumer_group=self.group)
        self._produce(dlq, self.codecs["dead_letter"].encode(record), key)
        self.metrics.dead_letters.labels(topic, dl.error_kind).inc()

    def _commit(self) -> None:
        # One shard: spread by key, as ever; shard k of several: partition k (``_state_partitions``).
        partition = ANY_PARTITION if self.shards == 1 else self.shard
        for key, value in self.state.drain_changes():
            self._produce(self.t_state, value, key, partition)
        # Every assigned partition's offset (where one is known: read since the assignment, or
        # committed before), each with this transaction's name as its commit metadata, so the
        # committed offsets change with every transaction and fix which one the store must reflect.
        self._txn_seq += 1
        meta = f"{self._incarnation}:{self._txn_seq}"
        offsets: dict[tuple[str, int], int] = {}
        for tp in self.consumer.position(self.consumer.assignment()):
            known = tp.offset if tp.offset >= 0 else self._committed.get((tp.topic, tp.partition), (-1, ""))[0]
            if known >= 0:
                offsets[(tp.topic, tp.partition)] = known
        positions = [TopicPartition(t, p, o, metadata=meta) for (t, p), o in offsets.items()]
        try:
            if positions:
                self.producer.send_offsets_to_transaction(positions, self.consumer.consumer_group_metadata(),
                                                          KAFKA_TIMEOUT_S)
            while True:
                try:
                    self.producer.commit_transaction(KAFKA_TIMEOUT_S)
                    break
                except KafkaException as exc:
                    if not exc.args[0].retriable():
                        raise
        except KafkaException as exc:
            # The in-memory state already holds this cycle: only a restart from Kafka is consistent.
            raise ProcessorFailed(f"transaction failed: {exc}") from exc
        for (t, p), o in offsets.items():
            self._committed[(t, p)] = (o, meta)
        try:
            # Only now, after the commit: the store never holds an uncommitted transaction.
            self.state.committed(self._checkpoint())
        except Exception as exc:
            # The store still holds the previous transaction under its checkpoint: the restart
            # finds that checkpoint stale and rebuilds the store from the changelog.
            raise ProcessorFailed(f"exposure store write failed after the commit: {exc}") from exc
        self._in_txn = False
        self._txn_decided = False
        self.metrics.transactions.inc()

    def _report_lag(self) -> None:
        """Lag per partition from the high watermarks the client caches from every fetch
        response: asking the broker, partition by partition, cost the cycle ~10 % of its time
        on a loaded machine. A partition nothing was fetched from yet has no cached one: skipped."""
        try:
            for tp in self.consumer.position(self.consumer.assignment()):
                _, hi = self.consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), cached=True)
                if hi < 0:
                    continue
                lag = hi - tp.offset if tp.offset >= 0 else hi
                self.metrics.shard_lag(self.shard, tp.topic, tp.partition, max(0, lag))
        except KafkaException as exc:  # a metric never stops the processor
            log.warning("lag not measured", extra={"error": str(exc)})


def watermarks(consumer: Consumer, tp: TopicPartition) -> tuple[int, int]:
    """(low, high) offsets, retrying while a new topic's leadership settles."""
    deadline = time.monotonic() + KAFKA_TIMEOUT_S
    while True:
        try:
            lo, hi = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=KAFKA_TIMEOUT_S)
            return int(lo), int(hi)
        except KafkaException as exc:
            if not exc.args[0].retriable() and exc.args[0].code() != KafkaError.NOT_LEADER_FOR_PARTITION:
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _coords(m: Message) -> tuple[str, int, int]:
    topic, partition, offset = m.topic(), m.partition(), m.offset()
    assert topic is not None and partition is not None and offset is not None
    return topic, partition, offset
