"""End-to-end worker throughput on the real broker: N impressions through one worker process.

Creates throwaway topics, publishes one CPM contract, produces N impressions, then runs one
worker (in this process) and reports impressions/s from its first assignment until the group
has committed everything (every batch a full Kafka transaction with changelogs and offsets).
Run: ``.venv/bin/python bench/metering_worker_throughput.py [N]``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from tally_billing.examples import cpm_terms_json
from tally_kit.clock import FileClock
from tally_kit.settings import load
from tally_metering.settings import SPEC
from tally_metering.worker import Worker
from tally_streams.avro import SchemaCatalog
from tally_streams.kafka import consumer_config, delete_topics, ensure_topics
from tally_streams.topics import CONTRACT_TERMS, IMPRESSIONS, TopicSpec

BOOTSTRAP = "127.0.0.1:9092"


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
    run = uuid.uuid4().hex[:8]
    names = {k: f"bench-{run}-{k}" for k in ("imp", "att", "terms", "rt", "pc", "adj", "ba", "dlqi", "dlqa", "deltas",
                                             "state", "dedupe")}
    specs = [IMPRESSIONS.renamed(names["imp"]), CONTRACT_TERMS.renamed(names["terms"])]
    specs += [TopicSpec(names[k], "x", "x", partitions=8 if k in ("dedupe",) else 4, compacted=k in ("state", "rt"))
              for k in ("att", "rt", "pc", "adj", "ba", "dlqi", "dlqa", "deltas", "state", "dedupe")]
    ensure_topics(BOOTSTRAP, specs)
    catalog = SchemaCatalog.load()
    try:
        p = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 20, "compression.type": "lz4",
                      "queue.buffering.max.messages": 1_000_000})
        terms = cpm_terms_json()
        terms["common"]["campaign_ids"] = ["cmp-1"]
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        p.produce(names["terms"], catalog.codec("contract_terms").encode({
            "contract_id": "K-1", "advertiser_id": "adv-acme", "contract_type": "cpm", "status": "active",
            "terminated_at": None, "revision": 1, "event_id": "e1",
            "versions": [{"version": 1, "effective_from": t0, "effective_to": None, "approved_at": t0,
                          "terms_json": json.dumps(terms)}]}), key="K-1")
        codec = catalog.codec("impression")
        for i in range(n):
            v = codec.encode({"impression_id": f"imp-{i:09d}", "event_time": t0 + timedelta(days=10, seconds=i),
                              "advertiser_id": "adv-acme", "campaign_id": "cmp-1", "partner_id": None,
                              "household_id": f"hh-{i}", "device_type": "ctv", "ivt": "none",
                              "measurement_source": "first_party"})
            while True:
                try:
                    p.produce(names["imp"], v, key=f"hh-{i}")
                    break
                except BufferError:
                    p.poll(0.05)
        p.flush(120)
        clock = Path(tempfile.mkdtemp()) / "clock"
        FileClock.set(clock, datetime(2026, 1, 20, tzinfo=UTC))
        env = {"TALLY_METERING_WORKER_ID": "bench", "TALLY_METERING_GROUP": f"bench-{run}",
               "TALLY_METERING_TOPIC_IMPRESSIONS": names["imp"], "TALLY_METERING_TOPIC_ATTRIBUTED": names["att"],
               "TALLY_METERING_TOPIC_TERMS": names["terms"], "TALLY_METERING_TOPIC_RUNNING_TOTALS": names["rt"],
               "TALLY_METERING_TOPIC_PERIODS_CLOSED": names["pc"], "TALLY_METERING_TOPIC_ADJUSTMENTS": names["adj"],
               "TALLY_METERING_TOPIC_BUDGET_ALERTS": names["ba"], "TALLY_METERING_TOPIC_DLQ_IMPRESSIONS": names["dlqi"],
               "TALLY_METERING_TOPIC_DLQ_ATTRIBUTED": names["dlqa"], "TALLY_METERING_TOPIC_DELTAS": names["deltas"],
               "TALLY_METERING_TOPIC_STATE": names["state"], "TALLY_METERING_TOPIC_DEDUPE": names["dedupe"],
               "TALLY_METERING_CLOCK_FILE": str(clock), "TALLY_METERING_BATCH_MAX": sys.argv[2] if len(sys.argv) > 2 else "10000"}
        worker = Worker(load(SPEC, env), FileClock(clock), catalog)
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        thread.start()
        worker.ready.wait(60)
        c = Consumer(consumer_config(BOOTSTRAP, f"bench-{run}"))
        tps = [TopicPartition(names["imp"], i) for i in range(8)]
        started = None
        while True:
            done = sum(max(tp.offset, 0) for tp in c.committed(tps, timeout=10))
            if started is None and done > 0:
                started, base = time.perf_counter(), done
            if done >= n:
                break
            time.sleep(0.05)
        assert started is not None, "the worker committed nothing"
        elapsed = time.perf_counter() - started
        print(f"worker: {n - base:,} impressions committed in {elapsed:.2f}s = {(n - base) / elapsed:,.0f} impressions/s "
              f"(batch max {env['TALLY_METERING_BATCH_MAX']})", flush=True)
        stop.set()
        thread.join(30)
        c.close()
    finally:
        delete_topics(BOOTSTRAP, [s.name for s in specs])


if __name__ == "__main__":
    main()
