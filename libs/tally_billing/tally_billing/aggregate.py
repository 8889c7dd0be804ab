"""Mergeable running totals per (contract, period): counts per price point, never money.

``merge`` is associative and commutative (sums of counts, maxima of source offsets) and the
empty state is its identity, so totals are the same however events are batched, in whatever
order batches are combined.  Zero entries are dropped so equal totals have one representation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tally_billing.cpa import Leg, LegAmount, PricedConversion, ReversalOutcome
from tally_billing.money import exact, parse_amount
from tally_billing.terms import format_decimal

__all__ = ["AggregateState", "CpaPointKey", "merge_all"]


@dataclass(frozen=True, order=True)
class CpaPointKey:
    version: int
    event_type: str
    leg: str  # Leg value
    partner_id: str
    basis: str  # "conversions" | "order_value"
    unit_price: Decimal

    def to_str(self) -> str:
        return "|".join([str(self.version), self.event_type, self.leg, self.partner_id, self.basis, _canon(self.unit_price)])

    @staticmethod
    def from_str(s: str) -> CpaPointKey:
        version, event_type, leg, partner_id, basis, unit_price = s.split("|")
        return CpaPointKey(int(version), event_type, leg, partner_id, basis, parse_amount(unit_price))


def _canon(d: Decimal) -> str:
    """One spelling per value (no trailing zeros), so equal states serialise identically."""
    with exact():
        return format_decimal(d.normalize())


def _add_maps(a: Mapping[Any, Any], b: Mapping[Any, Any], zero: Any) -> dict[Any, Any]:
    out = dict(a)
    with exact():
        for k, v in b.items():
            out[k] = out.get(k, zero) + v
    return {k: v for k, v in out.items() if v != 0}


@dataclass(frozen=True)
class AggregateState:
    contract_id: str
    period_key: str
    #: billable-before-cap impressions per contract version
    cpm_impressions: Mapping[int, int] = field(default_factory=dict)
    #: CPA quantities (conversions or order value) per price point; reversals subtract
    cpa_quantities: Mapping[CpaPointKey, Decimal] = field(default_factory=dict)
    #: attributed conversions per (version, event type) — tier positions and reporting
    cpa_conversions: Mapping[tuple[int, str], int] = field(default_factory=dict)
    #: highest source offset included, per "topic:partition" (idempotent merge: max)
    source_offsets: Mapping[str, int] = field(default_factory=dict)

    # -- building

    @staticmethod
    def empty(contract_id: str, period_key: str) -> AggregateState:
        return AggregateState(contract_id, period_key)

    def with_impressions(self, version: int, count: int = 1) -> AggregateState:
        return self.merge(AggregateState(self.contract_id, self.period_key, cpm_impressions={version: count}))

    def with_conversion(self, version: int, partner_id: str, priced: PricedConversion) -> AggregateState:
        q = {
            _key(version, priced.event_type, Leg.ADVERTISER, partner_id, priced.advertiser): priced.advertiser.quantity,
            _key(version, priced.event_type, Leg.PARTNER, partner_id, priced.partner): priced.partner.quantity,
        }
        delta = AggregateState(self.contract_id, self.period_key, cpa_quantities=q, cpa_conversions={(version, priced.event_type): 1})
        return self.merge(delta)

    def with_reversal(self, version: int, event_type: str, partner_id: str, outcome: ReversalOutcome) -> AggregateState:
        """Remove a reversal inside the open period (after close it is an adjustment instead)."""
        q: dict[CpaPointKey, Decimal] = {}
        with exact():
            for leg, amount in ((Leg.ADVERTISER, outcome.advertiser), (Leg.PARTNER, outcome.partner)):
                if amount is not None and amount.quantity:
                    key = _key(version, event_type, leg, partner_id, amount)
                    q[key] = q.get(key, Decimal(0)) - amount.quantity
        conversions = {(version, event_type): -1} if outcome.completes else {}
        return self.merge(AggregateState(self.contract_id, self.period_key, cpa_quantities=q, cpa_conversions=conversions))

    def with_offset(self, topic: str, partition: int, offset: int) -> AggregateState:
        return self.merge(AggregateState(self.contract_id, self.period_key, source_offsets={f"{topic}:{partition}": offset}))

    # -- merge

    def merge(self, other: AggregateState) -> AggregateState:
        if (self.contract_id, self.period_key) != (other.contract_id, other.period_key):
            raise ValueError("only states of the same contract and period merge")
        offsets = dict(self.source_offsets)
        for k, v in other.source_offsets.items():
            offsets[k] = max(offsets.get(k, v), v)
        return AggregateState(
            self.contract_id,
            self.period_key,
            cpm_impressions=_add_maps(self.cpm_impressions, other.cpm_impressions, 0),
            cpa_quantities=_add_maps(self.cpa_quantities, other.cpa_quantities, Decimal(0)),
            cpa_conversions=_add_maps(self.cpa_conversions, other.cpa_conversions, 0),
            source_offsets=offsets,
        )

    def includes(self, topic: str, partition: int, offset: int) -> bool:
        """True when the source record at ``offset`` is already counted (replay dedupe)."""
        return self.source_offsets.get(f"{topic}:{partition}", -1) >= offset

    # -- serialisation

    def to_dict(self) -> dict[str, Any]:
        return {
            "contract_id": self.contract_id,
            "period_key": self.period_key,
            "cpm_impressions": {str(v): n for v, n in sorted(self.cpm_impressions.items())},
            "cpa_quantities": {k.to_str(): _canon(q) for k, q in sorted(self.cpa_quantities.items())},
            "cpa_conversions": {f"{v}|{e}": n for (v, e), n in sorted(self.cpa_conversions.items())},
            "source_offsets": dict(sorted(self.source_offsets.items())),
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> AggregateState:
        conversions: dict[tuple[int, str], int] = {}
        for k, n in d.get("cpa_conversions", {}).items():
            version, event_type = k.split("|", 1)
            conversions[(int(version), event_type)] = int(n)
        return AggregateState(
            contract_id=str(d["contract_id"]),
            period_key=str(d["period_key"]),
            cpm_impressions={int(v): int(n) for v, n in d.get("cpm_impressions", {}).items()},
            cpa_quantities={CpaPointKey.from_str(k): parse_amount(q) for k, q in d.get("cpa_quantities", {}).items()},
            cpa_conversions=conversions,
            source_offsets={str(k): int(v) for k, v in d.get("source_offsets", {}).items()},
        )


def _key(version: int, event_type: str, leg: Leg, partner_id: str, amount: LegAmount) -> CpaPointKey:
    return CpaPointKey(version, event_type, leg.value, partner_id, amount.basis, amount.unit_price)


def merge_all(states: Iterable[AggregateState], contract_id: str, period_key: str) -> AggregateState:
    total = AggregateState.empty(contract_id, period_key)
    for s in states:
        total = total.merge(s)
    return total
