"""The usage ledger: usage kept apart from contracts, and its derivation into period totals.

:class:`UsageDay` holds counts per (advertiser, campaign, UTC day), ledger class and 15-minute
event-time bucket (:mod:`tally_billing.usage`). :func:`classify` and :func:`derive` turn ledger
counts into a contract's period totals under the contract picture a
:class:`~tally_billing.routing.ContractBook` holds — a pure function of (usage, contracts).
Derivation is linear in the counts, so adding usage to a period incrementally and deriving it
again from the whole ledger give the same totals. :func:`plan_ivt_credit` says where an IVT
report takes its count from, or why it is refused.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .routing import ContractBook, Route
from .totals import (
    DUPLICATE,
    IN_SCOPE,
    IVT_GIVT,
    IVT_SIVT,
    OTHER_MEASUREMENT,
    RECEIVED,
    SEP,
    PeriodTotals,
)
from .usage import BUCKET_US, BUCKETS_PER_DAY, from_micros

# Ledger classes: what an impression is before any contract is consulted. A unique impression is
# "<ivt>|<measurement source>"; a repeated impression id is "duplicate" (counted, never billed).
LEDGER_DUPLICATE = "duplicate"
IVT_FLAGS = ("none", "givt", "sivt")
MEASUREMENT_SOURCES = ("first_party", "third_party")
LEDGER_CLASSES = {(ivt, source): f"{ivt}|{source}" for ivt in IVT_FLAGS for source in MEASUREMENT_SOURCES}
_IVT_CATEGORY = {"givt": IVT_GIVT, "sivt": IVT_SIVT}

@dataclass
class UsageDay:
    """The usage of one (advertiser, campaign) on one UTC day: counts per ledger class and
    15-minute bucket, and the source offsets they include. Its size depends on the campaign's
    days of traffic, never on the number of impressions."""

    advertiser_id: str
    campaign_id: str
    day: int  # UTC days since the epoch
    counts: dict[str, array[int]] = field(default_factory=dict)
    #: "topic<SEP>partition" -> next offset after the last record of this day included
    offsets: dict[str, int] = field(default_factory=dict)
    max_event_us: int = 0

    @property
    def key(self) -> str:
        return f"ug{SEP}{self.advertiser_id}{SEP}{self.campaign_id}{SEP}{self.day}"

    def add(self, bucket_of_day: int, cls: str, n: int) -> None:
        row = self.counts.get(cls)
        if row is None:
            row = self.counts[cls] = array("q", bytes(8 * BUCKETS_PER_DAY))
        row[bucket_of_day] += n

    def include_offset(self, source: str, next_offset: int) -> None:
        if next_offset > self.offsets.get(source, -1):
            self.offsets[source] = next_offset

    def total(self, cls: str | None = None) -> int:
        return sum(sum(row) for c, row in self.counts.items() if cls is None or c == cls)

    def to_json(self) -> dict[str, Any]:
        return {"a": self.advertiser_id, "c": self.campaign_id, "d": self.day,
                "n": {cls: [[i, n] for i, n in enumerate(row) if n] for cls, row in sorted(self.counts.items())},
                "o": self.offsets, "m": self.max_event_us}

    def to_record(self) -> dict[str, Any]:
        """The ``metering_ledger_day`` record (schemas/): counts as 96 little-endian int64 per class."""
        rows = []
        for cls, row in sorted(self.counts.items()):
            if sys.byteorder != "little":  # pragma: no cover - every machine Tally runs on is little-endian
                row = array("q", row)
                row.byteswap()
            rows.append({"ledger_class": cls, "counts": row.tobytes()})
        return {"advertiser_id": self.advertiser_id, "campaign_id": self.campaign_id, "day": self.day,
                "classes": rows, "offsets": dict(self.offsets), "max_event_us": self.max_event_us}

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> UsageDay:
        u = cls(r["advertiser_id"], r["campaign_id"], int(r["day"]), offsets={k: int(o) for k, o in r["offsets"].items()},
                max_event_us=int(r["max_event_us"]))
        for row in r["classes"]:
            counts = array("q")
            counts.frombytes(row["counts"])
            if sys.byteorder != "little":  # pragma: no cover
                counts.byteswap()
            if len(counts) != BUCKETS_PER_DAY:
                raise ValueError(f"ledger day {u.key!r}: {len(counts)} buckets, expected {BUCKETS_PER_DAY}")
            u.counts[row["ledger_class"]] = counts
        return u

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> UsageDay:
        u = cls(d["a"], d["c"], int(d["d"]), offsets={k: int(o) for k, o in d.get("o", {}).items()},
                max_event_us=int(d.get("m", 0)))
        for ledger_class, cells in d.get("n", {}).items():
            for i, n in cells:
                u.add(int(i), ledger_class, int(n))
        return u


def category(ledger_class: str, route: Route) -> tuple[int | None, str]:
    """What impressions of one ledger class are under a route, in the classification order of
    the README (duplicate, IVT, outside flight, uncovered, other measurement, in scope):
    ``(version, IN_SCOPE)`` for billable-before-caps impressions, else ``(None, category)``."""
    if ledger_class == LEDGER_DUPLICATE:
        return None, DUPLICATE
    ivt, source = ledger_class.split("|")
    if ivt != "none":
        return None, _IVT_CATEGORY[ivt]
    if route.fixed is not None:
        return None, route.fixed
    if source == route.measurement:
        assert route.version is not None
        return route.version, IN_SCOPE
    return None, OTHER_MEASUREMENT


def classify(totals: PeriodTotals, ledger_class: str, n: int, route: Route) -> None:
    """Add ``n`` impressions of one ledger class to a period's totals, as routed."""
    add_classified(totals, n, *category(ledger_class, route))


def add_classified(totals: PeriodTotals, n: int, version: int | None, cat: str) -> None:
    counts = totals.counts
    counts[RECEIVED] = counts.get(RECEIVED, 0) + n
    if version is not None:
        in_scope = totals.in_scope_by_version
        in_scope[version] = in_scope.get(version, 0) + n
    else:
        counts[cat] = counts.get(cat, 0) + n


def derive(book: ContractBook, days: Iterable[UsageDay], not_before_us: int = 0) -> dict[tuple[str, str], PeriodTotals]:
    """The impression part of every (contract, period) totals that ``days`` reach under the
    contract picture in ``book``: a pure function of (usage, contracts). Buckets that no
    contract covers are left out (they wait in the ledger). Buckets before ``not_before_us``
    (the re-rating horizon) are skipped.

    Each UTC day is taken in runs of buckets in which every candidate contract keeps one
    segment and one period (``ContractBook.runs``); a run routes like each of its buckets, so it
    is routed once per campaign and its counts are summed whole — a re-rating costs per run,
    not per bucket.
    """
    out: dict[tuple[str, str], PeriodTotals] = {}
    first_bucket = -(-not_before_us // BUCKET_US)  # the first whole bucket at or after the horizon
    for u in days:
        if not book.for_campaign(u.advertiser_id, u.campaign_id):
            continue
        base = u.day * BUCKETS_PER_DAY
        touched: set[tuple[str, str]] = set()
        for a, b in book.runs(u.advertiser_id, u.campaign_id, u.day):
            a = max(a, first_bucket - base)
            if a >= b:
                continue
            route: Route | None = None
            for ledger_class, row in u.counts.items():
                n = sum(row[a:b])
                if not n:
                    continue
                if route is None:
                    route = book.route(u.advertiser_id, u.campaign_id, (base + a) * BUCKET_US)
                    if route is None:
                        break
                tot = out.get(route.key)
                if tot is None:
                    tot = out[route.key] = PeriodTotals()
                classify(tot, ledger_class, n, route)
                last = b - 1
                while not row[last]:  # the run's newest non-empty bucket (mostly its last)
                    last -= 1
                newest = min((base + last + 1) * BUCKET_US - 1, u.max_event_us)  # to the bucket
                if newest > tot.max_event_us:
                    tot.max_event_us = newest
                touched.add(route.key)
        for key in touched:
            offsets = out[key].offsets
            for source, o in u.offsets.items():
                if o > offsets.get(source, -1):
                    offsets[source] = o
    return out


def plan_ivt_credit(
    usage: Mapping[tuple[str, str], Mapping[int, UsageDay]],
    advertiser_id: str,
    entries: Iterable[tuple[str, int, int, str, str, int]],
    *,
    not_before_us: int,
) -> tuple[list[tuple[str, int, str, str, int]], tuple[int, str] | None]:
    """Where each entry of an IVT report takes its count from, or why the report is refused.

    ``entries``: (campaign, window start µs, window end µs, ivt class, measurement source, count).
    Each entry takes its count from the valid impressions of its window, the latest buckets first,
    after what earlier entries of the same report took. Returns the plan — (campaign, bucket,
    valid ledger class, IVT ledger class, n) — or ``([], (index, reason))`` naming the first entry
    that claims more than its window holds valid, or whose window is past the re-rating horizon.
    """
    taken: dict[tuple[str, int, str], int] = {}
    plan: list[tuple[str, int, str, str, int]] = []
    for k, (campaign, start_us, end_us, ivt, source, count) in enumerate(entries):
        window = f"{from_micros(start_us).isoformat()}..{from_micros(end_us).isoformat()}"
        if start_us < not_before_us:
            return [], (k, f"entries[{k}]: campaign {campaign} window {window} is past the re-rating horizon; "
                           f"its periods are locked")
        valid_cls, ivt_cls = LEDGER_CLASSES[("none", source)], LEDGER_CLASSES[(ivt, source)]
        days = usage.get((advertiser_id, campaign), {})
        need = count
        picked: list[tuple[str, int, str, str, int]] = []
        for bucket in range((end_us - 1) // BUCKET_US, start_us // BUCKET_US - 1, -1):
            if need == 0:
                break
            u = days.get(bucket // BUCKETS_PER_DAY)
            row = u.counts.get(valid_cls) if u is not None else None
            if row is None:
                continue
            have = row[bucket % BUCKETS_PER_DAY] - taken.get((campaign, bucket, valid_cls), 0)
            n = min(have, need)
            if n > 0:
                picked.append((campaign, bucket, valid_cls, ivt_cls, n))
                need -= n
        if need:
            held = count - need
            return [], (k, f"entries[{k}]: campaign {campaign} window {window} holds {held} valid {source} "
                           f"impression(s); the report flags {count}")
        for campaign_, bucket, cls, _, n in picked:
            taken[(campaign_, bucket, cls)] = taken.get((campaign_, bucket, cls), 0) + n
        plan.extend(picked)
    return plan, None
