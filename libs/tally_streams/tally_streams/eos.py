"""Exactly-once stream processing on confluent-kafka, as one small reusable piece.

A stage is a function from consumed records to the effects they cause. It does not produce
anything itself: it hands every effect to :meth:`ExactlyOnceLoop.produce`, and the loop puts
the effects, the stage's changelog records and the consumed offsets into ONE Kafka transaction
and commits it last (arroyo's decode → transform → produce → commit). A failure anywhere in a
step aborts the transaction and rewinds the consumer to the step's first records, so the batch
is either wholly committed or not at all; a fenced producer (another incarnation took the
``transactional.id``) is never used again. Either way the caller's in-memory state may hold half
a step: :class:`TransactionFailed` tells it to rebuild from its changelogs.

Beside the step: :func:`restore` reads changelog partitions from their beginning to their end
(state rebuilt on assignment), and :class:`TableFollower` reads a compacted topic (a table such
as ``contracts.terms``) whole to its end, then keeps following it.

Readers downstream use ``isolation.level=read_committed`` (``tally_streams.kafka.consumer_config``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from .kafka import consume_to_end, skip_end_of_partition

log = logging.getLogger("tally.streams.eos")

#: (topic, partition) of a consumed record
Partition = tuple[str, int]
#: a changelog record: (topic, partition, key, value); a ``None`` value is a tombstone
ChangelogRecord = tuple[str, int, str | bytes, bytes | None]


class TransactionFailed(Exception):
    """The step's transaction was aborted (or its producer fenced): nothing of the step is
    visible to read_committed readers, and in-memory state must be rebuilt from the changelogs.

    ``fenced``: the producer is unusable (a newer incarnation with the same ``transactional.id``
    exists, or the error was fatal); the owner must create a new one before the next step.
    """

    def __init__(self, reason: str, *, fenced: bool) -> None:
        super().__init__(reason)
        self.fenced = fenced


@dataclass
class Consumed:
    """One step's records per (topic, partition), each list in offset order as consumed."""

    by_partition: dict[Partition, list[Message]] = field(default_factory=dict)

    @classmethod
    def of(cls, msgs: Sequence[Message]) -> Consumed:
        """Group ``consume()``'s result. A partition's records mostly come in runs, so the key
        is built once per run. End-of-partition events are skipped; any other error is raised."""
        groups: dict[Partition, list[Message]] = {}
        group: list[Message] = []
        last_topic, last_partition = "", -1
        for m in msgs:
            err = m.error()
            if err is not None:
                skip_end_of_partition(err)
                continue
            topic, partition = m.topic(), m.partition()
            if partition != last_partition or topic != last_topic:
                group = groups.setdefault((topic, partition), [])  # type: ignore[arg-type]
                last_topic, last_partition = topic, partition  # type: ignore[assignment]
            group.append(m)
        return cls(groups)

    def __len__(self) -> int:
        return sum(len(g) for g in self.by_partition.values())

    def of_topic(self, topic: str) -> list[tuple[int, list[Message]]]:
        """``(partition, records)`` of one topic, in partition order."""
        return sorted((p, g) for (t, p), g in self.by_partition.items() if t == topic)

    def next_offsets(self) -> dict[Partition, int]:
        """The offsets to commit with the step's effects: after the last record of each partition."""
        return {k: g[-1].offset() + 1 for k, g in self.by_partition.items()}  # type: ignore[operator]

    def first_offsets(self) -> dict[Partition, int]:
        """Where a failed step rewinds to: each partition's first record of the step."""
        return {k: g[0].offset() for k, g in self.by_partition.items()}  # type: ignore[misc]


class ExactlyOnceLoop:
    """One transactional producer and the consumer whose offsets it commits.

    ``produce`` begins the transaction on first use; ``step`` (or ``commit``) ends it. The
    producer must have a ``transactional.id`` and ``init_transactions`` already called (which
    fences and aborts any earlier incarnation's open transaction).
    """

    def __init__(self, producer: Producer, consumer: Consumer, *, timeout_s: float = 60.0) -> None:
        self.producer = producer
        self.consumer = consumer
        self.timeout_s = timeout_s
        #: next offset committed by this loop, per input partition: whether state still held is current
        self.committed: dict[Partition, int] = {}
        self._open = False
        self._fenced = False

    @property
    def in_transaction(self) -> bool:
        return self._open

    def begin(self) -> None:
        if self._fenced:
            raise TransactionFailed("the producer was fenced; create a new one", fenced=True)
        if not self._open:
            self.producer.begin_transaction()
            self._open = True

    def produce(self, topic: str, value: bytes | None, key: str | bytes | None = None,
                partition: int | None = None) -> None:
        """One effect into the open transaction; waits while the producer's bounded queue is full."""
        if not self._open:
            self.begin()
        produce = self.producer.produce
        while True:
            try:
                if partition is None:
                    produce(topic, value=value, key=key)
                else:
                    produce(topic, value=value, key=key, partition=partition)
                return
            except BufferError:
                self.producer.poll(0.05)  # backpressure: let librdkafka deliver

    def step(self, msgs: Sequence[Message], compute: Callable[[Consumed], None],
             changelog: Callable[[], Iterable[ChangelogRecord]] | None = None) -> Consumed:
        """Group ``msgs``, let ``compute`` hand over their effects, write ``changelog()``'s
        records, and commit everything with the offsets after ``msgs``. On any error: abort,
        rewind the consumer to the step's first records, and raise (a Kafka error as
        :class:`TransactionFailed`, anything else as it was)."""
        consumed = Consumed.of(msgs)
        try:
            compute(consumed)
            if changelog is not None:
                for topic, partition, key, value in changelog():
                    self.produce(topic, value, key, partition)
            self.commit(consumed.next_offsets())
        except BaseException as exc:
            if isinstance(exc, KafkaException):
                self._note(exc)
            self.abort()
            self.rewind(consumed.first_offsets())
            if isinstance(exc, KafkaException):
                raise TransactionFailed(f"transaction failed: {exc}", fenced=self._fenced) from exc
            raise
        return consumed

    def commit(self, offsets: Mapping[Partition, int]) -> None:
        """Send ``offsets`` (next offset per input partition) with the open transaction and
        commit it; a step that produced nothing still commits its offsets. Retries what the
        broker calls retriable; raises KafkaException otherwise (the caller aborts)."""
        if offsets:
            self.begin()
            tps = [TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())]
            self._retrying(lambda: self.producer.send_offsets_to_transaction(
                tps, self.consumer.consumer_group_metadata(), self.timeout_s))
        if self._open:
            self._retrying(lambda: self.producer.commit_transaction(self.timeout_s))
            self._open = False
            self.committed.update(offsets)

    def abort(self) -> None:
        """Abort the open transaction (not possible, and not needed, once fenced: the broker
        aborts a fenced incarnation's transaction itself)."""
        if not self._open:
            return
        self._open = False
        if self._fenced:
            return
        try:
            self.producer.abort_transaction(self.timeout_s)
        except KafkaException as exc:
            self._note(exc)
            log.warning("abort failed", extra={"error": str(exc), "fenced": self._fenced})

    def rewind(self, offsets: Mapping[Partition, int]) -> None:
        """Seek the consumer back, so the records of an aborted step are consumed again."""
        for (topic, partition), offset in offsets.items():
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:  # no longer assigned: the next owner starts at the committed offset
                log.info("not rewound", extra={"topic": topic, "partition": partition, "error": str(exc)})

    def forget(self, keep: Callable[[Partition], bool]) -> None:
        """Drop what is known of our commits for partitions ``keep`` refuses (revoked, lost)."""
        self.committed = {k: v for k, v in self.committed.items() if keep(k)}

    def _note(self, exc: KafkaException) -> None:
        """Remember a fatal error: the producer is never used again."""
        err = exc.args[0] if exc.args else None
        if isinstance(err, KafkaError) and (err.fatal() or err.code() in _FENCED):
            self._fenced = True

    def _retrying(self, call: Callable[[], None]) -> None:
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                call()
                return
            except KafkaException as exc:
                self._note(exc)
                err = exc.args[0] if exc.args else None
                if (not self._fenced and isinstance(err, KafkaError) and err.retriable()
                        and not err.txn_requires_abort() and time.monotonic() < deadline):
                    time.sleep(0.05)
                    continue
                raise


_FENCED = frozenset(code for code in (getattr(KafkaError, name, None) for name in
                                      ("_FENCED", "PRODUCER_FENCED", "INVALID_PRODUCER_EPOCH")) if code is not None)


def restore(consumer: Consumer, topic: str, partitions: Iterable[int], on_record: Callable[[Message], None], *,
            timeout_s: float = 120.0) -> int:
    """Read changelog ``partitions`` of ``topic`` from their beginning to their end, handing each
    record (tombstones included) to ``on_record``; returns how many. The consumer (any group,
    read_committed, ``enable.partition.eof``) is unassigned afterwards."""
    tps = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
    if not tps:
        return 0
    consumer.assign(tps)
    n = 0
    try:
        for m in consume_to_end(consumer, tps, timeout_s=timeout_s):
            on_record(m)
            n += 1
    finally:
        consumer.unassign()
    return n


class TableFollower:
    """Every partition of one (compacted) topic, read whole at start and followed afterwards.

    The consumer is the follower's own (any group id; offsets are never committed, since the
    table is rebuilt from the beginning at every start) with ``enable.partition.eof``.
    ``on_record`` decides what a record means; it should not raise for a bad record.
    """

    def __init__(self, consumer: Consumer, topic: str, on_record: Callable[[Message], None]) -> None:
        self.consumer = consumer
        self.topic = topic
        self.on_record = on_record

    def catch_up(self, timeout_s: float = 60.0) -> int:
        """From the beginning to at least the end the topic has now; returns the records read.
        A record written while catching up is handed on too (``past_end``): the follower's
        position passes it, so it would never be read again (a contract approved while metering
        starts would stay unknown until its next restart)."""
        md = self.consumer.list_topics(self.topic, timeout=10)
        tps = [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in md.topics[self.topic].partitions]
        self.consumer.assign(tps)
        n = 0
        for m in consume_to_end(self.consumer, tps, timeout_s=timeout_s, past_end=True):
            self.on_record(m)
            n += 1
        return n

    def poll(self, timeout_s: float = 0.0, max_records: int = 1000) -> int:
        """What arrived since; returns how many records were handed on."""
        n = 0
        for m in self.consumer.consume(max_records, timeout_s):
            if m.error() is None:
                self.on_record(m)
                n += 1
        return n
