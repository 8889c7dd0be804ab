"""The whole of Tally, started for one end-to-end test: fresh databases, throwaway topics, every
service as a real process under the supervisor (deploy/bin/supervise.py), and the metering
clock in a file the test moves. Nothing here knows how a service computes anything."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from tally_kit.db import drop_database
from tally_kit.migrations import migrate
from tally_streams import topics
from tally_streams.kafka import consume_to_end, delete_topics, ensure_topics, reader_config
from tests import clock

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable

# Ports apart from the defaults, so a running `make demo` does not collide with the tests.
PORTS = {"contracts": 18081, "ingest": 18082, "spend": 18083, "invoicing": 18084}
SERVICES = ("contracts", "ingest", "attribution", "metering", "spend", "invoicing")


def pg_dsn(db: str) -> str:
    return f"postgresql://tally:tally@127.0.0.1:{os.environ.get('TALLY_PG_PORT', '5433')}/{db}"


async def wait_until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str, every_s: float = 0.25) -> None:
    """Poll ``check`` until it holds; fail with ``what`` after ``timeout_s`` (bounded, no fixed sleeps)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        await asyncio.sleep(every_s)


@dataclass
class Stack:
    tmp: Path
    bootstrap: str
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    supervisor: subprocess.Popen[bytes] | None = None
    #: the catalog topics' replication: 1 on the single local broker, 3 and 2 on the cluster (production)
    replication_factor: int = 1
    min_insync_replicas: int = 1
    #: the settings of the test's own Kafka clients over the defaults (the secure variant: the admin's)
    kafka: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.topic = {spec.name: f"e2e-{self.run}-{spec.name}" for spec in topics.CATALOG}
        self.dbs = {"contracts": f"e2e_{self.run}_contracts", "invoicing": f"e2e_{self.run}_invoicing"}
        self.clock_file = self.tmp / "metering-clock"
        self.state = self.tmp / "state"
        self.secret = "e2e-secret-" + uuid.uuid4().hex

    # ------------------------------------------------------------------ set-up
    async def create(self) -> None:
        ensure_topics(self.bootstrap, [spec.renamed(self.topic[spec.name]) for spec in topics.CATALOG],
                      replication_factor=self.replication_factor, min_insync_replicas=self.min_insync_replicas,
                      client=self.kafka)
        admin = await asyncpg.connect(pg_dsn("tally_contracts"))
        try:
            for db in self.dbs.values():
                await admin.execute(f'CREATE DATABASE "{db}"')
        finally:
            await admin.close()
        for service, db in self.dbs.items():
            await migrate(pg_dsn(db), ROOT / "services" / service / "migrations")

    def env(self) -> dict[str, str]:
        t = self.topic
        internal = f"e2e-{self.run}"
        return {
            **os.environ,
            "TALLY_KAFKA_BOOTSTRAP": self.bootstrap,
            "TALLY_JWT_SECRET": self.secret,
            "TALLY_STATE_DIR": str(self.state),
            # the processors' on-disk stores live and go with the test's directory, not the checkout's .state
            "TALLY_ATTRIBUTION_STORE_DIR": str(self.state / "stores" / "attribution"),
            "TALLY_METERING_STORE_DIR": str(self.state / "stores" / "metering"),
            # contracts
            "TALLY_CONTRACTS_DATABASE_URL": pg_dsn(self.dbs["contracts"]),
            "TALLY_CONTRACTS_PORT": str(PORTS["contracts"]),
            "TALLY_CONTRACTS_EVENTS_TOPIC": t["contracts.events"],
            "TALLY_CONTRACTS_TERMS_TOPIC": t["contracts.terms"],
            # attribution (ingest + processor)
            "TALLY_ATTRIBUTION_PORT": str(PORTS["ingest"]),
            "TALLY_ATTRIBUTION_METRICS_PORT": "0",
            "TALLY_ATTRIBUTION_SETTLE_DELAY_MS": "1000",
            # The simulated month lies in the past: exposures are kept for its whole age, not
            # just the lookback (the index is bounded relative to arrival time).
            "TALLY_ATTRIBUTION_LATE_ALLOWANCE_DAYS": str(70 + clock.days_behind()),
            "TALLY_ATTRIBUTION_GROUP": f"{internal}-attribution",
            "TALLY_ATTRIBUTION_TRANSACTIONAL_ID": f"{internal}-attribution",
            "TALLY_ATTRIBUTION_TOPIC_IMPRESSIONS": t["ads.impressions"],
            "TALLY_ATTRIBUTION_TOPIC_CONVERSIONS": t["ads.conversions"],
            "TALLY_ATTRIBUTION_TOPIC_TERMS": t["contracts.terms"],
            "TALLY_ATTRIBUTION_TOPIC_ATTRIBUTED": t["billing.attributed_conversions"],
            "TALLY_ATTRIBUTION_TOPIC_OUTCOMES": t["billing.conversion_outcomes"],
            "TALLY_ATTRIBUTION_TOPIC_DLQ_INGEST": t["dlq.ingest"],
            "TALLY_ATTRIBUTION_TOPIC_IVT_REPORTS": t["ads.ivt_reports"],
            "TALLY_ATTRIBUTION_TOPIC_DLQ_IMPRESSIONS": t["dlq.ads.impressions"],
            "TALLY_ATTRIBUTION_TOPIC_DLQ_CONVERSIONS": t["dlq.ads.conversions"],
            "TALLY_ATTRIBUTION_TOPIC_STATE": f"{internal}-attribution.state-changelog",
            "TALLY_ATTRIBUTION_TOPIC_LEASE": f"{internal}-attribution.processor-lease",
            # metering (worker + spend API)
            "TALLY_METERING_PORT": str(PORTS["spend"]),
            "TALLY_METERING_METRICS_PORT": "0",
            "TALLY_METERING_WORKER_ID": f"{internal}-metering-1",
            "TALLY_METERING_GROUP": f"{internal}-metering",
            "TALLY_METERING_CLOCK_FILE": str(self.clock_file),
            "TALLY_METERING_TOPIC_IMPRESSIONS": t["ads.impressions"],
            "TALLY_METERING_TOPIC_ATTRIBUTED": t["billing.attributed_conversions"],
            "TALLY_METERING_TOPIC_IVT_REPORTS": t["ads.ivt_reports"],
            "TALLY_METERING_TOPIC_IVT_OUTCOMES": t["billing.ivt_report_outcomes"],
            "TALLY_METERING_TOPIC_TERMS": t["contracts.terms"],
            "TALLY_METERING_TOPIC_RUNNING_TOTALS": t["billing.running_totals"],
            "TALLY_METERING_TOPIC_PERIODS_CLOSED": t["billing.periods_closed"],
            "TALLY_METERING_TOPIC_ADJUSTMENTS": t["billing.adjustments"],
            "TALLY_METERING_TOPIC_BUDGET_ALERTS": t["billing.budget_alerts"],
            "TALLY_METERING_TOPIC_DLQ_IMPRESSIONS": t["dlq.ads.impressions"],
            "TALLY_METERING_TOPIC_DLQ_ATTRIBUTED": f"{internal}-dlq.billing.attributed_conversions",
            "TALLY_METERING_TOPIC_DELTAS": f"{internal}-metering.deltas",
            "TALLY_METERING_TOPIC_STATE": f"{internal}-metering.state",
            "TALLY_METERING_TOPIC_DEDUPE": f"{internal}-metering.dedupe",
            # invoicing
            "TALLY_INVOICING_DATABASE_URL": pg_dsn(self.dbs["invoicing"]),
            "TALLY_INVOICING_PORT": str(PORTS["invoicing"]),
            "TALLY_INVOICING_PERIODS_CLOSED_TOPIC": t["billing.periods_closed"],
            "TALLY_INVOICING_ADJUSTMENTS_TOPIC": t["billing.adjustments"],
            "TALLY_INVOICING_TERMS_TOPIC": t["contracts.terms"],
            "TALLY_INVOICING_IMPRESSIONS_TOPIC": t["ads.impressions"],
            "TALLY_INVOICING_ATTRIBUTED_TOPIC": t["billing.attributed_conversions"],
            "TALLY_INVOICING_CONSUMER_GROUP": f"{internal}-invoicing",
            "TALLY_INVOICING_FOUR_EYES_THRESHOLD": "*=100000000",
        }

    def command(self, service: str, args: str) -> str:
        """The Procfile command that runs ``python args`` as ``service`` (the secure variant: as its principal)."""
        return f"{PY} {args}"

    def procfile(self) -> Path:
        """The API services; the stream processors start later (e2e_flow.start_processors)."""
        path = self.tmp / "Procfile"
        path.write_text("\n".join([
            f"contracts: {self.command('contracts', '-m tally_contracts')}",
            f"ingest: {self.command('ingest', '-m tally_attribution ingest')}",
            f"spend: {self.command('metering', '-m tally_metering api')}",
            f"invoicing: {self.command('invoicing', '-m tally_invoicing serve')}",
        ]) + "\n")
        return path

    def set_clock(self, instant: datetime) -> None:
        tmp = self.clock_file.with_suffix(".tmp")
        tmp.write_text(instant.isoformat())
        os.replace(tmp, self.clock_file)

    async def start(self) -> None:
        self.supervisor = subprocess.Popen(
            [PY, str(ROOT / "deploy/bin/supervise.py"), str(self.procfile())], cwd=ROOT, env=self.env(),
            stdout=open(self.tmp / "supervisor.log", "ab"), stderr=subprocess.STDOUT,
        )
        await self.wait_ready(timeout_s=120)

    async def wait_ready(self, timeout_s: float = 120) -> None:
        urls = [f"http://127.0.0.1:{PORTS[s]}/readyz" for s in ("contracts", "ingest", "spend", "invoicing")]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            async def all_ready() -> bool:
                for url in urls:
                    try:
                        async with session.get(url) as resp:
                            if resp.status != 200:
                                return False
                    except (aiohttp.ClientError, TimeoutError):
                        return False
                return True

            await wait_until(all_ready, timeout_s, "every service to answer /readyz")

    # ------------------------------------------------------------------ observing
    def pid(self, service: str) -> int | None:
        f = self.state / "run" / f"{service}.pid"
        try:
            return int(f.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def kill(self, service: str) -> int | None:
        """SIGKILL a service's process group (the supervisor restarts it)."""
        pid = self.pid(service)
        if pid is not None:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                return None
        return pid

    def kill_one_behind(self, rng: random.Random, kills: Counter[str], log: list[str]) -> None:
        """The chaos drivers' usual move: SIGKILL a service not yet killed twice (any, once all
        have been), counting it in ``kills`` and noting it in ``log`` if it was running."""
        behind = [s for s in SERVICES if kills[s] < 2]
        victim = rng.choice(behind or list(SERVICES))
        if self.kill(victim) is not None:
            kills[victim] += 1
            log.append(f"kill -9 {victim}")

    def lag(self, group: str, topic_names: list[str]) -> int:
        """Committed records on ``topic_names`` that consumer group ``group`` has not committed yet.

        Offsets alone over-count: transaction markers take offsets too. So each partition is read
        (read_committed) from the group's committed offset to its end, counting the records."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap, **self.kafka})
        md = admin.list_topics(timeout=10)
        if any(t not in md.topics for t in topic_names):
            return 1  # an input the consumer creates itself (metering's deltas) is not there yet
        parts = [TopicPartition(t, p) for t in topic_names for p in md.topics[t].partitions]
        probe = Consumer(reader_config(self.bootstrap, group, **self.kafka))
        try:
            committed = probe.committed(parts, timeout=10)
            start = [TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
                     for tp in committed]
            probe.assign(start)
            pending = 0
            try:
                for _ in consume_to_end(probe, start, timeout_s=30):
                    pending += 1
            except TimeoutError:
                return max(pending, 1)
            return pending
        finally:
            probe.close()

    def log_tail(self, n: int = 15) -> str:
        """The last lines of each service log, access-log lines left out."""
        out = []
        for f in sorted((self.state / "logs").glob("*.log")):
            lines = [ln for ln in f.read_text(errors="replace").splitlines() if "aiohttp.access" not in ln][-n:]
            out.append(f"==> {f.name}\n" + "\n".join(lines))
        return "\n".join(out)

    # ------------------------------------------------------------------ tear-down
    async def stop(self) -> None:
        if self.supervisor is not None and self.supervisor.poll() is None:
            self.supervisor.send_signal(signal.SIGTERM)
            try:
                self.supervisor.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.supervisor.kill()
                self.supervisor.wait()

    async def destroy(self) -> None:
        await self.stop()
        admin = await asyncpg.connect(pg_dsn("tally_contracts"))
        try:
            for db in self.dbs.values():
                await drop_database(admin, db)
        finally:
            await admin.close()
        names = list(self.topic.values())
        md = AdminClient({"bootstrap.servers": self.bootstrap, **self.kafka}).list_topics(timeout=10)
        names += [t for t in md.topics if t.startswith(f"e2e-{self.run}-") and t not in names]
        delete_topics(self.bootstrap, names, client=self.kafka)
