"""Metering's two stages in process, without transactions: CPU per impression on the benchmark's traffic.

``make bench`` times the whole worker against the broker, which on a shared 2-core machine
mostly measures how much CPU the worker was given. This times only what the worker's own
code costs: the benchmark's impressions (``tally_bench.dataset``, a throwaway topic) are
consumed once into memory, then fed in batches to ``Worker.stage_one_impressions`` (decode,
dedupe, usage deltas) and the deltas straight to ``StageTwo.apply`` (delta decode, ledger,
totals), with the loop's ``produce`` replaced by a list. Figures are the thread's CPU time per
impression (``time.thread_time``), so other processes' load moves them less than wall time.

    .venv/bin/python bench/metering_stages.py [--impressions 150000] [--batch 20000]

To compare with another version of the worker, run it with that version first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from confluent_kafka import Consumer, Message
from tally_bench import dataset
from tally_bench.common import BOOTSTRAP

from tally_billing.terms import parse_terms, terms_to_json
from tally_kit.clock import WallClock
from tally_kit.settings import load
from tally_metering.settings import SPEC
from tally_metering.state import DedupeStore, TotalsStore
from tally_metering.worker import Worker
from tally_streams.kafka import consumer_config, delete_topics


def consumed(topic: str, n: int) -> list[Message]:
    c = Consumer(consumer_config(BOOTSTRAP, f"bench-stages-{uuid.uuid4().hex}"))
    c.subscribe([topic])
    msgs: list[Message] = []
    deadline = time.monotonic() + 120
    while len(msgs) < n and time.monotonic() < deadline:
        msgs.extend(m for m in c.consume(5000, 1.0) if m.error() is None)
    c.close()
    return msgs


def by_partition(batch: list[Message]) -> list[tuple[int, list[Message]]]:
    groups: dict[int, list[Message]] = {}
    for m in batch:
        groups.setdefault(m.partition(), []).append(m)  # type: ignore[arg-type]
    return sorted(groups.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--impressions", type=int, default=150_000)
    ap.add_argument("--batch", type=int, default=20_000)
    args = ap.parse_args()
    ds = dataset.build(args.impressions)
    try:
        msgs = consumed(ds.topic, args.impressions)
    finally:
        delete_topics(BOOTSTRAP, [ds.topic])
    settings = load(SPEC, {"TALLY_METERING_TOPIC_IMPRESSIONS": ds.topic})
    w = Worker(settings, WallClock())
    for c in ds.contracts:
        start = datetime.combine(c.flight_start, datetime.min.time(), UTC) - timedelta(days=1)
        w.book.apply({"contract_id": c.contract_id, "advertiser_id": c.advertiser_id, "contract_type": "cpm",
                      "status": "active", "terminated_at": None, "revision": 1, "event_id": "bench",
                      "versions": [{"version": 1, "effective_from": start, "effective_to": None, "approved_at": start,
                                    "terms_json": json.dumps(terms_to_json(parse_terms(c.terms_json())))}]})
    for p in {m.partition() for m in msgs}:
        w.dedupe[p] = DedupeStore()  # type: ignore[index]
    for q in range(settings.metering_delta_partitions):
        w.stores[q] = TotalsStore(q)
    out: list[tuple[str, bytes | None, Any, int | None]] = []
    w._produce = lambda topic, value, key, partition=None: out.append((topic, value, key, partition))  # type: ignore[method-assign]
    decode = getattr(w, "_decode_delta", None) or json.loads  # an older worker's deltas are JSON
    one = two = 0.0
    now_us = int(time.time() * 1_000_000)
    for i in range(0, len(msgs), args.batch):
        out.clear()
        t0 = time.thread_time()
        w.stage_one_impressions(by_partition(msgs[i:i + args.batch]), now_us)
        t1 = time.thread_time()
        now = datetime.now(UTC)
        for topic, value, _, partition in out:
            if topic == settings.metering_topic_deltas:
                w.two.apply(partition, decode(value), now)  # type: ignore[arg-type]
        for store in w.stores.values():
            store.take_dirty()
        t2 = time.thread_time()
        one += t1 - t0
        two += t2 - t1
    n = len(msgs)
    print(f"{n:,} impressions in batches of {args.batch:,}: stage one {one / n * 1e6:.2f} µs, "
          f"stage two {two / n * 1e6:.2f} µs, both {(one + two) / n * 1e6:.2f} µs per impression (thread CPU)")


if __name__ == "__main__":
    main()
