"""5. Attribution: the processor's exposure index, its skipping of uncovered traffic, its decisions.

Throwaway topics throughout. The harness publishes CPA terms (the billing library's example
contract, one per advertiser, with its own campaigns), fills the impressions topic with one
exposure per household (``--households``, 1,000,000 by default) and a second impressions topic
with ``--uncovered`` impressions of campaigns no contract covers, and per run starts
``python -m tally_attribution processor`` (fresh group, transactional id and state changelog)
with a settle delay of 0 (the default 5 minutes would only measure the wait):

- **index build**: impressions/s from the first progress of its
  ``tally_attribution_impressions_total`` to the ``tally_attribution_exposure_households`` gauge
  reaching the household count (process start, state restore and the terms load excluded; the
  note gives the rate from process start too);
- **memory**: the process's resident set (``VmRSS``) once the index is complete minus the one at
  the first progress, per million households;
- **conversions/s**: a burst of ``--conversions`` conversions (pre-encoded, households drawn from
  the index), from the first one handed to the producer to the moment every one has a committed
  outcome on the outcomes topic (read_committed);
- **decision latency**: ``--steady-rate`` conversions/s for ``--steady-seconds``, each timed from
  its hand-over to the producer to its outcome read back from the outcomes topic (read_committed:
  the wait for the transaction's commit is part of it);
- **uncovered**: a second processor on the uncovered topic, from its first progress to
  ``tally_attribution_impressions_total{outcome="uncovered"}`` reaching the count;
- **the index on disk at scale** (``TALLY_BENCH_ATTRIBUTION_LARGE_HOUSEHOLDS``, 2,000,000 by
  default; 0 skips it): a third processor indexes that many households (one exposure each), its
  RSS then; SIGKILLed and restarted on its store directory, the seconds from process start to
  its first cycle (store trusted: the state is loaded from it, the changelog is not read);
  SIGKILLed again with the directory deleted, the same for a rebuild of the store from the changelog.

Index, conversions and uncovered are also given per CPU-second of the processor process (user +
system time of all its threads over the same interval, from ``/proc/<pid>/stat``): on a shared
machine the wall-clock rate moves with everyone else's load, the CPU cost much less.
"""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer

from tally_streams.avro import AvroCodec, SchemaCatalog
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

from .common import (
    BOOTSTRAP,
    NotMeasured,
    Report,
    Service,
    cpu_s,
    free_port,
    metric,
    module_available,
    rss_bytes,
    unique,
    validate_settings,
)

MODULE = "tally_attribution"
CONTRACTS = 4
#: the figures this section fills (``bench/run.py`` declares them)
KEYS = ["attribution.index", "ratio.attribution_index_over_metering", "attribution.uncovered", "attribution.conversions",
        "attribution.latency_p99", "attribution.memory"]


def cpa_terms(i: int, tag: str, now: datetime) -> dict[str, Any]:
    from tally_billing.examples import cpa_terms_json

    t = copy.deepcopy(cpa_terms_json())
    t["common"].update({"campaign_ids": [f"cmp-{tag}-{i}"], "advertiser_id": f"adv-{tag}-{i}",
                        "flight_start": (now - timedelta(days=60)).date().isoformat(), "flight_end": None})
    t["cpa"]["partner_overrides"] = []
    return t


def _per_cpu_s(values: list[float]) -> str:
    """``"median N (min–max)"`` of per-CPU-second rates."""
    v = sorted(values)
    return f"{v[len(v) // 2]:,.0f} ({v[0]:,.0f}–{v[-1]:,.0f})" if v else "-"


class OutcomeReader:
    """Reads the outcomes topic (read_committed) on a thread: how many, and when each conversion's arrived."""

    def __init__(self, topic: str, codec: AvroCodec) -> None:
        self.count = 0
        self.arrived: dict[str, float] = {}
        self.timed = False
        self._codec = codec
        self._stop = threading.Event()
        self._c = Consumer(consumer_config(BOOTSTRAP, f"bench-outcomes-{uuid.uuid4().hex[:8]}"))
        self._c.subscribe([topic])
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msgs = [m for m in self._c.consume(5000, 0.05) if m.error() is None]
            if self.timed:
                now = time.perf_counter()
                for m in msgs:
                    self.arrived[self._codec.decode(m.value())["conversion_id"]] = now
            self.count += len(msgs)

    def close(self) -> None:
        self._stop.set()
        self._t.join(10)
        self._c.close()


def _produce_all(p: Producer, topic: str, records: list[tuple[bytes, str]]) -> None:
    for value, key in records:
        while True:
            try:
                p.produce(topic, value, key=key)
                break
            except BufferError:
                p.poll(0.01)


def _impressions(icodec: AvroCodec, tag: str, now: datetime, rng: random.Random, n: int, *, covered: bool) -> list[tuple[bytes, str]]:
    out = []
    kind = "hh" if covered else "hu"
    for h in range(n):
        hh = f"{kind}-{tag}-{h:07d}"
        out.append((icodec.encode({
            "impression_id": f"imp-{kind}-{tag}-{h:08d}", "event_time": now - timedelta(hours=2, seconds=rng.randrange(86_400)),
            "advertiser_id": f"adv-{tag}-{h % CONTRACTS}",
            "campaign_id": f"cmp-{tag}-{h % CONTRACTS}" if covered else f"cpm-{tag}-{h % 50}",
            "partner_id": f"partner-{h % 3}", "household_id": hh, "device_type": "ctv", "ivt": "none",
            "measurement_source": "first_party"}), hh))
    return out


class _Run:
    """One processor process on its own group, transactional id and state changelog."""

    def __init__(self, names: dict[str, str], tag: str, *, uncovered: bool = False, impressions: str | None = None) -> None:
        """``uncovered``: read the uncovered impressions (``impressions``: that role's topic).
        Conversions and outcomes topics are the run's own: a fresh group would otherwise decide
        an earlier run's conversions again."""
        imp_topic = names[impressions or ("unc" if uncovered else "imp")]
        self.tag = f"{tag}-{uuid.uuid4().hex[:4]}"
        self.state = unique("attr-state")
        self.conv, self.out = unique("attr-conv"), unique("attr-out")
        ensure_topics(BOOTSTRAP, [CONVERSIONS.renamed(self.conv), CONVERSION_OUTCOMES.renamed(self.out)])
        conv_topic, out_topic = self.conv, self.out
        self.port = free_port()
        self.store_dir = tempfile.mkdtemp(prefix="tally-bench-attr-")
        env = {"TALLY_ATTRIBUTION_METRICS_PORT": str(self.port), "TALLY_ATTRIBUTION_SETTLE_DELAY_MS": "0",
               "TALLY_ATTRIBUTION_STORE_DIR": self.store_dir,
               "TALLY_ATTRIBUTION_GROUP": f"bench-attr-{self.tag}", "TALLY_ATTRIBUTION_TRANSACTIONAL_ID": f"bench-attr-{self.tag}",
               "TALLY_ATTRIBUTION_TOPIC_IMPRESSIONS": imp_topic, "TALLY_ATTRIBUTION_TOPIC_CONVERSIONS": conv_topic,
               "TALLY_ATTRIBUTION_TOPIC_TERMS": names["terms"], "TALLY_ATTRIBUTION_TOPIC_ATTRIBUTED": names["att"],
               "TALLY_ATTRIBUTION_TOPIC_OUTCOMES": out_topic, "TALLY_ATTRIBUTION_TOPIC_DLQ_INGEST": names["dlq_ing"],
               "TALLY_ATTRIBUTION_TOPIC_DLQ_IMPRESSIONS": names["dlq_imp"],
               "TALLY_ATTRIBUTION_TOPIC_DLQ_CONVERSIONS": names["dlq_conv"], "TALLY_ATTRIBUTION_TOPIC_STATE": self.state,
               "TALLY_ATTRIBUTION_PORT": str(free_port()), "TALLY_LOG_LEVEL": "WARNING"}
        why = validate_settings(MODULE, env)
        if why:
            raise NotMeasured(why)
        self.svc = Service("attribution-processor", MODULE, env, args=["processor"]).start()
        self.started = time.perf_counter()
        self.cpu_s = 0.0

    def pid(self) -> int:
        assert self.svc.proc is not None
        return self.svc.proc.pid

    def wait(self, name: str, labels: str, target: float, timeout_s: float, what: str) -> tuple[float, float, int]:
        """Until metric ``name`` reaches ``target``: (seconds from its first progress, seconds from
        process start, resident bytes at the first progress). ``cpu_s``: the CPU seconds the
        process used from the first progress to the end."""
        deadline = time.monotonic() + timeout_s
        first: float | None = None
        rss0 = 0
        cpu0 = 0.0
        while True:
            if not self.svc.alive():
                raise NotMeasured(f"the attribution processor exited: {self.svc.log_tail()}")
            value = metric(self.port, name, labels) or 0
            if first is None and metric(self.port, "tally_attribution_impressions_total"):
                first = time.perf_counter()
                rss0 = rss_bytes(self.pid())
                cpu0 = cpu_s(self.pid())
            if value >= target:
                end = time.perf_counter()
                self.cpu_s = cpu_s(self.pid()) - cpu0
                return end - (first or self.started), end - self.started, rss0
            if time.monotonic() > deadline:
                raise NotMeasured(f"{what}: {value:,.0f} of {target:,.0f} after {timeout_s:.0f} s (run stopped there to "
                                  "keep make bench bounded)")
            time.sleep(0.2)  # /metrics is rendered by the processor: asked more often, it costs the process CPU

    def restart(self, *, lose_store: bool = False) -> None:
        """SIGKILL the processor and start it again on the same group, changelog and store
        directory (``lose_store``: the directory deleted in between)."""
        assert self.svc.proc is not None
        os.killpg(self.svc.proc.pid, signal.SIGKILL)
        self.svc.proc.wait(30)
        if lose_store:
            shutil.rmtree(self.store_dir, ignore_errors=True)
        self.svc.start()
        self.started = time.perf_counter()

    def wait_restored(self, households: int, timeout_s: float) -> float:
        """Seconds from the (re)start until the households gauge shows ``households`` (the first
        cycle after the restore sets it)."""
        deadline = time.monotonic() + timeout_s
        while (metric(self.port, "tally_attribution_exposure_households") or 0) < households:
            if not self.svc.alive():
                raise NotMeasured(f"the attribution processor exited: {self.svc.log_tail()}")
            if time.monotonic() > deadline:
                raise NotMeasured(f"restore of {households:,} households not done after {timeout_s:.0f} s")
            time.sleep(0.1)
        return time.perf_counter() - self.started

    def stop(self) -> None:
        self.svc.stop()
        delete_topics(BOOTSTRAP, [self.state, self.conv, self.out])
        shutil.rmtree(self.store_dir, ignore_errors=True)


def measure(report: Report, args: Any) -> None:
    from tally_billing.terms import parse_terms, terms_to_json

    why = module_available(MODULE)
    if why:
        raise NotMeasured(why)
    tag = uuid.uuid4().hex[:6]
    now = datetime.now(UTC)
    specs = {"imp": IMPRESSIONS, "unc": IMPRESSIONS, "big": IMPRESSIONS, "terms": CONTRACT_TERMS, "att": ATTRIBUTED_CONVERSIONS,
             "dlq_ing": DLQ_INGEST, "dlq_imp": DLQ_IMPRESSIONS, "dlq_conv": DLQ_CONVERSIONS}
    names = {k: unique(f"attr-{k}") for k in specs}
    runs: list[_Run] = []
    reader: OutcomeReader | None = None
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
        households, uncovered = args.households, args.uncovered
        if households < 1_000_000:  # the issue asks for >= 1M; fewer is only a harness check
            report.figures["attribution.conversions"].label = f"conversions/s decided, exposure index of {households:,} households"
        print(f"  filling {households:,} exposures (one per household) and {uncovered:,} uncovered impressions ...", flush=True)
        icodec = catalog.codec("impression")
        rng = random.Random(5)
        t_fill = time.perf_counter()
        _produce_all(p, names["imp"], _impressions(icodec, tag, now, rng, households, covered=True))
        _produce_all(p, names["unc"], _impressions(icodec, tag, now, rng, uncovered, covered=False))
        if p.flush(180):
            raise NotMeasured("impressions were not acknowledged by the broker")
        print(f"  filled in {time.perf_counter() - t_fill:.0f} s", flush=True)
        ocodec = catalog.codec("conversion_outcome")
        ccodec = catalog.codec("conversion")
        seq = 0

        def conversions(n: int) -> list[tuple[bytes, str, str]]:
            """(value, key, conversion id) of ``n`` new conversions of indexed households."""
            nonlocal seq
            out = []
            t_conv = datetime.now(UTC) - timedelta(minutes=1)
            for _ in range(n):
                h = rng.randrange(households)
                hh = f"hh-{tag}-{h:07d}"
                conversion_id = f"conv-{tag}-{seq:08d}"
                out.append((ccodec.encode({
                    "conversion_id": conversion_id, "kind": "conversion", "order_id": f"ord-{tag}-{seq:08d}",
                    "event_time": t_conv, "advertiser_id": f"adv-{tag}-{h % CONTRACTS}", "household_id": hh,
                    "event_type": "signup", "value": None, "currency": None, "source": "api", "partner_id": None,
                    "reverses_conversion_id": None, "reversal_amount": None}), hh, conversion_id))
                seq += 1
            return out

        notes: list[str] = []
        #: rates per CPU-second of the processor process (index, conversions, uncovered)
        per_cpu: dict[str, list[float]] = {"index": [], "conversions": [], "uncovered": []}
        for r in range(args.runs):
            run = _Run(names, tag)
            runs.append(run)
            reader = OutcomeReader(run.out, ocodec)
            build_s, from_start_s, rss0 = run.wait("tally_attribution_exposure_households", "", households,
                                                   args.index_timeout_s, "exposure index households")
            rss1 = rss_bytes(run.pid())
            index_rate = households / build_s
            per_cpu["index"].append(households / max(run.cpu_s, 1e-3))
            report.add("attribution.index", index_rate)
            report.add("attribution.memory", (rss1 - rss0) / households * 1_000_000 / 2**20)
            notes.append(f"{from_start_s:.0f} s from process start")
            print(f"  round {r + 1}: index {households:,} households in {build_s:.1f} s ({index_rate:,.0f}/s; "
                  f"{from_start_s:.1f} s from process start; {per_cpu['index'][-1]:,.0f} per processor CPU-second), "
                  f"RSS {rss0 / 2**20:,.0f} -> {rss1 / 2**20:,.0f} MiB", flush=True)
            metering = report.figures["metering.worker"]
            if metering.values:  # metering ran in this sitting (the stream rounds come first)
                report.add("ratio.attribution_index_over_metering", index_rate / metering.values[min(r, len(metering.values) - 1)])
            burst = conversions(args.conversions)
            before = reader.count
            cpu0 = cpu_s(run.pid())
            t_start = time.perf_counter()
            _produce_all(p, run.conv, [(value, key) for value, key, _ in burst])
            p.flush(60)
            deadline = time.monotonic() + 180
            while reader.count - before < len(burst):
                if not run.svc.alive():
                    raise NotMeasured(f"the attribution processor exited: {run.svc.log_tail()}")
                if time.monotonic() > deadline:
                    raise NotMeasured(f"{reader.count - before:,} of {len(burst):,} outcomes after 180 s")
                time.sleep(0.01)
            rate = len(burst) / (time.perf_counter() - t_start)
            per_cpu["conversions"].append(len(burst) / max(cpu_s(run.pid()) - cpu0, 1e-3))
            report.add("attribution.conversions", rate)
            print(f"  round {r + 1}: {rate:,.0f} conversions/s (burst of {len(burst):,}; "
                  f"{per_cpu['conversions'][-1]:,.0f} per processor CPU-second)", flush=True)
            p99 = _steady(p, run.conv, reader, conversions, args.steady_rate, args.steady_seconds, run)
            report.add("attribution.latency_p99", p99)
            print(f"  round {r + 1}: p99 {p99:,.0f} ms at {args.steady_rate:,}/s", flush=True)
            reader.close()
            reader = None
            run.stop()
            runs.remove(run)
            unc = _Run(names, tag, uncovered=True)
            runs.append(unc)
            skip_s, _, _ = unc.wait("tally_attribution_impressions_total", 'outcome="uncovered"', uncovered,
                                    args.index_timeout_s, "uncovered impressions")
            report.add("attribution.uncovered", uncovered / skip_s)
            per_cpu["uncovered"].append(uncovered / max(unc.cpu_s, 1e-3))
            print(f"  round {r + 1}: {uncovered:,} uncovered impressions in {skip_s:.1f} s ({uncovered / skip_s:,.0f}/s; "
                  f"{per_cpu['uncovered'][-1]:,.0f} per processor CPU-second)", flush=True)
            unc.stop()
            runs.remove(unc)
        _large_index(report, args, p, icodec, names, tag, now, rng, runs)
        if not report.figures["ratio.attribution_index_over_metering"].values:
            report.not_measured(["ratio.attribution_index_over_metering"],
                                "needs metering measured in the same sitting (--only metering,attribution)")
        report.figures["attribution.index"].note = (
            f"one exposure per household, {households:,} households; from first progress ({', '.join(notes)}); "
            f"settle delay 0; per processor CPU-second {_per_cpu_s(per_cpu['index'])}")
        report.figures["attribution.conversions"].note = (
            f"bursts of {args.conversions:,} conversions, settle delay 0; per processor CPU-second "
            f"{_per_cpu_s(per_cpu['conversions'])}")
        report.figures["attribution.latency_p99"].note = (
            f"{args.steady_rate:,} conversions/s for {args.steady_seconds:.0f} s, settle delay 0; hand-over to the producer -> "
            "outcome read back read_committed (includes the commit, >= 20 ms after the cycle's decisions)")
        report.figures["attribution.uncovered"].note = (
            f"{uncovered:,} impressions of campaigns no contract covers, one per household: not dropped but kept for "
            "the pre-contract window (TALLY_ATTRIBUTION_PRECONTRACT_DAYS), so each is indexed and changelogged; "
            f"per processor CPU-second {_per_cpu_s(per_cpu['uncovered'])}")
    finally:
        for run in runs:
            run.stop()
        if reader is not None:
            reader.close()
        delete_topics(BOOTSTRAP, list(names.values()))


#: households of the large-index round (RSS bounded by the store, restore after SIGKILL); issue 19
#: asks for 10 million, which takes ~15 minutes to fill and index on the 2-core bench machine
LARGE_HOUSEHOLDS = int(os.environ.get("TALLY_BENCH_ATTRIBUTION_LARGE_HOUSEHOLDS", "2000000"))


def _large_index(report: Report, args: Any, p: Producer, icodec: AvroCodec, names: dict[str, str], tag: str, now: datetime,
                 rng: random.Random, runs: list[_Run]) -> None:
    """The exposure index on disk at scale: the processor's RSS with ``LARGE_HOUSEHOLDS`` indexed,
    then the time to be deciding again after a SIGKILL (store trusted: the changelog is not read)
    and after a SIGKILL that loses the store (rebuilt from the changelog)."""
    section = report.figures["attribution.memory"].section
    n = LARGE_HOUSEHOLDS if args.households >= 1_000_000 else args.households * 3  # quick mode: a harness check
    keys = {"attribution.store_rss": report.figure("attribution.store_rss", section,
                                                   f"processor RSS, {n:,} households indexed (exposure index on disk)", "MiB"),
            "attribution.store_restore": report.figure("attribution.store_restore", section,
                                                       f"restart after SIGKILL, {n:,} households: store trusted", "s"),
            "attribution.store_rebuild": report.figure("attribution.store_rebuild", section,
                                                       f"restart after SIGKILL, {n:,} households: store lost, rebuilt", "s")}
    if n <= 0:
        report.not_measured(list(keys), "TALLY_BENCH_ATTRIBUTION_LARGE_HOUSEHOLDS=0")
        return
    print(f"  large index: filling {n:,} exposures (one per household) ...", flush=True)
    t_fill = time.perf_counter()
    for start in range(0, n, 500_000):  # in slices: the encoded records of 10 million would not fit the bench's memory
        chunk = _impressions(icodec, f"{tag}L{start // 500_000}", now, rng, min(500_000, n - start), covered=True)
        _produce_all(p, names["big"], chunk)
    if p.flush(300):
        raise NotMeasured("impressions were not acknowledged by the broker")
    print(f"  filled in {time.perf_counter() - t_fill:.0f} s", flush=True)
    run = _Run(names, tag, impressions="big")
    runs.append(run)
    build_s, _, _ = run.wait("tally_attribution_exposure_households", "", n, max(args.index_timeout_s, n / 10_000),
                             "large exposure index households")
    time.sleep(1.0)  # the last transaction's store write
    rss = rss_bytes(run.pid())
    report.add("attribution.store_rss", rss / 2**20)
    size = sum(f.stat().st_size for f in Path(run.store_dir).rglob("*") if f.is_file())
    print(f"  large index: {n:,} households in {build_s:.1f} s ({n / build_s:,.0f}/s), RSS {rss / 2**20:,.0f} MiB, "
          f"store {size / 2**20:,.0f} MiB on disk", flush=True)
    run.restart()
    restore_s = run.wait_restored(n, 600)
    rss_restored = rss_bytes(run.pid())
    report.add("attribution.store_restore", restore_s)
    print(f"  large index: SIGKILL -> deciding again in {restore_s:.1f} s (store trusted), RSS {rss_restored / 2**20:,.0f} MiB",
          flush=True)
    run.restart(lose_store=True)
    rebuild_s = run.wait_restored(n, 1800)
    report.add("attribution.store_rebuild", rebuild_s)
    print(f"  large index: SIGKILL, store lost -> rebuilt from the changelog in {rebuild_s:.1f} s", flush=True)
    memory_mb = 128  # TALLY_ATTRIBUTION_STORE_MEMORY_MB's default
    keys["attribution.store_rss"].note = (
        f"once the index of {n:,} households (one exposure each) is built in {build_s:.0f} s; after the trusted restart "
        f"{rss_restored / 2**20:,.0f} MiB; the store's block cache and write buffers are bounded by "
        f"TALLY_ATTRIBUTION_STORE_MEMORY_MB ({memory_mb}); {size / 2**20:,.0f} MiB on disk")
    keys["attribution.store_restore"].note = ("process start -> first cycle: init_transactions, the committed offsets, the "
                                              "store opened (the changelog is not read), the terms")
    keys["attribution.store_rebuild"].note = "the store directory deleted before the restart: every x: record written to a new store"
    run.stop()
    runs.remove(run)


def _steady(p: Producer, topic: str, reader: OutcomeReader, make: Callable[[int], list[tuple[bytes, str, str]]], rate: int,
            seconds: float, run: _Run) -> float:
    """p99 (ms) from hand-over to read-back of conversions produced at ``rate``/s for ``seconds``."""
    total = int(rate * seconds)
    records = make(total)
    sent: dict[str, float] = {}
    reader.arrived.clear()
    reader.timed = True
    try:
        t0 = time.perf_counter()
        step = max(1, rate // 100)  # in slices of 10 ms
        for i in range(0, total, step):
            due = t0 + i / rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            now = time.perf_counter()
            chunk = records[i:i + step]
            _produce_all(p, topic, [(value, key) for value, key, _ in chunk])
            for _, _, conversion_id in chunk:
                sent[conversion_id] = now
            p.poll(0)
        p.flush(60)
        deadline = time.monotonic() + 120
        while len(reader.arrived.keys() & sent.keys()) < total:
            if not run.svc.alive():
                raise NotMeasured(f"the attribution processor exited: {run.svc.log_tail()}")
            if time.monotonic() > deadline:
                raise NotMeasured(f"steady run: {len(reader.arrived.keys() & sent.keys()):,} of {total:,} outcomes after 120 s")
            time.sleep(0.05)
    finally:
        reader.timed = False
    latencies = sorted((reader.arrived[k] - t) * 1000 for k, t in sent.items())
    return latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]

