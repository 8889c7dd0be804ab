"""``AsyncProducer.produce_batch`` against the real broker: one future per batch, resolved only
after the broker answered for every queued record; refusals and a full queue are reported per record."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

from tally_streams.kafka import AsyncProducer, consumer_config, delete_topics, producer_config

pytestmark = pytest.mark.integration


def read_all(bootstrap: str, topic: str, expect: int, timeout_s: float = 20.0) -> list[bytes]:
    consumer = Consumer(consumer_config(bootstrap, f"test-{uuid.uuid4().hex[:8]}", **{"fetch.wait.max.ms": 50}))
    consumer.subscribe([topic])
    got: list[bytes] = []
    try:
        for _ in range(int(timeout_s / 0.2)):
            for m in consumer.consume(num_messages=500, timeout=0.2):
                if m.error() is None:
                    got.append(m.value() or b"")
            if len(got) >= expect:
                break
    finally:
        consumer.close()
    return got


@pytest.fixture
def tiny_topic(kafka_bootstrap: str) -> Iterator[str]:
    """A topic whose broker refuses any record batch above 1 KiB."""
    name = f"test-{uuid.uuid4().hex[:12]}-tiny"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(name, 1, 1, config={"max.message.bytes": "1024"})])[name].result(30)
    yield name
    delete_topics(kafka_bootstrap, [name])


async def test_one_future_for_the_whole_batch(kafka_bootstrap: str, make_topic: Callable[..., str]) -> None:
    a, b = make_topic(partitions=2), make_topic()
    producer = AsyncProducer(producer_config(kafka_bootstrap, client_id="test-batch"))
    try:
        records = [(a if i % 3 else b, f"v{i}".encode(), f"k{i % 7}") for i in range(300)]
        queued, acks = producer.produce_batch(records)
        assert queued == 300
        assert await acks == {}
        assert sorted(read_all(kafka_bootstrap, a, 200)) == sorted(v for t, v, _ in records if t == a)
        assert sorted(read_all(kafka_bootstrap, b, 100)) == sorted(v for t, v, _ in records if t == b)
        empty_n, empty = producer.produce_batch([])
        assert empty_n == 0 and empty.done() and await empty == {}
        single = await producer.produce(a, b"the old API still works", key="k")  # one future per record
        assert single.error() is None
    finally:
        await producer.close()


async def test_a_refused_record_is_reported_by_its_index(kafka_bootstrap: str, make_topic: Callable[..., str],
                                                         tiny_topic: str) -> None:
    ok_topic = make_topic()
    producer = AsyncProducer(producer_config(kafka_bootstrap, client_id="test-batch-refused", **{"linger.ms": 0}))
    try:
        too_big = os.urandom(4096)  # incompressible, over the topic's 1 KiB limit
        queued, acks = producer.produce_batch([(ok_topic, b"fine", None), (tiny_topic, too_big, None),
                                               (ok_topic, b"also fine", None)])
        assert queued == 3
        failures = await acks
        assert set(failures) == {1}
        assert "MSG_SIZE_TOO_LARGE" in str(failures[1]) or "too large" in str(failures[1]).lower()
        assert sorted(read_all(kafka_bootstrap, ok_topic, 2)) == [b"also fine", b"fine"]
    finally:
        await producer.close()


async def test_a_full_queue_stops_the_batch_where_it_filled(kafka_bootstrap: str, make_topic: Callable[..., str]) -> None:
    topic = make_topic()
    producer = AsyncProducer(producer_config(kafka_bootstrap, client_id="test-batch-full",
                                             **{"queue.buffering.max.messages": 3, "linger.ms": 200}))
    try:
        queued, acks = producer.produce_batch([(topic, f"v{i}".encode(), None) for i in range(5)])
        assert queued == 3  # the last two were not produced: the caller answers them "retry"
        assert await acks == {}
        assert sorted(read_all(kafka_bootstrap, topic, 3)) == [b"v0", b"v1", b"v2"]
    finally:
        await producer.close()
