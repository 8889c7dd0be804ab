"""``TALLY_ATTRIBUTION_INGEST_PROCESSES=2``: two ingest processes on one port (SO_REUSEPORT);
a child that dies is restarted, and the children die with the parent, even on SIGKILL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest

from tally_kit.auth import mint_token
from tally_streams.avro import SchemaCatalog
from tally_streams.kafka import delete_topics
from tests import clock

from .conftest import ROOT, Harness, make_topics, processor_env

pytestmark = pytest.mark.integration

SECRET = "ingest-processes-secret-long-enough-for-hs256"


@pytest.fixture
def names(kafka_bootstrap: str) -> Iterator[dict[str, str]]:
    n = make_topics(kafka_bootstrap)
    yield n
    delete_topics(kafka_bootstrap, list(n.values()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> list[int]:
    try:
        return [int(c) for t in os.listdir(f"/proc/{pid}/task")
                for c in Path(f"/proc/{pid}/task/{t}/children").read_text().split()]
    except FileNotFoundError:
        return []


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_until(cond: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


async def test_two_ingest_processes_share_the_port(kafka_bootstrap: str, names: dict[str, str], catalog: SchemaCatalog,
                                                   tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, **processor_env(kafka_bootstrap, names), "TALLY_ATTRIBUTION_PORT": str(port),
           "TALLY_ATTRIBUTION_INGEST_PROCESSES": "2", "TALLY_JWT_SECRET": SECRET}
    log = (tmp_path / "ingest.log").open("ab")
    parent = subprocess.Popen([sys.executable, "-m", "tally_attribution", "ingest"], env=env, cwd=ROOT,
                              stdout=log, stderr=subprocess.STDOUT)
    h = Harness(kafka_bootstrap, catalog, names)
    try:
        wait_until(lambda: ready(port) and len(children(parent.pid)) == 1, 60)
        [child] = children(parent.pid)
        token = mint_token(SECRET, "adserver-1", ["ingest"])
        when = (clock.now() - timedelta(minutes=5)).isoformat()
        ids = [f"mp-{i}" for i in range(40)]
        # a fresh connection per request, so the kernel spreads them over both processes
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            for iid in ids:
                event = {"impression_id": iid, "event_time": when, "advertiser_id": "a", "campaign_id": "c", "household_id": "h"}
                async with session.post(f"http://127.0.0.1:{port}/v1/impressions", json=[event],
                                        headers={"Authorization": f"Bearer {token}"}) as resp:
                    assert resp.status == 200
                    assert (await resp.json())["accepted"] == 1
        got = h.collector.wait_for(names["impressions"], lambda r: str(r["impression_id"]).startswith("mp-"), count=40)
        assert sorted(r["impression_id"] for r in got) == sorted(ids)

        os.kill(child, signal.SIGKILL)  # a dead child is replaced
        wait_until(lambda: len(children(parent.pid)) == 1 and children(parent.pid) != [child] and ready(port), 30)
        [replacement] = children(parent.pid)

        os.kill(parent.pid, signal.SIGKILL)  # and the children do not outlive the parent
        parent.wait(10)
        wait_until(lambda: not alive(replacement), 15)
    finally:
        for pid in children(parent.pid):
            os.kill(pid, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        h.collector.close()
        log.close()
