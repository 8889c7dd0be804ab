"""6. Metering: impressions/s per worker process, and end-to-end latency at a fixed offered load.

Throughput: one ``python -m tally_metering worker`` process, with fresh internal topics and
consumer group, reads the shared pre-filled impressions topic; the contracts' terms are on a
throwaway ``contracts.terms`` topic. The rate is (records - c0) / (t_end - t0): t0 is the first
time the worker's ``tally_metering_events_total`` shows progress (c0 records), t_end the moment
the committed running totals hold every billable impression. The totals are then checked per
(contract, period, rate) against the harness's recomputation.

End to end: a worker process and a spend-API process (``python -m tally_metering api``) on an
empty impressions topic; the harness produces impressions at a fixed rate (Tally's producer
settings) and polls ``GET /v1/spend``; an event's latency is from the moment it was handed
to the producer to the first poll answer whose billable count includes it.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from confluent_kafka import Consumer, Producer

from tally_streams.avro import SchemaCatalog
from tally_streams.kafka import consumer_config, delete_topics, ensure_topics, producer_config
from tally_streams.topics import (
    ADJUSTMENTS,
    ATTRIBUTED_CONVERSIONS,
    BUDGET_ALERTS,
    CONTRACT_TERMS,
    IMPRESSIONS,
    IVT_REPORT_OUTCOMES,
    IVT_REPORTS,
    PERIODS_CLOSED,
    RUNNING_TOTALS,
)

from .common import (
    BOOTSTRAP,
    NotMeasured,
    Profiler,
    Service,
    free_port,
    metric,
    module_available,
    percentile,
    token,
    unique,
    validate_settings,
)
from .dataset import Contract, Dataset, make_contracts

MODULE = "tally_metering"


def publish_terms(topic: str, contracts: list[Contract]) -> None:
    from tally_billing.terms import parse_terms, terms_to_json

    catalog = SchemaCatalog.load()
    codec = catalog.codec("contract_terms")
    p = Producer(producer_config(BOOTSTRAP, "tally-bench-terms"))
    for c in contracts:
        terms = terms_to_json(parse_terms(c.terms_json()))
        start = datetime.combine(c.flight_start, datetime.min.time(), UTC) - timedelta(days=1)
        rec = {
            "contract_id": c.contract_id, "advertiser_id": c.advertiser_id, "contract_type": "cpm", "status": "active",
            "terminated_at": None, "revision": 1, "event_id": f"evt-{uuid.uuid4()}",
            "versions": [{"version": 1, "effective_from": start, "effective_to": None, "approved_at": start,
                          "terms_json": json.dumps(terms)}],
        }
        p.produce(topic, codec.encode(rec), key=c.contract_id)
    if p.flush(30):
        raise NotMeasured("contract terms were not acknowledged by the broker")


class Rig:
    """Throwaway topics for one metering process group; every name is unique to this rig."""

    def __init__(self, impressions: str | None = None) -> None:
        self.tag = uuid.uuid4().hex[:8]
        self.created: list[str] = []
        self.impressions = impressions or self._make(IMPRESSIONS, "impressions")
        self.terms = self._make(CONTRACT_TERMS, "terms")
        self.attributed = self._make(ATTRIBUTED_CONVERSIONS, "attributed")
        self.running_totals = self._make(RUNNING_TOTALS, "running-totals")
        self.periods_closed = self._make(PERIODS_CLOSED, "periods-closed")
        self.adjustments = self._make(ADJUSTMENTS, "adjustments")
        self.budget_alerts = self._make(BUDGET_ALERTS, "budget-alerts")
        # the worker reads and writes these too: throwaway, never the real ads.ivt_reports
        self.ivt_reports = self._make(IVT_REPORTS, "ivt-reports")
        self.ivt_outcomes = self._make(IVT_REPORT_OUTCOMES, "ivt-outcomes")
        self.internal = {k: unique(f"m-{k}") for k in ("deltas", "state", "dedupe", "dlq-imp", "dlq-att")}
        self.created.extend(self.internal.values())

    def _make(self, spec: Any, name: str) -> str:
        topic = unique(name)
        ensure_topics(BOOTSTRAP, [spec.renamed(topic)])
        self.created.append(topic)
        return topic

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "TALLY_METERING_WORKER_ID": f"bench-{self.tag}", "TALLY_METERING_GROUP": f"bench-metering-{self.tag}",
            "TALLY_METERING_TOPIC_IMPRESSIONS": self.impressions, "TALLY_METERING_TOPIC_ATTRIBUTED": self.attributed,
            "TALLY_METERING_TOPIC_TERMS": self.terms, "TALLY_METERING_TOPIC_RUNNING_TOTALS": self.running_totals,
            "TALLY_METERING_TOPIC_PERIODS_CLOSED": self.periods_closed, "TALLY_METERING_TOPIC_ADJUSTMENTS": self.adjustments,
            "TALLY_METERING_TOPIC_BUDGET_ALERTS": self.budget_alerts,
            "TALLY_METERING_TOPIC_IVT_REPORTS": self.ivt_reports, "TALLY_METERING_TOPIC_IVT_OUTCOMES": self.ivt_outcomes,
            "TALLY_METERING_TOPIC_DELTAS": self.internal["deltas"], "TALLY_METERING_TOPIC_STATE": self.internal["state"],
            "TALLY_METERING_TOPIC_DEDUPE": self.internal["dedupe"],
            "TALLY_METERING_TOPIC_DLQ_IMPRESSIONS": self.internal["dlq-imp"],
            "TALLY_METERING_TOPIC_DLQ_ATTRIBUTED": self.internal["dlq-att"],
            "TALLY_LOG_LEVEL": "WARNING", **extra,
        }

    def cleanup(self) -> None:
        delete_topics(BOOTSTRAP, self.created)


class TotalsReader:
    """Reads the committed running totals (read_committed, from the beginning) in a thread."""

    def __init__(self, topic: str) -> None:
        self.codec = SchemaCatalog.load().codec("running_total")
        self.latest: dict[str, dict[str, Any]] = {}
        self.billable = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._consumer = Consumer(consumer_config(BOOTSTRAP, f"bench-totals-{uuid.uuid4().hex[:8]}"))
        self._consumer.subscribe([topic])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for m in self._consumer.consume(1000, 0.05):
                if m.error() is not None:
                    continue
                rec = self.codec.decode(m.value())
                with self._lock:
                    self.latest[rec["total_id"]] = rec
                    self.billable = sum(int(r["counts"].get("billable", 0)) for r in self.latest.values())

    def counts_by_price(self) -> Counter[tuple[str, str, Decimal]]:
        out: Counter[tuple[str, str, Decimal]] = Counter()
        with self._lock:
            for r in self.latest.values():
                for ln in r["lines"]:
                    if ln["line_type"] == "cpm_impressions" and ln["quantity"]:
                        out[(r["contract_id"], r["period_key"], Decimal(ln["unit_price"]))] += int(ln["quantity"])
        return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


def _events_counted(metrics_port: int) -> int | None:
    """Impressions the worker has classified so far (from its Prometheus endpoint)."""
    counted = metric(metrics_port, "tally_metering_events_total", 'kind="impression"')
    return None if counted is None else int(counted)


def preflight() -> None:
    why = module_available(MODULE)
    if why:
        raise NotMeasured(why)


def throughput(ds: Dataset, *, timeout_s: float = 300, profile: bool = False) -> dict[str, Any]:
    preflight()
    rig = Rig(impressions=ds.topic)
    svc: Service | None = None
    reader: TotalsReader | None = None
    try:
        publish_terms(rig.terms, ds.contracts)
        metrics_port = free_port()
        env = rig.env(TALLY_METERING_METRICS_PORT=str(metrics_port), TALLY_METERING_PORT=str(free_port()))
        why = validate_settings(MODULE, env)
        if why:
            raise NotMeasured(why)
        reader = TotalsReader(rig.running_totals)
        svc = Service("metering-worker", MODULE, env, args=["worker"]).start()
        prof = Profiler(svc.proc.pid, "metering-worker", timeout_s) if profile and svc.proc else None
        t_start = time.perf_counter()
        deadline = time.monotonic() + timeout_s
        t0, c0 = 0.0, 0
        while True:
            if not svc.alive():
                raise NotMeasured(f"the metering worker exited: {svc.log_tail()}")
            if time.monotonic() > deadline:
                raise NotMeasured(f"metering did not total {ds.billable} billable impressions within {timeout_s:.0f}s "
                                  f"(saw {reader.billable})")
            if not t0:
                c = _events_counted(metrics_port)
                if c:
                    t0, c0 = time.perf_counter(), c
            if reader.billable >= ds.billable:
                t_end = time.perf_counter()
                break
            time.sleep(0.02)
        got = reader.counts_by_price()
        want = Counter({(k[0], k[1], Decimal(k[2])): v for k, v in ds.expected.items()})
        if got != want:
            bad = [k for k in set(got) | set(want) if got.get(k) != want.get(k)]
            raise NotMeasured(f"metering's totals disagree with the recomputation on {len(bad)} keys, e.g. "
                              f"{[(k, got.get(k), want.get(k)) for k in bad[:2]]}")
        if not t0:
            raise NotMeasured("the worker's metrics never showed progress before the totals were complete")
        out: dict[str, Any] = {"records_per_s": (ds.records - c0) / (t_end - t0), "seconds": t_end - t0,
                                "seconds_with_startup": t_end - t_start}
        if prof is not None:
            svc.stop()
            prof.finish()
            out["profile"] = prof.summary()
        return out
    finally:
        if svc is not None:
            svc.stop()
        if reader is not None:
            reader.close()
        rig.cleanup()


class SpendPoller:
    """Polls ``GET /v1/spend`` as fast as it answers; keeps (time, billable per contract)."""

    def __init__(self, port: int, contract_ids: set[str]) -> None:
        self.port = port
        self.contract_ids = contract_ids
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.errors = 0
        self._stop = threading.Event()
        self._token = token("bench-e2e", ["admin"])
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> SpendPoller:
        self._thread.start()
        return self

    def poll_once(self, conn: http.client.HTTPConnection) -> dict[str, int]:
        conn.request("GET", "/v1/spend", headers={"Authorization": f"Bearer {self._token}"})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise OSError(f"GET /v1/spend answered {resp.status}: {body[:200]!r}")
        counts: Counter[str] = Counter()
        for item in json.loads(body)["items"]:
            if item["contract_id"] in self.contract_ids:
                counts[item["contract_id"]] += int(item["counts"].get("billable", 0))
        return dict(counts)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        while not self._stop.is_set():
            try:
                counts = self.poll_once(conn)
                self.samples.append((time.perf_counter(), counts))
            except (OSError, http.client.HTTPException, ValueError):
                self.errors += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                time.sleep(0.05)
            time.sleep(0.01)
        conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


class EndToEnd:
    """A worker and a spend-API process on an empty topic, kept up across the runs."""

    def __init__(self, contracts: int = 8, env: dict[str, str] | None = None) -> None:
        self.contracts = make_contracts(contracts, datetime.now(UTC))
        self.extra_env = dict(env or {})
        self.rig: Rig | None = None
        self.worker: Service | None = None
        self.api: Service | None = None
        self.api_port = 0
        self.produced: Counter[str] = Counter()
        self.codec = SchemaCatalog.load().codec("impression")
        self.seq = 0

    def __enter__(self) -> EndToEnd:
        preflight()
        self.rig = Rig()
        publish_terms(self.rig.terms, self.contracts)
        self.api_port = free_port()
        env = self.rig.env(TALLY_METERING_PORT=str(self.api_port), **self.extra_env)
        why = validate_settings(MODULE, env)
        if why:
            raise NotMeasured(why)
        self.worker = Service("metering-worker-e2e", MODULE, env, args=["worker"]).start()
        self.api = Service("metering-api-e2e", MODULE, env, args=["api"]).start()
        self.api.wait_http(self.api_port, "/healthz", timeout_s=60)
        self.producer = Producer(producer_config(BOOTSTRAP, "tally-bench-e2e"))
        # Warm-up: one impression per contract must become visible before anything is timed.
        self._produce_tick(len(self.contracts))
        self.producer.flush(30)
        poller = SpendPoller(self.api_port, {c.contract_id for c in self.contracts})
        conn = http.client.HTTPConnection("127.0.0.1", self.api_port, timeout=5)
        deadline = time.monotonic() + 90
        while True:
            if not self.worker.alive():
                raise NotMeasured(f"the metering worker exited: {self.worker.log_tail()}")
            try:
                counts = poller.poll_once(conn)
            except (OSError, http.client.HTTPException) as exc:
                counts = {}
                if time.monotonic() > deadline:
                    raise NotMeasured(f"GET /v1/spend failed: {exc}") from exc
            if all(counts.get(c.contract_id, 0) >= self.produced[c.contract_id] for c in self.contracts):
                break
            if time.monotonic() > deadline:
                raise NotMeasured(f"warm-up impressions not visible through GET /v1/spend within 90 s "
                                  f"(worker: {self.worker.log_tail(2)} api: {self.api.log_tail(2)})")
            time.sleep(0.05)
        conn.close()
        return self

    def __exit__(self, *exc: object) -> None:
        for svc in (self.worker, self.api):
            if svc is not None:
                svc.stop()
        if self.rig is not None:
            self.rig.cleanup()

    def _encode(self, n: int) -> list[tuple[bytes, str, str]]:
        """``n`` impressions (value, key, contract id), encoded ahead so producing is cheap."""
        now = datetime.now(UTC)
        out = []
        for _ in range(n):
            c = self.contracts[self.seq % len(self.contracts)]
            hh = f"hh-{self.seq % 1_000_000:07d}"
            value = self.codec.encode({
                "impression_id": f"imp-e2e-{self.rig.tag if self.rig else ''}-{self.seq:010d}", "event_time": now,
                "advertiser_id": c.advertiser_id, "campaign_id": c.campaign_ids[self.seq % len(c.campaign_ids)],
                "partner_id": None, "household_id": hh, "device_type": "ctv", "ivt": "none",
                "measurement_source": "first_party",
            })
            out.append((value, hh, c.contract_id))
            self.seq += 1
        return out

    def _send(self, items: list[tuple[bytes, str, str]]) -> None:
        topic = self.rig.impressions if self.rig else ""
        for value, key, contract_id in items:
            while True:
                try:
                    self.producer.produce(topic, value, key=key)
                    break
                except BufferError:
                    self.producer.poll(0.01)
            self.produced[contract_id] += 1
        self.producer.poll(0)

    def _produce_tick(self, n: int) -> None:
        self._send(self._encode(n))

    def run(self, *, rate: int, duration_s: float, tick_s: float = 0.01, drain_s: float = 30) -> dict[str, float]:
        """Offer ``rate`` impressions/s for ``duration_s``; latency per event, p50/p99 in ms."""
        assert self.worker is not None
        poller = SpendPoller(self.api_port, {c.contract_id for c in self.contracts}).start()
        ticks: list[tuple[float, dict[str, int], int]] = []  # (time handed over, cumulative per contract, events)
        per_tick = max(1, round(rate * tick_s))
        n_ticks = int(duration_s / tick_s)
        pending = self._encode(per_tick * n_ticks)
        started = time.perf_counter()
        k = 0
        try:
            while k < n_ticks:
                due = started + k * tick_s
                now = time.perf_counter()
                if due > now:
                    time.sleep(due - now)
                t = time.perf_counter()
                self._send(pending[k * per_tick:(k + 1) * per_tick])
                ticks.append((t, dict(self.produced), per_tick))
                k += 1
            offered = (k * per_tick) / (time.perf_counter() - started)
            self.producer.flush(30)
            final = dict(self.produced)
            deadline = time.monotonic() + drain_s
            while time.monotonic() < deadline:
                if poller.samples and all(poller.samples[-1][1].get(c, 0) >= n for c, n in final.items()):
                    break
                if not self.worker.alive():
                    raise NotMeasured(f"the metering worker exited: {self.worker.log_tail()}")
                time.sleep(0.05)
        finally:
            poller.stop()
        samples = poller.samples
        latencies: list[float] = []
        missing = 0
        j0 = 0
        for t, cumulative, n in ticks:
            # The first poll, issued after the tick was handed over, whose counts include it.
            while j0 < len(samples) and samples[j0][0] < t:
                j0 += 1
            seen_at = next((ts for ts, counts in samples[j0:] if all(counts.get(c, 0) >= v for c, v in cumulative.items())), None)
            if seen_at is None:
                missing += n
                continue
            latencies.extend([(seen_at - t) * 1000] * n)
        if missing:
            raise NotMeasured(f"{missing} impressions were not visible through GET /v1/spend within {drain_s:.0f}s of the end")
        latencies.sort()
        return {"offered_per_s": offered, "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
                "polls": len(samples), "poll_errors": poller.errors}
