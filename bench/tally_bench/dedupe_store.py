"""11. Metering's dedupe set on disk: worker RSS with N distinct impression ids inside the
dedupe horizon, and its restore time after a SIGKILL (trusted store vs. rebuild).

One ``python -m tally_metering worker`` process (throwaway topics, its own store directory,
``TALLY_METERING_STORE_MEMORY_MB`` at its default) is fed N distinct impressions of one
campaign no contract covers (stage one dedupes them; stage two keeps only a small usage
ledger), their event times spread over the 62-day horizon. Once the worker's
``tally_metering_state_entries{kind="dedupe_ids"}`` reaches N its RSS (``/proc/<pid>/status``
VmRSS) is read, against its RSS before the first impression (the per-million figure is the
difference). Then it is SIGKILLed and restarted twice: on its store directory (every
partition's checkpoint equals the committed offset: trusted, no rebuild), and after its store
directory was deleted (rebuilt from the dedupe changelog). Restore time is from the restart to
the worker's "partitions assigned" log line (it logs once its stores are ready), so it includes
the process start and the group join; the start of a worker on an already-empty store is
measured too, as the floor. After each restart a few repeated ids are fed to check the set is
whole (each must be a duplicate).

``--dedupe-ids`` sets N (default 50 million, the issue's figure; ``--quick`` 200,000).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from tally_streams.avro import SchemaCatalog
from tally_streams.kafka import producer_config

from .common import BOOTSTRAP, NotMeasured, Report, Service, free_port, metric, rss_bytes, validate_settings
from .metering import MODULE, Rig, preflight

SECTION = "11 Metering dedupe set on disk (RocksDB)"
KEYS = ["dedupe.rss", "dedupe.cache", "dedupe.rss_per_million", "dedupe.disk_per_million", "dedupe.fill", "dedupe.restore_trusted",
        "dedupe.restore_rebuild", "dedupe.start_empty"]
HORIZON_DAYS = 62


def declare(report: Report, n: int) -> None:
    f = report.figure
    f("dedupe.rss", SECTION, f"worker RSS with {n:,} distinct ids in the horizon", "MiB",
      note="target for 50 million: <= 1 GiB")
    f("dedupe.cache", SECTION, "of which the stores' block caches + write buffers", "MiB",
      note="bounded by TALLY_METERING_STORE_MEMORY_MB per impressions partition")
    f("dedupe.rss_per_million", SECTION, "RSS growth per million ids (at this N: caches still filling)", "MiB")
    f("dedupe.disk_per_million", SECTION, "store directory per million ids", "MiB")
    f("dedupe.fill", SECTION, "ids/s through the worker while filling", "impressions/s")
    f("dedupe.restore_trusted", SECTION, "SIGKILL -> restart on the kept store -> assigned", "s")
    f("dedupe.restore_rebuild", SECTION, "SIGKILL -> restart, store deleted, rebuilt from the changelog -> assigned", "s")
    f("dedupe.start_empty", SECTION, "start on an empty store and changelog -> assigned (the floor)", "s")


def _rss_mib(pid: int) -> float:
    return rss_bytes(pid) / 2**20


def _assigned(svc: Service) -> int:
    try:
        text = svc.log_path.read_text(errors="replace")
    except OSError:
        return 0
    return sum(1 for line in text.splitlines() if '"partitions assigned"' in line)


def _opened(svc: Service) -> list[str]:
    out = []
    for line in svc.log_path.read_text(errors="replace").splitlines():
        if '"dedupe store opened"' in line:
            out.append(json.loads(line)["outcome"])
    return out


class _Feeder:
    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.codec = SchemaCatalog.load().codec("impression")
        self.producer = Producer(producer_config(BOOTSTRAP, "tally-bench-dedupe", **{"linger.ms": 50, "batch.size": 1_000_000}))
        self.now = datetime.now(UTC)
        self.rng = random.Random(19)

    def impression(self, iid: str) -> bytes:
        at = self.now - timedelta(seconds=self.rng.randint(3600, (HORIZON_DAYS - 2) * 86400))
        return self.codec.encode({"impression_id": iid, "event_time": at, "advertiser_id": "adv-bench-dedupe",
                                  "campaign_id": "c-uncovered", "partner_id": None, "household_id": iid[:8],
                                  "device_type": "ctv", "ivt": "none", "measurement_source": "first_party"})

    def send(self, ids: list[str]) -> None:
        for iid in ids:
            value = self.impression(iid)
            while True:
                try:
                    self.producer.produce(self.topic, value=value, key=iid[:8])
                    break
                except BufferError:
                    self.producer.poll(0.05)
        if self.producer.flush(120):
            raise NotMeasured("impressions not acknowledged by the broker")


def _wait(what: str, check: Any, svc: Service, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if not svc.alive():
            raise NotMeasured(f"the metering worker exited while waiting for {what}: {svc.log_tail()}")
        if time.monotonic() > deadline:
            raise NotMeasured(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(0.02)


def run(n: int, *, timeout_s: float = 7200) -> dict[str, Any]:
    preflight()
    rig = Rig()
    store_dir = Path(tempfile.mkdtemp(prefix="tally-bench-dedupe-"))
    metrics_port = free_port()
    env = rig.env(TALLY_METERING_METRICS_PORT=str(metrics_port), TALLY_METERING_PORT=str(free_port()),
                  TALLY_METERING_STORE_DIR=str(store_dir), TALLY_LOG_LEVEL="INFO")
    why = validate_settings(MODULE, env)
    if why:
        raise NotMeasured(why)
    svc: Service | None = None
    out: dict[str, Any] = {"ids": n}

    def start() -> tuple[Service, float]:
        s = Service("metering-dedupe", MODULE, env, args=["worker"])
        t0 = time.monotonic()
        s.start()
        _wait("partitions assigned", lambda: _assigned(s) > 0, s, 1800)
        return s, time.monotonic() - t0

    def sigkill(s: Service) -> None:
        assert s.proc is not None
        os.killpg(s.proc.pid, signal.SIGKILL)
        s.proc.wait(30)

    def ids_held() -> float:
        return metric(metrics_port, "tally_metering_state_entries", 'kind="dedupe_ids"') or 0

    def duplicates() -> float:
        return metric(metrics_port, "tally_metering_events_total", 'outcome="duplicate"') or 0

    try:
        feeder = _Feeder(rig.impressions)
        svc, out["start_empty_s"] = start()
        assert svc.proc is not None
        time.sleep(1)
        rss0 = _rss_mib(svc.proc.pid)
        ids = [uuid.UUID(int=feeder.rng.getrandbits(128)).hex for _ in range(min(n, 1_000_000))]
        sample = ids[:1000]
        t0 = time.monotonic()
        sent = 0
        while sent < n:  # in chunks of a million: the harness never holds 50 million ids
            chunk = ids if sent == 0 else [uuid.UUID(int=feeder.rng.getrandbits(128)).hex for _ in range(min(n - sent, 1_000_000))]
            feeder.send(chunk)
            sent += len(chunk)
            print(f"    produced {sent:,} ids ({ids_held():,.0f} held)", flush=True)
        _wait(f"{n:,} ids in the store", lambda: ids_held() >= n, svc, timeout_s)
        out["fill_per_s"] = n / (time.monotonic() - t0)
        out["rss_mib"] = _rss_mib(svc.proc.pid)
        out["rss_before_mib"] = rss0
        time.sleep(6)  # the gauges are reported every 5 s
        out["cache_mib"] = (metric(metrics_port, "tally_metering_store_memory_bytes", 'measure="used"') or 0) / 2**20
        out["cache_bound_mib"] = (metric(metrics_port, "tally_metering_store_memory_bytes", 'measure="capacity"') or 0) / 2**20
        out["disk_mib"] = sum(f.stat().st_size for f in store_dir.rglob("*") if f.is_file()) / 2**20
        print(f"    {n:,} ids: RSS {out['rss_mib']:.0f} MiB (before {rss0:.0f}; caches {out['cache_mib']:.0f} of "
              f"{out['cache_bound_mib']:.0f}), disk {out['disk_mib']:.0f} MiB", flush=True)

        def restart(label: str, wipe: bool) -> None:
            nonlocal svc
            assert svc is not None
            sigkill(svc)
            if wipe:
                shutil.rmtree(store_dir)
            svc, out[f"restore_{label}_s"] = start()
            out[f"outcomes_{label}"] = sorted(set(_opened(svc)))
            dup0 = duplicates()
            feeder.send(sample[:100])  # repeated ids: each must be found
            _wait("repeats counted", lambda: duplicates() >= dup0 + 100, svc, 300)
            assert svc.proc is not None
            out[f"rss_after_{label}_mib"] = _rss_mib(svc.proc.pid)
            print(f"    restart ({label}): {out[f'restore_{label}_s']:.1f} s, stores {out[f'outcomes_{label}']}, "
                  f"RSS {out[f'rss_after_{label}_mib']:.0f} MiB", flush=True)

        restart("trusted", wipe=False)
        if out["outcomes_trusted"] != ["trusted"]:
            raise NotMeasured(f"the kept store was not trusted: {out['outcomes_trusted']}")
        restart("rebuild", wipe=True)
        return out
    finally:
        if svc is not None:
            svc.stop()
        rig.cleanup()
        shutil.rmtree(store_dir, ignore_errors=True)


def measure(report: Report, args: argparse.Namespace) -> None:
    n = args.dedupe_ids
    declare(report, n)
    out = run(n)
    print(f"  dedupe: {out}", flush=True)
    report.add("dedupe.rss", out["rss_mib"])
    report.add("dedupe.cache", out["cache_mib"])
    report.add("dedupe.rss_per_million", (out["rss_mib"] - out["rss_before_mib"]) / (n / 1e6))
    report.add("dedupe.disk_per_million", out["disk_mib"] / (n / 1e6))
    report.add("dedupe.fill", out["fill_per_s"])
    report.add("dedupe.restore_trusted", out["restore_trusted_s"])
    report.add("dedupe.restore_rebuild", out["restore_rebuild_s"])
    report.add("dedupe.start_empty", out["start_empty_s"])
