"""10. Pacing (faust-streaming): a running-total update to its pacing update, and the worker's records/s.

One ``python -m tally_pacing`` process (the faust worker with its API) on throwaway topics.

* **Latency** at ``--pacing-rate`` (5,000) updates/s for ``--pacing-seconds``: running totals
  of ``--pacing-keys`` (1,000) contract-periods, each update cumulative, produced with Tally's
  producer settings (lz4, acks=all, idempotent) and stamped ``updated_at`` = the wall clock when
  handed to the producer. The pacing update of a total is the record the worker writes to its
  ``periods`` table changelog that first reflects it — the worker writes a key once per batch,
  so an update superseded within its batch is reflected by the write of a later one (the first
  changelog record of that key whose ``updated_at`` is not older) — and its latency is that
  record's broker timestamp (set by faust's producer when it sends) minus the update's
  ``updated_at``. Every update is measured (no sampling); p50 and p99 per run. The run waits
  until the worker counted every update and the changelog reflects every one (bounded). Also
  per run: the worker's CPU share (% of one core) and updates per worker CPU-second.
* **Throughput**: ``--pacing-records`` (100,000) totals pre-filled in a fresh topic, a fresh
  app id (empty tables), and the records/s between the first and the last counted record
  (``tally_pacing_records_total`` on ``/metrics``, polled every 200 ms), and the same per CPU
  second of the worker process.

The machine is shared: the CPU-second figures (user + system CPU of the worker,
``/proc/<pid>/stat``) are the load-independent ones; 5,000 updates/s need 5,000 ÷ that of a core.
"""

from __future__ import annotations

import bisect
import json
import os
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from confluent_kafka import Producer

from tally_billing.periods import PeriodKind, period_by_key
from tally_streams.avro import SchemaCatalog
from tally_streams.kafka import delete_topics, ensure_topics, producer_config, read_to_end
from tally_streams.topics import BUDGET_ALERTS, CONTRACT_TERMS, PACING_ALERTS, RUNNING_TOTALS, TopicSpec

from .common import BOOTSTRAP, LOGS, NotMeasured, Report, Service, cpu_s, free_port, percentile, unique, validate_settings

MODULE = "tally_pacing"
SECTION = "10 Pacing (faust-streaming worker)"  # as bench/run.py declares it
PERIOD = period_by_key("2026-03", "America/New_York", PeriodKind.MONTH)


def _total(i: int, seq: int, now: datetime) -> dict[str, Any]:
    contract = f"bench-c{i:05d}"
    billable = 1000 * (seq + 1)
    return {
        "total_id": f"{contract}/{PERIOD.key}", "contract_id": contract, "advertiser_id": f"bench-adv{i % 50}",
        "contract_type": "cpm", "currency": "USD", "time_zone": PERIOD.tz, "period_kind": "month",
        "period_key": PERIOD.key, "period_start": PERIOD.start, "period_end": PERIOD.end, "status": "open",
        "amount_exact": Decimal(billable) * Decimal("12.5") / 1000, "budget_cap_per_period": Decimal("30000"),
        "budget_cap_total": None, "minimum_commitment": None, "lines": [],
        "counts": {"billable": billable, "received": billable}, "latest_event_time": now, "updated_at": now,
    }


class Rig:
    def __init__(self) -> None:
        self.catalog = SchemaCatalog.load()
        self.codec = self.catalog.codec("running_total")
        self.specs: list[TopicSpec] = [RUNNING_TOTALS.renamed(unique("totals")), BUDGET_ALERTS.renamed(unique("budget")),
                                       CONTRACT_TERMS.renamed(unique("terms")), PACING_ALERTS.renamed(unique("palerts")),
                                       TopicSpec(unique("dlq"), "as source", "dead_letter", partitions=1)]
        ensure_topics(BOOTSTRAP, self.specs)
        self.app_ids: list[str] = []
        self.producer = Producer(producer_config(BOOTSTRAP, "bench-pacing", **{"queue.buffering.max.messages": 500_000}))

    def env(self, app_id: str, totals: str, port: int) -> dict[str, str]:
        s = self.specs
        return {"TALLY_PACING_APP_ID": app_id, "TALLY_PACING_TOPIC_RUNNING_TOTALS": totals,
                "TALLY_PACING_TOPIC_BUDGET_ALERTS": s[1].name, "TALLY_PACING_TOPIC_TERMS": s[2].name,
                "TALLY_PACING_TOPIC_PACING_ALERTS": s[3].name, "TALLY_PACING_TOPIC_DLQ": s[4].name,
                "TALLY_PACING_PORT": str(port), "TALLY_PACING_DATADIR": str(LOGS / app_id)}

    def worker(self, totals: str) -> tuple[Service, int, str]:
        app_id = f"bench-pacing-{uuid.uuid4().hex[:8]}"
        self.app_ids.append(app_id)
        port = free_port()
        svc = Service("pacing", MODULE, self.env(app_id, totals, port))
        why = validate_settings(MODULE, svc.env)
        if why:
            raise NotMeasured(why)
        svc.start()
        svc.wait_http(port, "/readyz", timeout_s=120)
        return svc, port, app_id

    def produce(self, topic: str, rec: dict[str, Any]) -> None:
        value = self.codec.encode(rec)
        while True:
            try:
                self.producer.produce(topic, value, key=rec["total_id"].encode())
                return
            except BufferError:
                self.producer.poll(0.01)

    def close(self) -> None:
        self.producer.flush(30)
        names = [s.name for s in self.specs]
        from confluent_kafka.admin import AdminClient

        existing = AdminClient({"bootstrap.servers": BOOTSTRAP}).list_topics(timeout=10).topics
        names += [t for t in existing if any(t.startswith(a) for a in self.app_ids)]
        delete_topics(BOOTSTRAP, names)


def _counted(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("tally_pacing_records_total{"))


def _wait_counted(port: int, n: float, timeout_s: float, pid: int | None = None, every_s: float = 0.2
                  ) -> list[tuple[float, float, float]]:
    """Poll the worker's count until it reaches ``n``; returns (monotonic time, count, CPU
    seconds of process ``pid`` so far — 0 without one) samples."""
    samples: list[tuple[float, float, float]] = []
    deadline = time.monotonic() + timeout_s
    while True:
        c = _counted(port)
        samples.append((time.monotonic(), c, 0.0 if pid is None else cpu_s(pid)))
        if c >= n:
            return samples
        if time.monotonic() > deadline:
            raise NotMeasured(f"the pacing worker counted {c:.0f} of {n:.0f} records within {timeout_s:.0f} s")
        time.sleep(every_s)  # every /metrics scrape costs the worker CPU too: 5 a second, not 20


def _reflected(app_id: str, produced: list[tuple[str, int]], run_start_us: int) -> tuple[list[float], int, int]:
    """(latency of each update reflected in the periods changelog, updates not reflected yet, changelog
    records of this run). An update is reflected by the first record of its key whose ``updated_at``
    is not older than its own."""
    writes: dict[str, list[tuple[int, float]]] = {}  # per key: (updated_at µs, broker timestamp s)
    for m in read_to_end(BOOTSTRAP, f"{app_id}-periods-changelog", timeout_s=120):
        raw = m.value()
        if raw is None:
            continue
        value = json.loads(raw)
        if value["updated_at_us"] >= run_start_us:  # the changelog holds every run so far
            writes.setdefault(value["total_id"], []).append((value["updated_at_us"], m.timestamp()[1] / 1000))
    for w in writes.values():
        w.sort()
    lat: list[float] = []
    unreflected = 0
    for key, at_us in produced:
        w = writes.get(key, [])
        i = bisect.bisect_left(w, (at_us, float("-inf")))
        if i == len(w):
            unreflected += 1
        else:
            lat.append(min(ts for _, ts in w[i:]) - at_us / 1_000_000)
    return lat, unreflected, sum(len(w) for w in writes.values())


def latency_run(rig: Rig, port: int, app_id: str, *, rate: int, seconds: float, keys: int, seq0: int,
                counted0: float, pid: int) -> dict[str, float]:
    topic = rig.specs[0].name
    total = int(rate * seconds)
    slice_s = 0.01
    per_slice = max(1, int(rate * slice_s))
    started, cpu0 = time.monotonic(), cpu_s(pid)
    run_start_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    produced: list[tuple[str, int]] = []  # (key, updated_at in µs) of every update offered
    sent = 0
    while sent < total:
        now = datetime.now(UTC)
        now_us = int(now.timestamp() * 1_000_000)
        for _ in range(min(per_slice, total - sent)):
            rec = _total(sent % keys, seq0 + sent // keys, now)
            rig.produce(topic, rec)
            produced.append((rec["total_id"], now_us))
            sent += 1
        rig.producer.poll(0)
        ahead = started + sent / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)  # pacing the offered load, not waiting for a result
    offered = sent / (time.monotonic() - started)
    rig.producer.flush(60)
    _wait_counted(port, counted0 + sent, timeout_s=300)
    cpu_used = cpu_s(pid) - cpu0
    cpu_share = cpu_used / (time.monotonic() - started) * 100
    # the worker counts a batch when its writes are handed to faust's producer: the last ones may
    # reach the changelog a moment later, so it is read again (bounded) until every update shows
    deadline = time.monotonic() + 30
    while True:
        lat, unreflected, writes = _reflected(app_id, produced, run_start_us)
        if not unreflected or time.monotonic() > deadline:
            break
        time.sleep(1)
    if unreflected:
        raise NotMeasured(f"{unreflected} of {len(produced)} updates have no pacing update in the changelog")
    mine = sorted(lat)
    return {"p50_ms": percentile(mine, 50) * 1000, "p99_ms": percentile(mine, 99) * 1000, "offered_per_s": offered,
            "measured": float(len(mine)), "changelog_writes": float(writes),
            "cpu_share_pct": cpu_share, "per_cpu_s": sent / max(cpu_used, 1e-9), "load_average": os.getloadavg()[0]}


def throughput_run(rig: Rig, records: int, keys: int) -> tuple[float, float]:
    """(records/s, records per CPU-second of the worker) between the first and the last counted record."""
    topic = unique("fill")
    spec = RUNNING_TOTALS.renamed(topic)
    ensure_topics(BOOTSTRAP, [spec])
    rig.specs.append(spec)
    now = datetime.now(UTC)
    for i in range(records):
        rig.produce(topic, _total(i % keys, i // keys, now))
    rig.producer.flush(120)
    svc, port, _ = rig.worker(topic)
    try:
        assert svc.proc is not None
        samples = _wait_counted(port, records, timeout_s=600, pid=svc.proc.pid)
    finally:
        svc.stop()
    moving = [s for s in samples if s[1] > 0]
    if len(moving) < 2 or moving[-1][0] <= moving[0][0]:
        raise NotMeasured("the worker consumed everything within one poll; raise --pacing-records")
    (t0, c0, cpu0), (t1, c1, cpu1) = moving[0], moving[-1]
    return (c1 - c0) / (t1 - t0), (c1 - c0) / max(cpu1 - cpu0, 1e-9)


def measure(report: Report, args: Any) -> None:
    rate, seconds = args.pacing_rate, args.pacing_seconds
    keys, records = args.pacing_keys, args.pacing_records
    if args.quick:
        seconds, records = min(seconds, 3), min(records, 20_000)
    # load-independent: the shared machine's other work moves the wall-clock figures, not these
    report.figure("pacing.worker_per_cpu_s", SECTION, "faust worker records per worker CPU-second (pre-filled)",
                  "records/CPU-s", note="user + system CPU of the worker process, /proc/<pid>/stat")
    report.figure("pacing.latency_cpu_share", SECTION, "worker CPU during the latency run", "% of a core",
                  note="below 100 % with a backlog: the machine's other load, not the worker, set the pace")
    report.figure("pacing.latency_per_cpu_s", SECTION, "updates per worker CPU-second in the latency run", "updates/CPU-s",
                  note="5,000 updates/s need 5,000 / this of one core")
    rig = Rig()
    try:
        svc, port, app_id = rig.worker(rig.specs[0].name)
        try:
            counted, seq = 0.0, 0
            for r in range(args.runs):
                assert svc.proc is not None
                out = latency_run(rig, port, app_id, rate=rate, seconds=seconds, keys=keys, seq0=seq, counted0=counted,
                                  pid=svc.proc.pid)
                counted += rate * seconds
                seq += int(rate * seconds) // keys + 1
                print(f"  latency round {r + 1}: {out}", flush=True)
                report.add("pacing.update_p50", out["p50_ms"])
                report.add("pacing.update_p99", out["p99_ms"])
                report.add("pacing.offered", out["offered_per_s"])
                report.add("pacing.latency_cpu_share", out["cpu_share_pct"])
                report.add("pacing.latency_per_cpu_s", out["per_cpu_s"])
        finally:
            svc.stop()
        for r in range(args.runs):
            rps, per_cpu = throughput_run(rig, records, keys)
            load = os.getloadavg()[0]
            print(f"  throughput round {r + 1}: {rps:,.0f} records/s, {per_cpu:,.0f} per worker CPU-second "
                  f"(load average {load:.1f})", flush=True)
            report.add("pacing.worker", rps)
            report.add("pacing.worker_per_cpu_s", per_cpu)
    finally:
        rig.close()
