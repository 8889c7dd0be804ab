"""Measure faust's per-message overhead against a plain batched confluent-kafka consumer.

Produces N impressions to a throwaway topic, then times (1) confluent-kafka ``consume(5000)``
+ fastavro decode and (2) a faust agent reading the same topic with ``stream.take(5000)``
(aiokafka transport, raw bytes, the same decode). Prints records/s for each. Run:
``.venv/bin/python bench/metering_faust_overhead.py [N]``.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from datetime import UTC, datetime

from confluent_kafka import Consumer, Producer

from tally_metering.codec import ImpressionDecoder
from tally_streams.avro import SchemaCatalog
from tally_streams.kafka import delete_topics, ensure_topics
from tally_streams.topics import IMPRESSIONS

BOOTSTRAP = os.environ.get("TALLY_KAFKA_BOOTSTRAP", "127.0.0.1:9092")


def produce(topic: str, n: int) -> None:
    codec = SchemaCatalog.load().codec("impression")
    # Uncompressed, as when the faust figure in services/metering/README.md was taken (aiokafka reads lz4 with cramjam).
    p = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 20, "compression.type": "none",
                  "queue.buffering.max.messages": 500_000})
    t = datetime(2026, 1, 5, tzinfo=UTC)
    for i in range(n):
        v = codec.encode({"impression_id": f"imp-{i:09d}", "event_time": t, "advertiser_id": "adv-1",
                          "campaign_id": "cmp-1", "household_id": f"hh-{i % 997}", "partner_id": None,
                          "device_type": "ctv", "ivt": "none", "measurement_source": "first_party"})
        while True:
            try:
                p.produce(topic, v, key=f"hh-{i % 997}")
                break
            except BufferError:
                p.poll(0.05)
    p.flush(60)


def bench_confluent(topic: str, n: int) -> float:
    dec = ImpressionDecoder(SchemaCatalog.load())
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"bench-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    seen, started = 0, 0.0
    while seen < n:
        msgs = c.consume(5000, 1.0)
        if msgs and not started:
            started = time.perf_counter()
        for m in msgs:
            dec.decode(m.value())
        seen += len(msgs)
    rate = n / (time.perf_counter() - started)
    c.close()
    return rate


def bench_faust(topic: str, n: int) -> None:
    """Runs a faust worker (aiokafka transport) whose agent counts ``n`` records, prints the rate, exits."""
    import faust
    from faust.worker import Worker as FaustWorker

    dec = ImpressionDecoder(SchemaCatalog.load())
    app = faust.App(f"bench-{uuid.uuid4().hex[:8]}", broker=f"kafka://{BOOTSTRAP}", value_serializer="raw",
                    topic_disable_leader=True, web_enabled=False, stream_buffer_maxsize=20000,
                    consumer_auto_offset_reset="earliest", broker_max_poll_records=5000)
    source = app.topic(topic, value_serializer="raw", key_serializer="raw")

    @app.agent(source)
    async def count(stream):  # type: ignore[no-untyped-def]
        seen, started = 0, 0.0
        async for batch in stream.take(5000, within=0.5):
            if not started:
                started = time.perf_counter()
            for v in batch:
                dec.decode(v)
            seen += len(batch)
            if seen >= n:
                print(f"faust agent stream.take(5000) + decode: {seen / (time.perf_counter() - started):,.0f} records/s",
                      flush=True)
                os._exit(0)

    FaustWorker(app, loglevel="warning", quiet=True).execute_from_commandline()


def main() -> None:
    if sys.argv[1:2] == ["--faust"]:
        bench_faust(sys.argv[2], int(sys.argv[3]))
        return
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    topic = f"bench-{uuid.uuid4().hex[:10]}"
    ensure_topics(BOOTSTRAP, [IMPRESSIONS.renamed(topic)])
    try:
        produce(topic, n)
        print(f"confluent-kafka consume(5000) + decode: {bench_confluent(topic, n):,.0f} records/s", flush=True)
        import subprocess

        subprocess.run([sys.executable, __file__, "--faust", topic, str(n)], timeout=240, check=False)
    finally:
        delete_topics(BOOTSTRAP, [topic])


if __name__ == "__main__":
    main()
