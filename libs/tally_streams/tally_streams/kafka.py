"""confluent-kafka helpers: safe client configs, topic creation, Avro consumer and producers.

A consumer is decode -> transform -> produce -> commit, commit last (arroyo's shape). A
record that cannot be decoded is not retried: it is returned as a ``FailedRecord`` for the
caller to dead-letter, and consumption carries on with the next record.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from .avro import AvroCodec, DecodeError, SchemaCatalog
from .topics import TopicSpec, dead_letter_topic


def producer_config(bootstrap: str, client_id: str = "tally", **overrides: Any) -> dict[str, Any]:
    """Durable, idempotent producer: a retry never duplicates a record within a partition."""
    cfg: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "client.id": client_id,
        "acks": "all",
        "enable.idempotence": True,
        "max.in.flight.requests.per.connection": 5,
        "linger.ms": 5,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 200_000,
        "message.timeout.ms": 60_000,
    }
    cfg.update(overrides)
    return cfg


def consumer_config(bootstrap: str, group_id: str, **overrides: Any) -> dict[str, Any]:
    """Manual commits only, after the effect is durable; read only committed records."""
    cfg: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "enable.partition.eof": False,
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
    }
    cfg.update(overrides)
    return cfg


def read_to_end(bootstrap: str, topic: str, *, timeout_s: float = 300.0) -> Iterable[Message]:
    """Every committed record of ``topic``, each partition from its first retained offset to the
    end it had when called (read_committed; no group offsets are used or committed)."""
    import uuid

    c = Consumer(consumer_config(bootstrap, f"tally-read-{uuid.uuid4().hex}", **{"enable.partition.eof": True}))
    try:
        parts = list(c.list_topics(topic, timeout=10).topics[topic].partitions)
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        pending = {p for p, high in ends.items() if high > 0}
        c.assign([TopicPartition(topic, p, 0) for p in pending])
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic} not read to its end within {timeout_s}s")
            for m in c.consume(5000, 0.5):
                err, partition, offset = m.error(), m.partition(), m.offset()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(partition)
                        continue
                    raise KafkaException(err)
                assert partition is not None and offset is not None
                if offset >= ends[partition]:
                    pending.discard(partition)
                    continue
                yield m
                if offset >= ends[partition] - 1:
                    pending.discard(partition)
    finally:
        c.close()


def wait_for_broker(bootstrap: str, timeout_s: float = 60.0) -> None:
    """Block until the broker answers a metadata request (bounded)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            md = admin.list_topics(timeout=2)
            if md.brokers:
                return
        except KafkaException as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"Kafka at {bootstrap} did not answer within {timeout_s}s: {last}")


def ensure_topics(
    bootstrap: str,
    specs: Iterable[TopicSpec],
    *,
    replication_factor: int = 1,
    min_insync_replicas: int = 1,
    timeout_s: float = 60.0,
) -> list[str]:
    """Create the topics that do not exist yet; returns the names created. Safe to run twice."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    specs = list(specs)
    existing = set(admin.list_topics(timeout=10).topics)
    wanted = [s for s in specs if s.name not in existing]
    created: list[str] = []
    if wanted:
        futures = admin.create_topics(
            [
                NewTopic(s.name, num_partitions=s.partitions, replication_factor=replication_factor,
                         config=s.config(min_insync_replicas=min_insync_replicas))
                for s in wanted
            ],
            operation_timeout=timeout_s,
        )
        for name, fut in futures.items():
            try:
                fut.result(timeout=timeout_s)
                created.append(name)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
    # Metadata propagates asynchronously: wait until every partition has a leader.
    deadline = time.monotonic() + timeout_s
    names = {s.name for s in specs}
    while True:
        topics = admin.list_topics(timeout=5).topics
        ready = all(n in topics and topics[n].partitions and all(p.leader >= 0 for p in topics[n].partitions.values())
                    for n in names)
        if ready:
            return created
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics not ready after {timeout_s}s: {sorted(names)}")
        time.sleep(0.1)


def delete_topics(bootstrap: str, names: Sequence[str], timeout_s: float = 30.0) -> None:
    if not names:
        return
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.delete_topics(list(names), operation_timeout=timeout_s).values():
        try:
            fut.result(timeout=timeout_s)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise


@dataclass(frozen=True)
class DecodedRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: dict[str, Any]
    timestamp_ms: int


@dataclass(frozen=True)
class FailedRecord:
    """A record that could not be decoded: the raw bytes and the typed error."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    raw: bytes | None
    error: DecodeError


@dataclass
class Batch:
    records: list[DecodedRecord]
    failed: list[FailedRecord]

    def next_offsets(self) -> list[TopicPartition]:
        """Offsets to commit once the whole batch's effect is durable (last seen + 1)."""
        top: dict[tuple[str, int], int] = {}
        positions = [(r.topic, r.partition, r.offset) for r in self.records] + [(f.topic, f.partition, f.offset) for f in self.failed]
        for topic, partition, offset in positions:
            k = (topic, partition)
            top[k] = max(top.get(k, -1), offset)
        return [TopicPartition(t, p, o + 1) for (t, p), o in sorted(top.items())]

    def __len__(self) -> int:
        return len(self.records) + len(self.failed)


class AvroConsumer:
    """A confluent-kafka consumer that decodes every record into one reader schema."""

    def __init__(self, config: Mapping[str, Any], topics: Sequence[str], codec: AvroCodec) -> None:
        self.codec = codec
        self._consumer = Consumer(dict(config))
        self._consumer.subscribe(list(topics))

    def poll_batch(self, max_records: int = 500, timeout_s: float = 1.0) -> Batch:
        msgs = self._consumer.consume(num_messages=max_records, timeout=timeout_s)
        return self.decode_messages(msgs)

    def decode_messages(self, msgs: Sequence[Message]) -> Batch:
        batch = Batch([], [])
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(err)
            topic, partition, offset = str(m.topic()), int(m.partition() or 0), int(m.offset() or 0)
            raw = m.value()
            try:
                value = self.codec.decode(raw)
            except DecodeError as exc:
                batch.failed.append(FailedRecord(topic, partition, offset, m.key(), raw, exc.located(topic, partition, offset)))
                continue
            batch.records.append(DecodedRecord(topic, partition, offset, m.key(), value, m.timestamp()[1]))
        return batch

    def commit(self, batch: Batch) -> None:
        offsets = batch.next_offsets()
        if offsets:
            self._consumer.commit(offsets=offsets, asynchronous=False)

    @property
    def raw(self) -> Consumer:
        return self._consumer

    def close(self) -> None:
        self._consumer.close()


def dead_letter_record(
    source: str,
    *,
    error_kind: str,
    reason: str,
    key: bytes | None = None,
    value: bytes | None = None,
    partition: int | None = None,
    offset: int | None = None,
    field: str | None = None,
    failed_at: datetime | None = None,
) -> dict[str, Any]:
    return {
        "source": source,
        "partition": partition,
        "offset": offset,
        "key": key,
        "value": value,
        "error_kind": error_kind,
        "reason": reason,
        "field": field,
        "failed_at": failed_at or datetime.now(UTC),
    }


def dead_letter_for(failed: FailedRecord) -> dict[str, Any]:
    return dead_letter_record(
        failed.topic, error_kind=failed.error.kind, reason=failed.error.reason, key=failed.key,
        value=failed.raw, partition=failed.partition, offset=failed.offset,
    )


class SyncProducer:
    """Avro producer for scripts and workers: ``flush`` blocks until the broker acknowledged."""

    def __init__(self, config: Mapping[str, Any], catalog: SchemaCatalog) -> None:
        self._producer = Producer(dict(config))
        self.catalog = catalog
        self._errors: list[str] = []

    def produce(self, topic: str, schema: str, value: Mapping[str, Any], key: bytes | str | None = None,
                headers: list[tuple[str, str | bytes | None]] | None = None) -> None:
        data = self.catalog.codec(schema).encode(value)
        self.produce_raw(topic, data, key, headers)

    def produce_raw(self, topic: str, value: bytes | None, key: bytes | str | None = None,
                    headers: list[tuple[str, str | bytes | None]] | None = None) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers, on_delivery=self._on_delivery)
                break
            except BufferError:
                self._producer.poll(0.1)  # backpressure: wait for the queue to drain
        self._producer.poll(0)

    def dead_letter(self, failed: FailedRecord) -> None:
        self.produce(dead_letter_topic(failed.topic), "dead_letter", dead_letter_for(failed), key=failed.key)

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._errors.append(str(err))

    def flush(self, timeout_s: float = 60.0) -> None:
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise TimeoutError(f"{remaining} records not acknowledged within {timeout_s}s")
        if self._errors:
            errors, self._errors = self._errors, []
            raise KafkaException(f"delivery failed: {errors[:3]}")

    @property
    def raw(self) -> Producer:
        return self._producer


class QueueFull(Exception):
    """The producer's bounded queue is full: the caller should slow down (HTTP 429)."""


class AsyncProducer:
    """An asyncio face on confluent-kafka's producer: ``await produce(...)`` returns when the
    broker acknowledged the record (acks=all); ``produce_batch`` does the same for many records
    with one future. A background thread serves delivery callbacks.
    The queue is bounded by ``queue.buffering.max.messages``; a full queue raises ``QueueFull``
    at once rather than growing memory.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._producer = Producer(dict(config))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="kafka-producer-poll", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def produce(self, topic: str, value: bytes | None, key: bytes | str | None = None,
                headers: list[tuple[str, str | bytes | None]] | None = None) -> asyncio.Future[Message]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Message] = loop.create_future()

        def ack(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                loop.call_soon_threadsafe(_set_exception, fut, KafkaException(err))
            else:
                loop.call_soon_threadsafe(_set_result, fut, msg)

        try:
            self._producer.produce(topic, value=value, key=key, headers=headers, on_delivery=ack)
        except BufferError as exc:
            raise QueueFull(str(exc)) from exc
        return fut

    def produce_batch(
        self, records: Iterable[tuple[str, bytes | None, bytes | str | None]],
    ) -> tuple[int, asyncio.Future[dict[int, KafkaException]]]:
        """Produce ``(topic, value, key)`` records in order, with one future for all of them.

        Returns ``(n, future)``: the first ``n`` records were queued; ``n`` short of the input
        means the queue filled up there and the rest were *not* produced (the caller answers
        them "retry"). The future resolves once the broker has answered for every one of the
        ``n`` records (acknowledged with the producer's ``acks``, or refused): its result maps
        the index of each refused record to its error, empty when all were acknowledged. The
        delivery callbacks only count; the event loop is woken once per batch, not per record.
        """
        acks = _BatchAcks(asyncio.get_running_loop())
        produce = self._producer.produce
        on_delivery = acks.on_delivery
        n = 0
        for topic, value, key in records:
            try:
                produce(topic, value=value, key=key, on_delivery=partial(on_delivery, n))
            except BufferError:
                break
            n += 1
        acks.seal(n)
        return n, acks.future

    def queue_length(self) -> int:
        return len(self._producer)

    async def flush(self, timeout_s: float = 30.0) -> None:
        remaining = await asyncio.to_thread(self._producer.flush, timeout_s)
        if remaining:
            raise TimeoutError(f"{remaining} records not acknowledged within {timeout_s}s")

    async def close(self) -> None:
        await self.flush()
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 5)


class _BatchAcks:
    """Counts the delivery reports of one batch and wakes the loop once, after the last one.

    Delivery callbacks run on whichever thread polls the producer (the poll thread, or a
    ``flush``), hence the lock. ``seal`` tells how many records were queued; until then the
    batch cannot be complete even if every report so far has arrived.
    """

    __slots__ = ("_answered", "_expected", "_lock", "_loop", "errors", "future")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.future: asyncio.Future[dict[int, KafkaException]] = loop.create_future()
        self.errors: dict[int, KafkaException] = {}
        self._lock = threading.Lock()
        self._answered = 0
        self._expected = -1

    def on_delivery(self, index: int, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self.errors[index] = KafkaException(err)
        with self._lock:
            self._answered += 1
            done = self._answered == self._expected
        if done:
            self._loop.call_soon_threadsafe(_set_result, self.future, self.errors)

    def seal(self, expected: int) -> None:
        """Called on the loop's thread once every record of the batch was handed to the producer."""
        with self._lock:
            self._expected = expected
            done = self._answered == expected
        if done:
            _set_result(self.future, self.errors)


def _set_result(fut: asyncio.Future[Any], result: Any) -> None:
    if not fut.done():
        fut.set_result(result)


def _set_exception(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
