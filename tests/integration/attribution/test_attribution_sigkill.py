"""SIGKILL the processor mid-stream, twice, and reconcile: every conversion record has exactly
one outcome and every attributed conversion is emitted exactly once, to the cent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tally_streams.avro import SchemaCatalog
from tally_streams.kafka import delete_topics
from tests import clock
from tests.attribution_builders import EPOCH_2026, conversion, cpa_terms, impression, terms_record

from .conftest import ROOT, Harness, make_topics, processor_env

pytestmark = pytest.mark.integration

HOUSEHOLDS = 600
AT = clock.now().replace(microsecond=0) - timedelta(hours=1)


@pytest.fixture
def names(kafka_bootstrap: str) -> Iterator[dict[str, str]]:
    n = make_topics(kafka_bootstrap)
    yield n
    delete_topics(kafka_bootstrap, list(n.values()))


def kill_all(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def await_every_outcome(h: Harness, records: int, replicas: Iterable[subprocess.Popen[bytes]]) -> None:
    """Until the outcomes topic holds ``records`` outcomes, then a second more (anything emitted
    twice would show up by then); the replicas must all still run (none fenced another out)."""
    h.collector.wait_for(h.names["outcomes"], lambda r: True, count=records, timeout_s=90)
    time.sleep(1.0)
    assert all(p.poll() is None for p in replicas)


def assert_one_outcome_per_record(outcomes: list[dict[str, Any]], records: int) -> None:
    """Nothing emitted twice, nothing missing: no consumer-side dedupe needed."""
    assert len(outcomes) == records, (len(outcomes), records)
    assert all(n == 1 for n in Counter(o["outcome_id"] for o in outcomes).values())


def start(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log = log_path.open("ab")
    return subprocess.Popen([sys.executable, "-m", "tally_attribution", "processor"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, cwd=ROOT)


def test_sigkill_mid_stream_each_outcome_once(kafka_bootstrap: str, catalog: SchemaCatalog, names: dict[str, str],
                                              tmp_path: Path) -> None:
    h = Harness(kafka_bootstrap, catalog, names)
    env = {**os.environ, **processor_env(kafka_bootstrap, names, settle_ms=200)}
    adv = "adv-kill"
    h.terms(terms_record("k-kill", adv, [(1, EPOCH_2026, None, cpa_terms(adv, ["c-kill"], price="10.01", payout="3.33"))]))
    for i in range(HOUSEHOLDS):
        h.producer.produce(names["impressions"], key=f"h{i}", value=catalog.codec("impression").encode(
            impression(f"i{i}", f"h{i}", AT - timedelta(hours=2), adv, "c-kill", f"p{i % 3}")))
    h.producer.flush(30)

    produced: list[str] = []  # conversion ids, in order, repeats included

    def feed() -> None:
        codec = catalog.codec("conversion")
        for i in range(HOUSEHOLDS):
            cid = f"v{i}"
            h.producer.produce(names["conversions"], key=f"h{i}", value=codec.encode(conversion(cid, f"h{i}", AT, adv)))
            produced.append(cid)
            if i % 10 == 0:  # a client retry: the same conversion id again
                h.producer.produce(names["conversions"], key=f"h{i}", value=codec.encode(conversion(cid, f"h{i}", AT, adv)))
                produced.append(cid)
            if i % 10 == 0:  # paced, so the kills land mid-stream
                h.producer.flush(10)
                time.sleep(0.1)
        h.producer.flush(30)

    outcomes_topic = names["outcomes"]
    procs: list[subprocess.Popen[bytes]] = []
    feeder = threading.Thread(target=feed)
    try:
        procs.append(start(env, tmp_path / "processor.log"))
        feeder.start()
        kills: list[tuple[int, int]] = []
        kill_after = 40
        for n in (1, 2):
            h.collector.wait_for(outcomes_topic, lambda r: True, count=kill_after, timeout_s=60)
            procs[-1].send_signal(signal.SIGKILL)
            procs[-1].wait(10)
            kills.append((len(h.collector.get(outcomes_topic)), len(produced)))
            procs.append(start(env, tmp_path / "processor.log"))
            deadline = time.monotonic() + 60
            while (tmp_path / "processor.log").read_text().count("processor started") < n + 1:
                assert procs[-1].poll() is None and time.monotonic() < deadline, "restarted processor did not start"
                time.sleep(0.05)
            kill_after = len(h.collector.get(outcomes_topic)) + 30  # the next kill lands in the new one's work
        feeder.join(60)
        total = len(produced)
        h.collector.wait_for(outcomes_topic, lambda r: True, count=total, timeout_s=90)
        time.sleep(1.0)  # anything emitted twice would show up now
    finally:
        kill_all(procs)
        h.collector.close()

    outcomes = h.collector.get(outcomes_topic)
    attributed = h.collector.get(names["attributed"])
    log = (tmp_path / "processor.log").read_text()
    assert_one_outcome_per_record(outcomes, len(produced))
    per_id = Counter(o["conversion_id"] for o in outcomes)
    assert per_id == Counter(produced)
    firsts = {o["conversion_id"] for o in outcomes if o["outcome"] == "attributed"}
    assert firsts == {f"v{i}" for i in range(HOUSEHOLDS)}
    assert sum(1 for o in outcomes if o["reason"] == "duplicate") == len(produced) - HOUSEHOLDS
    assert Counter(a["conversion_id"] for a in attributed) == Counter({f"v{i}": 1 for i in range(HOUSEHOLDS)})
    assert sum((a["advertiser_amount"] for a in attributed), Decimal(0)) == Decimal("10.01") * HOUSEHOLDS
    assert sum((a["partner_payout"] for a in attributed), Decimal(0)) == Decimal("3.33") * HOUSEHOLDS
    assert log.count("processor started") == 3, log[-2000:]
    # both kills landed mid-stream: outcomes were still outstanding (the first while still feeding)
    assert kills[0][1] < len(produced), kills
    assert all(seen < len(produced) for seen, _ in kills), kills
