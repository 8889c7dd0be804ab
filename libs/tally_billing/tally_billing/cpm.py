"""CPM rating: billable impression counts per version → price points, over-delivery, caps.

Input is counts, not money: for one contract and one period, the billable impressions
(valid, deduplicated, in flight, covered campaign) of each version in event-time order.
Output is price points (version, band, rate, impressions) whose amounts are derived exactly;
nothing here rounds.  The same counts always give the same rating, however they were batched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from tally_billing.money import exact
from tally_billing.rating import Slice
from tally_billing.rating import flat as flat_card
from tally_billing.rating import graduated as graduated_card
from tally_billing.rating import volume as volume_card
from tally_billing.terms import ContractTerms, RateCard, RateCardKind, TierBasis
from tally_billing.versions import ContractVersion

__all__ = [
    "BUDGET_ALERT_THRESHOLDS_PCT",
    "CpmPricePoint",
    "CpmRating",
    "VersionCount",
    "budget_alerts_crossed",
    "impressions_amount",
    "rate_cpm_period",
    "slices_for",
]

BUDGET_ALERT_THRESHOLDS_PCT = (50, 80, 100)
_MILLE = Decimal(1000)


def impressions_amount(impressions: int, rate_cpm: Decimal) -> Decimal:
    """impressions × rate ÷ 1000 at full precision (exact: dividing by 1000 never rounds)."""
    with exact():
        return Decimal(impressions) * rate_cpm / _MILLE


@dataclass(frozen=True)
class VersionCount:
    version: ContractVersion
    #: billable-before-cap impressions of this version in the period
    impressions: int


@dataclass(frozen=True)
class CpmPricePoint:
    version: int
    band_index: int
    rate_cpm: Decimal
    impressions: int

    @property
    def amount(self) -> Decimal:
        return impressions_amount(self.impressions, self.rate_cpm)


@dataclass(frozen=True)
class CpmRating:
    #: billed price points in event-time order (version, then band)
    price_points: tuple[CpmPricePoint, ...]
    #: impressions past a budget cap, per version: reported at zero price, never billed
    over_delivery: tuple[tuple[int, int], ...]
    #: the per-period minimum commitment of the latest version in the period, if any
    minimum_commitment: Decimal | None

    @property
    def billable_impressions(self) -> int:
        return sum(p.impressions for p in self.price_points)

    @property
    def over_delivery_impressions(self) -> int:
        return sum(n for _, n in self.over_delivery)

    @property
    def amount(self) -> Decimal:
        """Exact (unrounded) amount of the period: what budget caps are measured against."""
        with exact():
            return sum((p.amount for p in self.price_points), Decimal(0))


def slices_for(card: RateCard, *, before: int, units: int, reached: int) -> list[Slice]:
    """Dispatch to the pricing model of ``card``."""
    model = {
        RateCardKind.FLAT: flat_card.rate,
        RateCardKind.GRADUATED: graduated_card.rate,
        RateCardKind.VOLUME: volume_card.rate,
    }[card.kind]
    return model(card.bands, before=before, units=units, reached=reached)


def _cpm(terms: ContractTerms) -> tuple[RateCard, Decimal | None, Decimal | None, Decimal | None]:
    if terms.cpm is None:
        raise ValueError("not a CPM contract")
    caps = terms.cpm.budget_caps
    return terms.cpm.rate_card, caps.per_period, caps.total, terms.cpm.minimum_commitment_per_period


def _max_units_within(capacity: Decimal, rate_cpm: Decimal) -> int | None:
    """Largest n with n × rate ÷ 1000 ≤ capacity (floor: never exceed a cap); None = unlimited."""
    if rate_cpm == 0:
        return None
    if capacity <= 0:
        return 0
    with exact() as ctx:
        return int(ctx.divide_int(capacity * _MILLE, rate_cpm))


def _rate_once(
    counts: Sequence[VersionCount], prior_lifetime_impressions: int, prior_billed_total: Decimal, reached_in_period: int
) -> tuple[list[CpmPricePoint], list[tuple[int, int]]]:
    points: list[CpmPricePoint] = []
    over: dict[int, int] = {}
    in_period = 0
    spent_period = Decimal(0)
    spent_total = prior_billed_total
    capped = False
    for vc in counts:
        card, per_period_cap, total_cap, _ = _cpm(vc.version.terms)
        lifetime = card.tier_basis is TierBasis.LIFETIME
        offset = prior_lifetime_impressions if lifetime else 0
        slices = slices_for(card, before=offset + in_period, units=vc.impressions, reached=offset + reached_in_period)
        for s in slices:
            billable = 0 if capped else s.units
            if not capped:
                with exact():
                    capacities = [c for c in (
                        None if per_period_cap is None else per_period_cap - spent_period,
                        None if total_cap is None else total_cap - spent_total,
                    ) if c is not None]  # fmt: skip
                if capacities:
                    limit = _max_units_within(min(capacities), s.rate)
                    if limit is not None and limit < s.units:
                        billable, capped = limit, True
            if billable:
                point = CpmPricePoint(vc.version.version, s.band_index, s.rate, billable)
                points.append(point)
                with exact():
                    spent_period += point.amount
                    spent_total += point.amount
            if s.units - billable:
                over[vc.version.version] = over.get(vc.version.version, 0) + s.units - billable
        in_period += vc.impressions
    return points, sorted(over.items())


def rate_cpm_period(
    counts: Sequence[VersionCount],
    *,
    prior_lifetime_impressions: int = 0,
    prior_billed_total: Decimal = Decimal(0),
) -> CpmRating:
    """Rate one period of one CPM contract.

    ``counts`` are per version in event-time order (a version's impressions all precede the
    next version's, because versions are effective-dated).  ``prior_lifetime_impressions`` are
    the billable impressions of earlier periods (tier basis ``lifetime``) and
    ``prior_billed_total`` the exact amount billed in earlier periods (the ``total`` cap).

    Tier position runs across versions: the second version's impressions continue where the
    first's stopped.  Budget caps stop billing at the largest whole impression count whose
    amount does not exceed the cap; every later impression of the period is over-delivery.
    Volume cards price every unit at the band reached by the *billed* count; since capping can
    lower that count (and so change the band), the rating is repeated until it is stable.
    """
    if any(vc.impressions < 0 for vc in counts):
        raise ValueError("impression counts must be ≥ 0")
    ordered = sorted(counts, key=lambda vc: (vc.version.effective_from, vc.version.version))
    reached = sum(vc.impressions for vc in ordered)
    points, over = _rate_once(ordered, prior_lifetime_impressions, prior_billed_total, reached)
    uses_volume = any(_cpm(vc.version.terms)[0].kind is RateCardKind.VOLUME for vc in ordered)
    # The billed count can only shrink between rounds, and with it the band index, so this
    # terminates in at most (number of bands + 1) rounds; the bound is a guard, not a tuning knob.
    for _ in range(64):
        billed = sum(p.impressions for p in points)
        if not uses_volume or billed == reached:
            break
        reached = billed
        points, over = _rate_once(ordered, prior_lifetime_impressions, prior_billed_total, reached)
    minimum = None
    if ordered:
        minimum = _cpm(ordered[-1].version.terms)[3]
    return CpmRating(price_points=tuple(points), over_delivery=tuple(over), minimum_commitment=minimum)


def budget_alerts_crossed(spent_before: Decimal, spent_after: Decimal, cap: Decimal | None) -> list[int]:
    """Thresholds (50, 80, 100 % of ``cap``) crossed when spend went from before to after."""
    if cap is None or cap <= 0:
        return []
    crossed = []
    with exact():
        for pct in BUDGET_ALERT_THRESHOLDS_PCT:
            level = cap * pct / 100
            if spent_before < level <= spent_after:
                crossed.append(pct)
    return crossed
