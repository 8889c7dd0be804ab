"""The shared CPM data set: contracts with flat rates and real Avro impressions on a throwaway topic.

Every stream benchmark (Kafka's consumer, the Python floor, the Kafka Streams peer, metering)
reads the same topic. The impressions are realistic: many households, several time zones,
about 2 % invalid traffic, 1 % ad-server retries (same impression id, same household) and
1 % uncovered campaigns. Event times are in the current open billing period of every zone, so
nothing is late. ``expected`` is the harness's own recomputation of the billable counts per
(contract, period, rate), used to check that each consumer computed the right thing.
"""

from __future__ import annotations

import copy
import random
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from confluent_kafka import Producer

from tally_streams.avro import SchemaCatalog
from tally_streams.kafka import ensure_topics, producer_config
from tally_streams.topics import IMPRESSIONS

from .common import BOOTSTRAP, unique

ZONES = ("America/New_York", "Europe/Berlin", "Asia/Tokyo", "Asia/Kolkata", "America/Los_Angeles", "UTC")
RATES = ("12.50", "8.125", "10.00", "4.75", "22.00")
CAMPAIGNS_PER_CONTRACT = 5


@dataclass(frozen=True)
class Contract:
    contract_id: str
    advertiser_id: str
    zone: str
    rate_cpm: str
    campaign_ids: tuple[str, ...]
    flight_start: date
    flight_end: date

    def terms_json(self) -> dict[str, Any]:
        """Flat-rate CPM terms in the billing library's JSON shape (no caps, no minimum)."""
        from tally_billing.examples import cpm_terms_json

        t = copy.deepcopy(cpm_terms_json())
        t["common"].update({
            "currency": "USD", "time_zone": self.zone, "billing_period": "month",
            "flight_start": self.flight_start.isoformat(), "flight_end": self.flight_end.isoformat(),
            "campaign_ids": list(self.campaign_ids), "advertiser_id": self.advertiser_id,
            "auto_renew": False, "renewal_term_months": None, "notice_period_days": 0, "escalator_pct": None,
            "committed_value": None,
        })
        t["cpm"] = {
            "rate_card": {"kind": "flat", "tier_basis": "period", "bands": [{"from_impressions": 0, "rate_cpm": self.rate_cpm}]},
            "budget_caps": {"total": None, "per_period": None},
            "minimum_commitment_per_period": None,
        }
        return t


@dataclass
class Dataset:
    topic: str
    contracts: list[Contract]
    records: int
    billable: int
    expected: Counter[tuple[str, str, str]]  # (contract_id, period key, rate) -> billable impressions
    avg_record_bytes: int
    window: tuple[datetime, datetime]

    def contracts_tsv(self, path: Path) -> Path:
        """The peer's contract file: campaign, contract, zone, rate, flight start, flight end."""
        lines = [f"{cmp}\t{c.contract_id}\t{c.zone}\t{c.rate_cpm}\t{c.flight_start}\t{c.flight_end}"
                 for c in self.contracts for cmp in c.campaign_ids]
        path.write_text("\n".join(lines) + "\n")
        return path


def make_contracts(count: int, now: datetime) -> list[Contract]:
    tag = unique("c").split("-")[1]
    out = []
    for i in range(count):
        out.append(Contract(
            contract_id=f"ctr-{tag}-{i:03d}", advertiser_id=f"adv-{tag}-{i % 7}", zone=ZONES[i % len(ZONES)],
            rate_cpm=RATES[i % len(RATES)],
            campaign_ids=tuple(f"cmp-{tag}-{i:03d}-{k}" for k in range(CAMPAIGNS_PER_CONTRACT)),
            flight_start=(now - timedelta(days=90)).date(), flight_end=(now + timedelta(days=365)).date(),
        ))
    return out


def event_window(now: datetime) -> tuple[datetime, datetime]:
    """Up to three days back, but never before the current month started in every zone
    (UTC+14 is the earliest), so every event falls in an open period."""
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0) + timedelta(hours=14)
    start = max(now - timedelta(days=3), month_start)
    end = now - timedelta(seconds=30)
    if start > end - timedelta(minutes=10):
        start = end - timedelta(minutes=10)
    return start, end


def period_key(instant: datetime, zone: str) -> str:
    local = instant.astimezone(ZoneInfo(zone))
    return f"{local.year:04d}-{local.month:02d}"


def build(records: int, *, contracts: int = 24, households: int = 1_000_000, seed: int = 7,
          partitions: int = IMPRESSIONS.partitions) -> Dataset:
    """Create a throwaway impressions topic and fill it with ``records`` real Avro impressions."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    cs = make_contracts(contracts, now)
    start, end = event_window(now)
    span_us = int((end - start).total_seconds() * 1_000_000)
    codec = SchemaCatalog.load().codec("impression")
    topic = unique("impressions")
    tag = topic.split("-")[1]
    spec = IMPRESSIONS.renamed(topic)
    if partitions != spec.partitions:
        from tally_streams.topics import TopicSpec

        spec = TopicSpec(topic, spec.key, spec.value_schema, partitions, retention_ms=spec.retention_ms)
    ensure_topics(BOOTSTRAP, [spec])
    producer = Producer(producer_config(BOOTSTRAP, "tally-bench-fill", **{"linger.ms": 20, "batch.size": 262_144}))
    expected: Counter[tuple[str, str, str]] = Counter()
    zone_cache = {c.contract_id: ZoneInfo(c.zone) for c in cs}
    total_bytes = 0
    recent: list[tuple[bytes, str]] = []  # candidates for ad-server retries
    device = ("ctv", "ctv", "ctv", "mobile", "tablet", "desktop")
    for i in range(records):
        roll = rng.random()
        if roll < 0.01 and recent:  # a retry: the same bytes and key again
            value, key = recent[rng.randrange(len(recent))]
        else:
            c = cs[rng.randrange(len(cs))]
            uncovered = roll > 0.99
            cmp = f"cmp-unknown-{rng.randrange(50)}" if uncovered else c.campaign_ids[rng.randrange(CAMPAIGNS_PER_CONTRACT)]
            ivt = "givt" if 0.01 <= roll < 0.025 else ("sivt" if 0.025 <= roll < 0.03 else "none")
            t = start + timedelta(microseconds=rng.randrange(span_us))
            key = f"hh-{rng.randrange(households):07d}"
            value = codec.encode({
                "impression_id": f"imp-{tag}-{i:010d}", "event_time": t, "advertiser_id": c.advertiser_id,
                "campaign_id": cmp, "partner_id": None, "household_id": key, "device_type": device[i % len(device)],
                "ivt": ivt, "measurement_source": "first_party",
            })
            if not uncovered and ivt == "none":
                local = t.astimezone(zone_cache[c.contract_id])
                expected[(c.contract_id, f"{local.year:04d}-{local.month:02d}", c.rate_cpm)] += 1
            if len(recent) < 10_000:
                recent.append((value, key))
            else:
                recent[rng.randrange(10_000)] = (value, key)
        total_bytes += len(value)
        while True:
            try:
                producer.produce(topic, value, key=key)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    deadline = time.monotonic() + 120
    while len(producer) and time.monotonic() < deadline:
        producer.flush(5)
    if len(producer):
        raise TimeoutError(f"{len(producer)} impressions not acknowledged while filling {topic}")
    return Dataset(topic, cs, records, sum(expected.values()), expected, round(total_bytes / max(records, 1)), (start, end))
