"""The on-disk dedupe store through SIGKILLs: a worker killed mid-stream and restarted on its
store directory trusts the stores whose checkpoint equals the committed offset (no rebuild); a
store whose checkpoint was made stale is wiped and rebuilt from the changelog. Totals are exact
both times: every distinct impression billed once, every repeated id a duplicate."""

from __future__ import annotations

import json
import random
import signal
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from tally_billing.examples import cpm_terms_json
from tally_metering.store import DiskDedupeStore
from tally_streams.kafka import consumer_config

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 2, 20, 12, tzinfo=UTC)
CAMPAIGN = "c-store"


def terms() -> dict[str, Any]:
    t = cpm_terms_json()
    t["common"].update({"campaign_ids": [CAMPAIGN], "flight_start": "2026-01-01", "flight_end": "2026-12-31",
                        "auto_renew": False, "renewal_term_months": None, "escalator_pct": None,
                        "notice_period_days": 0})
    return t


def impression(rng: random.Random, iid: str | None = None) -> dict[str, Any]:
    return {"impression_id": iid or uuid.UUID(int=rng.getrandbits(128)).hex,
            "event_time": NOW - timedelta(seconds=rng.randint(60, 6 * 3600)), "advertiser_id": "adv-acme",
            "campaign_id": CAMPAIGN, "partner_id": None, "household_id": f"hh-{rng.randint(0, 9999)}",
            "device_type": "ctv", "ivt": "none", "measurement_source": "first_party"}


def opened(log: Path) -> list[dict[str, Any]]:
    """Every "dedupe store opened" log line of the workers, in order."""
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("msg") == "dedupe store opened":
            out.append(rec)
    return out


def test_a_sigkilled_worker_trusts_its_current_store_and_rebuilds_a_stale_one(metering_world: Any, tmp_path: Path) -> None:
    w = metering_world
    w.extra_env["TALLY_METERING_BATCH_MAX"] = "1500"
    w.publish_terms("R-store", [(1, T0, None, terms())])
    w.set_clock(NOW)
    rng = random.Random(20261202)
    log = tmp_path / "worker.log"
    n_partitions = 4

    def spawn_and_wait() -> Any:
        before = len(opened(log))
        proc = w.spawn("w1", log=log)
        deadline = time.monotonic() + 90
        while len(opened(log)) < before + n_partitions:
            assert proc.poll() is None, f"worker exited with {proc.returncode}"
            assert time.monotonic() < deadline, "worker got no partitions"
            time.sleep(0.1)
        return proc

    def committed_impressions() -> int:
        """Impressions the group has committed, over all partitions."""
        c = Consumer(consumer_config(w.bootstrap, w.group))
        try:
            tps = [TopicPartition(w.topics["impressions"], p) for p in range(n_partitions)]
            return sum(max(tp.offset, 0) for tp in c.committed(tps, timeout=30))
        finally:
            c.close()

    def kill(proc: Any) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    def billed(billable: int) -> dict[str, int]:
        """The contract's latest running-total counts, once its billable count reached ``billable``
        (totals are throttled: the last update may follow the commit) or a bounded wait passed."""
        counts: dict[str, int] = {}
        deadline = time.monotonic() + 30
        while counts.get("billable", 0) < billable and time.monotonic() < deadline:
            totals = [r for r in w.read_all("running_totals", "running_total") if r["contract_id"] == "R-store"]
            counts = dict(totals[-1]["counts"]) if totals else {}  # one key, one partition: the last is the newest
            time.sleep(0.3)
        return counts

    # Round 1: a stream of distinct ids and repeats; SIGKILLs while it flows.
    distinct_a = [impression(rng) for _ in range(24_000)]
    stream_a = distinct_a + [dict(rng.choice(distinct_a)) for _ in range(3_000)]
    rng.shuffle(stream_a)
    done = threading.Event()

    def produce() -> None:
        try:
            for i in range(0, len(stream_a), 1_500):
                w.produce("impressions", "impression", stream_a[i:i + 1_500], lambda r: r["household_id"])
                time.sleep(0.5)
        finally:
            done.set()

    proc = spawn_and_wait()
    first_open = opened(log)
    assert {r["outcome"] for r in first_open} == {"missing"}  # a new directory: built from the (empty) changelog
    producer = threading.Thread(target=produce)
    producer.start()
    restarts: list[list[dict[str, Any]]] = []
    for _ in range(3):  # a kill can land between a commit and its store write: that partition is rebuilt
        # kill mid-stream: after this incarnation committed impressions, with work pending
        start, deadline = committed_impressions(), time.monotonic() + 30
        while not (committed_impressions() > start and w.group_lag() > 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.3))
        kill(proc)
        before = len(opened(log))
        proc = spawn_and_wait()
        restarts.append(opened(log)[before:])
        if any(r["outcome"] == "trusted" and r["checkpoint"] > 0 for r in restarts[-1]) and len(restarts) >= 2:
            break
    producer.join()
    w.wait_idle(timeout_s=180)
    for r in (r for batch in restarts for r in batch):
        assert r["outcome"] in ("trusted", "stale"), r  # the directory was kept: never missing
        if r["outcome"] == "stale":  # written only after its commit: a store is never ahead of the group
            assert r["checkpoint"] < r["committed"], r
    # a store holding committed ids was reopened without a rebuild
    assert any(r["outcome"] == "trusted" and r["checkpoint"] > 0 for batch in restarts for r in batch), restarts
    counts = billed(len(distinct_a))
    assert counts.get("billable") == len(distinct_a), counts
    assert counts.get("duplicate") == len(stream_a) - len(distinct_a), counts

    # Round 2: the worker dies; its stores' checkpoints are made stale, and a store holds an id
    # the group never committed (it would be wrongly counted a duplicate if the store were trusted).
    kill(proc)
    poison = "never-committed-id"
    for p in range(n_partitions):
        store = DiskDedupeStore(Path(w.env("w1")["TALLY_METERING_STORE_DIR"]) / f"dedupe-{w.topics['impressions']}-{p}", 8)
        assert store.checkpoint is not None and store.checkpoint >= 0
        store.add_committed({0: [poison]}, store.checkpoint - 1)
        store.close()
    before = len(opened(log))
    proc = spawn_and_wait()
    assert [r["outcome"] for r in opened(log)[before:]] == ["stale"] * n_partitions
    distinct_b = [impression(rng) for _ in range(6_000)] + [impression(rng, poison)]
    stream_b = distinct_b + [dict(rng.choice(distinct_a + distinct_b)) for _ in range(2_000)]
    rng.shuffle(stream_b)
    w.produce("impressions", "impression", stream_b, lambda r: r["household_id"])
    w.wait_idle(timeout_s=180)
    want = len(distinct_a) + len(distinct_b)
    counts = billed(want)
    assert counts.get("billable") == want, counts
    assert counts.get("duplicate") == len(stream_a) + len(stream_b) - want, counts
    kill(proc)
