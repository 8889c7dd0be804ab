"""4. HTTP batch ingest: ``POST /v1/impressions`` on the real attribution ingest process.

The harness starts ``python -m tally_attribution ingest`` on a free port with throwaway
impressions and dead-letter topics — once as one process (the service's default), once as two
sharing the port (``TALLY_ATTRIBUTION_INGEST_PROCESSES=2``) — and a load generator in a second process
(``tally_bench.loadgen``, aiohttp) keeps several batch requests in flight. Events/s counts
only events the service answered ``accepted`` (it answers after the broker acknowledged them).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tally_streams.kafka import delete_topics, ensure_topics
from tally_streams.topics import DLQ_INGEST, IMPRESSIONS

from .common import BOOTSTRAP, ROOT, NotMeasured, Profiler, Service, free_port, module_available, token, unique, validate_settings

MODULE = "tally_attribution"


def impression_json(i: int, rng: random.Random, now: datetime) -> dict[str, Any]:
    t = now - timedelta(seconds=rng.randrange(3600), microseconds=rng.randrange(1_000_000))
    return {
        "impression_id": f"imp-http-{i:010d}", "event_time": t.isoformat().replace("+00:00", "Z"),
        "advertiser_id": f"adv-{i % 7}", "campaign_id": f"cmp-{i % 40}", "household_id": f"hh-{rng.randrange(1_000_000):07d}",
        "device_type": "ctv", "ivt": "none", "measurement_source": "first_party",
    }


def bodies(batch: int, count: int, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    return [json.dumps([impression_json(b * batch + i, rng, now) for i in range(batch)]) for b in range(count)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live children (the extra ingest processes), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    try:
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime (fields 14 and 15 of stat)
    return total


class IngestBench:
    def __init__(self, processes: int = 1) -> None:
        self.processes = processes
        self.svc: Service | None = None
        self.topics: list[str] = []
        self.port = 0

    def __enter__(self) -> IngestBench:
        why = module_available(MODULE)
        if why:
            raise NotMeasured(why)
        imp, dlq = unique("http-impressions"), unique("http-dlq")
        self.topics = [imp, dlq]
        ensure_topics(BOOTSTRAP, [IMPRESSIONS.renamed(imp), DLQ_INGEST.renamed(dlq)])
        self.port = free_port()
        env = {"TALLY_ATTRIBUTION_PORT": str(self.port), "TALLY_ATTRIBUTION_METRICS_PORT": "0",
               "TALLY_ATTRIBUTION_TOPIC_IMPRESSIONS": imp, "TALLY_ATTRIBUTION_TOPIC_DLQ_INGEST": dlq,
               "TALLY_ATTRIBUTION_PRODUCER_QUEUE_MAX": "200000", "TALLY_LOG_LEVEL": "WARNING",
               "TALLY_ATTRIBUTION_INGEST_PROCESSES": str(self.processes)}
        why = validate_settings(MODULE, env)
        if why:
            raise NotMeasured(why)
        self.svc = Service("attribution-ingest", MODULE, env, args=["ingest"]).start()
        self.svc.wait_http(self.port, "/readyz", timeout_s=60)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.svc is not None:
            self.svc.stop()
        delete_topics(BOOTSTRAP, self.topics)

    def run(self, *, batch: int, concurrency: int, duration_s: float, warmup_s: float = 2.0,
            profile: bool = False) -> dict[str, Any]:
        cfg = {
            "url": f"http://127.0.0.1:{self.port}/v1/impressions", "token": token("bench-ingest", ["ingest"]),
            "bodies": bodies(batch, 16), "events_per_body": [batch] * 16,
            "concurrency": concurrency, "duration_s": duration_s, "warmup_s": warmup_s,
        }
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(cfg, f)
            cfg_path = f.name
        prof = (Profiler(self.svc.proc.pid, "attribution-ingest", duration_s + warmup_s)
                if profile and self.svc is not None and self.svc.proc is not None else None)
        pid = self.svc.proc.pid if self.svc is not None and self.svc.proc is not None else None
        cpu0 = cpu_seconds(pid) if pid else 0.0
        try:
            env = {**os.environ, "PYTHONPATH": str(ROOT / "bench")}
            res = subprocess.run([sys.executable, "-m", "tally_bench.loadgen", cfg_path], env=env, capture_output=True,
                                 text=True, timeout=duration_s + warmup_s + 120, cwd=ROOT)
        finally:
            Path(cfg_path).unlink(missing_ok=True)
        if res.returncode != 0:
            raise NotMeasured(f"load generator failed: {res.stderr.strip().splitlines()[-2:]}")
        out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
        if pid and out.get("events_per_s"):
            # CPU of the ingest processes per accepted event: their CPU over warm-up + window, scaled
            # to the window (a steady rate assumed); unlike events/s it hardly depends on the cores' other load
            accepted = out["events_per_s"] * duration_s
            out["cpu_us_per_event"] = (cpu_seconds(pid) - cpu0) / accepted * 1e6 * duration_s / (duration_s + warmup_s)
        if prof is not None:
            prof.finish()
            out["profile"] = prof.summary()
        if self.svc is not None and not self.svc.alive():
            raise NotMeasured(f"the ingest process died under load: {self.svc.log_tail()}")
        ok = out["statuses"].get("200", 0)
        if not ok:
            raise NotMeasured(f"no request was accepted (statuses {out['statuses']}): {self.svc.log_tail() if self.svc else ''}")
        return out
