"""Run the whole Tally stack for a demo or the browser tests: each available service as a
subprocess on a free port, then the console gateway in front of them.

``.venv/bin/python deploy/bin/devstack.py [--fresh] [--demo] [--port N] [--ready-file PATH]``

- ``--fresh``: the contracts and invoicing services get new, empty databases (dropped on exit),
  and consumer groups of their own, so a test run never sees or disturbs anyone's data.
  Metering and pacing get running-total and budget-alert topics of the run, pacing an app id
  (consumer group, table changelogs) of its own; all dropped on exit.
- Services whose package is not installed are skipped and listed in the ready file.
- Prints (and writes to ``--ready-file``) one JSON line ``{"console": URL, "services": {...}}``
  once every started service answers ``/healthz``; runs until SIGTERM/SIGINT, then stops them.

Kafka and PostgreSQL must be up (``make up``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from confluent_kafka.admin import AdminClient

from tally_kit.db import drop_database
from tally_streams.kafka import delete_topics, ensure_topics
from tally_streams.topics import ADJUSTMENTS, BUDGET_ALERTS, CATALOG, PACING_ALERTS, PERIODS_CLOSED, RUNNING_TOTALS

#: (service, module, argv) in start order; metering runs its worker and spend API together
SERVICES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("contracts", "tally_contracts", ("serve",)),
    ("attribution", "tally_attribution", ("ingest",)),
    ("metering", "tally_metering", ("all",)),
    ("invoicing", "tally_invoicing", ("serve",)),
    ("pacing", "tally_pacing", ()),
)
#: seconds a service may take to answer /healthz (pacing's faust worker serves HTTP after its table recovery)
HEALTH_DEADLINE_S = {"pacing": 120.0}
DATABASES = ("contracts", "invoicing")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_dsn(database: str) -> str:
    return f"postgresql://tally:tally@127.0.0.1:{os.environ.get('TALLY_PG_PORT', '5433')}/{database}"


async def _create_db(name: str) -> None:
    conn = await asyncpg.connect(pg_dsn("postgres"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_db(name: str) -> None:
    conn = await asyncpg.connect(pg_dsn("postgres"))
    try:
        await drop_database(conn, name)
    finally:
        await conn.close()


def wait_healthy(url: str, proc: subprocess.Popen[bytes], deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:  # noqa: S310 - local URL we built
                if resp.status == 200:
                    return
        time.sleep(0.2)
    raise TimeoutError(f"{url}/healthz did not answer within {deadline_s}s")


class Stack:
    def __init__(self, fresh: bool, demo: bool, console_port: int, log_dir: Path) -> None:
        self.fresh = fresh
        self.demo = demo
        self.console_port = console_port
        self.log_dir = log_dir
        self.run_id = uuid.uuid4().hex[:10]
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.databases: list[str] = []
        self.urls: dict[str, str] = {}
        self.skipped: list[str] = []
        self.topics: list[str] = []
        self.invoicing_topics: dict[str, str] = {}
        self.pacing_app_id: str | None = None

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def start(self) -> dict[str, Any]:
        base_env = dict(os.environ)
        bootstrap = base_env.get("TALLY_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
        # what `make up` does: every catalog topic exists (idempotent; auto-creation is off)
        ensure_topics(bootstrap, CATALOG)
        for name, module, args in SERVICES:
            if importlib.util.find_spec(module) is None:
                self.skipped.append(name)
                continue
            port = free_port()
            env = {**base_env, f"TALLY_{name.upper()}_PORT": str(port), f"TALLY_{name.upper()}_HOST": "127.0.0.1"}
            if self.fresh:
                env[f"TALLY_{name.upper()}_GROUP"] = f"e2e-{self.run_id}-{name}"
                env[f"TALLY_{name.upper()}_CONSUMER_GROUP"] = f"e2e-{self.run_id}-{name}"
                if name == "invoicing":
                    # closed periods and adjustments of this run only (the browser test publishes its own)
                    for kind, spec in (("PERIODS_CLOSED", PERIODS_CLOSED), ("ADJUSTMENTS", ADJUSTMENTS)):
                        topic = f"e2e-{self.run_id}-{kind.lower().replace('_', '-')}"
                        ensure_topics(bootstrap, [spec.renamed(topic)])
                        env[f"TALLY_INVOICING_{kind}_TOPIC"] = topic
                        self.topics.append(topic)
                        self.invoicing_topics[kind.lower()] = topic
                if name == "metering":
                    # its internal changelogs are per run, so no other metering's state leaks in
                    for kind in ("DELTAS", "STATE", "DEDUPE"):
                        topic = f"e2e-{self.run_id}-metering-{kind.lower()}"
                        env[f"TALLY_METERING_TOPIC_{kind}"] = topic
                        self.topics.append(topic)
                if name in ("metering", "pacing"):
                    # running totals and budget alerts of this run only, so pacing reads no one else's history
                    for kind, spec in (("RUNNING_TOTALS", RUNNING_TOTALS), ("BUDGET_ALERTS", BUDGET_ALERTS)):
                        topic = f"e2e-{self.run_id}-{spec.name.replace('.', '-').replace('_', '-')}"
                        if topic not in self.topics:
                            ensure_topics(bootstrap, [spec.renamed(topic)])
                            self.topics.append(topic)
                        env[f"TALLY_{name.upper()}_TOPIC_{kind}"] = topic
                if name == "pacing":
                    # its own app id: a consumer group and table changelogs of this run (dropped at exit)
                    self.pacing_app_id = f"e2e-{self.run_id}-pacing"
                    env["TALLY_PACING_APP_ID"] = self.pacing_app_id
                    env["TALLY_PACING_DATADIR"] = str(self.log_dir / f"pacing-{self.run_id}")
                    alerts = f"e2e-{self.run_id}-pacing-alerts"
                    ensure_topics(bootstrap, [PACING_ALERTS.renamed(alerts)])
                    self.topics.append(alerts)
                    env["TALLY_PACING_TOPIC_PACING_ALERTS"] = alerts
                    env["TALLY_PACING_TOPIC_DLQ"] = f"{self.pacing_app_id}-dlq"
                if name in DATABASES:
                    db = f"e2e_{self.run_id}_{name}"
                    asyncio.run(_create_db(db))
                    self.databases.append(db)
                    env[f"TALLY_{name.upper()}_DATABASE_URL"] = pg_dsn(db)
                    subprocess.run([sys.executable, "-m", module, "migrate"], env=env, check=True, capture_output=True)
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, self._spawn(name, [sys.executable, "-m", module, *args], env), HEALTH_DEADLINE_S.get(name, 60.0))
            self.urls[name] = url
        env = {**base_env, "TALLY_CONSOLE_PORT": str(self.console_port), "TALLY_CONSOLE_DEMO": "true" if self.demo else "false"}
        for name, url in self.urls.items():
            env[f"TALLY_CONSOLE_{name.upper()}_URL"] = url
        console = f"http://127.0.0.1:{self.console_port}"
        wait_healthy(console, self._spawn("console", [sys.executable, "-m", "tally_console"], env), 30)
        return {"console": console, "services": self.urls, "skipped": self.skipped, "databases": self.databases,
                "run_id": self.run_id, "logs": str(self.log_dir), "invoicing_topics": self.invoicing_topics}

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for _, proc in reversed(self.procs):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        bootstrap = os.environ.get("TALLY_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
        if self.pacing_app_id:
            # faust's changelogs, its leader topic and the dead letters, all named after the app id
            with contextlib.suppress(Exception):
                names = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
                self.topics.extend(t for t in names if t.startswith(self.pacing_app_id) and t not in self.topics)
        if self.topics:
            with contextlib.suppress(Exception):
                delete_topics(bootstrap, self.topics)
        for db in self.databases:
            with contextlib.suppress(Exception):
                asyncio.run(_drop_db(db))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tally-devstack", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--fresh", action="store_true", help="new databases and consumer groups (tests)")
    parser.add_argument("--demo", action="store_true", help="demo mode: one-click users on the sign-in page")
    parser.add_argument("--port", type=int, default=8080, help="console port (0 = any free port)")
    parser.add_argument("--ready-file", type=Path, help="also write the ready JSON line here")
    parser.add_argument("--log-dir", type=Path, default=Path(".state/logs/devstack"))
    args = parser.parse_args(argv)
    stack = Stack(args.fresh, args.demo, args.port or free_port(), args.log_dir)
    stopping = False

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        ready = stack.start()
        line = json.dumps(ready)
        print(line, flush=True)
        if args.ready_file:
            args.ready_file.write_text(line + "\n")
        print(f"Tally console: {ready['console']}/", file=sys.stderr, flush=True)
        while not stopping and all(p.poll() is None for _, p in stack.procs):
            time.sleep(0.5)
        dead = [n for n, p in stack.procs if p.poll() is not None]
        if dead and not stopping:
            print(f"stopped because these exited: {', '.join(dead)} (see {args.log_dir})", file=sys.stderr)
            return 1
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
