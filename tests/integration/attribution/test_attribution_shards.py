"""Two processor replicas deciding as one, over two advertiser shards (``TALLY_ATTRIBUTION_SHARDS=2``).

Replica a starts alone and decides both shards; b joins mid-stream and the cooperative rebalance
hands one shard over (a keeps deciding the other without a restart); a is SIGKILLed mid-stream
and b takes its shard; a, restarted, gets one back. Through all of it: every conversion record
ends with exactly one outcome, each advertiser's conversions are attributed once each up to its
cap and the rest capped, a conversion id reused by an advertiser of the other shard is a
duplicate (counted once across advertisers), and the amounts reconcile to the cent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from tally_attribution.settings import shard_of
from tally_streams.avro import SchemaCatalog
from tally_streams.kafka import delete_topics
from tests import clock
from tests.attribution_builders import EPOCH_2026, conversion, cpa_terms, impression, terms_record

from .conftest import Harness, processor_env
from .test_attribution_sigkill import assert_one_outcome_per_record, await_every_outcome, kill_all, names, start  # noqa: F401 (names: the fixture)

pytestmark = pytest.mark.integration

HOUSEHOLDS = 150  # per advertiser
AT = clock.now().replace(microsecond=0) - timedelta(hours=1)
#: two advertisers per shard (``shard_of``); the second of each shard capped
ADVERTISERS = {"adv-sh-c": None, "adv-sh-d": 40, "adv-sh-a": None, "adv-sh-b": 25}
PRICE, PAYOUT = Decimal("3.37"), Decimal("1.19")


def _started(path: Path) -> list[int]:
    """The shards this replica's log says it started, in order."""
    return [json.loads(line)["shard"] for line in path.read_text(errors="replace").splitlines()
            if '"processor started"' in line]


def _await(what: str, cond: Callable[[], bool], procs: dict[str, subprocess.Popen[bytes]], logs: dict[str, Path],
           timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        for r, p in procs.items():
            assert p.poll() is None, f"replica {r} exited: {logs[r].read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{what}: {[(r, _started(logs[r])) for r in logs]}"
        time.sleep(0.05)


def test_two_replicas_two_shards_decide_as_one(kafka_bootstrap: str, catalog: SchemaCatalog, names: dict[str, str],  # noqa: F811
                                               tmp_path: Path) -> None:
    assert [shard_of(a, 2) for a in ADVERTISERS] == [0, 0, 1, 1]
    h = Harness(kafka_bootstrap, catalog, names)
    base = processor_env(kafka_bootstrap, names, settle_ms=200)
    lease_topic = f"{names['state']}-lease"
    envs = {r: {**os.environ, **base, "TALLY_ATTRIBUTION_SHARDS": "2", "TALLY_ATTRIBUTION_REPLICA_ID": f"replica-{r}",
                "TALLY_ATTRIBUTION_TOPIC_LEASE": lease_topic,
                "TALLY_ATTRIBUTION_STORE_DIR": str(tmp_path / f"store-{r}")} for r in "ab"}
    logs = {r: tmp_path / f"replica-{r}.log" for r in "ab"}
    imp = catalog.codec("impression")
    for n, (adv, cap) in enumerate(ADVERTISERS.items()):
        caps = None if cap is None else {"contract": {"max_conversions_per_period": cap}}
        h.terms(terms_record(f"k-{adv}", adv, [(1, EPOCH_2026, None, cpa_terms(
            adv, [f"{adv}-c"], price=str(PRICE), payout=str(PAYOUT), caps=caps))]))
        for i in range(HOUSEHOLDS):
            h.producer.produce(names["impressions"], key=f"h{n}-{i}", value=imp.encode(
                impression(f"i{n}-{i}", f"h{n}-{i}", AT - timedelta(hours=2), adv, f"{adv}-c", f"p{i % 3}")))
    h.producer.flush(30)

    produced: list[tuple[str, str]] = []  # (advertiser, conversion id), one per record

    def feed() -> None:
        codec = catalog.codec("conversion")
        for i in range(HOUSEHOLDS):
            for n, adv in enumerate(ADVERTISERS):
                cid = f"v{n}-{i}"
                for _ in range(2 if i % 15 == 0 else 1):  # now and then twice: a client retry
                    h.producer.produce(names["conversions"], key=f"h{n}-{i}",
                                       value=codec.encode(conversion(cid, f"h{n}-{i}", AT, adv)))
                    produced.append((adv, cid))
            if i % 5 == 4:  # paced over ~45 s: the join, the kill and the restart land mid-stream
                h.producer.flush(10)
                time.sleep(1.5)
        # adv-sh-a (shard 1) reuses an id adv-sh-c (shard 0) counted: a duplicate
        h.producer.produce(names["conversions"], key="h2-0", value=codec.encode(conversion("v0-0", "h2-0", AT, "adv-sh-a")))
        produced.append(("adv-sh-a", "v0-0"))
        h.producer.flush(30)

    out = names["outcomes"]
    procs: dict[str, subprocess.Popen[bytes]] = {}
    killed: list[subprocess.Popen[bytes]] = []
    feeder = threading.Thread(target=feed)
    try:
        procs["a"] = start(envs["a"], logs["a"])
        _await("a decides both shards", lambda: sorted(_started(logs["a"])) == [0, 1], procs, logs)
        feeder.start()
        h.collector.wait_for(out, lambda r: True, count=60, timeout_s=60)
        procs["b"] = start(envs["b"], logs["b"])  # joins mid-stream: one shard moves to it
        _await("b takes a shard from a", lambda: len(_started(logs["b"])) == 1, procs, logs)
        [moved] = _started(logs["b"])
        kept = 1 - moved
        seen = len(h.collector.get(out))
        h.collector.wait_for(out, lambda r: True, count=seen + 60, timeout_s=60)
        assert sorted(_started(logs["a"])) == [0, 1]  # a kept the other shard running: no restart
        procs["a"].send_signal(signal.SIGKILL)
        procs["a"].wait(10)
        killed.append(procs.pop("a"))
        at_kill = len(h.collector.get(out))
        # a's shard goes to b once a's lease session (10 s) is over
        _await("b takes the killed replica's shard", lambda: _started(logs["b"]) == [moved, kept], procs, logs)
        procs["a"] = start(envs["a"], logs["a"])  # back: the rebalance gives it one shard again
        _await("a, restarted, gets a shard back", lambda: len(_started(logs["a"])) == 3, procs, logs)
        feeder.join(120)
        await_every_outcome(h, len(produced), procs.values())
    finally:
        kill_all([*procs.values(), *killed])
        h.collector.close()
        delete_topics(kafka_bootstrap, [lease_topic])

    outcomes = h.collector.get(out)
    attributed = h.collector.get(names["attributed"])
    assert_one_outcome_per_record(outcomes, len(produced))
    assert Counter((o["advertiser_id"], o["conversion_id"]) for o in outcomes) == Counter(produced)
    assert at_kill < len(produced)  # the kill landed mid-stream
    distinct = {adv: {cid for a, cid in produced if a == adv} - ({"v0-0"} if adv == "adv-sh-a" else set()) for adv in ADVERTISERS}
    for adv, cap in ADVERTISERS.items():
        mine = [o for o in outcomes if o["advertiser_id"] == adv]
        want = HOUSEHOLDS if cap is None else cap
        assert sum(o["outcome"] == "attributed" for o in mine) == want, adv
        assert sum(o["reason"] == "capped" for o in mine) == len(distinct[adv]) - want, adv
        assert sum(o["reason"] == "duplicate" for o in mine) == len(mine) - len(distinct[adv]), adv
    [reused] = [o for o in outcomes if o["advertiser_id"] == "adv-sh-a" and o["conversion_id"] == "v0-0"]
    assert reused["reason"] == "duplicate"
    total = sum(HOUSEHOLDS if cap is None else cap for cap in ADVERTISERS.values())
    assert Counter(a["conversion_id"] for a in attributed).most_common(1)[0][1] == 1 and len(attributed) == total
    assert sum((a["advertiser_amount"] for a in attributed), Decimal(0)) == PRICE * total
    assert sum((a["partner_payout"] for a in attributed), Decimal(0)) == PAYOUT * total
