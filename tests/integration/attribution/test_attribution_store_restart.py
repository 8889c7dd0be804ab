"""The on-disk exposure index through SIGKILLs: a processor killed after a committed transaction
and its store write restarts trusting the store (its checkpoint is the group's committed
offsets); killed mid-stream, wherever the kill lands, it trusts or rebuilds; and a store left one
transaction behind (a kill between a commit and the store write: its checkpoint stale, its
values those of the transaction before) is wiped and rebuilt from the changelog. Every time the
decisions are the ones an uninterrupted processor makes: each conversion attributed once, to its
household's own exposure and partner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from tally_attribution.store import ExposureStore
from tally_billing.usage import to_micros
from tally_streams.avro import SchemaCatalog
from tally_streams.kafka import delete_topics
from tests import clock
from tests.attribution_builders import EPOCH_2026, conversion, cpa_terms, impression, terms_record

from .conftest import ROOT, Harness, make_topics, processor_env

pytestmark = pytest.mark.integration

AT = clock.now().replace(microsecond=0) - timedelta(hours=1)
ADV = "adv-store"


@pytest.fixture
def names(kafka_bootstrap: str) -> Iterator[dict[str, str]]:
    n = make_topics(kafka_bootstrap)
    yield n
    delete_topics(kafka_bootstrap, list(n.values()))


def log_records(path: Path, msg: str) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text().splitlines() if path.exists() else ():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("msg") == msg:
            out.append(rec)
    return out


class Rig:
    def __init__(self, kafka_bootstrap: str, catalog: SchemaCatalog, names: dict[str, str], tmp_path: Path) -> None:
        self.h = Harness(kafka_bootstrap, catalog, names)
        self.catalog = catalog
        self.names = names
        self.env = {**os.environ, **processor_env(kafka_bootstrap, names, settle_ms=200), "TALLY_LOG_LEVEL": "INFO"}
        self.store_dir = Path(self.env["TALLY_ATTRIBUTION_STORE_DIR"])
        self.log = tmp_path / "processor.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.produced: list[str] = []  # conversion ids, repeats included
        self.households = 0

    def start(self) -> dict[str, Any]:
        """A new processor; returns its "exposure store opened" record once it started."""
        before = len(log_records(self.log, "processor started"))
        opened = len(log_records(self.log, "exposure store opened"))
        out = self.log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "tally_attribution", "processor"], env=self.env, stdout=out,
                                     stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 90
        while len(log_records(self.log, "processor started")) <= before:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, "processor did not start"
            time.sleep(0.05)
        return log_records(self.log, "exposure store opened")[opened]

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def impressions(self, start: int, stop: int) -> None:
        codec = self.catalog.codec("impression")
        for i in range(start, stop):
            self.h.producer.produce(self.names["impressions"], key=f"h{i}", value=codec.encode(
                impression(f"i{i}", f"h{i}", AT - timedelta(hours=2), ADV, "c-store", f"p{i % 3}")))
        self.h.producer.flush(30)
        self.households = max(self.households, stop)

    def conversions(self, start: int, stop: int, *, pace: bool = False) -> None:
        codec = self.catalog.codec("conversion")
        for i in range(start, stop):
            cid = f"v{i}"
            for _ in range(2 if i % 7 == 0 else 1):  # some client retries: the same id again
                self.h.producer.produce(self.names["conversions"], key=f"h{i}",
                                        value=codec.encode(conversion(cid, f"h{i}", AT, ADV)))
                self.produced.append(cid)
            if pace and i % 10 == 0:
                self.h.producer.flush(10)
                time.sleep(0.05)
        self.h.producer.flush(30)

    def outcomes(self, timeout_s: float = 90) -> list[dict[str, Any]]:
        return self.h.collector.wait_for(self.names["outcomes"], lambda r: True, count=len(self.produced), timeout_s=timeout_s)

    def check(self) -> None:
        """Each conversion record has one outcome; each conversion id is attributed once, to its
        own household's exposure and partner (what a processor never interrupted decides)."""
        self.outcomes()
        time.sleep(0.5)  # anything emitted twice would show up now
        outcomes = self.h.collector.get(self.names["outcomes"])
        assert Counter(o["conversion_id"] for o in outcomes) == Counter(self.produced)
        assert all(n == 1 for n in Counter(o["outcome_id"] for o in outcomes).values())
        attributed = self.h.collector.get(self.names["attributed"])
        ids = {c for c in self.produced if not c.startswith("b")}  # b: barriers, no exposure
        assert Counter(a["conversion_id"] for a in attributed) == Counter({cid: 1 for cid in ids})
        for a in attributed:
            i = int(a["conversion_id"][1:])
            assert (a["exposure_id"], a["partner_id"]) == (f"i{i}", f"p{i % 3}"), a


def barrier(r: Rig, cid: str) -> None:
    """A conversion of a household without exposures: once it is decided, every impression
    produced before it was indexed and committed (the settle gate)."""
    r.h.producer.produce(r.names["conversions"], key="h-none",
                         value=r.catalog.codec("conversion").encode(conversion(cid, "h-none", AT, ADV)))
    r.h.producer.flush(30)
    r.produced.append(cid)
    r.outcomes()


def test_a_killed_processor_trusts_a_current_store_and_rebuilds_one_left_behind(
        kafka_bootstrap: str, catalog: SchemaCatalog, names: dict[str, str], tmp_path: Path) -> None:
    r = Rig(kafka_bootstrap, catalog, names, tmp_path)
    r.h.terms(terms_record("k-store", ADV, [(1, EPOCH_2026, None, cpa_terms(ADV, ["c-store"], price="10.01", payout="3.33"))]))
    try:
        assert r.start()["outcome"] == "missing"  # a new directory
        r.impressions(0, 300)
        r.conversions(0, 100)
        r.outcomes()

        # 1. killed idle, after its last transaction committed and reached the store: trusted
        r.kill()
        opened = r.start()
        assert opened["outcome"] == "trusted", opened
        restored = log_records(r.log, "state restored")[-1]
        assert restored["store"] == "trusted" and restored["households"] == 300, restored
        r.impressions(300, 400)
        r.conversions(100, 200)
        r.outcomes()

        # 2. killed mid-stream, twice: wherever the kill lands (before or after a store write) the
        # restart trusts a current store or rebuilds one left behind
        feeder = threading.Thread(target=lambda: (r.impressions(400, 600), r.conversions(200, 600, pace=True)))
        feeder.start()
        for _ in range(2):
            seen = len(r.h.collector.get(names["outcomes"]))
            r.h.collector.wait_for(names["outcomes"], lambda _: True, count=seen + 30, timeout_s=60)
            r.kill()
            opened = r.start()
            assert opened["outcome"] in ("trusted", "stale"), opened  # the directory was kept: never missing
        feeder.join(60)
        r.check()

        # 3. a store one transaction behind, as a kill between the commit and the store write
        # leaves it: older values (h600's exposure not there yet, h601 with another partner's
        # later exposure) under the checkpoint of the transaction before. Trusted, it would decide
        # v600 and v601 wrongly; it must be wiped and rebuilt from the changelog.
        r.impressions(600, 603)
        barrier(r, "b1")
        r.kill()
        store = ExposureStore(r.store_dir, 8)
        try:
            assert store.checkpoint is not None and store.households == 603
            group_and_topic, offsets = store.checkpoint.rsplit(b"|", 1)
            behind = [[t, p, o - 1 if t == names["impressions"] and o > 0 else o, "older"] for t, p, o, _ in orjson.loads(offsets)]
            later = to_micros(AT - timedelta(minutes=90))
            store.write_committed([(b"x:h600", None), (b"x:h601", orjson.dumps([["i601-old", later, ADV, "c-store", "p-old"]]))],
                                  group_and_topic + b"|" + orjson.dumps(behind), 602, 602)
        finally:
            store.close()
        opened = r.start()
        assert opened["outcome"] == "stale", opened
        restored = log_records(r.log, "state restored")[-1]
        assert restored["store"] == "stale" and restored["households"] == 603, restored
        r.conversions(600, 603)
        r.check()
    finally:
        if r.proc is not None and r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait(10)
        r.h.collector.close()
