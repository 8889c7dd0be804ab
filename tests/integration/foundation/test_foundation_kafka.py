"""The Avro/Kafka layer against the real broker: round trip, corrupt records, dead letters,
the faust codec's bytes, and records surviving a broker restart."""

from __future__ import annotations

import subprocess
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from tally_streams.avro import SchemaCatalog
from tally_streams.kafka import (
    AvroConsumer,
    Batch,
    SyncProducer,
    consumer_config,
    dead_letter_for,
    producer_config,
    wait_for_broker,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


def impression(i: int) -> dict:
    return {
        "impression_id": f"imp-{i}",
        "event_time": datetime(2026, 3, 1, 12, 0, i % 60, tzinfo=UTC),
        "advertiser_id": "adv-1",
        "campaign_id": "cmp-1",
        "partner_id": None,
        "household_id": f"hh-{i % 7}",
        "device_type": "ctv",
        "ivt": "none",
        "measurement_source": "first_party",
    }


def drain(consumer: AvroConsumer, expected: int, timeout_s: float = 30.0) -> Batch:
    """Poll until `expected` records (decoded or failed) have arrived, or fail."""
    out = Batch([], [])
    deadline = time.monotonic() + timeout_s
    while len(out) < expected:
        assert time.monotonic() < deadline, f"only {len(out)} of {expected} records arrived"
        b = consumer.poll_batch(max_records=1000, timeout_s=0.5)
        out.records += b.records
        out.failed += b.failed
    return out


def read_fresh(bootstrap: str, topic: str, catalog: SchemaCatalog, schema: str, expected: int,
               timeout_s: float = 30.0) -> Batch:
    """``expected`` records of ``topic`` read from its start by a new consumer group, closed after."""
    consumer = AvroConsumer(consumer_config(bootstrap, f"g-{uuid.uuid4()}"), [topic], catalog.codec(schema))
    try:
        return drain(consumer, expected, timeout_s)
    finally:
        consumer.close()


def test_avro_round_trip_through_the_broker(kafka_bootstrap: str, make_topic, catalog: SchemaCatalog) -> None:
    topic = make_topic(partitions=3)
    producer = SyncProducer(producer_config(kafka_bootstrap), catalog)
    for i in range(300):
        producer.produce(topic, "impression", impression(i), key=f"hh-{i % 7}")
    producer.flush()
    got = read_fresh(kafka_bootstrap, topic, catalog, "impression", 300)
    assert not got.failed
    assert sorted(r.value["impression_id"] for r in got.records) == sorted(f"imp-{i}" for i in range(300))
    assert got.records[0].value["event_time"].tzinfo is not None


def test_corrupt_record_yields_typed_error_and_consumer_carries_on(kafka_bootstrap: str, make_topic, catalog: SchemaCatalog) -> None:
    topic = make_topic(partitions=1)
    dlq = make_topic(partitions=1, suffix="dlq")
    producer = SyncProducer(producer_config(kafka_bootstrap), catalog)
    producer.produce(topic, "impression", impression(1), key="hh-1")
    producer.produce_raw(topic, b"\xc3\x01garbage-bytes", key=b"hh-2")
    producer.produce(topic, "impression", impression(3), key="hh-3")
    producer.flush()

    group = f"g-{uuid.uuid4()}"
    consumer = AvroConsumer(consumer_config(kafka_bootstrap, group), [topic], catalog.codec("impression"))
    try:
        got = drain(consumer, 3)
        assert [r.value["impression_id"] for r in got.records] == ["imp-1", "imp-3"]
        [bad] = got.failed
        assert (bad.error.topic, bad.error.partition, bad.error.offset) == (topic, 0, 1)
        assert bad.error.kind in {"unknown_schema", "truncated"}
        assert bad.raw == b"\xc3\x01garbage-bytes"
        # Dead-letter it with the reason, then commit: commit is always last.
        dead = SyncProducer(producer_config(kafka_bootstrap), catalog)
        dead.produce(dlq, "dead_letter", dead_letter_for(bad))
        dead.flush()
        consumer.commit(got)
    finally:
        consumer.close()

    [letter] = read_fresh(kafka_bootstrap, dlq, catalog, "dead_letter", 1).records
    assert letter.value["source"] == topic and letter.value["offset"] == 1 and letter.value["partition"] == 0
    assert letter.value["value"] == b"\xc3\x01garbage-bytes" and letter.value["reason"]

    # The committed group resumes after the batch: nothing is redelivered.
    again = AvroConsumer(consumer_config(kafka_bootstrap, group), [topic], catalog.codec("impression"))
    try:
        assert len(again.poll_batch(timeout_s=2.0)) == 0
    finally:
        again.close()


def test_faust_codec_writes_the_same_bytes(catalog: SchemaCatalog) -> None:
    from faust.serializers import codecs

    from tally_streams.faust_codec import register_avro_codecs

    names = register_avro_codecs(catalog)
    assert "avro:impression" in names
    rec = impression(5)
    assert codecs.dumps("avro:impression", rec) == catalog.codec("impression").encode(rec)
    assert codecs.loads("avro:impression", catalog.codec("impression").encode(rec)) == rec


def test_decimal_values_survive_the_broker_exactly(kafka_bootstrap: str, make_topic, catalog: SchemaCatalog) -> None:
    topic = make_topic()
    conv = {
        "conversion_id": "c-1", "kind": "conversion", "order_id": "o-1", "event_time": datetime(2026, 3, 1, tzinfo=UTC),
        "advertiser_id": "adv-1", "household_id": "hh-1", "event_type": "purchase", "value": Decimal("1234.565001"),
        "currency": "USD", "source": "pixel", "partner_id": None, "reverses_conversion_id": None, "reversal_amount": None,
    }
    p = SyncProducer(producer_config(kafka_bootstrap), catalog)
    p.produce(topic, "conversion", conv, key="hh-1")
    p.flush()
    [rec] = read_fresh(kafka_bootstrap, topic, catalog, "conversion", 1).records
    assert rec.value["value"] == Decimal("1234.565001")


def test_records_survive_a_broker_restart(kafka_bootstrap: str, make_topic, catalog: SchemaCatalog) -> None:
    """Stop the broker cleanly and start it again (as `make down && make up` do): every record
    written before is still there. The broker is left running for the tests after this one."""
    topic = make_topic(partitions=2)
    p = SyncProducer(producer_config(kafka_bootstrap), catalog)
    for i in range(100):
        p.produce(topic, "impression", impression(i), key=f"hh-{i}")
    p.flush()
    subprocess.run([str(ROOT / "deploy/bin/stack.sh"), "kafka-down"], check=True)
    subprocess.run([str(ROOT / "deploy/bin/stack.sh"), "kafka-up"], check=True)
    wait_for_broker(kafka_bootstrap, timeout_s=120)
    got = read_fresh(kafka_bootstrap, topic, catalog, "impression", 100, timeout_s=90)
    assert sorted(r.value["impression_id"] for r in got.records) == sorted(f"imp-{i}" for i in range(100))
