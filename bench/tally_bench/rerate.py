"""9. Re-rating: a backdated amendment's latency to its committed adjustments, and the usage ledger's size.

One ``python -m tally_metering worker`` process on throwaway topics, driven by a clock file
(``TALLY_METERING_CLOCK_FILE``, as the integration tests do). Setup, once per section:

* one CPM contract of one advertiser covering ``--rerate-campaigns`` campaigns (1,000), flat
  10.00 per thousand, time zone America/New_York, flight = January 2026 (31 days), monthly
  periods; published as revision 1 before any usage;
* real Avro impressions, in event-time order: four per campaign per hour, one in each
  15-minute bucket — so every bucket of the 31 days is populated (the densest ledger those
  days can have) — plus one ``givt`` impression per campaign and local day (a second ledger
  class on nearly every ledger day), produced with Tally's producer settings while the
  worker runs with its clock at 2026-02-01 05:00Z (January's end in New York);
* once the committed running total holds every billable impression, the clock moves past
  January's close time (end + 2 h grace); the harness waits for ``period_closed`` and
  checks its line (quantity and amount).

Each run then produces a new revision of the contract's ``contracts.terms`` record whose
version 2 changes the rate from 16 January (local midnight) to a rate of its own, and times
from handing that record to the producer to the moment a read_committed consumer of the
adjustments topic has received the ``backdated_amendment`` adjustments of that revision (one
transaction). The answer is checked before the time counts: closed lines + every adjustment
so far must equal the rating of the new picture per price point, exactly.

After each run the state changelog is read back to its end: the ledger's size on disk is the
key + value bytes of the latest record of every ``ug\\x1f`` key (what the compacted topic
holds), in memory the bytes Python allocates (tracemalloc) to rebuild those ledger days into
a ``TotalsStore`` with the worker's own ``apply_changelog``; both per 1,000 campaign-days
(campaigns x 31). The rebuilt ledger's impression total is checked against what was produced.
"""

from __future__ import annotations

import gc
import json
import math
import signal
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from tally_streams.avro import SchemaCatalog
from tally_streams.kafka import consumer_config, producer_config, read_to_end

from .common import BOOTSTRAP, NotMeasured, Profiler, Report, Service, free_port, validate_settings
from .dataset import Contract
from .metering import MODULE, Rig, TotalsReader, preflight

ZONE = "America/New_York"
MONTH_START = datetime(2026, 1, 1, 5, tzinfo=UTC)  # 2026-01-01 00:00 EST
MONTH_END = datetime(2026, 2, 1, 5, tzinfo=UTC)  # 2026-02-01 00:00 EST
MID = datetime(2026, 1, 16, 5, tzinfo=UTC)  # the amendment's version 2 starts here (local midnight)
PERIOD = "2026-01"
DAYS = 31
HOURS = DAYS * 24
BASE_RATE = Decimal("10.00")
INGEST_CLOCK = MONTH_END  # every event is in the past; January is not due to close (close = end + 2 h grace)
CLOSE_CLOCK = MONTH_END + timedelta(hours=3)


def _terms(contract: Contract, rate: Decimal) -> str:
    t = contract.terms_json()
    t["cpm"]["rate_card"]["bands"][0]["rate_cpm"] = str(rate)
    from tally_billing.terms import parse_terms, terms_to_json

    return json.dumps(terms_to_json(parse_terms(t)))


class Scenario:
    """The contract, its ledger and the re-rating runs, on one worker kept up across the runs."""

    def __init__(self, campaigns: int, per_hour: int = 4) -> None:
        if not 1 <= per_hour <= 4:
            raise ValueError("per_hour: 1..4 impressions per campaign per hour (one per 15-minute bucket at most)")
        self.n_campaigns = campaigns
        self.per_hour = per_hour
        self.tag = uuid.uuid4().hex[:8]
        self.contract = Contract(
            contract_id=f"ctr-rr-{self.tag}", advertiser_id=f"adv-rr-{self.tag}", zone=ZONE, rate_cpm=str(BASE_RATE),
            campaign_ids=tuple(f"cmp-rr-{self.tag}-{i:04d}" for i in range(campaigns)),
            flight_start=date(2026, 1, 1), flight_end=date(2026, 1, 31))
        self.catalog = SchemaCatalog.load()
        self.terms_codec = self.catalog.codec("contract_terms")
        self.rig: Rig | None = None
        self.worker: Service | None = None
        self.tmp = tempfile.TemporaryDirectory(prefix="tally-bench-rerate-")
        self.clock_file = Path(self.tmp.name) / "clock"
        self.terms_producer = Producer(producer_config(BOOTSTRAP, "tally-bench-rerate-terms", **{"linger.ms": 0}))
        self.revision = 1
        self.produced = 0
        self.billable_before_mid = 0
        self.billable_after_mid = 0
        self.ingest_s = 0.0
        self.collector: Collector | None = None
        self.closed_lines: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ setup

    def __enter__(self) -> Scenario:
        preflight()
        from tally_kit.clock import FileClock

        self.rig = Rig()
        FileClock.set(self.clock_file, INGEST_CLOCK)
        self._publish([(1, MONTH_START, None, BASE_RATE)])
        env = self.rig.env(TALLY_METERING_CLOCK_FILE=str(self.clock_file), TALLY_METERING_PORT=str(free_port()))
        why = validate_settings(MODULE, env)
        if why:
            raise NotMeasured(why)
        self.collector = Collector({self.rig.adjustments: "adjustment", self.rig.periods_closed: "period_closed"},
                                   self.catalog)
        self.worker = Service("metering-worker-rerate", MODULE, env, args=["worker"]).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.worker is not None:
            self.worker.stop()
        if self.collector is not None:
            self.collector.close()
        if self.rig is not None:
            self.rig.cleanup()
        self.tmp.cleanup()

    def _publish(self, versions: list[tuple[int, datetime, datetime | None, Decimal]]) -> float:
        """Produce the contract's terms record; returns the moment it was handed to the producer."""
        c = self.contract
        rec = {
            "contract_id": c.contract_id, "advertiser_id": c.advertiser_id, "contract_type": "cpm", "status": "active",
            "terminated_at": None, "revision": self.revision, "event_id": f"evt-{uuid.uuid4()}",
            "versions": [{"version": v, "effective_from": ef, "effective_to": et, "approved_at": ef,
                          "terms_json": _terms(c, rate)} for v, ef, et, rate in versions],
        }
        value = self.terms_codec.encode(rec)
        assert self.rig is not None
        t0 = time.perf_counter()
        self.terms_producer.produce(self.rig.terms, value, key=c.contract_id)
        if self.terms_producer.flush(30):
            raise NotMeasured("the contract terms record was not acknowledged by the broker")
        return t0

    def fill(self, timeout_s: float) -> None:
        """Produce the month's impressions and wait until the worker's committed total holds them all."""
        assert self.rig is not None and self.worker is not None
        codec = self.catalog.codec("impression")
        producer = Producer(producer_config(BOOTSTRAP, "tally-bench-rerate-fill", **{"linger.ms": 20, "batch.size": 262_144}))
        reader = TotalsReader(self.rig.running_totals)
        started = time.perf_counter()
        deadline = time.monotonic() + timeout_s
        total_id = f"{self.contract.contract_id}/{PERIOD}"
        try:
            seq = 0
            quarter = timedelta(minutes=15)
            adv = self.contract.advertiser_id
            for h in range(HOURS):
                if time.monotonic() > deadline:
                    raise NotMeasured(f"producing the ledger's impressions did not finish within {timeout_s:.0f}s "
                                      f"(hour {h} of {HOURS})")
                hour = MONTH_START + timedelta(hours=h)
                day, hour_of_day = divmod(h, 24)
                records = []
                for ci, campaign in enumerate(self.contract.campaign_ids):
                    spread = timedelta(seconds=(ci * 7) % 840)  # campaigns spread inside each bucket
                    for k in range(self.per_hour):
                        records.append((campaign, hour + k * quarter + spread, "none"))
                    givt_bucket = (ci * 37 + day * 11) % 96
                    if givt_bucket // 4 == hour_of_day:
                        records.append((campaign, hour + (givt_bucket % 4) * quarter + spread + timedelta(seconds=30),
                                        "givt"))
                recs = []
                for campaign, t, ivt in records:
                    hh = f"hh-{seq % 1_000_000:07d}"
                    recs.append({"impression_id": f"imp-rr-{self.tag}-{seq:09d}", "event_time": t, "advertiser_id": adv,
                                 "campaign_id": campaign, "partner_id": None, "household_id": hh, "device_type": "ctv",
                                 "ivt": ivt, "measurement_source": "first_party"})
                    seq += 1
                    if ivt == "none":
                        if t < MID:
                            self.billable_before_mid += 1
                        else:
                            self.billable_after_mid += 1
                for rec, value in zip(recs, codec.encode_many(recs), strict=True):
                    if not isinstance(value, bytes):
                        raise NotMeasured(f"an impression did not encode: {value}")
                    while True:
                        try:
                            producer.produce(self.rig.impressions, value, key=str(rec["household_id"]))
                            break
                        except BufferError:
                            producer.poll(0.05)
                producer.poll(0)
                if not self.worker.alive():
                    raise NotMeasured(f"the metering worker exited while the ledger was filled: {self.worker.log_tail()}")
            self.produced = seq
            while len(producer) and time.monotonic() < deadline:
                producer.flush(5)
            if len(producer):
                raise NotMeasured(f"{len(producer)} impressions not acknowledged while filling the ledger")
            want = self.billable_before_mid + self.billable_after_mid
            while True:
                if not self.worker.alive():
                    raise NotMeasured(f"the metering worker exited: {self.worker.log_tail()}")
                got = int(reader.latest.get(total_id, {}).get("counts", {}).get("billable", 0))
                if got == want:
                    break
                if time.monotonic() > deadline:
                    raise NotMeasured(f"the ledger was not complete within {timeout_s:.0f}s: the running total bills "
                                      f"{got:,} of {want:,} impressions")
                time.sleep(0.1)
            self.ingest_s = time.perf_counter() - started
        finally:
            reader.close()

    def close_month(self, timeout_s: float) -> None:
        """Move the clock past January's close time; the closed period's line must bill every impression."""
        from tally_kit.clock import FileClock

        assert self.collector is not None and self.worker is not None
        FileClock.set(self.clock_file, CLOSE_CLOCK)
        close_id = f"{self.contract.contract_id}/{PERIOD}"
        deadline = time.monotonic() + timeout_s
        while True:
            closes = [r for _, r in self.collector.records("period_closed") if r["close_id"] == close_id]
            if closes:
                break
            if not self.worker.alive():
                raise NotMeasured(f"the metering worker exited: {self.worker.log_tail()}")
            if time.monotonic() > deadline:
                raise NotMeasured(f"{close_id} did not close within {timeout_s:.0f}s of the clock passing its close time")
            time.sleep(0.05)
        if len(closes) != 1:
            raise NotMeasured(f"{close_id} was closed {len(closes)} times")
        self.closed_lines = list(closes[0]["lines"])
        want = {("cpm_impressions", 1, "band:0"): (self.billable, self.billable * BASE_RATE / 1000)}
        got = _price_points(self.closed_lines)
        if got != want:
            raise NotMeasured(f"the closed period bills {got}, the recomputation {want}")

    @property
    def billable(self) -> int:
        return self.billable_before_mid + self.billable_after_mid

    # ------------------------------------------------------------------ one re-rating

    def amend(self, timeout_s: float) -> dict[str, Any]:
        """A new revision: version 2 from 16 January at a new rate; seconds to its committed adjustments."""
        assert self.collector is not None and self.worker is not None
        self.revision += 1
        rate = BASE_RATE + 2 * (self.revision - 1)  # 12.00, 14.00, ...: every revision changes the amounts
        want = {("cpm_impressions", 1, "band:0"): (self.billable_before_mid, self.billable_before_mid * BASE_RATE / 1000),
                ("cpm_impressions", 2, "band:0"): (self.billable_after_mid, self.billable_after_mid * rate / 1000)}
        marker = f"/backdated_amendment/rev{self.revision}/"
        seen_before = len(self.collector.records("adjustment"))
        t0 = self._publish([(1, MONTH_START, MID, BASE_RATE), (2, MID, None, rate)])
        deadline = time.monotonic() + timeout_s
        while True:
            adjustments = self.collector.records("adjustment")
            mine = [(t, a) for t, a in adjustments[seen_before:] if marker in a["adjustment_id"]]
            if mine:
                got = _price_points(self.closed_lines + [a for _, a in adjustments])
                if got == want:
                    t_end = max(t for t, _ in mine)
                    break
            if not self.worker.alive():
                raise NotMeasured(f"the metering worker exited: {self.worker.log_tail()}")
            if time.monotonic() > deadline:
                got = _price_points(self.closed_lines + [a for _, a in adjustments])
                raise NotMeasured(f"revision {self.revision}'s adjustments were not committed within {timeout_s:.0f}s "
                                  f"({len(mine)} seen; closed + adjustments = {got}, expected {want})")
            time.sleep(0.002)
        others = [a for _, a in adjustments if a["kind"] != "backdated_amendment"]
        if others:
            raise NotMeasured(f"unexpected adjustments: {[a['adjustment_id'] for a in others[:3]]}")
        ids = [a["adjustment_id"] for _, a in adjustments]
        if len(ids) != len(set(ids)):
            raise NotMeasured("an adjustment id was emitted twice")
        return {"revision": self.revision, "rate": str(rate), "seconds": t_end - t0, "adjustments": len(mine)}


def _price_points(records: list[dict[str, Any]]) -> dict[tuple[str, int, str], tuple[int, Decimal]]:
    out: dict[tuple[str, int, str], list[Any]] = defaultdict(lambda: [0, Decimal(0)])
    for r in records:
        k = (r["line_type"], r["contract_version"], r["price_point"])
        out[k][0] += r["quantity"]
        out[k][1] += r["amount_exact"]
    return {k: (q, a) for k, (q, a) in out.items() if q or a}


class Collector:
    """Every committed record of some topics (read_committed, from the beginning), with the
    moment the harness received it."""

    def __init__(self, topics: dict[str, str], catalog: SchemaCatalog) -> None:
        self.codecs = {t: catalog.codec(schema) for t, schema in topics.items()}
        self.kinds = dict(topics)
        self._records: dict[str, list[tuple[float, dict[str, Any]]]] = {k: [] for k in topics.values()}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._consumer = Consumer(consumer_config(BOOTSTRAP, f"bench-rerate-{uuid.uuid4().hex[:8]}",
                                                  **{"fetch.wait.max.ms": 10}))
        tps = []
        for t in topics:
            md = self._consumer.list_topics(t, timeout=10)
            tps += [TopicPartition(t, p, OFFSET_BEGINNING) for p in md.topics[t].partitions]
        self._consumer.assign(tps)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msgs = self._consumer.consume(1000, 0.005)
            now = time.perf_counter()
            for m in msgs:
                if m.error() is not None:
                    continue
                topic = m.topic()
                assert topic is not None
                rec = self.codecs[topic].decode(m.value())
                with self._lock:
                    self._records[self.kinds[topic]].append((now, rec))

    def records(self, kind: str) -> list[tuple[float, dict[str, Any]]]:
        with self._lock:
            return list(self._records[kind])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


# ---------------------------------------------------------------------- the ledger's size


def ledger_size(state_topic: str, timeout_s: float = 180) -> dict[str, Any]:
    """Read the state changelog to its end; size the latest record of every ledger key."""
    from tally_metering.state import TotalsStore

    latest: dict[bytes, bytes | None] = {}
    records = log_bytes = ug_records = ug_bytes = 0
    try:
        for m in read_to_end(BOOTSTRAP, state_topic, timeout_s=timeout_s):
            key, value = m.key() or b"", m.value()
            size = len(key) + (len(value) if value is not None else 0)
            records += 1
            log_bytes += size
            if key.startswith(b"ug\x1f"):
                ug_records += 1
                ug_bytes += size
                latest[key] = value
    except TimeoutError as exc:
        raise NotMeasured(f"the state changelog was not read to its end within {timeout_s:.0f}s") from exc
    live = [(k.decode(), v) for k, v in latest.items() if v is not None]
    disk = sum(len(k.encode()) + len(v) for k, v in live)
    # In memory: what the worker's own restore path allocates for these ledger days.
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        store = TotalsStore(0)
        for k, v in live:
            store.apply_changelog(k, v)
        gc.collect()
        memory = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    arrays = sum(sys.getsizeof(row) for days in store.usage.values() for u in days.values() for row in u.counts.values())
    offsets = sum(sys.getsizeof(u.offsets) + sum(sys.getsizeof(k) for k in u.offsets)
                  for days in store.usage.values() for u in days.values())
    impressions = sum(u.total() for days in store.usage.values() for u in days.values())
    return {"ledger_days": len(live), "ledger_rows": store.ledger_cells(), "disk_bytes": disk, "memory_bytes": memory,
            "array_bytes": arrays, "offsets_bytes": offsets, "impressions": impressions, "changelog_records": records,
            "changelog_bytes": log_bytes, "ledger_records": ug_records, "ledger_record_bytes": ug_bytes}


def topic_log_size(topic: str) -> int | None:
    """The topic's size in the broker's log directories (Kafka's LogDirsCommand), or None."""
    from .kafka_ceiling import _java

    try:
        out = _java("LogDirsCommand", ["--bootstrap-server", BOOTSTRAP, "--describe", "--topic-list", topic], 120)
    except Exception:  # informational only: a missing JVM or tool must not fail the section
        return None
    for line in out.splitlines():
        if line.startswith("{"):
            data = json.loads(line)
            return sum(p["size"] for b in data.get("brokers", []) for d in b.get("logDirs", [])
                       for p in d.get("partitions", []))
    return None


# ---------------------------------------------------------------------- the section


KEYS = ["rerate.latency", "rerate.ledger_disk", "rerate.ledger_memory"]
MIB = 1024 * 1024


def measure(report: Report, args: Any) -> None:
    campaigns = args.rerate_campaigns
    if campaigns != 1000:  # the target is stated for 1,000 campaigns; a smaller ledger only checks the harness
        fig = report.figures["rerate.latency"]
        fig.label = fig.label.replace("1,000 campaigns", f"{campaigns:,} campaigns")
        fig.target = None
    with Scenario(campaigns, per_hour=args.rerate_per_hour) as sc:
        print(f"  filling the ledger: {campaigns:,} campaigns x {DAYS} days, {args.rerate_per_hour} impressions per "
              f"campaign-hour + 1 givt per campaign-day ...", flush=True)
        sc.fill(args.rerate_fill_timeout_s)
        print(f"  {sc.produced:,} impressions ({sc.billable:,} billable) in the ledger after {sc.ingest_s:.1f} s", flush=True)
        sc.close_month(60)
        print(f"  {sc.contract.contract_id}/{PERIOD} closed: {sc.billable:,} impressions at {BASE_RATE}", flush=True)
        campaign_days = campaigns * DAYS
        size: dict[str, Any] = {}
        latencies: list[float] = []
        for r in range(args.runs):
            time.sleep(2)  # the previous run's throttled running total is out; the worker is idle
            try:
                out = sc.amend(args.rerate_timeout_s)
            except NotMeasured as exc:
                print(f"  round {r + 1}: not measured: {exc}", flush=True)
                report.not_measured(["rerate.latency"], str(exc))
                break
            latencies.append(out["seconds"])
            report.add("rerate.latency", out["seconds"])
            size = ledger_size(sc.rig.internal["state"] if sc.rig else "")
            if size["impressions"] != sc.produced:
                raise NotMeasured(f"the ledger rebuilt from the changelog holds {size['impressions']:,} impressions, "
                                  f"{sc.produced:,} were produced")
            report.add("rerate.ledger_disk", size["disk_bytes"] / campaign_days * 1000 / MIB)
            report.add("rerate.ledger_memory", size["memory_bytes"] / campaign_days * 1000 / MIB)
            print(f"  round {r + 1}: revision {out['revision']} (v2 at {out['rate']} from 16 Jan): "
                  f"{out['seconds'] * 1000:,.0f} ms to {out['adjustments']} committed adjustments; ledger "
                  f"{size['ledger_days']:,} days, {size['ledger_rows']:,} rows, {size['disk_bytes']:,} B on disk, "
                  f"{size['memory_bytes']:,} B in memory", flush=True)
        if size:
            log_size = topic_log_size(sc.rig.internal["state"]) if sc.rig else None
            report.figures["rerate.latency"].note = (
                f"{sc.produced:,} impressions through the worker ({args.rerate_per_hour} per campaign-hour, every "
                f"15-minute bucket{'' if args.rerate_per_hour == 4 else ' not'} populated) in {sc.ingest_s:.0f} s; "
                f"contract closed, then per run a new terms revision; timed from producing it to receiving its "
                f"adjustments (read_committed)")
            report.figures["rerate.ledger_disk"].note += (
                f"; {size['ledger_days']:,} ledger days ({DAYS + 1} UTC days per campaign: New York's January), "
                f"{size['ledger_rows']:,} rows; the uncompacted changelog held {size['ledger_records']:,} ledger "
                f"records ({size['ledger_record_bytes'] / MIB:,.1f} MiB) of {size['changelog_records']:,} "
                f"({size['changelog_bytes'] / MIB:,.1f} MiB)"
                + (f"; state topic on the broker's disk: {log_size / MIB:,.1f} MiB (LogDirsCommand, before compaction)"
                   if log_size is not None else ""))
            report.figures["rerate.ledger_memory"].note += (
                f"; of which {size['array_bytes'] / campaign_days * 1000 / MIB:,.2f} MiB are the 96-count arrays (8-byte "
                f"counts, one per ledger class and day), {size['offsets_bytes'] / campaign_days * 1000 / MIB:,.2f} MiB the "
                f"per-day source-offset dicts and their keys")
        if args.profile and latencies and sc.worker is not None and sc.worker.proc is not None:
            print("  profiling one more re-rating (py-spy, not counted) ...", flush=True)
            seconds = max(5, math.ceil(max(latencies) * 2 + 3))
            prof = Profiler(sc.worker.proc.pid, "metering-rerate", seconds)
            time.sleep(1)  # py-spy attaches
            try:
                out = sc.amend(args.rerate_timeout_s)
                prof.finish(seconds + 30)
                report.profiles["metering re-rating (py-spy)"] = (f"one re-rating of {out['seconds'] * 1000:,.0f} ms "
                                                                  f"in a {seconds} s window\n" + prof.summary(top=16))
            except NotMeasured as exc:
                if prof.proc is not None and prof.proc.poll() is None:
                    prof.proc.send_signal(signal.SIGINT)
                report.profiles["metering re-rating (py-spy)"] = f"not profiled: {exc}"
