"""Attribution decision: one conversion, its household's candidate exposures, the CPA
contracts of its advertiser → exactly one outcome, attributed or rejected with a reason.

The decision is a pure function of its inputs and does not depend on the order in which
candidates or contracts are given: every choice uses a total order on
(exposure time, exposure id, contract id, campaign id, partner id).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from functools import cached_property

from tally_billing.cpa import (
    CpaUsage,
    PricedConversion,
    check_caps,
    override_for,
    partner_limits,
    price_conversion,
    reversed_amounts,
)
from tally_billing.money import exact_amount
from tally_billing.periods import ensure_aware, flight_end_instant, period_containing, zone
from tally_billing.terms import AttributionModel, ContractType
from tally_billing.versions import ContractVersion, step_instants, version_in_force

__all__ = [
    "Attributed",
    "Conversion",
    "CpaContract",
    "DecidedConversion",
    "DedupeFacts",
    "Exposure",
    "Impression",
    "PriorConversion",
    "RejectReason",
    "Rejected",
    "Repriced",
    "RuleApplied",
    "UsageSnapshot",
    "decide",
    "reprice",
    "reprice_reversal",
]


@dataclass(frozen=True)
class Impression:
    """An ad impression as the library sees it (decoded from whatever transport carried it)."""

    impression_id: str
    campaign_id: str
    household_id: str
    occurred_at: datetime
    partner_id: str
    #: GIVT/SIVT flagged impressions are never billable
    invalid_traffic: bool = False


@dataclass(frozen=True)
class Exposure:
    """A household's impression, as an attribution candidate."""

    exposure_id: str
    household_id: str
    campaign_id: str
    partner_id: str
    occurred_at: datetime

    @staticmethod
    def of(i: Impression) -> Exposure:
        return Exposure(i.impression_id, i.household_id, i.campaign_id, i.partner_id, i.occurred_at)


@dataclass(frozen=True, kw_only=True)
class Conversion:
    conversion_id: str
    advertiser_id: str
    household_id: str
    event_type: str
    occurred_at: datetime
    order_id: str | None = None
    order_value: Decimal | None = None
    currency: str | None = None


@dataclass(frozen=True)
class CpaContract:
    contract_id: str
    versions: tuple[ContractVersion, ...]
    #: ``_VersionTable`` of ``versions``, built on first use (a decision asks it once per
    #: exposure; the contract book keeps the same ``CpaContract`` until the contract changes)
    _table: _VersionTable | None = field(default=None, init=False, repr=False, compare=False)

    def in_force(self, at: datetime) -> ContractVersion | None:
        """``version_in_force(self.versions, at)``, from the table."""
        return self._versions().lookup(at)[0]

    def rating(self, at: datetime) -> tuple[ContractVersion | None, bool]:
        """``_plain_rating_version(self, at)``: the version that prices a conversion at ``at``
        and whether it does so in the attribution tail, from the table."""
        return self._versions().lookup(at)[1]

    def _versions(self) -> _VersionTable:
        t = self._table
        if t is None:
            t = _VersionTable(self.versions)
            object.__setattr__(self, "_table", t)
        return t


class _VersionTable:
    """``version_in_force`` and ``_plain_rating_version`` of one contract's versions as a step
    function of time. Both change only where some version's ``effective_from``,
    ``effective_to``, flight start or (one microsecond after) flight end lies, so each is
    computed — by those very functions — once at every such instant, and an instant is then
    looked up by bisection: the same answer, without a zone conversion per exposure."""

    __slots__ = ("starts", "values")

    def __init__(self, versions: tuple[ContractVersion, ...]) -> None:
        self.starts = step_instants(versions)
        contract = CpaContract("", versions)
        self.values = [(version_in_force(versions, p), _plain_rating_version(contract, p)) for p in self.starts]

    def lookup(self, at: datetime) -> tuple[ContractVersion | None, tuple[ContractVersion | None, bool]]:
        i = bisect_right(self.starts, at) - 1
        # before every step no version has started: neither in force nor rating
        return self.values[i] if i >= 0 else (None, (None, False))


@dataclass(frozen=True)
class PriorConversion:
    """An earlier attributed conversion of the same household (household dedupe window)."""

    contract_id: str
    event_type: str
    occurred_at: datetime


@dataclass(frozen=True)
class DedupeFacts:
    conversion_id_seen: bool = False
    #: the order id was already counted for this advertiser
    order_id_seen: bool = False
    household_conversions: tuple[PriorConversion, ...] = ()


@dataclass(frozen=True)
class UsageSnapshot:
    """Cap and tier usage in the conversion's period, per contract (absent = nothing used)."""

    contract: Mapping[str, CpaUsage] = field(default_factory=dict)
    partner: Mapping[tuple[str, str], CpaUsage] = field(default_factory=dict)
    event_type_count: Mapping[tuple[str, str], int] = field(default_factory=dict)


class RejectReason(StrEnum):
    NO_EXPOSURE = "no_exposure"
    OUTSIDE_WINDOW = "outside_window"
    TOO_FAST = "too_fast"
    DUPLICATE = "duplicate"
    CAPPED = "capped"
    NO_ACTIVE_CONTRACT = "no_active_contract"
    INVALID = "invalid"


@dataclass(frozen=True)
class RuleApplied:
    model: AttributionModel
    lookback_days: int
    min_delay_seconds: int
    #: tier index of the payout row (None = base prices)
    tier_index: int | None
    #: effective_from (ISO date) of the partner override that set the payout, if any
    payout_override_from: str | None
    attribution_tail: bool


@dataclass(frozen=True)
class Attributed:
    conversion_id: str
    contract_id: str
    version: int
    partner_id: str
    exposure_id: str
    exposure_at: datetime
    period_key: str
    rule: RuleApplied
    priced: PricedConversion
    #: conversions of this event type the contract had already billed in the period (the tier
    #: position), kept so a backdated amendment can re-price it without re-deciding it
    tier_position: int = 0

    # computed once (a decision reads each amount two or three times; each computation enters
    # the money context); the decision is frozen, so the amounts cannot change
    @cached_property
    def advertiser_amount(self) -> Decimal:
        return self.priced.advertiser_amount

    @cached_property
    def partner_amount(self) -> Decimal:
        return self.priced.partner_amount


@dataclass(frozen=True)
class Rejected:
    conversion_id: str
    reason: RejectReason
    detail: str
    #: for ``capped``: the attribution that the cap stopped
    would_have_been: Attributed | None = None


@dataclass(frozen=True)
class _Candidate:
    contract_id: str
    version: ContractVersion
    exposure: Exposure
    tail: bool

    def order_key(self) -> tuple[datetime, str, str, str, str]:
        # A total order over every field that can differ, so even malformed input (one
        # exposure id reported twice with different partners) is decided the same way
        # whatever the order of the candidates.
        e = self.exposure
        return (ensure_aware(e.occurred_at), e.exposure_id, self.contract_id, e.campaign_id, e.partner_id)


def _plain_rating_version(contract: CpaContract, at: datetime) -> tuple[ContractVersion | None, bool]:
    """Version that prices a conversion at ``at``; ``tail`` when the contract has ended but its
    terms keep the attribution tail (the last version in force then prices it). Computed from
    the versions: ``CpaContract.rating`` tabulates it."""
    v = version_in_force(contract.versions, at)
    if v is not None:
        return v, False
    started = [x for x in contract.versions if x.effective_from <= at]
    if not started:
        return None, False
    last = max(started, key=lambda x: (x.effective_from, x.version))
    if last.terms.common.attribution_tail:
        return last, True
    return None, False


def _contract_end(v: ContractVersion) -> datetime | None:
    ends = [e for e in (v.effective_to,) if e is not None]
    if v.terms.common.flight_end is not None:
        ends.append(flight_end_instant(v.terms.common.flight_end, v.terms.common.time_zone))
    return min(ends) if ends else None


def decide(
    conversion: Conversion,
    exposures: Sequence[Exposure],
    contracts: Sequence[CpaContract],
    *,
    dedupe: DedupeFacts = DedupeFacts(),
    usage: UsageSnapshot = UsageSnapshot(),
) -> Attributed | Rejected:
    """Decide one conversion.  Steps, each a reason when it fails:

    1. ``invalid`` — empty event type, negative order value;
    2. ``duplicate`` — conversion id already counted, or order id already counted for the advertiser;
    3. ``no_active_contract`` — no CPA contract of the advertiser in force at the conversion
       (or in its attribution tail) that prices the event type;
    4. exposures of the household at or before the conversion, on a campaign covered by the
       contract's version in force at impression time: none → ``no_exposure``;
    5. window (partner override > event type > contract default, from the version in force at
       the conversion) and minimum delay; household dedupe window per contract;
       nothing left → ``duplicate`` / ``too_fast`` / ``outside_window`` (in that order);
    6. each contract picks by its model (last or first touch); across contracts the latest
       touch wins;
    7. ``capped`` when the contract cap or the partner cap would be passed.
    """
    c = conversion
    cid = c.conversion_id
    at = ensure_aware(c.occurred_at)
    if not c.event_type or (c.order_value is not None and c.order_value < 0):
        return Rejected(cid, RejectReason.INVALID, "event type missing or order value negative")
    if dedupe.conversion_id_seen:
        return Rejected(cid, RejectReason.DUPLICATE, "conversion id already counted")
    if dedupe.order_id_seen:
        return Rejected(cid, RejectReason.DUPLICATE, "order id already counted for this advertiser")

    active: list[tuple[CpaContract, ContractVersion, bool]] = []
    for contract in sorted(contracts, key=lambda k: k.contract_id):
        version, tail = contract.rating(at)
        if version is None or version.terms.contract_type is not ContractType.CPA:
            continue
        terms = version.terms
        if terms.common.advertiser_id != c.advertiser_id or terms.cpa is None:
            continue
        if terms.cpa.payout_for(c.event_type) is None:
            continue
        active.append((contract, version, tail))
    if not active:
        return Rejected(cid, RejectReason.NO_ACTIVE_CONTRACT, f"no active CPA contract prices {c.event_type!r}")

    matched: list[_Candidate] = []
    for contract, version, tail in active:
        end = _contract_end(version) if tail else None
        for e in exposures:
            e_at = ensure_aware(e.occurred_at)
            if e.household_id != c.household_id or e_at > at or (end is not None and e_at > end):
                continue
            at_impression = contract.in_force(e_at)
            if at_impression is None or e.campaign_id not in at_impression.terms.common.campaign_ids:
                continue
            matched.append(_Candidate(contract.contract_id, version, e, tail))
    if not matched:
        return Rejected(cid, RejectReason.NO_EXPOSURE, "no exposure of the household on a covered campaign")

    eligible: list[_Candidate] = []
    reasons: set[RejectReason] = set()
    for cand in matched:
        cpa = cand.version.terms.cpa
        assert cpa is not None
        local = at.astimezone(zone(cand.version.terms.common.time_zone)).date()
        window_override = override_for(cpa, cand.exposure.partner_id, c.event_type, local, "lookback_days")
        lookback = (
            window_override.lookback_days
            if window_override is not None and window_override.lookback_days is not None
            else cpa.attribution.lookback_for(c.event_type)
        )
        delay = at - ensure_aware(cand.exposure.occurred_at)
        household_window = cpa.dedupe.household_window_for(c.event_type)
        if household_window is not None and any(
            p.contract_id == cand.contract_id
            and p.event_type == c.event_type
            and timedelta(0) <= at - ensure_aware(p.occurred_at) < timedelta(days=household_window)
            for p in dedupe.household_conversions
        ):
            reasons.add(RejectReason.DUPLICATE)
        elif delay > timedelta(days=lookback):
            reasons.add(RejectReason.OUTSIDE_WINDOW)
        elif delay < timedelta(seconds=cpa.attribution.min_delay_seconds):
            reasons.add(RejectReason.TOO_FAST)
        else:
            eligible.append(cand)
    if not eligible:
        for reason, detail in (
            (RejectReason.DUPLICATE, "household already converted within the dedupe window"),
            (RejectReason.TOO_FAST, "conversion faster than the minimum delay after exposure"),
            (RejectReason.OUTSIDE_WINDOW, "every exposure is older than the lookback window"),
        ):
            if reason in reasons:
                return Rejected(cid, reason, detail)

    per_contract: dict[str, list[_Candidate]] = {}
    for cand in eligible:
        per_contract.setdefault(cand.contract_id, []).append(cand)
    winners = []
    for cands in per_contract.values():
        cpa = cands[0].version.terms.cpa
        assert cpa is not None
        pick = min if cpa.attribution.model is AttributionModel.FIRST_TOUCH else max
        winners.append(pick(cands, key=_Candidate.order_key))
    win = max(winners, key=_Candidate.order_key)
    return _price(c, at, win, usage)


def _price(c: Conversion, at: datetime, win: _Candidate, usage: UsageSnapshot) -> Attributed | Rejected:
    terms = win.version.terms
    cpa = terms.cpa
    assert cpa is not None
    partner_id = win.exposure.partner_id
    local = at.astimezone(zone(terms.common.time_zone)).date()
    period = period_containing(at, terms.common.time_zone, terms.common.billing_period)
    try:
        priced = price_conversion(
            cpa,
            event_type=c.event_type,
            partner_id=partner_id,
            order_value=c.order_value,
            local_date=local,
            prior_event_type_count=usage.event_type_count.get((win.contract_id, c.event_type), 0),
        )
    except ValueError as err:
        return Rejected(c.conversion_id, RejectReason.INVALID, str(err))
    if c.currency is not None and c.order_value is not None and c.currency != terms.common.currency:
        return Rejected(c.conversion_id, RejectReason.INVALID, "order value currency differs from the contract's")
    window_override = override_for(cpa, partner_id, c.event_type, local, "lookback_days")
    rule = RuleApplied(
        model=cpa.attribution.model,
        lookback_days=(
            window_override.lookback_days
            if window_override is not None and window_override.lookback_days is not None
            else cpa.attribution.lookback_for(c.event_type)
        ),
        min_delay_seconds=cpa.attribution.min_delay_seconds,
        tier_index=priced.tier_index,
        payout_override_from=None if priced.payout_override is None else priced.payout_override.effective_from.isoformat(),
        attribution_tail=win.tail,
    )
    attributed = Attributed(
        conversion_id=c.conversion_id,
        contract_id=win.contract_id,
        version=win.version.version,
        partner_id=partner_id,
        exposure_id=win.exposure.exposure_id,
        exposure_at=ensure_aware(win.exposure.occurred_at),
        period_key=period.key,
        rule=rule,
        priced=priced,
        tier_position=usage.event_type_count.get((win.contract_id, c.event_type), 0),
    )
    cap = check_caps(
        cpa.caps.contract,
        partner_limits(cpa, partner_id, c.event_type, local),
        usage.contract.get(win.contract_id, CpaUsage()),
        usage.partner.get((win.contract_id, partner_id), CpaUsage()),
        attributed.advertiser_amount,
    )
    if cap.capped:
        return Rejected(c.conversion_id, RejectReason.CAPPED, f"{cap.by} cap reached", would_have_been=attributed)
    return attributed


# --------------------------------------------------------------------------- re-pricing


@dataclass(frozen=True)
class DecidedConversion:
    """What attribution decided once for a conversion. Re-pricing never re-decides any of it:
    not who it is attributed to (partner, exposure), not whether it was billed (dedupe, caps),
    not its tier position."""

    decided_version: int
    event_type: str
    #: None when the matched exposure named no partner
    partner_id: str | None
    order_value: Decimal | None
    occurred_at: datetime
    tier_position: int


@dataclass(frozen=True)
class Repriced:
    """A decided conversion's price under the terms as they stand now."""

    version: int
    priced: PricedConversion
    #: exact, at the wire's scale
    advertiser_amount: Decimal
    partner_amount: Decimal


def reprice(versions: Sequence[ContractVersion], c: DecidedConversion) -> Repriced | None:
    """The version and price of a decided conversion under the contract's versions as they stand
    now: the version that governs its event time (or, in the attribution tail, the last one)
    prices it, at its recorded tier position, with the partner override of its local date.

    ``None`` when the versions cannot price it — no version governs it any more (a backdated
    termination), or the governing version has no payout row for its event type, or a
    percentage price meets a conversion without an order value: the conversion then keeps the
    price it was decided at.
    """
    # computed, not tabulated: a table pays for itself only over many instants of one contract
    version, _tail = _plain_rating_version(CpaContract("", tuple(versions)), ensure_aware(c.occurred_at))
    if version is None or version.terms.cpa is None:
        return None
    local = ensure_aware(c.occurred_at).astimezone(zone(version.terms.common.time_zone)).date()
    try:
        priced = price_conversion(
            version.terms.cpa,
            event_type=c.event_type,
            partner_id=c.partner_id or "",
            order_value=c.order_value,
            local_date=local,
            prior_event_type_count=c.tier_position,
        )
    except ValueError:
        return None
    adv, pay = exact_amount(priced.advertiser_amount), exact_amount(priced.partner_amount)
    if adv is None or pay is None:
        return None  # the new price needs more than the wire's decimals: refused, never rounded
    return Repriced(version.version, priced, adv, pay)


def reprice_reversal(priced: PricedConversion, *, refunded_order_value: Decimal | None,
                     completes: bool) -> tuple[Decimal, Decimal] | None:
    """The exact (negative) advertiser amount and partner payout, at the wire's scale, of a
    reversal of a conversion priced ``priced`` (``tally_billing.cpa.reversed_amounts``); ``None``
    when they need more decimals than the wire holds (the reversal then keeps its decided amounts)."""
    adv, pay = reversed_amounts(priced, refunded_order_value=refunded_order_value, completes=completes)
    a, p = exact_amount(adv), exact_amount(pay)
    return None if a is None or p is None else (a, p)
