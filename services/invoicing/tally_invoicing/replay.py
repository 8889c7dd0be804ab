"""``replay --contract C --period P``: recompute a closed period from the raw topics with the
billing library and print the difference with what invoicing received (zero when all is well).

What it does:

1. loads the stored ``period_closed`` record of (C, P): its lines, payouts and ``source_offsets``;
2. reads the contract's effective-dated versions from the compacted ``contracts.terms`` topic
   (the last record for key C, highest ``revision``);
3. CPM: reads ``ads.impressions`` from the start of each partition named in ``source_offsets``
   up to (excluding) the recorded offset, keeps billable impressions (the advertiser's, in the
   period, no IVT flag, first occurrence of an ``impression_id``, a covered campaign of the
   version in force at event time, the measurement source the terms bill on), counts them per
   version and rates them with ``tally_billing.cpm.rate_cpm_period`` (earlier closes stored
   here give the lifetime tier position and the amount billed before, for total caps);
4. CPA: reads ``billing.attributed_conversions`` the same way and sums, per version and event
   type, the advertiser amounts (and per partner the payouts) of the contract's conversions
   in the period, minus reversals of conversions of the period.

Limits (honest): the raw topics must still hold the period (their retention is 30 days; an
older period cannot be replayed from Kafka); CPA replays the amounts attribution decided, it
does not re-run attribution; impression dedupe sees only what is read (a duplicate whose
first copy was before the partitions' retained start is counted); CPA quantities are compared
as counted conversions, and a partial reversal reduces the amount but not the count.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from tally_billing.cpm import VersionCount, rate_cpm_period
from tally_billing.money import exact
from tally_billing.periods import PeriodKind, period_by_key
from tally_billing.terms import parse_terms
from tally_billing.versions import ContractVersion, version_in_force
from tally_kit.settings import Settings
from tally_streams.avro import AvroCodec, DecodeError, SchemaCatalog

Key = tuple[str, ...]


@dataclass
class Figure:
    quantity: int = 0
    amount: Decimal = Decimal(0)


def _reader(bootstrap: str) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": f"tally-replay-{uuid.uuid4().hex}",
                     "enable.auto.commit": False, "isolation.level": "read_committed", "auto.offset.reset": "earliest"})


def read_partition(bootstrap: str, topic: str, partition: int, end: int, codec: AvroCodec) -> Iterator[dict[str, Any]]:
    """Decoded records of ``topic[partition]`` from its first retained offset up to ``end`` (exclusive)."""
    if end <= 0:
        return
    c = _reader(bootstrap)
    try:
        low, _high = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        if low >= end:
            return
        c.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        idle = 0
        while idle < 20:
            msgs = c.consume(num_messages=500, timeout=0.5)
            if not msgs:
                idle += 1
                continue
            idle = 0
            for m in msgs:
                offset = m.offset()
                if m.error() is not None or offset is None:
                    continue
                if offset >= end:
                    return
                try:
                    yield codec.decode(m.value())
                except DecodeError:
                    continue  # the live pipeline dead-lettered it too
                if offset >= end - 1:
                    return
    finally:
        c.close()


def latest_terms(bootstrap: str, topic: str, contract_id: str, codec: AvroCodec) -> dict[str, Any] | None:
    """The highest-revision ``contracts.terms`` record for the contract (a compacted topic read to its end)."""
    c = _reader(bootstrap)
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in md.partitions}
    finally:
        c.close()
    best: dict[str, Any] | None = None
    for p, high in ends.items():
        for rec in read_partition(bootstrap, topic, p, high, codec):
            if rec["contract_id"] == contract_id and (best is None or rec["revision"] >= best["revision"]):
                best = rec
    return best


def versions_of(terms_record: Mapping[str, Any]) -> list[ContractVersion]:
    return [ContractVersion(terms_record["contract_id"], v["version"], v["effective_from"], v["effective_to"],
                            parse_terms(json.loads(v["terms_json"]))) for v in terms_record["versions"]]


def stored_figures(record: Mapping[str, Any]) -> dict[Key, Figure]:
    out: dict[Key, Figure] = {}
    for ln in record["lines"]:
        key = _line_key(ln["line_type"], int(ln["contract_version"]), ln.get("event_type"), Decimal(str(ln["unit_price"])))
        f = out.setdefault(key, Figure())
        f.quantity += int(ln["quantity"])
        with exact():
            f.amount += Decimal(str(ln["amount_exact"]))
    for p in record["payouts"]:
        key = ("payout", p["partner_id"], f"v{p['contract_version']}", p["event_type"])
        f = out.setdefault(key, Figure())
        f.quantity += int(p["quantity"])
        with exact():
            f.amount += Decimal(str(p["amount_exact"]))
    return out


def _line_key(line_type: str, version: int, event_type: str | None, unit_price: Decimal) -> Key:
    if line_type == "cpm_impressions":
        return (line_type, f"v{version}", f"rate {unit_price.normalize():f}")
    if line_type == "cpm_over_delivery":
        return (line_type, f"v{version}")
    return (line_type, f"v{version}", event_type or "")


def recompute_cpm(impressions: Iterator[dict[str, Any]], versions: list[ContractVersion], advertiser_id: str,
                  start: datetime, end: datetime, prior_impressions: int, prior_billed: Decimal) -> dict[Key, Figure]:
    seen: set[str] = set()
    counts: dict[int, int] = {}
    for imp in impressions:
        if imp["impression_id"] in seen:
            continue
        seen.add(imp["impression_id"])
        t = imp["event_time"]
        if imp["advertiser_id"] != advertiser_id or not start <= t < end or imp["ivt"] != "none":
            continue
        v = version_in_force(versions, t)
        if v is None or imp["campaign_id"] not in v.terms.common.campaign_ids:
            continue
        if imp["measurement_source"] != v.terms.common.measurement.value:
            continue
        counts[v.version] = counts.get(v.version, 0) + 1
    by_version = {v.version: v for v in versions}
    rating = rate_cpm_period([VersionCount(by_version[n], c) for n, c in sorted(counts.items())],
                             prior_lifetime_impressions=prior_impressions, prior_billed_total=prior_billed)
    out: dict[Key, Figure] = {}
    for p in rating.price_points:
        f = out.setdefault(_line_key("cpm_impressions", p.version, None, p.rate_cpm), Figure())
        f.quantity += p.impressions
        with exact():
            f.amount += p.amount
    for version, n in rating.over_delivery:
        out.setdefault(_line_key("cpm_over_delivery", version, None, Decimal(0)), Figure()).quantity += n
    return out


def recompute_cpa(conversions: Iterator[dict[str, Any]], contract_id: str, start: datetime, end: datetime
                  ) -> dict[Key, Figure]:
    seen: set[str] = set()
    out: dict[Key, Figure] = {}
    for c in conversions:
        if c["contract_id"] != contract_id or c["conversion_id"] in seen:
            continue
        seen.add(c["conversion_id"])
        if not start <= c["event_time"] < end:
            continue
        if c["kind"] == "reversal" and not (c["original_event_time"] and start <= c["original_event_time"] < end):
            continue  # a reversal of another period's conversion is an adjustment, not part of this close
        count = 1 if c["kind"] == "conversion" else 0
        adv = out.setdefault(("cpa_conversions", f"v{c['contract_version']}", c["event_type"]), Figure())
        adv.quantity += count
        with exact():
            adv.amount += c["advertiser_amount"]
        if c["partner_id"]:
            pay = out.setdefault(("payout", c["partner_id"], f"v{c['contract_version']}", c["event_type"]), Figure())
            pay.quantity += count
            with exact():
                pay.amount += c["partner_payout"]
    return out


def difference(stored: Mapping[Key, Figure], replayed: Mapping[Key, Figure], *, compare_quantity: bool = True
               ) -> list[tuple[Key, Figure, Figure]]:
    """Keys whose quantity or exact amount differ (a missing side counts as zero)."""
    out = []
    for key in sorted(set(stored) | set(replayed)):
        a, b = stored.get(key, Figure()), replayed.get(key, Figure())
        if a.amount != b.amount or (compare_quantity and a.quantity != b.quantity):
            out.append((key, a, b))
    return out


async def run_replay(settings: Settings, contract_id: str, period_key: str) -> int:
    conn = await asyncpg.connect(settings.invoicing_database_url)
    try:
        row = await conn.fetchrow("SELECT record::text AS record FROM period_closes WHERE close_id = $1",
                                  f"{contract_id}/{period_key}")
        earlier = await conn.fetch(
            """SELECT record::text AS record FROM period_closes WHERE contract_id = $1 AND period_end <=
                   (SELECT period_start FROM period_closes WHERE close_id = $2)""", contract_id, f"{contract_id}/{period_key}")
    finally:
        await conn.close()
    if row is None:
        print(f"no closed period {contract_id}/{period_key} has been received")
        return 2
    record = json.loads(row["record"])
    catalog = SchemaCatalog.load()
    terms = latest_terms(settings.kafka_bootstrap, settings.invoicing_terms_topic, contract_id, catalog.codec("contract_terms"))
    if terms is None:
        print(f"contract {contract_id} is not on {settings.invoicing_terms_topic}")
        return 2
    versions = versions_of(terms)
    period = period_by_key(period_key, record["time_zone"], PeriodKind(record["period_kind"]))
    stored = stored_figures(record)
    offsets = record["source_offsets"]
    if record["contract_type"] == "cpm":
        prior_n, prior_amount = 0, Decimal(0)
        for e in earlier:
            for ln in json.loads(e["record"])["lines"]:
                if ln["line_type"] == "cpm_impressions":
                    prior_n += int(ln["quantity"])
                    with exact():
                        prior_amount += Decimal(str(ln["amount_exact"]))
        codec = catalog.codec("impression")
        events: Iterator[dict[str, Any]] = (
            rec for so in offsets if so["topic"] == settings.invoicing_impressions_topic
            for rec in read_partition(settings.kafka_bootstrap, so["topic"], so["partition"], so["offset"], codec))
        replayed = recompute_cpm(events, versions, record["advertiser_id"], period.start, period.end, prior_n, prior_amount)
    else:
        codec = catalog.codec("attributed_conversion")
        events = (rec for so in offsets if so["topic"] == settings.invoicing_attributed_topic
                  for rec in read_partition(settings.kafka_bootstrap, so["topic"], so["partition"], so["offset"], codec))
        replayed = recompute_cpa(events, contract_id, period.start, period.end)
    diffs = difference(stored, replayed)
    print(f"replay {contract_id} {period_key} ({record['contract_type']}, {record['currency']}, "
          f"{period.start.isoformat()} .. {period.end.isoformat()}): {len(stored)} invoiced figure(s), "
          f"{len(replayed)} replayed")
    for key, a, b in diffs:
        with exact():
            delta = b.amount - a.amount
        print(f"  DIFF {' / '.join(key)}: invoiced {a.quantity} = {a.amount:f}, replayed {b.quantity} = {b.amount:f}, "
              f"difference {b.quantity - a.quantity} = {delta:f}")
    if not diffs:
        print("  no difference: the closed period matches the raw events")
        return 0
    return 1
