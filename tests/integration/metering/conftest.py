"""Harness for metering's integration tests: throwaway topics, a clock file, producers,
in-process and subprocess workers, and readers for the output topics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from tally_billing.terms import parse_terms
from tally_kit.clock import FileClock
from tally_kit.settings import load
from tally_metering.settings import SPEC
from tally_metering.worker import Worker
from tally_streams.avro import SchemaCatalog
from tally_streams.kafka import consumer_config, delete_topics, ensure_topics, read_to_end
from tally_streams.topics import (
    ADJUSTMENTS,
    ATTRIBUTED_CONVERSIONS,
    BUDGET_ALERTS,
    CONTRACT_TERMS,
    IMPRESSIONS,
    IVT_REPORT_OUTCOMES,
    IVT_REPORTS,
    PERIODS_CLOSED,
    RUNNING_TOTALS,
    TopicSpec,
)

ROOT = Path(__file__).resolve().parents[3]


@dataclass
class MeteringWorld:
    bootstrap: str
    catalog: SchemaCatalog
    topics: dict[str, str]
    clock_file: Path
    group: str
    extra_env: dict[str, str] = field(default_factory=dict)
    threads: list[tuple[threading.Event, threading.Thread, Worker]] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 20, "compression.type": "lz4",
                                  "queue.buffering.max.messages": 1_000_000, "enable.idempotence": True, "acks": "all"})
        self.codecs = {n: self.catalog.codec(n) for n in self.catalog.names()}

    # ---------------------------------------------------------------- settings / workers

    def env(self, worker_id: str, *, static: bool = True) -> dict[str, str]:
        t = self.topics
        env = {
            "TALLY_KAFKA_BOOTSTRAP": self.bootstrap,
            "TALLY_METERING_WORKER_ID": worker_id,
            "TALLY_METERING_STATIC_MEMBERSHIP": "true" if static else "false",
            "TALLY_METERING_GROUP": self.group,
            "TALLY_METERING_TOPIC_IMPRESSIONS": t["impressions"],
            "TALLY_METERING_TOPIC_ATTRIBUTED": t["attributed"],
            "TALLY_METERING_TOPIC_IVT_REPORTS": t["ivt_reports"],
            "TALLY_METERING_TOPIC_IVT_OUTCOMES": t["ivt_outcomes"],
            "TALLY_METERING_TOPIC_TERMS": t["terms"],
            "TALLY_METERING_TOPIC_RUNNING_TOTALS": t["running_totals"],
            "TALLY_METERING_TOPIC_PERIODS_CLOSED": t["periods_closed"],
            "TALLY_METERING_TOPIC_ADJUSTMENTS": t["adjustments"],
            "TALLY_METERING_TOPIC_BUDGET_ALERTS": t["budget_alerts"],
            "TALLY_METERING_TOPIC_DLQ_IMPRESSIONS": t["dlq_impressions"],
            "TALLY_METERING_TOPIC_DLQ_ATTRIBUTED": t["dlq_attributed"],
            "TALLY_METERING_TOPIC_DELTAS": t["deltas"],
            "TALLY_METERING_TOPIC_STATE": t["state"],
            "TALLY_METERING_TOPIC_DEDUPE": t["dedupe"],
            "TALLY_METERING_DELTA_PARTITIONS": "4",
            "TALLY_METERING_CLOCK_FILE": str(self.clock_file),
            "TALLY_METERING_MAX_FUTURE_SECONDS": str(40 * 86400),
            "TALLY_METERING_TOTALS_INTERVAL_MS": "200",
            "TALLY_METERING_TXN_TIMEOUT_MS": "10000",
            # the on-disk stores of every worker of this world (one directory per worker id)
            "TALLY_METERING_STORE_DIR": str(self.clock_file.parent / "stores" / worker_id),
            "TALLY_METERING_STORE_MEMORY_MB": "16",
        }
        env.update(self.extra_env)
        return env

    def start_thread_worker(self, worker_id: str = "w-inproc") -> Worker:
        settings = load(SPEC, self.env(worker_id))
        worker = Worker(settings, FileClock(self.clock_file), self.catalog)
        stop = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            try:
                worker.run(stop)
            except BaseException as exc:
                errors.append(exc)
                raise

        thread = threading.Thread(target=run, name=f"worker-{worker_id}", daemon=True)
        thread.start()
        self.threads.append((stop, thread, worker))
        assert worker.ready.wait(60) or errors, "worker did not start"
        assert not errors, errors
        return worker

    def spawn(self, worker_id: str, *, static: bool = True, log: Path | None = None) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.env(worker_id, static=static)}
        out = open(log, "ab") if log else subprocess.DEVNULL
        proc = subprocess.Popen([sys.executable, "-m", "tally_metering", "worker"], env=env, stdout=out, stderr=out,
                                cwd=ROOT)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for stop, _thread, _ in self.threads:
            stop.set()
        for _, thread, _ in self.threads:
            thread.join(60)
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
        self.threads.clear()  # stopped on purpose: a later worker's liveness is checked alone
        self.procs.clear()

    def assert_alive(self) -> None:
        dead = [t.name for _, t, _ in self.threads if not t.is_alive()]
        assert not dead, f"in-process worker died: {dead}"

    # ---------------------------------------------------------------- clock

    def set_clock(self, instant: datetime) -> None:
        FileClock.set(self.clock_file, instant)

    # ---------------------------------------------------------------- producing

    def produce(self, topic_key: str, schema: str, records: list[dict[str, Any]], key_of: Callable[[dict[str, Any]], str]) -> None:
        codec = self.codecs[schema]
        topic = self.topics[topic_key]
        for rec in records:
            value = codec.encode(rec)
            while True:
                try:
                    self.producer.produce(topic, value=value, key=key_of(rec))
                    break
                except BufferError:
                    self.producer.poll(0.05)
        assert self.producer.flush(60) == 0

    def publish_terms(self, contract_id: str, versions: list[tuple[int, datetime, datetime | None, dict[str, Any]]],
                      *, revision: int = 1, terminated_at: datetime | None = None) -> None:
        first = parse_terms(versions[0][3])
        rec = {
            "contract_id": contract_id, "advertiser_id": first.common.advertiser_id,
            "contract_type": first.contract_type.value, "status": "active", "terminated_at": terminated_at,
            "revision": revision, "event_id": uuid.uuid4().hex,
            "versions": [{"version": v, "effective_from": ef, "effective_to": et, "approved_at": ef,
                          "terms_json": json.dumps(terms)} for v, ef, et, terms in versions],
        }
        self.produce("terms", "contract_terms", [rec], lambda r: r["contract_id"])

    # ---------------------------------------------------------------- reading

    def read_all(self, topic_key: str, schema: str, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        return [rec for _, _, rec in self.read_positions(topic_key, schema, timeout_s)]

    def read_positions(self, topic_key: str, schema: str, timeout_s: float = 30.0) -> list[tuple[int, int, dict[str, Any]]]:
        """Every record of a topic with its (partition, offset)."""
        codec = self.codecs[schema]
        return [(m.partition(), m.offset(), codec.decode(m.value()))
                for m in read_to_end(self.bootstrap, self.topics[topic_key], timeout_s=timeout_s)]

    def group_lag(self) -> int:
        """Records of the worker group's input topics not yet committed (inputs and deltas)."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        c = Consumer(consumer_config(self.bootstrap, self.group))
        try:
            tps = []
            md = admin.list_topics(timeout=10)
            for key in ("impressions", "attributed", "ivt_reports", "deltas"):
                name = self.topics[key]
                tps += [TopicPartition(name, p) for p in md.topics[name].partitions]
            committed = {(tp.topic, tp.partition): tp.offset for tp in c.committed(tps, timeout=30)}
            lag = 0
            for tp in tps:
                _, high = c.get_watermark_offsets(tp, timeout=10)
                done = committed[(tp.topic, tp.partition)]
                behind = high - (done if done >= 0 else 0)
                # The deltas topic is written in transactions: its last offset is a commit marker,
                # which a consumer never receives, so one offset behind is caught up.
                if tp.topic == self.topics["deltas"]:
                    behind = max(0, behind - 1)
                lag += behind
            return lag
        finally:
            c.close()

    def wait_idle(self, timeout_s: float = 120.0, settle_s: float = 0.0) -> None:
        """Wait until the group committed everything (transaction markers count as one offset each)."""
        deadline = time.monotonic() + timeout_s
        zero_in_a_row = 0
        lag = -1
        while time.monotonic() < deadline:
            self.assert_alive()
            lag = self.group_lag()
            zero_in_a_row = zero_in_a_row + 1 if lag == 0 else 0
            if zero_in_a_row >= 2:  # twice: stage two may still be writing what stage one just sent
                if settle_s:
                    time.sleep(settle_s)
                return
            time.sleep(0.3)
        raise AssertionError(f"metering did not catch up within {timeout_s}s (lag {lag})")

    def replay(self, contract_id: str, period_key: str) -> tuple[int, str]:
        """``tally_metering replay`` of one period against this world's topics: (exit code, output)."""
        import io

        from tally_metering.replay import run_replay

        out = io.StringIO()
        return run_replay(load(SPEC, self.env("replay")), contract_id, period_key, out=out), out.getvalue()

    def assert_replay_agrees(self, close_ids: Iterable[str]) -> None:
        """Metering's replay recomputes every given closed period from the raw topics and agrees."""
        for close_id in sorted(close_ids):
            code, out = self.replay(*close_id.split("/"))
            assert code == 0 and out.rstrip().endswith("equal"), out

    def wait_for(self, topic_key: str, schema: str, predicate: Callable[[list[dict[str, Any]]], bool],
                 timeout_s: float = 60.0) -> list[dict[str, Any]]:
        """Read the topic until ``predicate(records)`` holds (bounded)."""
        deadline = time.monotonic() + timeout_s
        records: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            self.assert_alive()
            records = self.read_all(topic_key, schema)
            if predicate(records):
                return records
            time.sleep(0.3)
        raise AssertionError(f"condition on {topic_key} not met within {timeout_s}s; {len(records)} records")


def _spec(name: str, like: TopicSpec | None, partitions: int, compacted: bool = False) -> TopicSpec:
    if like is not None:
        return TopicSpec(name, like.key, like.value_schema, partitions, like.compacted, like.retention_ms)
    return TopicSpec(name, "test", "test", partitions, compacted)


@pytest.fixture
def metering_world(kafka_bootstrap: str, catalog: SchemaCatalog, tmp_path: Path) -> Iterator[MeteringWorld]:
    yield from _world(kafka_bootstrap, catalog, tmp_path)


def _world(kafka_bootstrap: str, catalog: SchemaCatalog, tmp_path: Path, impressions_partitions: int = 4) -> Iterator[MeteringWorld]:
    run = uuid.uuid4().hex[:10]
    specs = {
        "impressions": _spec(f"test-{run}-imp", IMPRESSIONS, impressions_partitions),
        "attributed": _spec(f"test-{run}-att", ATTRIBUTED_CONVERSIONS, 2),
        "ivt_reports": _spec(f"test-{run}-ivt", IVT_REPORTS, 2),
        "ivt_outcomes": _spec(f"test-{run}-ivto", IVT_REPORT_OUTCOMES, 1),
        "terms": _spec(f"test-{run}-terms", CONTRACT_TERMS, 1),
        "running_totals": _spec(f"test-{run}-rt", RUNNING_TOTALS, 2),
        "periods_closed": _spec(f"test-{run}-pc", PERIODS_CLOSED, 2),
        "adjustments": _spec(f"test-{run}-adj", ADJUSTMENTS, 2),
        "budget_alerts": _spec(f"test-{run}-ba", BUDGET_ALERTS, 1),
        "dlq_impressions": _spec(f"test-{run}-dlqi", None, 1),
        "dlq_attributed": _spec(f"test-{run}-dlqa", None, 1),
        "deltas": _spec(f"test-{run}-deltas", None, 4),
        "state": _spec(f"test-{run}-state", None, 4, compacted=True),
        "dedupe": _spec(f"test-{run}-dedupe", None, impressions_partitions),
    }
    ensure_topics(kafka_bootstrap, list(specs.values()))
    world = MeteringWorld(kafka_bootstrap, catalog, {k: s.name for k, s in specs.items()}, tmp_path / "clock",
                          f"test-{run}-metering")
    try:
        yield world
    finally:
        world.stop_all()
        delete_topics(kafka_bootstrap, [s.name for s in specs.values()])


@pytest.fixture(scope="module")
def module_world(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeteringWorld]:
    catalog = SchemaCatalog.load(ROOT / "schemas")
    yield from _world(kafka_bootstrap, catalog, tmp_path_factory.mktemp("metering"))
