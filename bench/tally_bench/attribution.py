"""5. Attribution: conversions/s decided with an exposure index of >= 1 million households.

Throwaway topics throughout. The harness publishes CPA terms (the billing library's example
contract, one per advertiser, with its own campaigns), fills the impressions topic with one
exposure per household (``--households``, 1,000,000 by default) and starts
``python -m tally_attribution processor`` with a settle delay of 0 (the default 5 minutes
would only measure the wait). Once the processor's ``tally_attribution_exposure_households``
gauge reaches the household count, each run produces a burst of conversions (pre-encoded,
households drawn from the index) and times from the first one handed to the producer to the
moment every one of them has a committed outcome on the outcomes topic (read_committed).
"""

from __future__ import annotations

import copy
import http.client
import json
import random
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import Consumer, Producer

from tally_streams.avro import SchemaCatalog
from tally_streams.kafka import consumer_config, delete_topics, ensure_topics, producer_config
from tally_streams.topics import (
    ATTRIBUTED_CONVERSIONS,
    CONTRACT_TERMS,
    CONVERSION_OUTCOMES,
    CONVERSIONS,
    DLQ_CONVERSIONS,
    DLQ_IMPRESSIONS,
    DLQ_INGEST,
    IMPRESSIONS,
)

from .common import BOOTSTRAP, NotMeasured, Report, Service, free_port, module_available, unique, validate_settings

MODULE = "tally_attribution"
CONTRACTS = 4


def cpa_terms(i: int, tag: str, now: datetime) -> dict[str, Any]:
    from tally_billing.examples import cpa_terms_json

    t = copy.deepcopy(cpa_terms_json())
    t["common"].update({"campaign_ids": [f"cmp-{tag}-{i}"], "advertiser_id": f"adv-{tag}-{i}",
                        "flight_start": (now - timedelta(days=60)).date().isoformat(), "flight_end": None})
    t["cpa"]["partner_overrides"] = []
    return t


def _gauge(port: int, name: str) -> float | None:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


class OutcomeCounter:
    def __init__(self, topic: str) -> None:
        self.count = 0
        self._stop = threading.Event()
        self._c = Consumer(consumer_config(BOOTSTRAP, f"bench-outcomes-{uuid.uuid4().hex[:8]}"))
        self._c.subscribe([topic])
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.count += sum(1 for m in self._c.consume(5000, 0.05) if m.error() is None)

    def close(self) -> None:
        self._stop.set()
        self._t.join(10)
        self._c.close()


def measure(report: Report, args: Any) -> None:
    from tally_billing.terms import parse_terms, terms_to_json

    why = module_available(MODULE)
    if why:
        raise NotMeasured(why)
    tag = uuid.uuid4().hex[:6]
    now = datetime.now(UTC)
    specs = {"imp": IMPRESSIONS, "conv": CONVERSIONS, "terms": CONTRACT_TERMS, "att": ATTRIBUTED_CONVERSIONS,
             "out": CONVERSION_OUTCOMES, "dlq_ing": DLQ_INGEST, "dlq_imp": DLQ_IMPRESSIONS, "dlq_conv": DLQ_CONVERSIONS}
    names = {k: unique(f"attr-{k}") for k in specs}
    state = unique("attr-state")
    svc: Service | None = None
    counter: OutcomeCounter | None = None
    ensure_topics(BOOTSTRAP, [spec.renamed(names[k]) for k, spec in specs.items()])
    try:
        catalog = SchemaCatalog.load()
        p = Producer(producer_config(BOOTSTRAP, "tally-bench-attr", **{"linger.ms": 20, "batch.size": 262_144}))
        tcodec = catalog.codec("contract_terms")
        start = now - timedelta(days=61)
        for i in range(CONTRACTS):
            terms = terms_to_json(parse_terms(cpa_terms(i, tag, now)))
            rec: dict[str, Any] = {"contract_id": f"ctr-{tag}-{i}", "advertiser_id": f"adv-{tag}-{i}", "contract_type": "cpa",
                   "status": "active", "terminated_at": None, "revision": 1, "event_id": f"evt-{uuid.uuid4()}",
                   "versions": [{"version": 1, "effective_from": start, "effective_to": None, "approved_at": start,
                                 "terms_json": json.dumps(terms)}]}
            p.produce(names["terms"], tcodec.encode(rec), key=f"ctr-{tag}-{i}")
        households = args.households
        if households < 1_000_000:  # the issue asks for >= 1M; fewer is only a harness check
            report.figures["attribution.conversions"].label = f"conversions/s decided, exposure index of {households:,} households"
        print(f"  filling {households:,} exposures (one per household) ...", flush=True)
        icodec = catalog.codec("impression")
        rng = random.Random(5)
        t_fill = time.perf_counter()
        for h in range(households):
            hh = f"hh-{tag}-{h:07d}"
            value = icodec.encode({
                "impression_id": f"imp-{tag}-{h:08d}", "event_time": now - timedelta(hours=2, seconds=rng.randrange(86_400)),
                "advertiser_id": f"adv-{tag}-{h % CONTRACTS}", "campaign_id": f"cmp-{tag}-{h % CONTRACTS}",
                "partner_id": f"partner-{h % 3}", "household_id": hh, "device_type": "ctv", "ivt": "none",
                "measurement_source": "first_party"})
            while True:
                try:
                    p.produce(names["imp"], value, key=hh)
                    break
                except BufferError:
                    p.poll(0.05)
            if h % 10_000 == 0:
                p.poll(0)
        if p.flush(120):
            raise NotMeasured("exposures were not acknowledged by the broker")
        print(f"  filled in {time.perf_counter() - t_fill:.0f} s", flush=True)
        metrics_port = free_port()
        env = {"TALLY_ATTRIBUTION_METRICS_PORT": str(metrics_port), "TALLY_ATTRIBUTION_SETTLE_DELAY_MS": "0",
               "TALLY_ATTRIBUTION_GROUP": f"bench-attr-{tag}", "TALLY_ATTRIBUTION_TRANSACTIONAL_ID": f"bench-attr-{tag}",
               "TALLY_ATTRIBUTION_TOPIC_IMPRESSIONS": names["imp"], "TALLY_ATTRIBUTION_TOPIC_CONVERSIONS": names["conv"],
               "TALLY_ATTRIBUTION_TOPIC_TERMS": names["terms"], "TALLY_ATTRIBUTION_TOPIC_ATTRIBUTED": names["att"],
               "TALLY_ATTRIBUTION_TOPIC_OUTCOMES": names["out"], "TALLY_ATTRIBUTION_TOPIC_DLQ_INGEST": names["dlq_ing"],
               "TALLY_ATTRIBUTION_TOPIC_DLQ_IMPRESSIONS": names["dlq_imp"],
               "TALLY_ATTRIBUTION_TOPIC_DLQ_CONVERSIONS": names["dlq_conv"], "TALLY_ATTRIBUTION_TOPIC_STATE": state,
               "TALLY_ATTRIBUTION_PORT": str(free_port()), "TALLY_LOG_LEVEL": "WARNING"}
        why = validate_settings(MODULE, env)
        if why:
            raise NotMeasured(why)
        counter = OutcomeCounter(names["out"])
        svc = Service("attribution-processor", MODULE, env, args=["processor"]).start()
        t0 = time.perf_counter()
        deadline = time.monotonic() + args.index_timeout_s
        while True:
            if not svc.alive():
                raise NotMeasured(f"the attribution processor exited: {svc.log_tail()}")
            size = _gauge(metrics_port, "tally_attribution_exposure_households") or 0
            if size >= households:
                break
            if time.monotonic() > deadline:
                raise NotMeasured(f"the exposure index held {size:,.0f} of {households:,} households after "
                                  f"{args.index_timeout_s:.0f} s (run stopped there to keep make bench bounded)")
            time.sleep(0.2)
        build_s = time.perf_counter() - t0
        print(f"  exposure index: {households:,} households in {build_s:.1f} s", flush=True)
        report.figures["attribution.conversions"].note = (
            f"index of {households:,} households built in {build_s:.0f} s ({households / build_s:,.0f} impressions/s, "
            f"from process start); settle delay 0; bursts of {args.conversions:,} conversions")
        ccodec = catalog.codec("conversion")
        seq = 0
        for r in range(args.runs):
            burst = []
            t_conv = datetime.now(UTC) - timedelta(minutes=1)
            for _ in range(args.conversions):
                h = rng.randrange(households)
                hh = f"hh-{tag}-{h:07d}"
                burst.append((ccodec.encode({
                    "conversion_id": f"conv-{tag}-{seq:08d}", "kind": "conversion", "order_id": f"ord-{tag}-{seq:08d}",
                    "event_time": t_conv, "advertiser_id": f"adv-{tag}-{h % CONTRACTS}", "household_id": hh,
                    "event_type": "signup", "value": None, "currency": None, "source": "api", "partner_id": None,
                    "reverses_conversion_id": None, "reversal_amount": None}), hh))
                seq += 1
            before = counter.count
            t_start = time.perf_counter()
            for value, key in burst:
                while True:
                    try:
                        p.produce(names["conv"], value, key=key)
                        break
                    except BufferError:
                        p.poll(0.01)
            p.flush(60)
            deadline = time.monotonic() + 180
            while counter.count - before < len(burst):
                if not svc.alive():
                    raise NotMeasured(f"the attribution processor exited: {svc.log_tail()}")
                if time.monotonic() > deadline:
                    raise NotMeasured(f"{counter.count - before:,} of {len(burst):,} outcomes after 180 s")
                time.sleep(0.02)
            rate = len(burst) / (time.perf_counter() - t_start)
            print(f"  round {r + 1}: {rate:,.0f} conversions/s", flush=True)
            report.add("attribution.conversions", rate)
    finally:
        if svc is not None:
            svc.stop()
        if counter is not None:
            counter.close()
        delete_topics(BOOTSTRAP, [*names.values(), state])
