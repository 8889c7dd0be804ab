"""A real-Kafka harness for the attribution processor: throwaway topics, the processor on a
thread (or as a subprocess), a producer, and a collector reading every output topic."""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from prometheus_client import CollectorRegistry

from tally_attribution.processor import Processor
from tally_attribution.settings import SPEC
from tally_kit.settings import load
from tally_streams import topics as catalog_topics
from tally_streams.avro import DecodeError, SchemaCatalog
from tally_streams.kafka import consumer_config, delete_topics, ensure_topics, producer_config
from tally_streams.topics import TopicSpec
from tests import clock

ROLES: dict[str, TopicSpec] = {
    "impressions": catalog_topics.IMPRESSIONS,
    "conversions": catalog_topics.CONVERSIONS,
    "terms": catalog_topics.CONTRACT_TERMS,
    "attributed": catalog_topics.ATTRIBUTED_CONVERSIONS,
    "outcomes": catalog_topics.CONVERSION_OUTCOMES,
    "dlq_ingest": catalog_topics.DLQ_INGEST,
    "dlq_impressions": catalog_topics.DLQ_IMPRESSIONS,
    "dlq_conversions": catalog_topics.DLQ_CONVERSIONS,
    "ivt_reports": catalog_topics.IVT_REPORTS,
}
PARTITIONS = {"impressions": 2, "conversions": 2}
ROOT = Path(__file__).resolve().parents[3]


def make_topics(bootstrap: str) -> dict[str, str]:
    prefix = f"test-{uuid.uuid4().hex[:10]}-attr"
    names = {role: f"{prefix}-{role}" for role in ROLES}
    names["state"] = f"{prefix}-state"
    specs = [TopicSpec(names[r], spec.key, spec.value_schema, partitions=PARTITIONS.get(r, 1), compacted=spec.compacted)
             for r, spec in ROLES.items()]
    ensure_topics(bootstrap, specs)
    return names


def processor_env(bootstrap: str, names: dict[str, str], *, settle_ms: int = 500) -> dict[str, str]:
    ident = names["state"].removesuffix("-state")
    return {
        "TALLY_KAFKA_BOOTSTRAP": bootstrap,
        "TALLY_ATTRIBUTION_SETTLE_DELAY_MS": str(settle_ms),
        "TALLY_ATTRIBUTION_COMMIT_INTERVAL_MS": "100",
        "TALLY_ATTRIBUTION_GROUP": f"{ident}-group",
        "TALLY_ATTRIBUTION_TRANSACTIONAL_ID": f"{ident}-txn",
        "TALLY_ATTRIBUTION_METRICS_PORT": "0",
        # the exposure index on disk, one directory per test's processor identity (kept across its restarts)
        "TALLY_ATTRIBUTION_STORE_DIR": str(Path(tempfile.gettempdir()) / "tally-attribution-tests" / ident),
        "TALLY_ATTRIBUTION_STORE_MEMORY_MB": "16",
        # exposures are indexed relative to their arrival (wall clock): a test clock in the past
        # (tests/clock.py) keeps them by widening the allowance and the pre-contract window to cover the lag
        **({"TALLY_ATTRIBUTION_LATE_ALLOWANCE_DAYS": str(clock.days_behind() + 1),
            "TALLY_ATTRIBUTION_PRECONTRACT_DAYS": str(clock.days_behind() + 7)} if clock.days_behind() else {}),
        **{f"TALLY_ATTRIBUTION_TOPIC_{role.upper()}": name for role, name in names.items()},
    }


class Collector:
    """Reads the output topics (read_committed) into lists, on a thread."""

    def __init__(self, bootstrap: str, catalog: SchemaCatalog, names: dict[str, str]) -> None:
        self.schemas = {names["outcomes"]: "conversion_outcome", names["attributed"]: "attributed_conversion",
                        names["dlq_impressions"]: "dead_letter", names["dlq_conversions"]: "dead_letter",
                        names["dlq_ingest"]: "dead_letter", names["impressions"]: "impression",
                        names["conversions"]: "conversion", names["ivt_reports"]: "ivt_report"}
        self.codecs = {t: catalog.codec(s) for t, s in self.schemas.items()}
        self.records: dict[str, list[dict[str, Any]]] = {t: [] for t in self.schemas}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.consumer = Consumer(consumer_config(bootstrap, f"collector-{uuid.uuid4().hex[:8]}", **{"fetch.wait.max.ms": 50}))
        self.consumer.subscribe(list(self.schemas))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for m in self.consumer.consume(num_messages=500, timeout=0.1):
                if m.error() is not None:
                    continue
                topic = m.topic()
                assert topic is not None
                try:
                    value = self.codecs[topic].decode(m.value())
                except DecodeError:
                    value = {"undecodable": m.value()}
                with self.lock:
                    self.records[topic].append(value)
        self.consumer.close()

    def get(self, topic: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.records[topic])

    def wait_for(self, topic: str, pred: Any, count: int = 1, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while True:
            found = [r for r in self.get(topic) if pred(r)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(found)} of {count} records on {topic} within {timeout_s}s")
            time.sleep(0.05)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


class Harness:
    def __init__(self, bootstrap: str, catalog: SchemaCatalog, names: dict[str, str]) -> None:
        self.bootstrap = bootstrap
        self.catalog = catalog
        self.names = names
        self.producer = Producer(producer_config(bootstrap, client_id="test-attribution"))
        self.collector = Collector(bootstrap, catalog, names)

    def send(self, role: str, schema: str, value: dict[str, Any], key: str | None = None) -> None:
        self.raw(role, self.catalog.codec(schema).encode(value), key)

    def raw(self, role: str, data: bytes, key: str | None = None) -> None:
        self.producer.produce(self.names[role], value=data, key=key)
        assert self.producer.flush(30) == 0

    def terms(self, record: dict[str, Any]) -> None:
        self.send("terms", "contract_terms", record, record["contract_id"])

    def impression(self, record: dict[str, Any]) -> None:
        self.send("impressions", "impression", record, record["household_id"])

    def conversion(self, record: dict[str, Any]) -> None:
        self.send("conversions", "conversion", record, record["household_id"])

    def outcome(self, conversion_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
        return self.collector.wait_for(self.names["outcomes"], lambda r: r["conversion_id"] == conversion_id,
                                       timeout_s=timeout_s)[-1]

    def attributed(self, conversion_id: str) -> list[dict[str, Any]]:
        return [r for r in self.collector.get(self.names["attributed"]) if r["conversion_id"] == conversion_id]


@pytest.fixture(scope="module")
def topic_names(kafka_bootstrap: str) -> Iterator[dict[str, str]]:
    names = make_topics(kafka_bootstrap)
    yield names
    delete_topics(kafka_bootstrap, list(names.values()))


@pytest.fixture(scope="module")
def harness(kafka_bootstrap: str, catalog: SchemaCatalog, topic_names: dict[str, str]) -> Iterator[Harness]:
    h = Harness(kafka_bootstrap, catalog, topic_names)
    yield h
    h.collector.close()


@contextmanager
def running_processor(kafka_bootstrap: str, catalog: SchemaCatalog, names: dict[str, str]) -> Iterator[Processor]:
    """A processor on a thread of the test process until the block ends (a clean stop commits its
    open transaction); whatever it raised fails the test."""
    settings = load(SPEC, {**os.environ, **processor_env(kafka_bootstrap, names)})
    proc = Processor(settings, catalog, registry=CollectorRegistry())
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            proc.run(stop)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert proc.ready.wait(60), f"processor did not get its partitions: {errors}"
    try:
        yield proc
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors


@pytest.fixture(scope="module")
def processor(kafka_bootstrap: str, catalog: SchemaCatalog, topic_names: dict[str, str],
              harness: Harness) -> Iterator[Processor]:
    """The processor on a thread of the test process, against the module's topics."""
    with running_processor(kafka_bootstrap, catalog, topic_names) as proc:
        yield proc
