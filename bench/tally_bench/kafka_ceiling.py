"""1. Kafka's ceiling: the producer and consumer performance tools from Kafka's own jars.

``org.apache.kafka.tools.ProducerPerformance`` writes records the size of Tally's Avro
impressions to a throwaway topic with Tally's producer settings (acks=all, idempotent, lz4,
linger 5 ms); ``ConsumerPerformance`` reads the shared impressions topic (real Avro records).
Both run from the Maven-resolved jars in ``deploy/kafka/libs``.
"""

from __future__ import annotations

import re
import subprocess
import uuid

from tally_streams.kafka import delete_topics, ensure_topics
from tally_streams.topics import IMPRESSIONS

from .common import BOOTSTRAP, ROOT, NotMeasured, unique

KAFKA_CP = str(ROOT / "deploy" / "kafka" / "libs" / "*")
JAVA_OPTS = ["-Xms256m", "-Xmx1g", "-XX:+UseG1GC", f"-Dlog4j2.configurationFile={ROOT / 'deploy/kafka/log4j2.properties'}"]

_PRODUCER_SUMMARY = re.compile(
    r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, ([\d.]+) ms max latency,"
    r" (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th")


def _java(tool: str, args: list[str], timeout_s: float) -> str:
    if not (ROOT / "deploy" / "kafka" / "libs").is_dir():
        raise NotMeasured("deploy/kafka/libs is missing (run make setup)")
    res = subprocess.run(["java", *JAVA_OPTS, "-cp", KAFKA_CP, f"org.apache.kafka.tools.{tool}", *args],
                         capture_output=True, text=True, timeout=timeout_s, cwd=ROOT)
    if res.returncode != 0:
        raise NotMeasured(f"{tool} failed: {res.stderr.strip().splitlines()[-1:]}")
    return res.stdout


def produce(records: int, record_bytes: int, timeout_s: float = 300) -> dict[str, float]:
    """One ProducerPerformance run against a fresh throwaway topic (same partitions as impressions)."""
    topic = unique("perf-producer")
    ensure_topics(BOOTSTRAP, [IMPRESSIONS.renamed(topic)])
    try:
        out = _java("ProducerPerformance", [
            "--topic", topic, "--num-records", str(records), "--record-size", str(record_bytes), "--throughput", "-1",
            "--producer-props", f"bootstrap.servers={BOOTSTRAP}", "acks=all", "enable.idempotence=true",
            "compression.type=lz4", "linger.ms=5", "client.id=tally-bench-perf",
        ], timeout_s)
    finally:
        delete_topics(BOOTSTRAP, [topic])
    m = None
    for line in out.splitlines():
        m = _PRODUCER_SUMMARY.search(line) or m
    if m is None:
        raise NotMeasured(f"ProducerPerformance printed no summary: {out.strip().splitlines()[-1:]}")
    return {"records_per_s": float(m.group(2)), "mb_per_s": float(m.group(3)), "p50_ms": float(m.group(6)),
            "p99_ms": float(m.group(8))}


def consume(topic: str, records: int, timeout_s: float = 300) -> dict[str, float]:
    """One ConsumerPerformance run over ``topic`` with a fresh group; fetch rate excludes the join."""
    out = _java("ConsumerPerformance", [
        "--bootstrap-server", BOOTSTRAP, "--topic", topic, "--messages", str(records),
        "--group", f"bench-perf-{uuid.uuid4().hex[:8]}", "--timeout", "20000",
    ], timeout_s)
    lines = [ln for ln in out.splitlines() if ln.strip()]
    header_i = next((i for i, ln in enumerate(lines) if ln.startswith("start.time")), None)
    if header_i is None or header_i + 1 >= len(lines):
        raise NotMeasured(f"ConsumerPerformance printed no stats: {lines[-1:]}")
    cols = [c.strip() for c in lines[header_i].split(",")]
    vals = [v.strip() for v in lines[header_i + 1].split(",")]
    row = dict(zip(cols, vals, strict=False))
    consumed = int(row["data.consumed.in.nMsg"])
    if consumed < records:
        raise NotMeasured(f"ConsumerPerformance read {consumed} of {records} records")
    return {"records_per_s": float(row["fetch.nMsg.sec"]), "mb_per_s": float(row["fetch.MB.sec"])}
