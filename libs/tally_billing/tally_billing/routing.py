"""Contracts as routing tables: which contract, period, version and category an instant of a
campaign's usage belongs to, from the records of the compacted ``contracts.terms`` topic.

Each record is the full set of approved versions of one contract. For the hot path a contract
is turned into a piecewise table over event time (microseconds): in every segment the same
version governs (or none does) and the instant is either inside that version's flight or not,
so classifying an impression is one ``bisect`` instead of zone arithmetic per event.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .periods import Period, PeriodKind, period_containing
from .terms import ContractTerms
from .usage import BUCKET_US as _BUCKET_US  # every zone offset in use is a multiple of 15 minutes
from .usage import from_micros, to_micros
from .versions import ContractVersion, effective_version, in_flight, step_instants, versions_from_record

__all__ = ["ROUTE_BUCKET_US", "Contract", "ContractBook", "Route", "contract_from_record", "from_micros", "to_micros"]

#: ContractBook.routes is keyed by (advertiser, campaign, event time // this)
ROUTE_BUCKET_US = 3600 * 1_000_000


@dataclass(frozen=True)
class Segment:
    start_us: int
    version: int | None
    in_flight: bool
    campaigns: frozenset[str]


#: ``Route.fixed``: the impression's category whatever its IVT flag and measurement source say
#: (None: in scope when the measurement source matches, else "other measurement"); defined here,
#: where routing decides them, and re-exported by ``domain`` with the other categories
OUTSIDE_FLIGHT = "outside_flight"
UNCOVERED = "uncovered_campaign"


@dataclass(frozen=True, slots=True)
class Route:
    """Where an impression of one campaign at one instant goes, and how it is classified (IVT aside)."""

    contract: Contract
    period_key: str
    #: (contract id, period key): the delta this impression is added to
    key: tuple[str, str]
    fixed: str | None
    version: int | None
    measurement: str | None


@dataclass
class Contract:
    contract_id: str
    advertiser_id: str
    contract_type: str
    revision: int
    versions: tuple[ContractVersion, ...]
    segments: list[Segment]
    _starts: list[int] = field(default_factory=list, repr=False)
    _periods: dict[int, Period] = field(default_factory=dict, repr=False)
    #: every period computed so far, by start (µs): a new 15-minute bucket inside a known period
    #: needs no zone arithmetic
    _span_starts: list[int] = field(default_factory=list, repr=False, compare=False)
    _spans: list[tuple[int, Period]] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._starts = [s.start_us for s in self.segments]

    @property
    def first(self) -> ContractTerms:
        return self.versions[0].terms

    @property
    def currency(self) -> str:
        return self.first.common.currency

    @property
    def time_zone(self) -> str:
        return self.first.common.time_zone

    @property
    def period_kind(self) -> PeriodKind:
        return self.first.common.billing_period

    @property
    def campaigns(self) -> frozenset[str]:
        return frozenset(c for v in self.versions for c in v.terms.common.campaign_ids)

    def segment_at(self, t_us: int) -> Segment | None:
        i = bisect_right(self._starts, t_us) - 1
        return self.segments[i] if i >= 0 else None

    def period_at(self, t_us: int) -> Period:
        """The billing period containing ``t_us`` (cached per 15-minute bucket)."""
        bucket = t_us // _BUCKET_US
        p = self._periods.get(bucket)
        if p is None:
            p = self._period_containing(bucket * _BUCKET_US)
            self._periods[bucket] = p
        return p

    def _period_containing(self, t_us: int) -> Period:
        i = bisect_right(self._span_starts, t_us) - 1
        if i >= 0 and t_us < self._spans[i][0]:
            return self._spans[i][1]
        p = period_containing(from_micros(t_us), self.time_zone, self.period_kind)
        start = to_micros(p.start)
        i = bisect_right(self._span_starts, start)
        self._span_starts.insert(i, start)
        self._spans.insert(i, (to_micros(p.end), p))
        return p

    def version(self, number: int) -> ContractVersion | None:
        for v in self.versions:
            if v.version == number:
                return v
        return None

    def version_at(self, instant: datetime) -> ContractVersion | None:
        return effective_version(self.versions, instant)


def build_segments(versions: tuple[ContractVersion, ...]) -> list[Segment]:
    segments: list[Segment] = []
    for p in step_instants(versions):
        found = effective_version(versions, p)
        if found is None:
            segments.append(Segment(to_micros(p), None, False, frozenset()))
        else:
            segments.append(Segment(to_micros(p), found.version, in_flight(found.terms, p),
                                    frozenset(found.terms.common.campaign_ids)))
    return segments


def contract_from_record(rec: Mapping[str, Any]) -> Contract:
    """A ``contract_terms`` record (decoded with datetimes) as a :class:`Contract`."""
    ordered = versions_from_record(rec)
    if not ordered:
        raise ValueError(f"contract {rec['contract_id']} has no approved version")
    return Contract(rec["contract_id"], rec["advertiser_id"], str(rec["contract_type"]), int(rec["revision"]),
                    ordered, build_segments(ordered))


_ROUTE_CACHE_MAX = 200_000
_BUCKETS_PER_DAY = 86_400_000_000 // _BUCKET_US


def _runs_of(candidates: tuple[Contract, ...], day: int) -> list[tuple[int, int]]:
    base = day * _BUCKETS_PER_DAY
    runs: list[tuple[int, int]] = []
    a, signature = 0, None
    for i in range(_BUCKETS_PER_DAY):
        t = (base + i) * _BUCKET_US
        here = tuple((c.segment_at(t), c.period_at(t).key) for c in candidates)
        if signature is not None and here != signature:
            runs.append((a, i))
            a = i
        signature = here
    runs.append((a, _BUCKETS_PER_DAY))
    return runs


class ContractBook:
    """Every known contract, and which contracts cover each (advertiser, campaign).

    A campaign reaches only contracts of the advertiser its impressions name: usage is the
    advertiser's own, and stage two owns every contract of an advertiser.
    """

    def __init__(self) -> None:
        self.contracts: dict[str, Contract] = {}
        self._by_campaign: dict[tuple[str, str], tuple[Contract, ...]] = {}
        #: (advertiser, campaign, hour) -> Route (None: no contract covers the campaign), for hours
        #: in which no candidate contract's segment or period changes; emptied whenever the book changes
        self.routes: dict[tuple[str, str, int], Route | None] = {}
        self._runs: dict[tuple[tuple[str, ...], int], list[tuple[int, int]]] = {}

    def apply(self, rec: Mapping[str, Any]) -> bool:
        """Take a terms record; ignores one older than the revision held. True when applied."""
        held = self.contracts.get(rec["contract_id"])
        if held is not None and int(rec["revision"]) < held.revision:
            return False
        self.contracts[rec["contract_id"]] = contract_from_record(rec)
        self._reindex()
        return True

    def load(self, contracts: Iterable[Contract]) -> None:
        for c in contracts:
            self.contracts[c.contract_id] = c
        self._reindex()

    def _reindex(self) -> None:
        index: dict[tuple[str, str], list[Contract]] = {}
        for c in sorted(self.contracts.values(), key=lambda c: c.contract_id):
            for campaign in c.campaigns:
                index.setdefault((c.advertiser_id, campaign), []).append(c)
        self._by_campaign = {k: tuple(v) for k, v in index.items()}
        self.routes = {}
        self._runs = {}

    def runs(self, advertiser_id: str, campaign_id: str, day: int) -> list[tuple[int, int]]:
        """The buckets ``[a, b)`` of one UTC day (0..96) in which every contract that may cover
        the campaign keeps one segment and one period: a run routes like each of its buckets.
        Cached per candidate set and day; emptied whenever the book changes."""
        candidates = self._by_campaign.get((advertiser_id, campaign_id), ())
        key = (tuple(c.contract_id for c in candidates), day)
        runs = self._runs.get(key)
        if runs is None:
            if len(self._runs) >= _ROUTE_CACHE_MAX:
                self._runs.clear()
            runs = self._runs[key] = _runs_of(candidates, day)
        return runs

    def route(self, advertiser_id: str, campaign_id: str, t_us: int) -> Route | None:
        """The route of an impression of ``campaign_id`` at ``t_us`` (None: no contract covers it).

        Cached per (advertiser, campaign, hour of event time) when that hour lies inside one
        segment and one billing period of every candidate contract; otherwise computed for
        ``t_us`` alone.
        """
        bucket = t_us // ROUTE_BUCKET_US
        key = (advertiser_id, campaign_id, bucket)
        if key in self.routes:
            return self.routes[key]
        contracts = self._by_campaign.get((advertiser_id, campaign_id), ())
        r = self._route(contracts, campaign_id, t_us)
        start = bucket * ROUTE_BUCKET_US
        last = start + ROUTE_BUCKET_US - 1
        if all(c.segment_at(start) is c.segment_at(last) and c.period_at(start).key == c.period_at(last).key
               for c in contracts):
            if len(self.routes) >= _ROUTE_CACHE_MAX:
                self.routes.clear()
            self.routes[key] = r
        return r

    @staticmethod
    def _route(contracts: tuple[Contract, ...], campaign_id: str, t_us: int) -> Route | None:
        if not contracts:
            return None
        contract = contracts[0]
        seg = contract.segment_at(t_us)
        if len(contracts) > 1:
            for c in contracts:
                sg = c.segment_at(t_us)
                if sg is not None and sg.in_flight and campaign_id in sg.campaigns:
                    contract, seg = c, sg
                    break
        period_key = contract.period_at(t_us).key
        fixed: str | None = None
        version = measurement = None
        if seg is None or seg.version is None or not seg.in_flight:
            fixed = OUTSIDE_FLIGHT
        elif campaign_id not in seg.campaigns:
            fixed = UNCOVERED
        else:
            version = seg.version
            v = contract.version(version)
            measurement = str(v.terms.common.measurement) if v is not None else "first_party"
        return Route(contract, period_key, (contract.contract_id, period_key), fixed, version, measurement)

    def for_campaign(self, advertiser_id: str, campaign_id: str) -> tuple[Contract, ...]:
        return self._by_campaign.get((advertiser_id, campaign_id), ())

    def of_advertiser(self, advertiser_id: str) -> list[Contract]:
        return sorted((c for c in self.contracts.values() if c.advertiser_id == advertiser_id),
                      key=lambda c: c.contract_id)

    def get(self, contract_id: str) -> Contract | None:
        return self.contracts.get(contract_id)
