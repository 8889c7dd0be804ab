"""12. Scale-out: metering with 1, 2 and 4 worker processes over 16 partitions, the time a
rebalance takes to settle (a worker joins, a worker is SIGKILLed), attribution with 1 and 2
processors. On a 2-core machine the point is correctness and no collapse, not linear speed-up.

- **Metering throughput**: the shared data set (``dataset.build``: ``--scaleout-impressions``
  records, 1 % retries, ~2 % IVT, 1 % uncovered), read back once, is produced again to a fresh
  16-partition topic for each N once N ``python -m tally_metering worker`` processes in one fresh
  consumer group (``metering.Rig``: its own topics; each worker its own
  ``TALLY_METERING_WORKER_ID`` — hence its own transactional id and static member id — metrics
  port and store directory) are formed: the broker has the group stable with N members holding
  all 16 partitions and every worker has logged its share ("partitions assigned"). Produced
  before, the backlog would be half drained by the first worker while the others start and the
  group rebalances (``group.initial.rebalance.delay.ms`` is 0 here). The backlog is produced on
  a thread (pre-encoded) while the rate is measured: records / seconds, from the first record
  handed to the producer to the moment the committed running totals hold every billable
  impression (per worker: the growth of its ``tally_metering_events_total`` over the same span). Totals are checked per (contract,
  period, rate) against the recomputation, as in ``metering.throughput``, and the group must not
  have rebalanced during the run.
- **Rebalance settle**: one worker on an empty 16-partition topic, impressions produced at a
  steady ``--scaleout-rate`` (1 % of them ad-server retries: the same bytes and key as an earlier
  one). Once it consumes every partition, a second worker is started (join), and once that has
  settled the first is SIGKILLed (kill). Settled is measured **by the group's committed offsets**
  (``AdminClient.list_consumer_group_offsets``, sampled every ``SAMPLE_S``, with
  ``describe_consumer_groups``): from the event (process start, SIGKILL) to the first sample at
  which the group is stable with the expected members holding all 16 impressions partitions
  *and* every partition's committed offset has advanced past its value at that stable sample —
  i.e. every partition is being consumed and committed by its new owner. Afterwards the
  production stops and the group's billable total must equal the number of distinct impressions
  produced, per contract and in all (nothing lost, nothing doubled across the two rebalances).
- **Attribution**: N ``python -m tally_attribution processor`` replicas with
  ``TALLY_ATTRIBUTION_SHARDS=N`` (one group, transactional id and lease topic; distinct
  ``TALLY_ATTRIBUTION_REPLICA_ID``) on a fresh 16-partition impressions topic; the four CPA
  advertisers are chosen to split evenly over the N shards. The impressions (one exposure per
  household, ``--scaleout-households``) are produced only once every replica decides exactly one
  shard (logged ``deciding shards``), so the measurement is not a rebalance. The rate is
  households / seconds from the first record handed to the producer (a thread) to the sum of
  their ``tally_attribution_exposure_households`` gauges reaching the count; no shard may have
  been handed over after production began, and the exposures counted and the households indexed
  must equal the households produced. Every shard reads (and decodes) every impression and
  indexes its advertisers' only, so on two cores N = 2 is about correctness and no collapse.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, ConsumerGroupState, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from tally_streams.avro import SchemaCatalog
from tally_streams.kafka import admin_config, consume_to_end, consumer_config, delete_topics, ensure_topics, producer_config
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

from . import attribution, dataset, metering
from .common import (
    BOOTSTRAP,
    NotMeasured,
    Report,
    Service,
    cpu_s,
    free_port,
    metric,
    module_available,
    unique,
    validate_settings,
    wait_until,
)
from .dataset import Contract, Dataset, make_contracts

PARTITIONS = 16
WORKERS = (1, 2, 4)
PROCESSORS = (1, 2)
SAMPLE_S = 0.1
#: the figures this section fills (``bench/run.py`` declares them)
METERING_KEYS = ["scaleout.metering_1", "scaleout.metering_2", "scaleout.metering_4", "scaleout.metering_2_per_worker",
                 "scaleout.metering_4_per_worker", "scaleout.ratio_metering_2_over_1", "scaleout.ratio_metering_4_over_1"]
REBALANCE_KEYS = ["scaleout.rebalance_join_s", "scaleout.rebalance_kill_s"]
ATTRIBUTION_KEYS = ["scaleout.attribution_1", "scaleout.attribution_2", "scaleout.ratio_attribution_2_over_1"]
KEYS = METERING_KEYS + REBALANCE_KEYS + ATTRIBUTION_KEYS


def _topic_16(name: str, spec: Any = IMPRESSIONS) -> str:
    """A throwaway copy of ``spec`` with 16 partitions."""
    topic = unique(name)
    ensure_topics(BOOTSTRAP, [replace(spec.renamed(topic), partitions=PARTITIONS)])
    return topic


# ------------------------------------------------------------------ the group as the broker sees it

@dataclass(frozen=True)
class Sample:
    t: float  # perf_counter at the request
    offsets: tuple[int, ...]  # committed offset per partition of the watched topic (negative: none yet)
    stable: bool
    members: int
    assigned: tuple[int, ...]  # partitions of the watched topic held by some member (sorted, repeats kept)


class GroupWatch:
    """Samples a consumer group on a thread: its committed offsets on one topic and its state,
    members and assignment (the broker's view, not the workers' own)."""

    def __init__(self, group: str, topic: str) -> None:
        self.group, self.topic = group, topic
        self.samples: list[Sample] = []
        self.errors = 0
        self._admin = AdminClient(admin_config(BOOTSTRAP))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> Sample:
        t = time.perf_counter()
        req = ConsumerGroupTopicPartitions(self.group, [TopicPartition(self.topic, p) for p in range(PARTITIONS)])
        got = self._admin.list_consumer_group_offsets([req], request_timeout=5)[self.group].result()
        by_p = {tp.partition: tp.offset for tp in got.topic_partitions or []}
        desc = self._admin.describe_consumer_groups([self.group], request_timeout=5)[self.group].result()
        assigned = sorted(tp.partition for m in desc.members for tp in (m.assignment.topic_partitions if m.assignment else [])
                          if tp.topic == self.topic)
        return Sample(t, tuple(by_p.get(p, -1) for p in range(PARTITIONS)), desc.state == ConsumerGroupState.STABLE,
                      len(desc.members), tuple(assigned))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self._sample())
            except Exception:  # a group not known yet, a request timing out: the next sample tells
                self.errors += 1
            self._stop.wait(SAMPLE_S)

    def stable_with(self, members: int, since: float) -> Sample | None:
        """The first sample from ``since`` on of the group stable with ``members`` members holding
        every partition once."""
        whole = tuple(range(PARTITIONS))
        return next((s for s in list(self.samples) if s.t >= since and s.stable and s.members == members
                     and s.assigned == whole), None)

    def settled(self, members: int, since: float) -> tuple[float, float] | None:
        """(seconds from ``since`` to the group stable with ``members`` members, seconds from
        ``since`` to every partition's committed offset having advanced past its value then), or
        None while that has not happened."""
        stable = self.stable_with(members, since)
        if stable is None:
            return None
        later = [s for s in list(self.samples) if s.t > stable.t]
        moved: list[float] = []
        for p in range(PARTITIONS):
            t = next((s.t for s in later if s.offsets[p] > stable.offsets[p]), None)
            if t is None:
                return None
            moved.append(t)
        return stable.t - since, max(moved) - since

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


# ------------------------------------------------------------------ metering workers in one group

class Workers:
    """Metering worker processes in the consumer group of one ``metering.Rig``."""

    def __init__(self, rig: metering.Rig) -> None:
        self.rig = rig
        self.group = rig.env()["TALLY_METERING_GROUP"]
        self.store_root = Path(tempfile.mkdtemp(prefix="tally-bench-scaleout-"))
        self.procs: list[tuple[Service, int]] = []  # (process, metrics port)

    def start(self) -> tuple[Service, int]:
        i = len(self.procs)
        port = free_port()
        env = self.rig.env(TALLY_METERING_WORKER_ID=f"bench-{self.rig.tag}-{i}", TALLY_METERING_METRICS_PORT=str(port),
                           TALLY_METERING_PORT=str(free_port()), TALLY_METERING_STORE_DIR=str(self.store_root / f"worker-{i}"),
                           TALLY_LOG_LEVEL="INFO")  # its "partitions assigned" lines say when it holds its share
        if i == 0:
            why = validate_settings(metering.MODULE, env)
            if why:
                raise NotMeasured(why)
        svc = Service(f"metering-scaleout-{i}", metering.MODULE, env, args=["worker"]).start()
        self.procs.append((svc, port))
        return svc, port

    def alive(self) -> list[tuple[Service, int]]:
        return [(s, p) for s, p in self.procs if s.alive()]

    def counted(self) -> list[int | None]:
        """Impressions each live worker has classified (its ``tally_metering_events_total``)."""
        return [metering._events_counted(p) for _, p in self.alive()]

    def sigkill(self, svc: Service) -> None:
        assert svc.proc is not None
        os.killpg(svc.proc.pid, signal.SIGKILL)
        svc.proc.wait(30)

    def stop(self) -> None:
        for s, _ in self.procs:
            s.stop()
        shutil.rmtree(self.store_root, ignore_errors=True)


def _check_totals(reader: metering.TotalsReader, want: Counter[tuple[str, str, Decimal]], what: str) -> None:
    got = reader.counts_by_price()
    if got != want:
        bad = [k for k in set(got) | set(want) if got.get(k) != want.get(k)]
        raise NotMeasured(f"{what}: metering's totals disagree with the recomputation on {len(bad)} keys, e.g. "
                          f"{[(k, got.get(k), want.get(k)) for k in bad[:2]]}")


class Backlog(threading.Thread):
    """Hands pre-encoded ``records`` (value, key) to the producer on a thread, so the harness
    measures the consumers meanwhile."""

    def __init__(self, producer: Producer, topic: str, records: list[tuple[bytes, str]]) -> None:
        super().__init__(daemon=True)
        self.producer, self.topic, self.records = producer, topic, records
        self.seconds = 0.0
        self.error = ""

    def run(self) -> None:
        t = time.perf_counter()
        try:
            attribution._produce_all(self.producer, self.topic, self.records)
            if self.producer.flush(180):
                self.error = "impressions were not acknowledged by the broker"
        except Exception as exc:  # reported by the harness thread
            self.error = f"producing the backlog failed: {exc}"
        self.seconds = time.perf_counter() - t

    def finish(self) -> float:
        self.join(200)
        if self.error:
            raise NotMeasured(self.error)
        return self.seconds


def read_back(topic: str) -> list[tuple[bytes, str]]:
    """Every record of the data set's topic, as (value, key), to produce again once a group is formed."""
    c = Consumer(consumer_config(BOOTSTRAP, f"bench-so-read-{uuid.uuid4().hex[:8]}", **{"enable.partition.eof": True}))
    try:
        tps = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)]
        c.assign(tps)
        return [(m.value() or b"", (m.key() or b"").decode()) for m in consume_to_end(c, tps)]
    finally:
        c.close()


def held(procs: list[tuple[Service, int]], topic: str) -> list[int]:
    """The partitions of ``topic`` in the processes' latest logged assignments, together (repeats
    kept); empty while one of them has logged none yet (its first share is still being restored)."""
    latest = [_assignments(s, topic) for s, _ in procs]
    return sorted(p for a in latest for p in a[-1]) if all(latest) else []


def metering_group(ds: Dataset, records: list[tuple[bytes, str]], producer: Producer, n: int, *,
                   timeout_s: float = 300) -> dict[str, Any]:
    """N workers in one fresh group on a fresh 16-partition topic; the data set's records are
    produced once the group is formed (every worker holding its share)."""
    rig = metering.Rig(impressions=unique("so-impressions"))
    workers = Workers(rig)
    reader: metering.TotalsReader | None = None
    watch: GroupWatch | None = None
    backlog: Backlog | None = None
    try:
        ensure_topics(BOOTSTRAP, [replace(IMPRESSIONS.renamed(rig.impressions), partitions=PARTITIONS)])
        rig.created.append(rig.impressions)
        metering.publish_terms(rig.terms, ds.contracts)
        reader = metering.TotalsReader(rig.running_totals)
        watch = GroupWatch(workers.group, rig.impressions)
        for _ in range(n):
            workers.start()

        def alive() -> None:
            if len(workers.alive()) < n:
                raise NotMeasured(f"a metering worker exited: {[s.log_tail() for s, _ in workers.procs if not s.alive()]}")

        def formed() -> bool:
            alive()
            return (watch is not None and watch.stable_with(n, 0.0) is not None
                    and held(workers.procs, rig.impressions) == list(range(PARTITIONS)))

        try:
            wait_until(f"the group of {n} worker(s) stable on all 16 partitions", formed, 180, SAMPLE_S)
        except TimeoutError as exc:
            raise NotMeasured(str(exc)) from exc
        watch.close()
        generations = [len(_assignments(s, rig.impressions)) for s, _ in workers.procs]
        backlog = Backlog(producer, rig.impressions, records)
        deadline = time.monotonic() + timeout_s
        c0 = [c or 0 for c in workers.counted()]
        cpu0 = sum(cpu_s(s.proc.pid) for s, _ in workers.procs if s.proc)
        t0 = time.perf_counter()
        backlog.start()
        while reader.billable < ds.billable:
            alive()
            if time.monotonic() > deadline:
                raise NotMeasured(f"{n} workers did not total {ds.billable:,} billable impressions within {timeout_s:.0f}s "
                                  f"(saw {reader.billable:,})")
            time.sleep(0.02)
        t_end = time.perf_counter()
        c1 = [c or 0 for c in workers.counted()]
        cpu = sum(cpu_s(s.proc.pid) for s, _ in workers.procs if s.proc) - cpu0
        produce_s = backlog.finish()
        if [len(_assignments(s, rig.impressions)) for s, _ in workers.procs] != generations:
            raise NotMeasured(f"{n} workers: the group rebalanced during the run")
        _check_totals(reader, Counter({(k[0], k[1], Decimal(k[2])): v for k, v in ds.expected.items()}), f"{n} workers")
        seconds = t_end - t0
        return {"events_per_s": len(records) / seconds, "seconds": seconds, "produce_s": produce_s,
                "per_worker": [(b - a) / seconds for a, b in zip(c0, c1, strict=True)],
                "per_cpu_s": len(records) / max(cpu, 1e-3)}
    finally:
        if backlog is not None:
            backlog.join(200)
        if watch is not None:
            watch.close()
        workers.stop()
        if reader is not None:
            reader.close()
        rig.cleanup()


class Feeder:
    """Impressions of ``contracts`` at a steady rate on a thread, households spread over every
    partition; 1 % are ad-server retries (the bytes and key of an earlier impression again)."""

    def __init__(self, topic: str, contracts: list[Contract], rate: int, tag: str) -> None:
        self.topic, self.contracts, self.rate, self.tag = topic, contracts, rate, tag
        self.codec = SchemaCatalog.load().codec("impression")
        self.producer = Producer(producer_config(BOOTSTRAP, "tally-bench-scaleout"))
        self.distinct: Counter[str] = Counter()  # contract id -> distinct impressions produced
        self.retries = 0
        self.rng = random.Random(12)
        self._recent: list[tuple[bytes, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Feeder:
        self._thread.start()
        return self

    def _one(self) -> tuple[bytes, str]:
        if self._recent and self.rng.random() < 0.01:
            self.retries += 1
            return self._recent[self.rng.randrange(len(self._recent))]
        seq = sum(self.distinct.values())
        c = self.contracts[seq % len(self.contracts)]
        hh = f"hh-{self.rng.randrange(1_000_000):07d}"
        value = self.codec.encode({
            "impression_id": f"imp-so-{self.tag}-{seq:010d}", "event_time": datetime.now(UTC) - timedelta(seconds=1),
            "advertiser_id": c.advertiser_id, "campaign_id": c.campaign_ids[seq % len(c.campaign_ids)], "partner_id": None,
            "household_id": hh, "device_type": "ctv", "ivt": "none", "measurement_source": "first_party"})
        self.distinct[c.contract_id] += 1
        if len(self._recent) < 10_000:
            self._recent.append((value, hh))
        else:
            self._recent[self.rng.randrange(10_000)] = (value, hh)
        return value, hh

    def _run(self) -> None:
        tick_s = 0.01
        per_tick = max(1, round(self.rate * tick_s))
        started = time.perf_counter()
        k = 0
        while not self._stop.is_set():
            due = started + k * tick_s
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            for _ in range(per_tick):
                value, key = self._one()
                while True:
                    try:
                        self.producer.produce(self.topic, value, key=key)
                        break
                    except BufferError:
                        self.producer.poll(0.01)
            self.producer.poll(0)
            k += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        if self.producer.flush(60):
            raise NotMeasured("impressions were not acknowledged by the broker")


def rebalance(rate: int, *, timeout_s: float = 120) -> dict[str, Any]:
    """Join, then SIGKILL, mid-stream: settle times, and the billable total checked afterwards."""
    rig = metering.Rig(impressions=unique("so-impressions"))
    workers = Workers(rig)
    reader: metering.TotalsReader | None = None
    watch: GroupWatch | None = None
    feeder: Feeder | None = None
    out: dict[str, Any] = {}
    try:
        ensure_topics(BOOTSTRAP, [replace(IMPRESSIONS.renamed(rig.impressions), partitions=PARTITIONS)])
        rig.created.append(rig.impressions)
        contracts = make_contracts(8, datetime.now(UTC))
        metering.publish_terms(rig.terms, contracts)
        reader = metering.TotalsReader(rig.running_totals)
        watch = GroupWatch(workers.group, rig.impressions)
        feeder = Feeder(rig.impressions, contracts, rate, rig.tag).start()

        def settle(members: int, since: float, what: str) -> tuple[float, float]:
            got: list[tuple[float, float]] = []

            def done() -> bool:
                if len(workers.alive()) < members:
                    raise NotMeasured(f"a metering worker exited during {what}: "
                                      f"{[s.log_tail() for s, _ in workers.procs if not s.alive()]}")
                r = watch.settled(members, since) if watch else None
                if r is not None:
                    got.append(r)
                return r is not None

            try:
                wait_until(what, done, timeout_s, interval_s=SAMPLE_S)
            except TimeoutError as exc:
                raise NotMeasured(f"{exc} (group sampled {len(watch.samples) if watch else 0} times)") from exc
            return got[0]

        def steady(events: int) -> None:
            """Until the live workers have classified ``events`` more impressions."""
            base = sum(c or 0 for c in workers.counted())
            wait_until("steady consumption", lambda: sum(c or 0 for c in workers.counted()) >= base + events, timeout_s, 0.2)

        first, _ = workers.start()
        out["start_stable_s"], out["start_s"] = settle(1, time.perf_counter(), "the first worker consuming all 16 partitions")
        steady(2 * rate)
        t_join = time.perf_counter()
        workers.start()
        out["join_stable_s"], out["join_s"] = settle(2, t_join, "the group of two settled after a join")
        steady(2 * rate)
        t_kill = time.perf_counter()
        workers.sigkill(first)
        out["kill_stable_s"], out["kill_s"] = settle(1, t_kill, "the survivor settled after a SIGKILL")
        steady(2 * rate)
        feeder.stop()
        want = sum(feeder.distinct.values())
        out.update({"distinct": want, "retries": feeder.retries})
        wait_until("the billable total of every distinct impression", lambda: reader is not None and reader.billable >= want, 180, 0.1)
        # Doubling would show as more than ``want``: watch the totals for two running-total intervals more.
        t_hold = time.perf_counter() + 2.5
        wait_until("a quiet end", lambda: time.perf_counter() > t_hold or reader is None or reader.billable != want, 10, 0.1)
        per_contract: Counter[str] = Counter()
        for (contract_id, _, _), n in reader.counts_by_price().items():
            per_contract[contract_id] += n
        out["billable"] = reader.billable
        if reader.billable != want or per_contract != feeder.distinct:
            raise NotMeasured(f"lost or doubled across the rebalances: billable {reader.billable:,} for {want:,} distinct "
                              f"impressions produced ({feeder.retries:,} retries); per contract {dict(per_contract)} vs "
                              f"{dict(feeder.distinct)}")
        return out
    finally:
        if feeder is not None and not feeder._stop.is_set():
            feeder.stop()
        if watch is not None:
            watch.close()
        workers.stop()
        if reader is not None:
            reader.close()
        rig.cleanup()


# ------------------------------------------------------------------ attribution processors in one group

class Attribution:
    """The CPA contracts and the pre-encoded impressions (one exposure per household) of the
    attribution runs; each run gets its own impressions, conversions and state topics."""

    def __init__(self, households: int) -> None:
        from tally_attribution.settings import shard_of
        from tally_billing.terms import parse_terms, terms_to_json

        # advertisers adv-<tag>-<i> (``attribution._impressions``) split evenly over 2 shards
        self.tag = next(t for t in (uuid.uuid4().hex[:6] for _ in range(1000))
                        if sorted(shard_of(f"adv-{t}-{i}", 2) for i in range(attribution.CONTRACTS)) == [0, 0, 1, 1])
        self.households = households
        specs = {"terms": CONTRACT_TERMS, "att": ATTRIBUTED_CONVERSIONS, "out": CONVERSION_OUTCOMES, "dlq_ing": DLQ_INGEST,
                 "dlq_imp": DLQ_IMPRESSIONS, "dlq_conv": DLQ_CONVERSIONS}
        self.names = {k: unique(f"so-attr-{k}") for k in specs}
        ensure_topics(BOOTSTRAP, [spec.renamed(self.names[k]) for k, spec in specs.items()])
        catalog = SchemaCatalog.load()
        self.producer = Producer(producer_config(BOOTSTRAP, "tally-bench-scaleout-attr", **{"linger.ms": 20, "batch.size": 262_144}))
        now = datetime.now(UTC)
        tcodec = catalog.codec("contract_terms")
        start = now - timedelta(days=61)
        for i in range(attribution.CONTRACTS):
            terms = terms_to_json(parse_terms(attribution.cpa_terms(i, self.tag, now)))
            contract_id = f"ctr-{self.tag}-{i}"
            rec: dict[str, Any] = {"contract_id": contract_id, "advertiser_id": f"adv-{self.tag}-{i}", "contract_type": "cpa",
                                   "status": "active", "terminated_at": None, "revision": 1, "event_id": f"evt-{uuid.uuid4()}",
                                   "versions": [{"version": 1, "effective_from": start, "effective_to": None,
                                                 "approved_at": start, "terms_json": json.dumps(terms)}]}
            self.producer.produce(self.names["terms"], tcodec.encode(rec), key=contract_id)
        if self.producer.flush(30):
            raise NotMeasured("CPA terms were not acknowledged by the broker")
        self.records = attribution._impressions(catalog.codec("impression"), self.tag, now, random.Random(5), households,
                                                covered=True)

    def env(self, group: str, txn_id: str, port: int, imp: str, conv: str, state: str) -> dict[str, str]:
        n = self.names
        return {"TALLY_ATTRIBUTION_METRICS_PORT": str(port), "TALLY_ATTRIBUTION_SETTLE_DELAY_MS": "0",
                "TALLY_ATTRIBUTION_GROUP": group, "TALLY_ATTRIBUTION_TRANSACTIONAL_ID": txn_id,
                "TALLY_ATTRIBUTION_TOPIC_IMPRESSIONS": imp, "TALLY_ATTRIBUTION_TOPIC_CONVERSIONS": conv,
                "TALLY_ATTRIBUTION_TOPIC_TERMS": n["terms"], "TALLY_ATTRIBUTION_TOPIC_ATTRIBUTED": n["att"],
                "TALLY_ATTRIBUTION_TOPIC_OUTCOMES": n["out"], "TALLY_ATTRIBUTION_TOPIC_DLQ_INGEST": n["dlq_ing"],
                "TALLY_ATTRIBUTION_TOPIC_DLQ_IMPRESSIONS": n["dlq_imp"], "TALLY_ATTRIBUTION_TOPIC_DLQ_CONVERSIONS": n["dlq_conv"],
                "TALLY_ATTRIBUTION_TOPIC_STATE": state, "TALLY_ATTRIBUTION_PORT": str(free_port()), "TALLY_LOG_LEVEL": "INFO"}

    def run(self, n: int, *, timeout_s: float = 240) -> dict[str, Any]:
        """N replicas of N shards; the impressions produced once each decides one shard."""
        run_tag = f"{self.tag}-{uuid.uuid4().hex[:4]}"
        imp, conv = _topic_16("so-attr-imp"), _topic_16("so-attr-conv", CONVERSIONS)
        state, lease = unique("so-attr-state"), unique("so-attr-lease")
        group = f"bench-attr-so-{run_tag}"
        procs: list[tuple[Service, int]] = []
        try:
            for i in range(n):
                port = free_port()
                env = {**self.env(group, f"bench-attr-so-{run_tag}", port, imp, conv, state),
                       "TALLY_ATTRIBUTION_SHARDS": str(n), "TALLY_ATTRIBUTION_REPLICA_ID": f"bench-attr-so-{run_tag}-{i}",
                       "TALLY_ATTRIBUTION_TOPIC_LEASE": lease}
                if i == 0:
                    why = validate_settings(attribution.MODULE, env)
                    if why:
                        raise NotMeasured(why)
                procs.append((Service(f"attribution-scaleout-{i}", attribution.MODULE, env, args=["processor"]).start(), port))

            def alive() -> None:
                for s, _ in procs:
                    if not s.alive():
                        raise NotMeasured(f"an attribution processor exited: {s.log_tail()}")

            def stable() -> bool:
                """Every replica decides one shard, each shard started."""
                alive()
                latest = [_shards(s) for s, _ in procs]
                return (all(latest) and sorted(k for a in latest for k in a[-1]) == list(range(n))
                        and sum(_log_count(s, '"processor started"') for s, _ in procs) >= n)

            try:
                wait_until(f"{n} replica(s) deciding one shard each", stable, 120, SAMPLE_S)
            except TimeoutError as exc:
                raise NotMeasured(str(exc)) from exc
            handed = sum(_log_count(s, '"shards handed over"') for s, _ in procs)
            backlog = Backlog(self.producer, imp, self.records)
            cpu0 = sum(cpu_s(s.proc.pid) for s, _ in procs if s.proc)
            t0 = time.perf_counter()
            backlog.start()

            def total(name: str, labels: str = "") -> float:
                return sum(metric(p, name, labels) or 0 for _, p in procs)

            deadline = time.monotonic() + timeout_s
            while True:
                alive()
                if total("tally_attribution_exposure_households") >= self.households:
                    t_end = time.perf_counter()
                    break
                if time.monotonic() > deadline:
                    raise NotMeasured(f"{n} processor(s): {total('tally_attribution_exposure_households'):,.0f} of "
                                      f"{self.households:,} households after {timeout_s:.0f} s")
                time.sleep(0.2)  # /metrics is rendered by the processor: asked more often, it costs the process CPU
            cpu = sum(cpu_s(s.proc.pid) for s, _ in procs if s.proc) - cpu0
            exposures = total("tally_attribution_impressions_total", 'outcome="exposure"')
            households = total("tally_attribution_exposure_households")
            shards = [_shards(s)[-1] for s, _ in procs]
            if sum(_log_count(s, '"shards handed over"') for s, _ in procs) != handed:
                raise NotMeasured(f"{n} processor(s): a shard was handed over while indexing (now {shards}): not measured")
            if exposures != self.households or households != self.households:
                raise NotMeasured(f"{n} processor(s): {exposures:,.0f} exposures and {households:,.0f} households indexed "
                                  f"for {self.households:,} households produced")
            produce_s = backlog.finish()
            seconds = t_end - t0
            return {"impressions_per_s": self.households / seconds, "seconds": seconds, "produce_s": produce_s,
                    "per_cpu_s": self.households / max(cpu, 1e-3), "shards": shards}
        finally:
            for s, _ in procs:
                s.stop()
            delete_topics(BOOTSTRAP, [imp, conv, state, lease])

    def close(self) -> None:
        delete_topics(BOOTSTRAP, list(self.names.values()))


def _shards(svc: Service) -> list[list[int]]:
    """The shards in each of the replica's "deciding shards" log lines."""
    return [json.loads(line)["shards"] for line in svc.log_path.read_text(errors="replace").splitlines()
            if '"deciding shards"' in line]


def _log_count(svc: Service, text: str) -> int:
    return svc.log_path.read_text(errors="replace").count(text)


def _assignments(svc: Service, topic: str) -> list[list[int]]:
    """The partitions of ``topic`` in each of the processor's "partitions assigned" log lines."""
    out = []
    for line in svc.log_path.read_text(errors="replace").splitlines():
        if '"partitions assigned"' in line:
            parts = json.loads(line).get("partitions", [])
            out.append(sorted(int(p.rsplit("[", 1)[1].rstrip("]")) for p in parts if p.startswith(f"{topic}[")))
    return out


# ------------------------------------------------------------------ the section

def _section(report: Report, keys: list[str], fn: Callable[[], None]) -> None:
    """One part of the section: a failure marks its own figures, the other parts still run."""
    try:
        fn()
    except NotMeasured as exc:
        print(f"  not measured: {exc}", flush=True)
        report.not_measured(keys, str(exc))


def measure(report: Report, args: argparse.Namespace) -> None:
    for module in (metering.MODULE, attribution.MODULE):
        why = module_available(module)
        if why:
            raise NotMeasured(why)
    load = [os.getloadavg()[0]]
    notes: dict[str, list[str]] = {k: [] for k in KEYS}

    def metering_rounds() -> None:
        print(f"  filling a 16-partition topic with {args.scaleout_impressions:,} impressions ...", flush=True)
        ds = dataset.build(args.scaleout_impressions, partitions=PARTITIONS)
        try:
            records = read_back(ds.topic)
            if len(records) != ds.records:
                raise NotMeasured(f"read {len(records):,} of the data set's {ds.records:,} records back")
            producer = Producer(producer_config(BOOTSTRAP, "tally-bench-scaleout-fill",
                                                **{"linger.ms": 20, "batch.size": 262_144}))
            for r in range(args.runs):
                got: dict[int, float] = {}
                for n in WORKERS:
                    res = metering_group(ds, records, producer, n)
                    load.append(os.getloadavg()[0])
                    got[n] = res["events_per_s"]
                    report.add(f"scaleout.metering_{n}", res["events_per_s"])
                    if n > 1:
                        report.add(f"scaleout.metering_{n}_per_worker", res["events_per_s"] / n)
                    per_worker = ", ".join(f"{v:,.0f}" for v in res["per_worker"])
                    notes[f"scaleout.metering_{n}"].append(f"{res['per_cpu_s']:,.0f} per worker CPU-second")
                    if n > 1:
                        notes[f"scaleout.metering_{n}_per_worker"].append(f"workers {per_worker}")
                    print(f"  round {r + 1}: {n} worker(s) {res['events_per_s']:,.0f} events/s for the group in "
                          f"{res['seconds']:.1f} s (per worker {per_worker}; {res['per_cpu_s']:,.0f} per worker CPU-second; "
                          f"backlog produced in {res['produce_s']:.1f} s)", flush=True)
                for n in (2, 4):
                    report.add(f"scaleout.ratio_metering_{n}_over_1", got[n] / got[1])
        finally:
            delete_topics(BOOTSTRAP, [ds.topic])
        for n in WORKERS:
            report.figures[f"scaleout.metering_{n}"].note = (
                f"{args.scaleout_impressions:,} records ({ds.billable:,} billable) produced once the group was formed; "
                "totals checked per price point; "
                + "; ".join(notes[f"scaleout.metering_{n}"]))
        for n in (2, 4):
            report.figures[f"scaleout.metering_{n}_per_worker"].note = "; ".join(notes[f"scaleout.metering_{n}_per_worker"])

    def rebalance_rounds() -> None:
        for r in range(args.runs):
            res = rebalance(args.scaleout_rate)
            load.append(os.getloadavg()[0])
            report.add("scaleout.rebalance_join_s", res["join_s"])
            report.add("scaleout.rebalance_kill_s", res["kill_s"])
            notes["scaleout.rebalance_join_s"].append(f"group stable after {res['join_stable_s']:.1f} s")
            notes["scaleout.rebalance_kill_s"].append(f"group stable after {res['kill_stable_s']:.1f} s")
            print(f"  round {r + 1}: join settled in {res['join_s']:.2f} s (group stable {res['join_stable_s']:.2f} s), "
                  f"SIGKILL settled in {res['kill_s']:.2f} s (group stable {res['kill_stable_s']:.2f} s); "
                  f"checked: billable {res['billable']:,} = {res['distinct']:,} distinct impressions produced "
                  f"({res['retries']:,} retries)", flush=True)
        common = (f"{args.scaleout_rate:,} impressions/s produced throughout; by the group's committed offsets on all 16 "
                  f"partitions (sampled every {SAMPLE_S:.1f} s); billable total = distinct impressions produced, checked")
        report.figures["scaleout.rebalance_join_s"].note = (
            "second worker's process start -> every partition committed again; " + common + "; "
            + "; ".join(notes["scaleout.rebalance_join_s"]))
        report.figures["scaleout.rebalance_kill_s"].note = (
            "SIGKILL of one of two -> every partition committed again (a killed member is noticed when its session "
            "times out, 10 s; then the survivor rebuilds the moved partitions' stores); " + common + "; "
            + "; ".join(notes["scaleout.rebalance_kill_s"]))

    def attribution_rounds() -> None:
        print(f"  encoding {args.scaleout_households:,} exposures (one per household) ...", flush=True)
        bench = Attribution(args.scaleout_households)
        try:
            for r in range(args.runs):
                got: dict[int, float] = {}
                for n in PROCESSORS:
                    res = bench.run(n)
                    load.append(os.getloadavg()[0])
                    got[n] = res["impressions_per_s"]
                    report.add(f"scaleout.attribution_{n}", res["impressions_per_s"])
                    notes[f"scaleout.attribution_{n}"].append(f"{res['per_cpu_s']:,.0f} per processor CPU-second")
                    print(f"  round {r + 1}: {n} processor(s) {res['impressions_per_s']:,.0f} impressions/s in "
                          f"{res['seconds']:.1f} s (shards {res['shards']}; produced in {res['produce_s']:.1f} s; "
                          f"{res['per_cpu_s']:,.0f} per processor CPU-second)", flush=True)
                report.add("scaleout.ratio_attribution_2_over_1", got[2] / got[1])
        finally:
            bench.close()
        for n in PROCESSORS:
            report.figures[f"scaleout.attribution_{n}"].note = (
                f"{args.scaleout_households:,} households over 4 advertisers, {n} shard(s) on {n} replica(s), produced once "
                "each decided one shard; households and exposures checked; every shard reads every impression; "
                + "; ".join(notes[f"scaleout.attribution_{n}"]))

    _section(report, METERING_KEYS, metering_rounds)
    _section(report, REBALANCE_KEYS, rebalance_rounds)
    _section(report, ATTRIBUTION_KEYS, attribution_rounds)
    for key in ("scaleout.ratio_metering_4_over_1", "scaleout.ratio_attribution_2_over_1"):
        f = report.figures[key]
        f.note = (f.note + "; " if f.note else "") + (f"2 cores shared: the point is no collapse, not linear speed-up; "
                                                      f"1-min load average {min(load):.1f}-{max(load):.1f} during the section")
