"""The on-disk usage ledger through SIGKILLs, on the real broker: a worker killed and restarted
on its store directory trusts each deltas partition's ledger whose checkpoint equals the
committed offset (its ledger records in the changelog are skipped: a bogus one planted there
is never read) and re-rates the past from it exactly — a backdated amendment after the restart
gives the adjustments a run without restart gives (``test_metering_rerating.py``: -500 at v1,
+500 at v2). A ledger whose checkpoint was made stale (and which holds usage the group never
committed) is wiped and rebuilt from the changelog, and re-rates exactly too."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from tally_billing.examples import cpm_terms_json
from tally_billing.usage import DAY_US, to_micros
from tally_metering.domain import UsageDay
from tally_metering.engine import delta_partition
from tally_metering.state import encode_usage_day
from tally_metering.store import DiskLedgerStore

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, 5, tzinfo=UTC)  # 2026-01-01 00:00 in New York
FEB10, FEB20 = datetime(2026, 2, 10, 15, tzinfo=UTC), datetime(2026, 2, 20, 1, tzinfo=UTC)
NY_FEB5 = datetime(2026, 2, 5, 5, tzinfo=UTC)
NY_FEB15 = datetime(2026, 2, 15, 5, tzinfo=UTC)
N_PARTITIONS = 4
# two advertisers owned by different deltas partitions: one restarts trusted, one on a stale ledger
A, B = "adv-ledger-a", "adv-ledger-b"
VALID = "none|first_party"


def cpm(advertiser: str, campaign: str, rate: str) -> dict[str, Any]:
    t = cpm_terms_json()
    t["common"].update({"time_zone": "America/New_York", "campaign_ids": [campaign], "advertiser_id": advertiser,
                        "flight_start": "2026-01-01", "flight_end": "2026-12-31", "auto_renew": False,
                        "renewal_term_months": None, "escalator_pct": None, "notice_period_days": 0})
    t["cpm"] = {"rate_card": {"kind": "flat", "tier_basis": "period", "bands": [{"from_impressions": 0, "rate_cpm": rate}]},
                "budget_caps": {"total": None, "per_period": None}, "minimum_commitment_per_period": None}
    return t


def imps(advertiser: str, campaign: str, at: datetime, n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        iid = uuid.uuid4().hex
        out.append({"impression_id": iid, "event_time": at + timedelta(seconds=i), "advertiser_id": advertiser,
                    "campaign_id": campaign, "partner_id": None, "household_id": f"hh-{iid}", "device_type": "ctv",
                    "ivt": "none", "measurement_source": "first_party"})
    return out


def opened(log: Path) -> list[dict[str, Any]]:
    """Every "ledger store opened" log line of the workers, in order."""
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("msg") == "ledger store opened":
            out.append(rec)
    return out


def test_a_restarted_worker_re_rates_the_past_from_its_trusted_ledger_and_rebuilds_a_stale_one(
        metering_world: Any, tmp_path: Path) -> None:
    w = metering_world
    qa, qb = delta_partition(A, N_PARTITIONS), delta_partition(B, N_PARTITIONS)
    assert qa != qb
    w.extra_env["TALLY_METERING_BATCH_MAX"] = "300"
    w.extra_env["TALLY_METERING_LEDGER_MEMORY_MB"] = "2"
    w.publish_terms("LA", [(1, T0, None, cpm(A, "c-la", "10.00"))])
    w.publish_terms("LB", [(1, T0, None, cpm(B, "c-lb", "10.00"))])
    w.set_clock(datetime(2026, 2, 20, 12, tzinfo=UTC))
    log = tmp_path / "worker.log"
    store_dir = Path(w.env("w1")["TALLY_METERING_STORE_DIR"])
    send = lambda records: w.produce("impressions", "impression", records, lambda r: r["household_id"])  # noqa: E731

    def spawn_and_wait() -> tuple[Any, dict[int, dict[str, Any]]]:
        before = len(opened(log))
        proc = w.spawn("w1", log=log)
        deadline = time.monotonic() + 90
        while len(opened(log)) < before + N_PARTITIONS:
            assert proc.poll() is None, f"worker exited with {proc.returncode}"
            assert time.monotonic() < deadline, "worker got no partitions"
            time.sleep(0.1)
        return proc, {r["partition"]: r for r in opened(log)[before:]}

    def kill(proc: Any) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    def adjustments(contract: str) -> list[tuple[int, int, Decimal, str]]:
        return sorted((a["contract_version"], a["quantity"], a["amount_exact"], a["kind"])
                      for a in w.read_all("adjustments", "adjustment") if a["contract_id"] == contract)

    # Round 1: February's usage, with a SIGKILL while it flows; then February closes.
    stream = (imps(A, "c-la", FEB10, 500) + imps(A, "c-la", FEB20, 500)
              + imps(B, "c-lb", FEB10, 500) + imps(B, "c-lb", FEB20, 500))
    proc, first = spawn_and_wait()
    assert {r["outcome"] for r in first.values()} == {"missing"}  # a new directory

    def produce() -> None:
        for i in range(0, len(stream), 200):
            send(stream[i:i + 200])
            time.sleep(0.3)

    producer = threading.Thread(target=produce)
    producer.start()
    time.sleep(1.0)
    kill(proc)  # mid-stream: a kill between a commit and its store write makes that ledger stale
    proc, reopened = spawn_and_wait()
    assert {r["outcome"] for r in reopened.values()} <= {"trusted", "stale"}, reopened
    for r in reopened.values():
        if r["outcome"] == "stale":  # written only after its commit: a ledger is never ahead of the group
            assert r["checkpoint"] < r["committed"], r
    producer.join()
    w.wait_idle()
    w.set_clock(datetime(2026, 3, 1, 12, tzinfo=UTC))
    closed = w.wait_for("periods_closed", "period_closed", lambda rs: {"LA/2026-02", "LB/2026-02"}
                        <= {r["close_id"] for r in rs})
    for close_id in ("LA/2026-02", "LB/2026-02"):
        lines = [ln for r in closed if r["close_id"] == close_id for ln in r["lines"]]
        assert [(ln["quantity"], ln["amount_exact"]) for ln in lines] == [(1000, Decimal("10.00"))], close_id
    w.wait_idle()
    time.sleep(0.5)

    # Round 2: killed when idle, so every ledger is current. A bogus ledger day is planted in the
    # changelog for A: a trusted ledger never reads it; a rebuilt one would bill 1 impression on 10 Feb.
    kill(proc)
    bogus = UsageDay(A, "c-la", to_micros(FEB10) // DAY_US)
    bogus.add(0, VALID, 1)
    planter = Producer({"bootstrap.servers": w.bootstrap})
    planter.produce(w.topics["state"], value=encode_usage_day(bogus), key=bogus.key, partition=qa)
    assert planter.flush(30) == 0
    proc, reopened = spawn_and_wait()
    assert {r["outcome"] for r in reopened.values()} == {"trusted"}, reopened
    assert reopened[qa]["checkpoint"] > 0
    # a backdated amendment of the closed February: v2 at 12.00 from 15 February
    w.publish_terms("LA", [(1, T0, NY_FEB15, cpm(A, "c-la", "10.00")), (2, NY_FEB15, None, cpm(A, "c-la", "12.00"))],
                    revision=2)
    w.wait_for("adjustments", "adjustment", lambda rs: any(r["contract_id"] == "LA" for r in rs))
    w.wait_idle(settle_s=0.5)
    assert adjustments("LA") == [(1, -500, Decimal("-5.00"), "backdated_amendment"),
                                 (2, 500, Decimal("6.00"), "backdated_amendment")]

    # Round 3: B's ledger is made stale and given usage the group never committed; it is rebuilt.
    kill(proc)
    path = store_dir / f"ledger-{w.topics['deltas']}-{qb}"
    ledger = DiskLedgerStore(path, 4)
    assert ledger.checkpoint is not None and ledger.checkpoint > 0
    u = ledger.day(B, "c-lb", to_micros(FEB10) // DAY_US)
    u.add(0, VALID, 777)
    ledger.stage(u, encode_usage_day(u))
    ledger.write_committed(ledger.checkpoint - 1)
    ledger.close()
    proc, reopened = spawn_and_wait()
    assert reopened[qb]["outcome"] == "stale", reopened
    assert all(r["outcome"] == "trusted" for q, r in reopened.items() if q != qb), reopened
    w.publish_terms("LB", [(1, T0, NY_FEB15, cpm(B, "c-lb", "10.00")), (2, NY_FEB15, None, cpm(B, "c-lb", "12.00"))],
                    revision=2)
    send(imps(A, "c-la", FEB20, 10))  # and a late event on the trusted ledger is priced by A's amended terms
    w.wait_for("adjustments", "adjustment", lambda rs: any(r["contract_id"] == "LB" for r in rs)
               and any(r["kind"] == "late_event" for r in rs))
    w.wait_idle(settle_s=0.5)
    assert adjustments("LB") == [(1, -500, Decimal("-5.00"), "backdated_amendment"),
                                 (2, 500, Decimal("6.00"), "backdated_amendment")]
    late = [(v, q, a) for v, q, a, kind in adjustments("LA") if kind == "late_event"]  # one per source partition
    assert {v for v, _, _ in late} == {2} and sum(q for _, q, _ in late) == 10
    assert sum(a for _, _, a in late) == Decimal("0.12")
    assert [x for x in adjustments("LA") if x[3] != "late_event"] == [(1, -500, Decimal("-5.00"), "backdated_amendment"),
                                                                      (2, 500, Decimal("6.00"), "backdated_amendment")]
    ids = [a["adjustment_id"] for a in w.read_all("adjustments", "adjustment")]
    assert len(ids) == len(set(ids))
    kill(proc)
