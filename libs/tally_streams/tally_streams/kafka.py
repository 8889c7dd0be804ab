"""confluent-kafka helpers: safe client configs, topic creation, Avro consumer and producers.

Every client config carries the security settings of ``tally_streams.security`` (PLAINTEXT
unless ``TALLY_KAFKA_SECURITY_PROTOCOL`` says otherwise): build clients from ``producer_config``,
``consumer_config`` and ``admin_config``, never from a bare ``{"bootstrap.servers": ...}``.

A consumer is decode -> transform -> produce -> commit, commit last (arroyo's shape). A
record that cannot be decoded is not retried: it is returned as a ``FailedRecord`` for the
caller to dead-letter, and consumption carries on with the next record.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from . import security
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
        **security.client_config(),
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
        **security.client_config(),
    }
    cfg.update(overrides)
    return cfg


def reader_config(bootstrap: str, group_id: str, **overrides: Any) -> dict[str, Any]:
    """A consumer that reads topics to their end (``consume_to_end``: a restore, a replay), never
    following them: partition EOF on, and fetches that do not wait for new records. With the
    default 500 ms ``fetch.wait.max.ms`` each fetch at the end of a partition waits, and the
    watermark requests queued behind it on the same connection wait too: a 2,000-record topic of
    four partitions took 3.5 s to read, 0.17 s with this."""
    return consumer_config(bootstrap, group_id, **{"enable.partition.eof": True, "fetch.wait.max.ms": 10,
                                                   **overrides})


def admin_config(bootstrap: str, **overrides: Any) -> dict[str, Any]:
    """An admin client's config: the bootstrap servers and the security settings."""
    cfg: dict[str, Any] = {"bootstrap.servers": bootstrap, **security.client_config()}
    cfg.update(overrides)
    return cfg


def skip_end_of_partition(err: KafkaError) -> None:
    """A consumed event that carries an error: end of partition is news, not a failure (return);
    anything else is raised."""
    if err.code() != KafkaError._PARTITION_EOF:
        raise KafkaException(err)


def read_to_end(bootstrap: str, topic: str, *, timeout_s: float = 300.0,
                client: Mapping[str, Any] | None = None) -> Iterable[Message]:
    """Every committed record of ``topic``, each partition from its first retained offset to the
    end it had when called (read_committed; no group offsets are used or committed). ``client``:
    settings over ``reader_config``'s (another principal's security)."""
    import uuid

    c = Consumer(reader_config(bootstrap, f"tally-read-{uuid.uuid4().hex}", **(client or {})))
    try:
        parts = list(c.list_topics(topic, timeout=10).topics[topic].partitions)
        tps = [TopicPartition(topic, p, 0) for p in parts]
        c.assign(tps)
        yield from consume_to_end(c, tps, timeout_s=timeout_s)
    finally:
        c.close()


def consume_to_end(consumer: Consumer, partitions: Sequence[TopicPartition], *,
                   timeout_s: float = 300.0, past_end: bool = False) -> Iterator[Message]:
    """The records of ``partitions`` (already assigned to ``consumer`` at their start offsets),
    up to the end each had when called: its high watermark, or partition EOF when the consumer
    has ``enable.partition.eof`` (under read_committed the last offsets may be transaction
    markers, never delivered: EOF, or the position passing the end, says the partition is done).
    The one way Tally reads a topic or a changelog to its end (best with ``reader_config``).

    A fetch may bring records written after the call, past those ends: a one-shot read leaves
    them out; with ``past_end`` they are yielded too, for a consumer that keeps following from
    its position (``TableFollower``), which would otherwise never see them."""
    ends: dict[tuple[str, int], int] = {}
    for tp in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)
        if high > low and (tp.offset < 0 or tp.offset < high):
            ends[(tp.topic, tp.partition)] = high
    deadline = time.monotonic() + timeout_s
    while ends:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{sorted(ends)} not read to the end within {timeout_s}s")
        msgs = consumer.consume(5000, 0.05)
        for m in msgs:
            err, topic, partition, offset = m.error(), m.topic(), m.partition(), m.offset()
            key = (topic, partition)
            if err is not None:
                skip_end_of_partition(err)
                ends.pop(key, None)  # type: ignore[arg-type]
                continue
            end = ends.get(key)  # type: ignore[arg-type]
            assert offset is not None
            if end is not None and offset >= end - 1:
                del ends[key]  # type: ignore[arg-type]
            if (end is not None and offset < end) or past_end:
                yield m
        if not msgs and ends:
            # nothing came: the rest may be transaction markers, never delivered
            for pos in consumer.position([TopicPartition(t, p) for t, p in ends]):
                if pos.offset >= 0 and pos.offset >= ends[(pos.topic, pos.partition)]:
                    del ends[(pos.topic, pos.partition)]


def wait_for_broker(bootstrap: str, timeout_s: float = 60.0, *, client: Mapping[str, Any] | None = None) -> None:
    """Block until the broker answers a metadata request (bounded). ``client``: settings over
    ``admin_config``'s (another principal's security), here and in ``ensure_topics``/``delete_topics``."""
    admin = AdminClient(admin_config(bootstrap, **(client or {})))
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


def topic_replication(env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) of the topics a service creates for itself:
    ``TALLY_TOPIC_REPLICATION`` / ``TALLY_TOPIC_MIN_INSYNC_REPLICAS``, 1 and 1 on the single local
    broker, 3 and 2 on a cluster (``make up-cluster``, ``deploy/k8s``'s ConfigMap). The one reader
    of both: ``ensure_topics`` and pacing's faust changelogs use it."""
    env = os.environ if env is None else env
    values = []
    for name in ("TALLY_TOPIC_REPLICATION", "TALLY_TOPIC_MIN_INSYNC_REPLICAS"):
        raw = env.get(name, "1")
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"{name} must be a whole number of at least 1, got {raw!r}")
        values.append(int(raw))
    rf, isr = values
    if isr > rf:
        raise ValueError(f"TALLY_TOPIC_MIN_INSYNC_REPLICAS ({isr}) exceeds TALLY_TOPIC_REPLICATION ({rf})")
    return rf, isr


def ensure_topics(
    bootstrap: str,
    specs: Iterable[TopicSpec],
    *,
    replication_factor: int | None = None,
    min_insync_replicas: int | None = None,
    timeout_s: float = 60.0,
    client: Mapping[str, Any] | None = None,
) -> list[str]:
    """Create the topics that do not exist yet; returns the names created. Safe to run twice.

    Replication defaults to ``TALLY_TOPIC_REPLICATION`` / ``TALLY_TOPIC_MIN_INSYNC_REPLICAS``
    (1 and 1, the single local broker; production 3 and 2), so the topics a service creates for
    itself (state changelogs, deltas, its dead letters) are replicated like the catalog's."""
    default_rf, default_isr = topic_replication()
    replication_factor = default_rf if replication_factor is None else replication_factor
    min_insync_replicas = default_isr if min_insync_replicas is None else min_insync_replicas
    admin = AdminClient(admin_config(bootstrap, **(client or {})))
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


def delete_topics(bootstrap: str, names: Sequence[str], timeout_s: float = 30.0, *,
                  client: Mapping[str, Any] | None = None) -> None:
    if not names:
        return
    admin = AdminClient(admin_config(bootstrap, **(client or {})))
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
                skip_end_of_partition(err)
                continue
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


#: Error kinds of a record that decodes but breaks a rule (beside ``DecodeError.kind``: not_single_object,
#: truncated, unknown_schema, corrupt, incompatible). ``classify_rejection`` is the one place that picks them.
FUTURE_EVENT_TIME = "future_event_time"
STALE_EVENT_TIME = "stale_event_time"
INVALID = "invalid"


def classify_rejection(error: DecodeError | None = None, *, field: str | None = None, event_time: datetime | None = None,
                       now: datetime | None = None) -> str:
    """The error kind of a record a consumer refuses, the same for the same bytes in every consumer.

    Several consumers read the same topic (attribution and metering both read impressions) and
    each dead-letters what it cannot take; an operator must be able to group their dead letters
    by kind. So the kind follows from what is wrong with the record, never from which consumer
    saw it: bytes that do not decode get their ``DecodeError`` kind (same bytes, same catalog,
    same kind); an event time a consumer refuses is ``future_event_time`` when it is ahead of
    that consumer's clock and ``stale_event_time`` when it is behind it (each consumer keeps its
    own limits, but not its own words); any other broken rule is ``invalid``.
    """
    if error is not None:
        return error.kind
    if field == "event_time" and event_time is not None and now is not None:
        return FUTURE_EVENT_TIME if event_time > now else STALE_EVENT_TIME
    return INVALID


def out_of_bounds(problem: tuple[str, str], record: Mapping[str, Any], now: datetime) -> DecodeError:
    """A decoded record with a value beyond its limit (``problem``: the (field, reason) of
    ``tally_billing.bounds.record_problem``), as the ``DecodeError`` every consumer dead-letters:
    kind ``invalid``, or for an event time outside the bounds' dates ``future_event_time`` /
    ``stale_event_time`` (any clock inside those dates gives the same kind), with the field."""
    field, reason = problem
    value = record.get(field)
    kind = classify_rejection(field=field, event_time=value if isinstance(value, datetime) else None, now=now)
    return DecodeError(kind, f"{field} {reason}", field=field)


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
    consumer_group: str | None = None,
) -> dict[str, Any]:
    """A ``dead_letter`` record (v2). ``consumer_group``: the group of the consumer refusing it
    (None for the ingest API, which consumes nothing), so the dead letters of two consumers of one
    topic say which one refused the record."""
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
        "consumer_group": consumer_group,
    }


def dead_letter_for(failed: FailedRecord, *, consumer_group: str | None = None) -> dict[str, Any]:
    return dead_letter_record(
        failed.topic, error_kind=classify_rejection(failed.error), reason=failed.error.reason, key=failed.key,
        field=failed.error.field,
        value=failed.raw, partition=failed.partition, offset=failed.offset, consumer_group=consumer_group,
    )


class SyncProducer:
    """Avro producer for scripts and workers: ``flush`` blocks until the broker acknowledged."""

    def __init__(self, config: Mapping[str, Any], catalog: SchemaCatalog) -> None:
        self._producer = Producer(dict(config))
        self.catalog = catalog
        self._errors: list[str] = []

    def produce(self, topic: str, schema: str, value: Mapping[str, Any], key: bytes | str | None = None,
                headers: list[tuple[str, str | bytes | None]] | None = None) -> None:
        data = self.catalog.codec(schema).encode(dict(value))
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

    def dead_letter(self, failed: FailedRecord, *, consumer_group: str | None = None) -> None:
        self.produce(dead_letter_topic(failed.topic), "dead_letter", dead_letter_for(failed, consumer_group=consumer_group),
                     key=failed.key)

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
        self._queue_max = int(config.get("queue.buffering.max.messages", 100_000))  # librdkafka's default
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
        records = records if isinstance(records, list) else list(records)
        if records and len(self._producer) + len(records) <= self._queue_max:
            # Room for all: librdkafka's own batch call, one per run of records of one topic, and
            # one shared callback (no per-record closure). With room, no record can be refused
            # for a full queue, so "the first n" stays true; a record refused at once (too large)
            # carries ``_error`` and is answered as refused.
            on_any = acks.on_any_delivery
            start = 0
            while start < len(records):
                topic = records[start][0]
                end = start
                msgs: list[dict[str, Any]] = []
                while end < len(records) and records[end][0] == topic:
                    msgs.append({"value": records[end][1], "key": records[end][2]})
                    end += 1
                acks.track(start, topic, msgs)
                self._producer.produce_batch(topic, msgs, on_delivery=on_any)
                for i, m in enumerate(msgs):
                    if "_error" in m:
                        acks.refused_now(start + i, m["_error"])
                start = end
            acks.seal(len(records))
            return len(records), acks.future
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

    __slots__ = ("_answered", "_expected", "_lock", "_loop", "_runs", "errors", "future")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.future: asyncio.Future[dict[int, KafkaException]] = loop.create_future()
        self.errors: dict[int, KafkaException] = {}
        self._lock = threading.Lock()
        self._answered = 0
        self._expected = -1
        self._runs: list[tuple[int, str, list[dict[str, Any]]]] = []

    def track(self, start: int, topic: str, msgs: list[dict[str, Any]]) -> None:
        """Records ``start``… were handed to ``Producer.produce_batch`` as ``msgs``: a refused one's
        index is found from its topic, key and value (``on_any_delivery``)."""
        self._runs.append((start, topic, msgs))

    def refused_now(self, index: int, err: KafkaError) -> None:
        """``produce_batch`` refused record ``index`` at once: answered, with its error."""
        self.on_delivery(index, err, None)

    def on_any_delivery(self, err: KafkaError | None, msg: Message) -> None:
        """The shared callback of ``Producer.produce_batch``: a delivery report names no index, so
        a refused record's index is the first not yet refused with its topic, key and value
        (records alike in all three are interchangeable for the caller)."""
        if err is None:  # the common case, counted here (one Python call per record, not two)
            with self._lock:
                self._answered += 1
                done = self._answered == self._expected
            if done:
                self._loop.call_soon_threadsafe(_set_result, self.future, self.errors)
            return
        key, value, topic = msg.key(), msg.value(), msg.topic()
        for start, run_topic, msgs in self._runs:
            if run_topic != topic:
                continue
            for i, m in enumerate(msgs):
                k = m["key"].encode() if isinstance(m["key"], str) else m["key"]
                if m["value"] == value and k == key and start + i not in self.errors:
                    self.on_delivery(start + i, err, msg)
                    return
        # not found (cannot happen): every record of the batch is answered refused rather than one wrongly accepted
        for start, _topic, msgs in self._runs:
            for i in range(len(msgs)):
                self.errors.setdefault(start + i, KafkaException(err))
        self.on_delivery(-1, None, msg)

    def on_delivery(self, index: int, err: KafkaError | None, _msg: Message | None) -> None:
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
