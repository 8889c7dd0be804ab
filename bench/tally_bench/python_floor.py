"""2. The Python floor: confluent-kafka batch consume + fastavro decode of the impressions topic.

Two decoders over the same records: ``tally_streams``' ``AvroCodec.decode`` (checks the
single-object header, resolves the writer schema by fingerprint, returns datetimes) and raw
``fastavro.schemaless_reader`` on the body (what the codec costs over the bare library).
Timed from the first record received to the last decoded, in a fresh consumer group.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Callable
from typing import Any

import fastavro
from confluent_kafka import Consumer

from tally_streams.avro import HEADER_LEN, SchemaCatalog

from .common import BOOTSTRAP, NotMeasured


def _decoders() -> dict[str, Callable[[bytes], Any]]:
    codec = SchemaCatalog.load().codec("impression")
    schema = codec.schema.schema

    def raw(value: bytes) -> Any:
        buf = io.BytesIO(value)
        buf.seek(HEADER_LEN)
        return fastavro.schemaless_reader(buf, schema, schema)

    return {"codec": codec.decode, "fastavro": raw}


def consume(topic: str, records: int, decoder: str, timeout_s: float = 300) -> float:
    """Records/s for one pass over ``topic`` decoding every record with ``decoder``."""
    decode = _decoders()[decoder]
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"bench-floor-{uuid.uuid4().hex[:8]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False, "fetch.max.bytes": 52_428_800,
                  "max.partition.fetch.bytes": 10_485_760, "queued.min.messages": 200_000})
    try:
        c.subscribe([topic])
        seen, started = 0, 0.0
        deadline = time.monotonic() + timeout_s
        while seen < records:
            if time.monotonic() > deadline:
                raise NotMeasured(f"python floor read {seen} of {records} records in {timeout_s:.0f}s")
            msgs = c.consume(10_000, 1.0)
            if msgs and not started:
                started = time.perf_counter()
            for m in msgs:
                value = m.value()
                if m.error() is None and value is not None:
                    decode(value)
            seen += len(msgs)
        return records / (time.perf_counter() - started)
    finally:
        c.close()
