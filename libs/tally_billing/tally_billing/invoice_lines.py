"""Invoice and payout-statement lines from a closed period's totals and its adjustments.

Every line is ``quantity × unit_price`` at full precision, rounded once with
:func:`~tally_billing.money.round_to_minor`; a total is the sum of its rounded lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from tally_billing.aggregate import AggregateState, CpaPointKey
from tally_billing.cpa import Leg
from tally_billing.cpm import CpmRating
from tally_billing.money import Currency, exact, round_to_minor

__all__ = [
    "Adjustment",
    "InvoiceLine",
    "LineKind",
    "adjustment_lines",
    "cpa_lines",
    "cpm_adjustments",
    "cpm_lines",
    "line_amount",
    "lines_total",
    "payout_lines",
    "shortfall_amount",
]


class LineKind(StrEnum):
    CPM = "cpm"
    OVER_DELIVERY = "over_delivery"
    MINIMUM_SHORTFALL = "minimum_shortfall"
    CPA = "cpa"
    PAYOUT = "payout"
    ADJUSTMENT = "adjustment"


@dataclass(frozen=True, kw_only=True)
class InvoiceLine:
    contract_id: str
    #: the period the line bills (for an adjustment: the open period it is billed in)
    period_key: str
    kind: LineKind
    description: str
    #: impressions, conversions, order value, or 1 for a shortfall; negative for credits
    quantity: Decimal
    unit: str
    #: exact price of one unit (CPM: rate ÷ 1000)
    unit_price: Decimal
    #: round_to_minor(quantity × unit_price): rounded once, here
    amount: Decimal
    version: int | None = None
    event_type: str | None = None
    partner_id: str | None = None
    #: for adjustments: the closed period being corrected, and what it corrects
    corrects_period_key: str | None = None
    reference: str | None = None


def line_amount(quantity: Decimal, unit_price: Decimal, cur: Currency) -> Decimal:
    """The one place a line's amount is made: exact product, rounded once."""
    with exact():
        full = quantity * unit_price
    return round_to_minor(full, cur)


def lines_total(lines: Iterable[InvoiceLine]) -> Decimal:
    """Sum of already-rounded line amounts (exact; no further rounding)."""
    with exact():
        return sum((line.amount for line in lines), Decimal(0))


def shortfall_amount(minimum: Decimal | None, billed: Decimal) -> Decimal:
    """Minimum commitment minus what the period's rounded lines bill, if positive."""
    if minimum is None:
        return Decimal(0)
    with exact():
        gap = minimum - billed
    return gap if gap > 0 else Decimal(0)


def cpm_lines(contract_id: str, period_key: str, rating: CpmRating, cur: Currency) -> list[InvoiceLine]:
    """CPM lines per price point, zero-priced over-delivery lines, and a shortfall line."""
    lines: list[InvoiceLine] = []
    for p in rating.price_points:
        lines.append(
            InvoiceLine(
                contract_id=contract_id,
                period_key=period_key,
                kind=LineKind.CPM,
                description=f"Impressions at {p.rate_cpm} CPM (version {p.version}, band {p.band_index + 1})",
                quantity=Decimal(p.impressions),
                unit="impression",
                unit_price=p.unit_price,
                amount=line_amount(Decimal(p.impressions), p.unit_price, cur),
                version=p.version,
            )
        )
    for version, n in rating.over_delivery:
        lines.append(
            InvoiceLine(
                contract_id=contract_id,
                period_key=period_key,
                kind=LineKind.OVER_DELIVERY,
                description=f"Over-delivery past budget cap (version {version}), not billed",
                quantity=Decimal(n),
                unit="impression",
                unit_price=Decimal(0),
                amount=line_amount(Decimal(n), Decimal(0), cur),
                version=version,
            )
        )
    gap = shortfall_amount(rating.minimum_commitment, lines_total(lines))
    if gap > 0:
        lines.append(
            InvoiceLine(
                contract_id=contract_id,
                period_key=period_key,
                kind=LineKind.MINIMUM_SHORTFALL,
                description=f"Minimum commitment {rating.minimum_commitment} not reached: shortfall",
                quantity=Decimal(1),
                unit="period",
                unit_price=gap,
                amount=line_amount(Decimal(1), gap, cur),
            )
        )
    return lines


def _cpa_leg_lines(
    contract_id: str, period_key: str, items: Iterable[tuple[CpaPointKey, Decimal]], cur: Currency, kind: LineKind
) -> list[InvoiceLine]:
    lines = []
    for key, quantity in sorted(items):
        if quantity == 0:
            continue
        what = "conversions" if key.basis == "conversions" else "order value"
        lines.append(
            InvoiceLine(
                contract_id=contract_id,
                period_key=period_key,
                kind=kind,
                description=f"{key.event_type}: {what} at {key.unit_price} (version {key.version})",
                quantity=quantity,
                unit="conversion" if key.basis == "conversions" else "order_value",
                unit_price=key.unit_price,
                amount=line_amount(quantity, key.unit_price, cur),
                version=key.version,
                event_type=key.event_type,
                partner_id=key.partner_id if kind is LineKind.PAYOUT else None,
            )
        )
    return lines


def _merge_by_key(items: Iterable[tuple[CpaPointKey, Decimal]]) -> dict[CpaPointKey, Decimal]:
    out: dict[CpaPointKey, Decimal] = {}
    with exact():
        for k, q in items:
            out[k] = out.get(k, Decimal(0)) + q
    return out


def cpa_lines(state: AggregateState, cur: Currency) -> list[InvoiceLine]:
    """Advertiser CPA lines: one per (version, event type, unit price), all partners together."""
    merged = _merge_by_key(
        (CpaPointKey(k.version, k.event_type, k.leg, "", k.basis, k.unit_price), q)
        for k, q in state.cpa_quantities.items()
        if k.leg == Leg.ADVERTISER.value
    )
    return _cpa_leg_lines(state.contract_id, state.period_key, merged.items(), cur, LineKind.CPA)


def payout_lines(state: AggregateState, partner_id: str, cur: Currency) -> list[InvoiceLine]:
    """A partner's payout-statement lines for one contract and period."""
    items = [(k, q) for k, q in state.cpa_quantities.items() if k.leg == Leg.PARTNER.value and k.partner_id == partner_id]
    return _cpa_leg_lines(state.contract_id, state.period_key, items, cur, LineKind.PAYOUT)


@dataclass(frozen=True, kw_only=True)
class Adjustment:
    """A correction of a closed period, billed in the open one: a quantity delta at a price."""

    contract_id: str
    corrects_period_key: str
    reason: str  # "late_event" | "ivt_credit" | "reversal" | "backdated_amendment" | "minimum_commitment"
    unit: str
    unit_price: Decimal
    quantity: Decimal
    version: int | None = None
    event_type: str | None = None
    partner_id: str | None = None
    leg: str = Leg.ADVERTISER.value
    reference: str | None = None


def cpm_adjustments(contract_id: str, corrects_period_key: str, closed: CpmRating, corrected: CpmRating, reason: str) -> list[Adjustment]:
    """What must be added to a closed CPM period so it reads as ``corrected``: the difference
    per price point (and per over-delivery version), as quantity deltas at the original rates."""
    before: dict[tuple[int, int, Decimal], int] = {}
    after: dict[tuple[int, int, Decimal], int] = {}
    for rating, into in ((closed, before), (corrected, after)):
        for p in rating.price_points:
            k = (p.version, p.band_index, p.unit_price)
            into[k] = into.get(k, 0) + p.impressions
        for version, n in rating.over_delivery:
            k = (version, -1, Decimal(0))
            into[k] = into.get(k, 0) + n
    out = []
    for k in sorted(set(before) | set(after)):
        delta = after.get(k, 0) - before.get(k, 0)
        if delta:
            out.append(
                Adjustment(
                    contract_id=contract_id,
                    corrects_period_key=corrects_period_key,
                    reason=reason,
                    unit="impression",
                    unit_price=k[2],
                    quantity=Decimal(delta),
                    version=k[0],
                )
            )
    return out


def adjustment_lines(period_key: str, adjustments: Sequence[Adjustment], cur: Currency) -> list[InvoiceLine]:
    """Adjustment lines in the open period ``period_key``, each pointing at what it corrects."""
    return [
        InvoiceLine(
            contract_id=a.contract_id,
            period_key=period_key,
            kind=LineKind.ADJUSTMENT,
            description=f"Adjustment ({a.reason}) of period {a.corrects_period_key}",
            quantity=a.quantity,
            unit=a.unit,
            unit_price=a.unit_price,
            amount=line_amount(a.quantity, a.unit_price, cur),
            version=a.version,
            event_type=a.event_type,
            partner_id=a.partner_id,
            corrects_period_key=a.corrects_period_key,
            reference=a.reference,
        )
        for a in adjustments
    ]
