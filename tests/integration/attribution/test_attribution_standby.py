"""Two processor replicas, one lease: the standby waits, takes over when the active one is
SIGKILLed mid-stream, and the killed one, restarted, waits in turn; killed again the other way.
Every conversion record ends with exactly one outcome, every conversion is attributed once, and
the amounts reconcile to the cent. The replicas have their own store directories (as pods have
their own volumes), so each takeover rebuilds the index from the changelog."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from tally_streams.avro import SchemaCatalog
from tally_streams.kafka import delete_topics
from tests import clock
from tests.attribution_builders import EPOCH_2026, conversion, cpa_terms, impression, terms_record

from .conftest import Harness, processor_env
from .test_attribution_sigkill import assert_one_outcome_per_record, await_every_outcome, kill_all, names, start  # noqa: F401 (names: the fixture)

pytestmark = pytest.mark.integration

HOUSEHOLDS = 400
AT = clock.now().replace(microsecond=0) - timedelta(hours=1)


def _await_log(path: Path, text: str, count: int, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while path.read_text().count(text) < count:
        assert proc.poll() is None, f"{path.name} exited: {path.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"{text!r} x{count} not in {path.name}: {path.read_text()[-2000:]}"
        time.sleep(0.05)


def test_standby_takes_over_each_outcome_once(kafka_bootstrap: str, catalog: SchemaCatalog, names: dict[str, str],  # noqa: F811
                                              tmp_path: Path) -> None:
    h = Harness(kafka_bootstrap, catalog, names)
    base = processor_env(kafka_bootstrap, names, settle_ms=200)
    lease_topic = f"{names['state']}-lease"
    envs = {r: {**os.environ, **base, "TALLY_ATTRIBUTION_REPLICA_ID": f"replica-{r}",
                "TALLY_ATTRIBUTION_TOPIC_LEASE": lease_topic,
                "TALLY_ATTRIBUTION_STORE_DIR": str(tmp_path / f"store-{r}")} for r in "ab"}
    logs = {r: tmp_path / f"replica-{r}.log" for r in "ab"}
    adv = "adv-standby"
    h.terms(terms_record("k-sb", adv, [(1, EPOCH_2026, None, cpa_terms(adv, ["c-sb"], price="7.77", payout="2.22"))]))
    for i in range(HOUSEHOLDS):
        h.producer.produce(names["impressions"], key=f"h{i}", value=catalog.codec("impression").encode(
            impression(f"i{i}", f"h{i}", AT - timedelta(hours=2), adv, "c-sb", f"p{i % 3}")))
    h.producer.flush(30)

    produced: list[str] = []

    def feed() -> None:
        codec = catalog.codec("conversion")
        for i in range(HOUSEHOLDS):
            cid = f"v{i}"
            for _ in range(2 if i % 10 == 0 else 1):  # every tenth one twice: a client retry
                h.producer.produce(names["conversions"], key=f"h{i}", value=codec.encode(conversion(cid, f"h{i}", AT, adv)))
                produced.append(cid)
            if i % 10 == 0:  # paced over ~32 s: both kills, each followed by a 10 s takeover, land mid-stream
                h.producer.flush(10)
                time.sleep(0.8)
        h.producer.flush(30)

    out = names["outcomes"]
    procs: dict[str, subprocess.Popen[bytes]] = {}
    killed: list[subprocess.Popen[bytes]] = []
    feeder = threading.Thread(target=feed)
    try:
        procs["a"] = start(envs["a"], logs["a"])
        _await_log(logs["a"], "processor started", 1, procs["a"], 60)
        procs["b"] = start(envs["b"], logs["b"])
        _await_log(logs["b"], "standby: waiting for the processor lease", 1, procs["b"], 60)
        feeder.start()
        kills: list[int] = []
        for active, standby, n in (("a", "b", 1), ("b", "a", 2)):
            h.collector.wait_for(out, lambda r: True, count=len(h.collector.get(out)) + 30, timeout_s=60)
            assert logs[standby].read_text().count("processor started") == n - 1  # it waited, deciding nothing
            procs[active].send_signal(signal.SIGKILL)
            procs[active].wait(10)
            killed.append(procs[active])
            kills.append(len(h.collector.get(out)))
            # the standby takes the lease once the dead member's session (10 s) is over, and decides
            _await_log(logs[standby], "processor started", n, procs[standby], 60)
            waited = logs[active].read_text().count("standby: waiting for the processor lease")
            procs[active] = start(envs[active], logs[active])  # back, as the standby now
            _await_log(logs[active], "standby: waiting for the processor lease", waited + 1, procs[active], 60)
        feeder.join(90)
        await_every_outcome(h, len(produced), procs.values())
    finally:
        kill_all([*procs.values(), *killed])
        h.collector.close()
        delete_topics(kafka_bootstrap, [lease_topic])

    outcomes = h.collector.get(out)
    attributed = h.collector.get(names["attributed"])
    assert_one_outcome_per_record(outcomes, len(produced))
    assert Counter(o["conversion_id"] for o in outcomes) == Counter(produced)
    assert sum(1 for o in outcomes if o["reason"] == "duplicate") == len(produced) - HOUSEHOLDS
    assert Counter(a["conversion_id"] for a in attributed) == Counter({f"v{i}": 1 for i in range(HOUSEHOLDS)})
    assert sum((a["advertiser_amount"] for a in attributed), Decimal(0)) == Decimal("7.77") * HOUSEHOLDS
    assert sum((a["partner_payout"] for a in attributed), Decimal(0)) == Decimal("2.22") * HOUSEHOLDS
    # both kills landed mid-stream
    assert all(seen < len(produced) for seen in kills), (kills, len(produced))
    text = {r: logs[r].read_text() for r in "ab"}
    assert text["a"].count("processor started") == 2 and text["b"].count("processor started") == 1, text
    assert "lease lost" not in text["a"] + text["b"]
