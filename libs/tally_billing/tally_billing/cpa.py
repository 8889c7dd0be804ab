"""CPA rating: price and payout of one conversion, tiers, overrides, caps, reversals.

A conversion is rated once, when it is attributed, and never repriced: tiers are therefore
graduated by construction (the conversion's tier is fixed by how many conversions of its event
type the contract already counted in the period).  Amounts are exact; rounding happens only on
invoice and statement lines.

Each priced leg (advertiser price, partner payout) is kept as a *quantity at a unit price*:
a flat price is 1 conversion × the amount; a percentage is the order value × percent ÷ 100.
Lines aggregate those quantities per unit price, so a line is always quantity × unit price.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from tally_billing.money import exact
from tally_billing.periods import ensure_aware
from tally_billing.terms import CapLimits, CpaTerms, PartnerOverride, PayoutRow, Price, PriceKind

__all__ = [
    "CapCheck",
    "CpaUsage",
    "Leg",
    "LegAmount",
    "PricedConversion",
    "Reversal",
    "ReversalOutcome",
    "ReversalRefused",
    "check_caps",
    "leg_amount",
    "override_for",
    "price_conversion",
    "reverse",
]


class Leg(StrEnum):
    ADVERTISER = "advertiser"
    PARTNER = "partner"


@dataclass(frozen=True)
class LegAmount:
    """One priced leg: ``quantity`` units (conversions, or order value) × ``unit_price``."""

    basis: str  # "conversions" | "order_value"
    quantity: Decimal
    unit_price: Decimal

    @property
    def amount(self) -> Decimal:
        with exact():
            return self.quantity * self.unit_price


def leg_amount(price: Price, order_value: Decimal | None) -> LegAmount:
    if price.kind is PriceKind.FLAT:
        assert price.amount is not None
        return LegAmount("conversions", Decimal(1), price.amount)
    assert price.percent is not None
    if order_value is None:
        raise ValueError("a percentage price needs the conversion's order value")
    with exact():
        return LegAmount("order_value", order_value, price.percent / 100)


def _specificity(o: PartnerOverride) -> int:
    return 1 if o.event_type is not None else 0


def override_for(cpa: CpaTerms, partner_id: str, event_type: str, on: date, aspect: str) -> PartnerOverride | None:
    """The partner override deciding ``aspect`` (``partner_payout`` | ``lookback_days`` | ``caps``).

    Candidates: overrides for the partner, effective on or before ``on`` (a local date in the
    contract's zone), whose event type is unset or equal, and which replace that aspect.  The
    most specific wins (an event-type override beats a partner-wide one), then the latest
    ``effective_from``.  Aspects are decided independently, so a partner-wide window override
    and an event-type payout override can both apply.
    """
    matches = [
        o
        for o in cpa.partner_overrides
        if o.partner_id == partner_id and o.effective_from <= on and o.event_type in (None, event_type) and getattr(o, aspect) is not None
    ]
    if not matches:
        return None
    return max(matches, key=lambda o: (_specificity(o), o.effective_from))


@dataclass(frozen=True)
class PricedConversion:
    event_type: str
    #: None = the row's base prices, else the index into the row's tiers
    tier_index: int | None
    advertiser_price: Price
    partner_payout: Price
    advertiser: LegAmount
    partner: LegAmount
    payout_override: PartnerOverride | None

    @property
    def advertiser_amount(self) -> Decimal:
        return self.advertiser.amount

    @property
    def partner_amount(self) -> Decimal:
        return self.partner.amount


def _tier(row: PayoutRow, prior_count: int) -> tuple[int | None, Price, Price]:
    chosen: tuple[int | None, Price, Price] = (None, row.advertiser_price, row.partner_payout)
    for i, tier in enumerate(row.tiers):
        if tier.from_conversions <= prior_count:
            chosen = (i, tier.advertiser_price, tier.partner_payout)
    return chosen


def price_conversion(
    cpa: CpaTerms,
    *,
    event_type: str,
    partner_id: str,
    order_value: Decimal | None,
    local_date: date,
    prior_event_type_count: int,
) -> PricedConversion:
    """Price one conversion.  ``prior_event_type_count`` = conversions of this event type the
    contract already billed in the period; the tier whose ``from_conversions`` ≤ that count
    applies.  A partner payout override replaces the (tiered) partner payout."""
    row = cpa.payout_for(event_type)
    if row is None:
        raise ValueError(f"no payout row for event type {event_type!r}")
    tier_index, adv_price, partner_price = _tier(row, prior_event_type_count)
    override = override_for(cpa, partner_id, event_type, local_date, "partner_payout")
    if override is not None and override.partner_payout is not None:
        partner_price = override.partner_payout
    return PricedConversion(
        event_type=event_type,
        tier_index=tier_index,
        advertiser_price=adv_price,
        partner_payout=partner_price,
        advertiser=leg_amount(adv_price, order_value),
        partner=leg_amount(partner_price, order_value),
        payout_override=override,
    )


@dataclass(frozen=True)
class CpaUsage:
    """What a contract (or one partner on it) has already used of its caps in a period."""

    conversions: int = 0
    #: exact advertiser amount billed
    amount: Decimal = Decimal(0)

    def plus(self, amount: Decimal, conversions: int = 1) -> CpaUsage:
        with exact():
            return CpaUsage(self.conversions + conversions, self.amount + amount)


@dataclass(frozen=True)
class CapCheck:
    capped: bool
    #: "contract" or "partner" — the cap that would be exceeded (contract checked first)
    by: str | None = None


def _exceeds(limits: CapLimits, usage: CpaUsage, amount: Decimal) -> bool:
    if limits.max_conversions_per_period is not None and usage.conversions + 1 > limits.max_conversions_per_period:
        return True
    if limits.max_amount_per_period is not None:
        with exact():
            return usage.amount + amount > limits.max_amount_per_period
    return False


def check_caps(
    contract_limits: CapLimits,
    partner_limits: CapLimits,
    contract_usage: CpaUsage,
    partner_usage: CpaUsage,
    advertiser_amount: Decimal,
) -> CapCheck:
    """Whether billing this conversion would pass a cap.  Whichever cap is reached first
    stops it; a conversion is never billed in part, so a cap is never exceeded."""
    if _exceeds(contract_limits, contract_usage, advertiser_amount):
        return CapCheck(True, "contract")
    if _exceeds(partner_limits, partner_usage, advertiser_amount):
        return CapCheck(True, "partner")
    return CapCheck(False)


def partner_limits(cpa: CpaTerms, partner_id: str, event_type: str, on: date) -> CapLimits:
    """Per-partner caps for ``partner_id``: an override's caps replace the contract's."""
    o = override_for(cpa, partner_id, event_type, on, "caps")
    return o.caps if o is not None and o.caps is not None else cpa.caps.per_partner


__all__ += ["partner_limits"]


# --------------------------------------------------------------------------- reversals


class ReversalRefused(StrEnum):
    ALREADY_REVERSED = "already_reversed"
    EXCEEDS_ORIGINAL = "exceeds_original"
    LOCKED = "locked"
    INVALID = "invalid"


@dataclass(frozen=True)
class Reversal:
    reversal_id: str
    conversion_id: str
    occurred_at: datetime
    #: None = full reversal; otherwise the refunded part of the order value
    refund_order_value: Decimal | None = None


@dataclass(frozen=True)
class ReversalOutcome:
    reversal_id: str
    conversion_id: str
    refused: ReversalRefused | None
    #: quantities removed from each leg (positive numbers, at the original unit prices)
    advertiser: LegAmount | None = None
    partner: LegAmount | None = None
    #: True when, with this reversal, the whole conversion has been reversed
    completes: bool = False
    #: order value this reversal refunded (for a full reversal: what was left), if known
    refunded_order_value: Decimal | None = None

    @property
    def advertiser_amount(self) -> Decimal:
        return Decimal(0) if self.advertiser is None else self.advertiser.amount

    @property
    def partner_amount(self) -> Decimal:
        return Decimal(0) if self.partner is None else self.partner.amount


def _reversed_leg(original: LegAmount, refund: Decimal | None, completes: bool, already: Decimal) -> LegAmount:
    if original.basis == "conversions":
        # A flat price pays for the action, not the order: only a complete reversal removes it.
        return LegAmount(original.basis, Decimal(1) if completes else Decimal(0), original.unit_price)
    with exact():
        quantity = original.quantity - already if refund is None else refund
    return LegAmount(original.basis, quantity, original.unit_price)


def reverse(
    priced: PricedConversion,
    *,
    conversion_id: str,
    conversion_at: datetime,
    order_value: Decimal | None,
    earlier: tuple[ReversalOutcome, ...],
    reversal: Reversal,
    lock_days: int | None,
) -> ReversalOutcome:
    """Reverse (fully or partly) an attributed conversion, repeating its billed amounts.

    * Percentage legs give back percent × refunded order value at the original percentage;
      a full reversal gives back whatever is left, so all reversals together equal exactly
      what was billed.  Flat legs are given back only when the conversion is fully reversed
      (a full reversal, or partial refunds adding up to the whole order value).
    * Refused: when already fully reversed, when refunds would exceed the order value, when
      the lock (``lock_days`` after the conversion's event time) has passed, or malformed.
    """

    def refuse(why: ReversalRefused) -> ReversalOutcome:
        return ReversalOutcome(reversal.reversal_id, conversion_id, why)

    if reversal.conversion_id != conversion_id:
        return refuse(ReversalRefused.INVALID)
    accepted = [e for e in earlier if e.refused is None]
    if any(e.completes for e in accepted):
        return refuse(ReversalRefused.ALREADY_REVERSED)
    if lock_days is not None and ensure_aware(reversal.occurred_at) > ensure_aware(conversion_at) + timedelta(days=lock_days):
        return refuse(ReversalRefused.LOCKED)
    with exact():
        refunded_before = sum((e.refunded_order_value or Decimal(0) for e in accepted), Decimal(0))
        refund = reversal.refund_order_value
        refunded: Decimal | None
        if refund is not None:
            if order_value is None or refund <= 0:
                return refuse(ReversalRefused.INVALID)
            if refunded_before + refund > order_value:
                return refuse(ReversalRefused.EXCEEDS_ORIGINAL)
            completes = refunded_before + refund == order_value
            refunded = refund
        else:
            completes = True
            refunded = None if order_value is None else order_value - refunded_before
    adv_before = _already(accepted, "advertiser")
    partner_before = _already(accepted, "partner")
    return ReversalOutcome(
        reversal_id=reversal.reversal_id,
        conversion_id=conversion_id,
        refused=None,
        advertiser=_reversed_leg(priced.advertiser, refund, completes, adv_before),
        partner=_reversed_leg(priced.partner, refund, completes, partner_before),
        completes=completes,
        refunded_order_value=refunded,
    )


def reversed_amounts(priced: PricedConversion, *, refunded_order_value: Decimal | None, completes: bool) -> tuple[Decimal, Decimal]:
    """What one accepted reversal gives back at the prices of ``priced``, as exact negative
    (advertiser amount, partner payout): a flat leg only when the reversal completes the
    conversion, a percentage leg its percentage of the order value this reversal refunded (for a
    full reversal, what was left). The same rule as ``reverse``, from the reversal's recorded
    facts, so a re-priced conversion re-prices its reversals too."""
    adv = _reversed_leg(priced.advertiser, refunded_order_value, completes, Decimal(0))
    par = _reversed_leg(priced.partner, refunded_order_value, completes, Decimal(0))
    with exact():
        return -adv.amount, -par.amount


__all__ += ["reversed_amounts"]


def _already(accepted: list[ReversalOutcome], leg: str) -> Decimal:
    with exact():
        return sum((getattr(e, leg).quantity for e in accepted if getattr(e, leg) is not None), Decimal(0))
