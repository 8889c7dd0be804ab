"""Harness for the pacing service's integration tests: throwaway topics, a clock file, the faust
worker as a real process (``python -m tally_pacing``), producers of running totals written the
way metering writes them (lz4, in transactions), and readers of the output topics."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from tally_billing.periods import Period
from tally_kit.auth import mint_token
from tally_kit.clock import FileClock
from tally_streams.avro import SchemaCatalog
from tally_streams.kafka import delete_topics, ensure_topics, read_to_end
from tally_streams.topics import BUDGET_ALERTS, CONTRACT_TERMS, PACING_ALERTS, RUNNING_TOTALS, TopicSpec

ROOT = Path(__file__).resolve().parents[3]
SECRET = "pacing-integration-test-secret-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def await_condition(what: str, check: Callable[[], Any], timeout_s: float = 120.0, every_s: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy (bounded); fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, urllib.error.URLError, ValueError, KeyError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every_s)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def running_total(contract: str, advertiser: str, period: Period, *, amount: str, billable: int,
                  latest_event_time: datetime, updated_at: datetime, cap: str | None = None,
                  status: str = "open") -> dict[str, Any]:
    return {
        "total_id": f"{contract}/{period.key}", "contract_id": contract, "advertiser_id": advertiser,
        "contract_type": "cpm", "currency": "USD", "time_zone": period.tz, "period_kind": str(period.kind),
        "period_key": period.key, "period_start": period.start, "period_end": period.end, "status": status,
        "amount_exact": Decimal(amount), "budget_cap_per_period": None if cap is None else Decimal(cap),
        "budget_cap_total": None, "minimum_commitment": None, "lines": [],
        "counts": {"billable": billable, "received": billable}, "latest_event_time": latest_event_time,
        "updated_at": updated_at,
    }


@dataclass
class PacingWorld:
    bootstrap: str
    catalog: SchemaCatalog
    topics: dict[str, str]
    clock_file: Path
    logs: Path
    app_id: str = field(default_factory=lambda: f"test-pacing-{uuid.uuid4().hex[:10]}")
    port: int = field(default_factory=free_port)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.producer = Producer({"bootstrap.servers": self.bootstrap, "compression.type": "lz4", "linger.ms": 5,
                                  "enable.idempotence": True, "acks": "all"})
        self.txn = Producer({"bootstrap.servers": self.bootstrap, "compression.type": "lz4", "linger.ms": 5,
                             "transactional.id": f"{self.app_id}-metering-like"})
        self.txn.init_transactions(30)

    def env(self) -> dict[str, str]:
        t = self.topics
        return {
            "TALLY_KAFKA_BOOTSTRAP": self.bootstrap, "TALLY_PACING_APP_ID": self.app_id,
            "TALLY_PACING_TOPIC_RUNNING_TOTALS": t["running_totals"],
            "TALLY_PACING_TOPIC_BUDGET_ALERTS": t["budget_alerts"], "TALLY_PACING_TOPIC_TERMS": t["terms"],
            "TALLY_PACING_TOPIC_PACING_ALERTS": t["pacing_alerts"], "TALLY_PACING_TOPIC_DLQ": t["dlq"],
            "TALLY_PACING_CLOCK_FILE": str(self.clock_file), "TALLY_PACING_PORT": str(self.port),
            "TALLY_PACING_DATADIR": str(self.logs.parent / f"datadir-{self.app_id}"),
            "TALLY_JWT_SECRET": SECRET, "TALLY_JWT_SECRET_FILE": "",
        }

    # ---------------------------------------------------------------- the worker process

    def start(self, **overrides: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.env(), **overrides}
        out = open(self.logs, "ab")
        proc = subprocess.Popen([sys.executable, "-m", "tally_pacing"], env=env, stdout=out, stderr=out, cwd=ROOT)
        self.procs.append(proc)
        await_condition("the pacing worker to answer /readyz", lambda: self._ready(proc), timeout_s=180)
        return proc

    def _ready(self, proc: subprocess.Popen[bytes]) -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"pacing worker exited with {proc.returncode}; log:\n{self.logs.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)

    # ---------------------------------------------------------------- clock, producing

    def set_clock(self, instant: datetime) -> None:
        FileClock.set(self.clock_file, instant)

    def produce(self, topic_key: str, schema: str, records: list[dict[str, Any]], key: Callable[[dict[str, Any]], str],
                *, transactional: bool = False, abort: bool = False) -> None:
        codec = self.catalog.codec(schema)
        p = self.txn if transactional else self.producer
        if transactional:
            p.begin_transaction()
        for rec in records:
            p.produce(self.topics[topic_key], codec.encode(rec), key=key(rec).encode())
        if transactional:
            if abort:
                p.abort_transaction(30)
            else:
                p.commit_transaction(30)
        else:
            assert p.flush(30) == 0

    def produce_raw(self, topic_key: str, key: bytes, value: bytes) -> None:
        self.producer.produce(self.topics[topic_key], value, key=key)
        assert self.producer.flush(30) == 0

    def read(self, topic_key: str, schema: str) -> list[dict[str, Any]]:
        codec = self.catalog.codec(schema)
        return [codec.decode(m.value()) for m in read_to_end(self.bootstrap, self.topics[topic_key], timeout_s=60)]

    # ---------------------------------------------------------------- the API

    def token(self, *roles: str, advertiser: str | None = None, partner: str | None = None) -> str:
        if advertiser:
            return mint_token(SECRET, "adv-user", ["advertiser"], tenant_type="advertiser", tenant_id=advertiser)
        if partner:
            return mint_token(SECRET, "ptn-user", ["partner"], tenant_type="partner", tenant_id=partner)
        return mint_token(SECRET, "olga", list(roles or ("ops",)))

    def get(self, path: str, token: str | None = None) -> tuple[int, Any]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}",
                                     headers={"Authorization": f"Bearer {token or self.token('ops')}"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        # a count of records, not money; prometheus_client's own parser reads the exposition format
        return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
                   if s.name.startswith(name))


@pytest.fixture
def pacing_world(kafka_bootstrap: str, catalog: SchemaCatalog, tmp_path: Path) -> Iterator[PacingWorld]:
    def spec(like: TopicSpec, suffix: str) -> TopicSpec:
        return like.renamed(f"test-{uuid.uuid4().hex[:12]}-{suffix}")

    specs = {
        "running_totals": spec(RUNNING_TOTALS, "totals"), "budget_alerts": spec(BUDGET_ALERTS, "budget"),
        "terms": spec(CONTRACT_TERMS, "terms"), "pacing_alerts": spec(PACING_ALERTS, "palerts"),
        "dlq": TopicSpec(f"test-{uuid.uuid4().hex[:12]}-dlq", "as source", "dead_letter", partitions=1),
    }
    ensure_topics(kafka_bootstrap, specs.values())
    world = PacingWorld(kafka_bootstrap, catalog, {k: s.name for k, s in specs.items()}, tmp_path / "clock",
                        tmp_path / "pacing.log")
    try:
        yield world
    finally:
        world.stop_all()
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        changelogs = [t for t in admin.list_topics(timeout=10).topics if t.startswith(world.app_id)]
        delete_topics(kafka_bootstrap, [s.name for s in specs.values()] + changelogs)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]
