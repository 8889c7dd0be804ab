"""Contract terms: typed models, validation that reports every problem, and a lossless JSON shape.

The JSON shape is documented with full examples in the library README.  Amounts, rates and
percentages are decimal strings (never JSON numbers), dates are ``YYYY-MM-DD``; counts and
day numbers are JSON integers.  Unknown fields are problems, so a typo never goes unnoticed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import Decimal
from enum import Enum, StrEnum
from typing import Any, TypeVar, cast

from tally_billing import bounds
from tally_billing.money import (
    Currency,
    UnknownCurrency,
    currency,
    exact,
    format_decimal,
    is_rounded,
    parse_amount,
    round_to_minor,
)
from tally_billing.periods import PeriodKind, zone

__all__ = [
    "AttributionModel",
    "AttributionRules",
    "BudgetCaps",
    "CapLimits",
    "CommonTerms",
    "ContractTerms",
    "ContractType",
    "CpaCaps",
    "CpaTerms",
    "CpmTerms",
    "DedupeRules",
    "Measurement",
    "PartnerOverride",
    "PayoutRow",
    "PayoutTier",
    "Price",
    "PriceKind",
    "Problem",
    "RateBand",
    "RateCard",
    "RateCardKind",
    "TermsInvalid",
    "TierBasis",
    "committed_value",
    "escalate",
    "parse_terms",
    "read_terms",
    "terms_to_json",
    "validate_terms",
]


class ContractType(StrEnum):
    CPM = "cpm"
    CPA = "cpa"


class Measurement(StrEnum):
    FIRST_PARTY = "first_party"
    THIRD_PARTY = "third_party"


class RateCardKind(StrEnum):
    FLAT = "flat"
    GRADUATED = "graduated"
    VOLUME = "volume"


class TierBasis(StrEnum):
    PERIOD = "period"
    LIFETIME = "lifetime"


class PriceKind(StrEnum):
    FLAT = "flat"
    PERCENT = "percent"


class AttributionModel(StrEnum):
    LAST_TOUCH = "last_touch"
    FIRST_TOUCH = "first_touch"


@dataclass(frozen=True, kw_only=True)
class CommonTerms:
    currency: str
    time_zone: str
    advertiser_id: str
    flight_start: date
    campaign_ids: tuple[str, ...]
    flight_end: date | None = None
    billing_period: PeriodKind = PeriodKind.MONTH
    payment_terms_days: int = 30
    po_reference: str | None = None
    measurement: Measurement = Measurement.FIRST_PARTY
    auto_renew: bool = False
    renewal_term_months: int | None = None
    notice_period_days: int = 0
    escalator_pct: Decimal | None = None
    attribution_tail: bool = True
    committed_value: Decimal | None = None


@dataclass(frozen=True)
class RateBand:
    #: impressions already counted (on the tier basis) before this band starts applying
    from_impressions: int
    #: price per thousand impressions, in contract currency, full precision
    rate_cpm: Decimal


@dataclass(frozen=True)
class RateCard:
    kind: RateCardKind
    bands: tuple[RateBand, ...]
    tier_basis: TierBasis = TierBasis.PERIOD


@dataclass(frozen=True)
class BudgetCaps:
    total: Decimal | None = None
    per_period: Decimal | None = None


@dataclass(frozen=True, kw_only=True)
class CpmTerms:
    rate_card: RateCard
    budget_caps: BudgetCaps = BudgetCaps()
    minimum_commitment_per_period: Decimal | None = None


@dataclass(frozen=True)
class Price:
    """A flat amount per conversion, or a percentage of the conversion's order value."""

    kind: PriceKind
    amount: Decimal | None = None
    percent: Decimal | None = None

    @staticmethod
    def flat(amount: Decimal) -> Price:
        return Price(PriceKind.FLAT, amount=amount)

    @staticmethod
    def pct(percent: Decimal) -> Price:
        return Price(PriceKind.PERCENT, percent=percent)


@dataclass(frozen=True)
class PayoutTier:
    #: conversions of the event type already counted in the period before this tier applies
    from_conversions: int
    advertiser_price: Price
    partner_payout: Price


@dataclass(frozen=True)
class PayoutRow:
    event_type: str
    advertiser_price: Price
    partner_payout: Price
    tiers: tuple[PayoutTier, ...] = ()


@dataclass(frozen=True)
class CapLimits:
    max_conversions_per_period: int | None = None
    #: measured in advertiser amount (what is billed), full precision
    max_amount_per_period: Decimal | None = None

    @property
    def is_unlimited(self) -> bool:
        return self.max_conversions_per_period is None and self.max_amount_per_period is None


@dataclass(frozen=True)
class CpaCaps:
    contract: CapLimits = CapLimits()
    per_partner: CapLimits = CapLimits()


@dataclass(frozen=True, kw_only=True)
class PartnerOverride:
    partner_id: str
    #: local date in the contract's time zone from which the override applies
    effective_from: date
    event_type: str | None = None
    partner_payout: Price | None = None
    lookback_days: int | None = None
    caps: CapLimits | None = None


@dataclass(frozen=True, kw_only=True)
class AttributionRules:
    lookback_days: int = 7
    #: sorted (event_type, days) pairs
    lookback_days_by_event_type: tuple[tuple[str, int], ...] = ()
    model: AttributionModel = AttributionModel.LAST_TOUCH
    min_delay_seconds: int = 0

    def lookback_for(self, event_type: str) -> int:
        return dict(self.lookback_days_by_event_type).get(event_type, self.lookback_days)


@dataclass(frozen=True)
class DedupeRules:
    """Conversion-id and per-advertiser order-id dedupe are always on; this adds the optional
    one-conversion-per-household-per-event-type-per-N-days rule."""

    #: sorted (event_type, days) pairs
    household_window_days_by_event_type: tuple[tuple[str, int], ...] = ()

    def household_window_for(self, event_type: str) -> int | None:
        return dict(self.household_window_days_by_event_type).get(event_type)


@dataclass(frozen=True, kw_only=True)
class CpaTerms:
    payouts: tuple[PayoutRow, ...]
    partner_overrides: tuple[PartnerOverride, ...] = ()
    attribution: AttributionRules = AttributionRules()
    dedupe: DedupeRules = DedupeRules()
    caps: CpaCaps = CpaCaps()
    reversal_lock_days: int | None = None

    def payout_for(self, event_type: str) -> PayoutRow | None:
        for row in self.payouts:
            if row.event_type == event_type:
                return row
        return None


@dataclass(frozen=True, kw_only=True)
class ContractTerms:
    contract_type: ContractType
    common: CommonTerms
    cpm: CpmTerms | None = None
    cpa: CpaTerms | None = None


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class TermsInvalid(ValueError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


T = TypeVar("T")
E = TypeVar("E", bound=Enum)
_MISSING: Any = object()

# Limits of the terms (listed with every other API limit in ``tally_billing.bounds``).
EVENT_TYPE_LEN_MAX = 64
PO_REFERENCE_LEN_MAX = 100
TIME_ZONE_LEN_MAX = 64
CAMPAIGNS_MAX = 1000
BANDS_MAX = 20
PAYOUTS_MAX = 20
TIERS_MAX = 10
OVERRIDES_MAX = 200
BY_EVENT_TYPE_MAX = 50
DAYS_WINDOW_MAX = 365
PAYMENT_TERMS_DAYS_MAX = 365
NOTICE_PERIOD_DAYS_MAX = 365
RENEWAL_TERM_MONTHS_MAX = 120
IMPRESSIONS_MAX = 10**15
CONVERSIONS_MAX = 10**12


class _Reader:
    """Reads a JSON-like mapping, recording every problem with its path instead of stopping."""

    def __init__(self, *, strict: bool = True) -> None:
        self.problems: list[Problem] = []
        #: check the bounds of ``tally_billing.bounds`` (input); stored terms were checked when
        #: they came in, under the bounds of that day, and history is not re-judged
        self.strict = strict
        self.minor_unit: int | None = None

    def problem(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def obj(self, raw: Any, path: str, allowed: set[str]) -> Mapping[str, Any] | None:
        if not isinstance(raw, Mapping):
            self.problem(path or "$", "must be an object")
            return None
        for key in sorted(set(raw) - allowed, key=str)[:20]:  # a short answer, however many there are
            self.problem(_join(path, str(key)[:100]), "unknown field")
        return raw

    def get(
        self,
        m: Mapping[str, Any],
        path: str,
        key: str,
        convert: Callable[[Any, str], T | None],
        *,
        default: Any = _MISSING,
    ) -> T | None:
        p = _join(path, key)
        if key not in m or m[key] is None:
            if default is _MISSING:
                self.problem(p, "is required")
                return None
            return cast("T | None", default)
        return convert(m[key], p)

    def string(self, v: Any, p: str, max_len: int = 200) -> str | None:
        if not isinstance(v, str) or not v.strip():
            self.problem(p, "must be a non-empty string")
            return None
        if self.strict and len(v) > max_len:
            self.problem(p, f"must be at most {max_len} characters")
            return None
        return v

    def ident(self, v: Any, p: str, max_len: int = bounds.ID_LEN_MAX) -> str | None:
        if not self.strict:
            return self.string(v, p)
        problem = bounds.id_problem(v, max_len)
        if problem is not None:
            self.problem(p, problem)
            return None
        return cast(str, v)

    def event_type(self, v: Any, p: str) -> str | None:
        return self.ident(v, p, EVENT_TYPE_LEN_MAX)

    def integer(self, v: Any, p: str, minimum: int = 0, maximum: int = bounds.VERSION_MAX) -> int | None:
        if isinstance(v, bool) or not isinstance(v, int):
            self.problem(p, "must be an integer")
            return None
        if v < minimum:
            self.problem(p, f"must be ≥ {minimum}")
            return None
        if self.strict and v > maximum:
            self.problem(p, f"must be ≤ {maximum}")
            return None
        return v

    def positive(self, v: Any, p: str) -> int | None:
        return self.integer(v, p, 1)

    def bounded(self, minimum: int, maximum: int) -> Callable[[Any, str], int | None]:
        """An integer converter for ``minimum..maximum`` (both inclusive)."""
        return lambda v, p: self.integer(v, p, minimum, maximum)

    def boolean(self, v: Any, p: str) -> bool | None:
        if not isinstance(v, bool):
            self.problem(p, "must be true or false")
            return None
        return v

    def day(self, v: Any, p: str) -> date | None:
        if not isinstance(v, str):
            self.problem(p, "must be a date YYYY-MM-DD")
            return None
        try:
            if len(v) != 10:
                raise ValueError(v)
            d = date.fromisoformat(v)
        except ValueError:
            self.problem(p, "must be a date YYYY-MM-DD")
            return None
        if self.strict and not bounds.DATE_MIN <= d <= bounds.DATE_MAX:
            self.problem(p, f"must be from {bounds.DATE_MIN.isoformat()} to {bounds.DATE_MAX.isoformat()}")
            return None
        return d

    def decimal(self, v: Any, p: str, *, maximum: Decimal | None = None) -> Decimal | None:
        if not isinstance(v, str):
            self.problem(p, 'must be a decimal string such as "12.50"')
            return None
        try:
            d = parse_amount(v)
        except ValueError:
            self.problem(p, 'must be a decimal string such as "12.50"')
            return None
        if d < 0:
            self.problem(p, "must be ≥ 0")
            return None
        top = maximum if maximum is not None else bounds.AMOUNT_MAX if self.strict else None
        if top is not None and d > top:
            self.problem(p, f"must be ≤ {top}")
            return None
        if self.strict and -int(d.as_tuple().exponent) > bounds.DECIMAL_PLACES_MAX:
            self.problem(p, f"must have at most {bounds.DECIMAL_PLACES_MAX} decimals")
            return None
        return d

    def money(self, v: Any, p: str) -> Decimal | None:
        """A decimal that must be a whole number of the currency's minor units."""
        d = self.decimal(v, p)
        if d is not None and self.minor_unit is not None and not is_rounded(d, currency_of(self.minor_unit)):
            self.problem(p, f"must have at most {self.minor_unit} decimals for the contract currency")
            return None
        return d

    def percent(self, v: Any, p: str) -> Decimal | None:
        return self.decimal(v, p, maximum=Decimal(100))

    def enum(self, cls: type[E]) -> Callable[[Any, str], E | None]:
        def convert(v: Any, p: str) -> E | None:
            try:
                return cls(v)
            except ValueError:
                self.problem(p, "must be one of " + ", ".join(repr(e.value) for e in cls))
                return None

        return convert

    def days_by_event_type(self, v: Any, p: str) -> tuple[tuple[str, int], ...] | None:
        if not isinstance(v, Mapping):
            self.problem(p, "must be an object of event type → days")
            return None
        if self.strict and len(v) > BY_EVENT_TYPE_MAX:
            self.problem(p, f"must have at most {BY_EVENT_TYPE_MAX} entries")
            return None
        out: list[tuple[str, int]] = []
        for k, days in v.items():
            key = self.event_type(k, _join(p, str(k)))
            n = self.integer(days, _join(p, str(k)), 1, DAYS_WINDOW_MAX)
            if n is not None and key is not None:
                out.append((key, n))
        return tuple(sorted(out))


def currency_of(minor_unit: int) -> Currency:
    """A stand-in currency with ``minor_unit`` decimals, for checking amounts' scale."""
    return Currency("XXX", minor_unit)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


_COMMON_FIELDS = {
    "currency", "time_zone", "billing_period", "payment_terms_days", "flight_start",
    "flight_end", "campaign_ids", "po_reference", "measurement", "advertiser_id", "auto_renew",
    "renewal_term_months", "notice_period_days", "escalator_pct", "attribution_tail",
    "committed_value",
}  # fmt: skip


def _read_common(r: _Reader, raw: Any) -> CommonTerms | None:
    path = "common"
    m = r.obj(raw, path, _COMMON_FIELDS)
    if m is None:
        return None
    cur_code = r.get(m, path, "currency", r.string)
    if cur_code is not None:
        try:
            r.minor_unit = currency(cur_code).minor_unit
        except UnknownCurrency:
            r.problem("common.currency", f"unknown ISO 4217 currency {cur_code!r}")
            cur_code = None
    tz = r.get(m, path, "time_zone", lambda v, p: r.string(v, p, TIME_ZONE_LEN_MAX))
    if tz is not None:
        try:
            zone(tz)
        except ValueError:
            r.problem("common.time_zone", f"unknown IANA time zone {tz!r}")
            tz = None
    advertiser_id = r.get(m, path, "advertiser_id", r.ident)
    flight_start = r.get(m, path, "flight_start", r.day)
    flight_end = r.get(m, path, "flight_end", r.day, default=None)
    if flight_start is not None and flight_end is not None and flight_end < flight_start:
        r.problem("common.flight_end", "must be on or after flight_start")
    elif (r.strict and flight_start is not None and flight_end is not None
          and (flight_end - flight_start).days + 1 > bounds.FLIGHT_DAYS_MAX):
        r.problem("common.flight_end", f"a flight lasts at most {bounds.FLIGHT_DAYS_MAX} days (ten years)")
        flight_end = None
    campaign_ids = r.get(m, path, "campaign_ids", _campaign_ids(r))
    billing_period = r.get(m, path, "billing_period", r.enum(PeriodKind), default=PeriodKind.MONTH)
    payment_terms_days = r.get(m, path, "payment_terms_days", r.bounded(0, PAYMENT_TERMS_DAYS_MAX), default=30)
    po_reference = r.get(m, path, "po_reference", lambda v, p: r.string(v, p, PO_REFERENCE_LEN_MAX), default=None)
    measurement = r.get(m, path, "measurement", r.enum(Measurement), default=Measurement.FIRST_PARTY)
    auto_renew = r.get(m, path, "auto_renew", r.boolean, default=False)
    renewal_term_months = r.get(m, path, "renewal_term_months", r.bounded(1, RENEWAL_TERM_MONTHS_MAX), default=None)
    if auto_renew and renewal_term_months is None and "renewal_term_months" not in m:
        r.problem("common.renewal_term_months", "is required when auto_renew is true")
    notice_period_days = r.get(m, path, "notice_period_days", r.bounded(0, NOTICE_PERIOD_DAYS_MAX), default=0)
    escalator_pct = r.get(m, path, "escalator_pct", r.percent, default=None)
    attribution_tail = r.get(m, path, "attribution_tail", r.boolean, default=True)
    committed = r.get(m, path, "committed_value", r.money, default=None)
    if None in (cur_code, tz, advertiser_id, flight_start, campaign_ids, billing_period,
                payment_terms_days, measurement, auto_renew, notice_period_days, attribution_tail):  # fmt: skip
        return None
    assert cur_code is not None and tz is not None and advertiser_id is not None
    assert flight_start is not None and campaign_ids is not None and billing_period is not None
    assert payment_terms_days is not None and measurement is not None and auto_renew is not None
    assert notice_period_days is not None and attribution_tail is not None
    return CommonTerms(
        currency=cur_code,
        time_zone=tz,
        advertiser_id=advertiser_id,
        flight_start=flight_start,
        flight_end=flight_end,
        campaign_ids=campaign_ids,
        billing_period=billing_period,
        payment_terms_days=payment_terms_days,
        po_reference=po_reference,
        measurement=measurement,
        auto_renew=auto_renew,
        renewal_term_months=renewal_term_months,
        notice_period_days=notice_period_days,
        escalator_pct=escalator_pct,
        attribution_tail=attribution_tail,
        committed_value=committed,
    )


def _campaign_ids(r: _Reader) -> Callable[[Any, str], tuple[str, ...] | None]:
    def convert(v: Any, p: str) -> tuple[str, ...] | None:
        if not isinstance(v, list) or not v:
            r.problem(p, "must be a non-empty list of campaign ids")
            return None
        if r.strict and len(v) > CAMPAIGNS_MAX:
            r.problem(p, f"must have at most {CAMPAIGNS_MAX} campaign ids")
            return None
        ok = True
        seen: set[str] = set()
        for i, c in enumerate(v):
            s = r.ident(c, f"{p}[{i}]")
            if s is None:
                ok = False
            elif s in seen:
                r.problem(f"{p}[{i}]", f"duplicate campaign id {s!r}")
                ok = False
            else:
                seen.add(s)
        return tuple(v) if ok else None

    return convert


def _read_cpm(r: _Reader, raw: Any) -> CpmTerms | None:
    path = "cpm"
    m = r.obj(raw, path, {"rate_card", "budget_caps", "minimum_commitment_per_period"})
    if m is None:
        return None
    card = r.get(m, path, "rate_card", lambda v, p: _read_rate_card(r, v, p))
    caps = r.get(m, path, "budget_caps", lambda v, p: _read_budget_caps(r, v, p), default=BudgetCaps())
    minimum = r.get(m, path, "minimum_commitment_per_period", r.money, default=None)
    if card is None or caps is None:
        return None
    return CpmTerms(rate_card=card, budget_caps=caps, minimum_commitment_per_period=minimum)


def _read_rate_card(r: _Reader, raw: Any, path: str) -> RateCard | None:
    m = r.obj(raw, path, {"kind", "tier_basis", "bands"})
    if m is None:
        return None
    kind = r.get(m, path, "kind", r.enum(RateCardKind))
    basis = r.get(m, path, "tier_basis", r.enum(TierBasis), default=TierBasis.PERIOD)
    bands_raw = m.get("bands")
    bands: list[RateBand] = []
    ok = True
    if not isinstance(bands_raw, list) or not bands_raw:
        r.problem(f"{path}.bands", "must be a non-empty list")
        ok = False
    elif r.strict and len(bands_raw) > BANDS_MAX:
        r.problem(f"{path}.bands", f"must have at most {BANDS_MAX} bands")
        ok = False
    else:
        for i, b in enumerate(bands_raw):
            bp = f"{path}.bands[{i}]"
            bm = r.obj(b, bp, {"from_impressions", "rate_cpm"})
            if bm is None:
                ok = False
                continue
            start = r.get(bm, bp, "from_impressions", r.bounded(0, IMPRESSIONS_MAX))
            rate = r.get(bm, bp, "rate_cpm", r.decimal)
            if start is None or rate is None:
                ok = False
                continue
            if i == 0 and start != 0:
                r.problem(f"{bp}.from_impressions", "the first band must start at 0")
                ok = False
            elif bands and start <= bands[-1].from_impressions:
                r.problem(f"{bp}.from_impressions", "must be greater than the previous band's")
                ok = False
            bands.append(RateBand(start, rate))
        if kind is RateCardKind.FLAT and len(bands_raw) != 1:
            r.problem(f"{path}.bands", "a flat rate card has exactly one band")
            ok = False
    if kind is None or basis is None or not ok:
        return None
    return RateCard(kind=kind, bands=tuple(bands), tier_basis=basis)


def _read_budget_caps(r: _Reader, raw: Any, path: str) -> BudgetCaps | None:
    m = r.obj(raw, path, {"total", "per_period"})
    if m is None:
        return None
    total = r.get(m, path, "total", r.money, default=None)
    per_period = r.get(m, path, "per_period", r.money, default=None)
    for key, v in (("total", total), ("per_period", per_period)):
        if v is not None and v == 0:
            r.problem(f"{path}.{key}", "must be > 0 (omit it for no cap)")
    return BudgetCaps(total=total, per_period=per_period)


def _read_price(r: _Reader, raw: Any, path: str) -> Price | None:
    m = r.obj(raw, path, {"kind", "amount", "percent"})
    if m is None:
        return None
    kind = r.get(m, path, "kind", r.enum(PriceKind))
    if kind is PriceKind.FLAT:
        if "percent" in m:
            r.problem(f"{path}.percent", "only a percent price has a percent")
        amount = r.get(m, path, "amount", r.decimal)
        return None if amount is None else Price.flat(amount)
    if kind is PriceKind.PERCENT:
        if "amount" in m:
            r.problem(f"{path}.amount", "only a flat price has an amount")
        pct = r.get(m, path, "percent", r.percent)
        return None if pct is None else Price.pct(pct)
    return None


def _read_cap_limits(r: _Reader, raw: Any, path: str) -> CapLimits | None:
    m = r.obj(raw, path, {"max_conversions_per_period", "max_amount_per_period"})
    if m is None:
        return None
    n = r.get(m, path, "max_conversions_per_period", r.bounded(1, CONVERSIONS_MAX), default=None)
    amount = r.get(m, path, "max_amount_per_period", r.money, default=None)
    return CapLimits(max_conversions_per_period=n, max_amount_per_period=amount)


def _read_cpa(r: _Reader, raw: Any) -> CpaTerms | None:
    path = "cpa"
    m = r.obj(raw, path, {"payouts", "partner_overrides", "attribution", "dedupe", "caps", "reversal_lock_days"})
    if m is None:
        return None
    ok = True
    rows: list[PayoutRow] = []
    payouts_raw = m.get("payouts")
    if not isinstance(payouts_raw, list) or not payouts_raw:
        r.problem("cpa.payouts", "must be a non-empty list")
        ok = False
    elif r.strict and len(payouts_raw) > PAYOUTS_MAX:
        r.problem("cpa.payouts", f"must have at most {PAYOUTS_MAX} rows")
        ok = False
    else:
        seen: set[str] = set()
        for i, raw_row in enumerate(payouts_raw):
            row = _read_payout_row(r, raw_row, f"cpa.payouts[{i}]")
            if row is None:
                ok = False
            elif row.event_type in seen:
                r.problem(f"cpa.payouts[{i}].event_type", f"duplicate event type {row.event_type!r}")
                ok = False
            else:
                seen.add(row.event_type)
                rows.append(row)
    event_types = {row.event_type for row in rows}
    overrides: list[PartnerOverride] = []
    overrides_raw = m.get("partner_overrides", [])
    if not isinstance(overrides_raw, list):
        r.problem("cpa.partner_overrides", "must be a list")
        ok = False
    elif r.strict and len(overrides_raw) > OVERRIDES_MAX:
        r.problem("cpa.partner_overrides", f"must have at most {OVERRIDES_MAX} overrides")
        ok = False
    else:
        keys: set[tuple[str, str | None, date]] = set()
        for i, raw_o in enumerate(overrides_raw):
            op = f"cpa.partner_overrides[{i}]"
            o = _read_override(r, raw_o, op)
            if o is None:
                ok = False
                continue
            if o.event_type is not None and rows and o.event_type not in event_types:
                r.problem(f"{op}.event_type", f"no payout row for event type {o.event_type!r}")
                ok = False
            key = (o.partner_id, o.event_type, o.effective_from)
            if key in keys:
                r.problem(op, "another override has the same partner, event type and effective_from")
                ok = False
            keys.add(key)
            overrides.append(o)
    attribution = r.get(m, path, "attribution", lambda v, p: _read_attribution(r, v, p), default=AttributionRules())
    dedupe = r.get(m, path, "dedupe", lambda v, p: _read_dedupe(r, v, p), default=DedupeRules())
    caps = r.get(m, path, "caps", lambda v, p: _read_cpa_caps(r, v, p), default=CpaCaps())
    lock = r.get(m, path, "reversal_lock_days", r.bounded(1, DAYS_WINDOW_MAX), default=None)
    if not ok or attribution is None or dedupe is None or caps is None:
        return None
    return CpaTerms(
        payouts=tuple(rows),
        partner_overrides=tuple(overrides),
        attribution=attribution,
        dedupe=dedupe,
        caps=caps,
        reversal_lock_days=lock,
    )


def _read_payout_row(r: _Reader, raw: Any, path: str) -> PayoutRow | None:
    m = r.obj(raw, path, {"event_type", "advertiser_price", "partner_payout", "tiers"})
    if m is None:
        return None
    event_type = r.get(m, path, "event_type", r.event_type)
    adv = r.get(m, path, "advertiser_price", lambda v, p: _read_price(r, v, p))
    partner = r.get(m, path, "partner_payout", lambda v, p: _read_price(r, v, p))
    tiers: list[PayoutTier] = []
    ok = True
    tiers_raw = m.get("tiers", [])
    if not isinstance(tiers_raw, list):
        r.problem(f"{path}.tiers", "must be a list")
        ok = False
    elif r.strict and len(tiers_raw) > TIERS_MAX:
        r.problem(f"{path}.tiers", f"must have at most {TIERS_MAX} tiers")
        ok = False
    else:
        for i, t in enumerate(tiers_raw):
            tp = f"{path}.tiers[{i}]"
            tm = r.obj(t, tp, {"from_conversions", "advertiser_price", "partner_payout"})
            if tm is None:
                ok = False
                continue
            start = r.get(tm, tp, "from_conversions", r.bounded(1, CONVERSIONS_MAX))
            t_adv = r.get(tm, tp, "advertiser_price", lambda v, p: _read_price(r, v, p))
            t_partner = r.get(tm, tp, "partner_payout", lambda v, p: _read_price(r, v, p))
            if start is None or t_adv is None or t_partner is None:
                ok = False
                continue
            if tiers and start <= tiers[-1].from_conversions:
                r.problem(f"{tp}.from_conversions", "must be greater than the previous tier's")
                ok = False
            tiers.append(PayoutTier(start, t_adv, t_partner))
    if event_type is None or adv is None or partner is None or not ok:
        return None
    return PayoutRow(event_type, adv, partner, tuple(tiers))


def _read_override(r: _Reader, raw: Any, path: str) -> PartnerOverride | None:
    m = r.obj(raw, path, {"partner_id", "event_type", "effective_from", "partner_payout", "lookback_days", "caps"})
    if m is None:
        return None
    partner_id = r.get(m, path, "partner_id", r.ident)
    event_type = r.get(m, path, "event_type", r.event_type, default=None)
    effective_from = r.get(m, path, "effective_from", r.day)
    payout = r.get(m, path, "partner_payout", lambda v, p: _read_price(r, v, p), default=None)
    lookback = r.get(m, path, "lookback_days", r.bounded(1, DAYS_WINDOW_MAX), default=None)
    caps = r.get(m, path, "caps", lambda v, p: _read_cap_limits(r, v, p), default=None)
    if all(m.get(k) is None for k in ("partner_payout", "lookback_days", "caps")):
        r.problem(path, "must replace at least one of partner_payout, lookback_days, caps")
        return None
    if partner_id is None or effective_from is None:
        return None
    if (m.get("partner_payout") is not None and payout is None) or (m.get("caps") is not None and caps is None):
        return None
    return PartnerOverride(
        partner_id=partner_id,
        event_type=event_type,
        effective_from=effective_from,
        partner_payout=payout,
        lookback_days=lookback,
        caps=caps,
    )


def _read_attribution(r: _Reader, raw: Any, path: str) -> AttributionRules | None:
    m = r.obj(raw, path, {"lookback_days", "lookback_days_by_event_type", "model", "min_delay_seconds"})
    if m is None:
        return None
    lookback = r.get(m, path, "lookback_days", r.bounded(1, DAYS_WINDOW_MAX), default=7)
    by_type = r.get(m, path, "lookback_days_by_event_type", r.days_by_event_type, default=())
    model = r.get(m, path, "model", r.enum(AttributionModel), default=AttributionModel.LAST_TOUCH)
    min_delay = r.get(m, path, "min_delay_seconds", r.integer, default=0)
    if lookback is None or by_type is None or model is None or min_delay is None:
        return None
    if min_delay >= lookback * 86_400:
        r.problem(f"{path}.min_delay_seconds", "must be shorter than the lookback window")
        return None
    return AttributionRules(lookback_days=lookback, lookback_days_by_event_type=by_type, model=model,
                            min_delay_seconds=min_delay)  # fmt: skip


def _read_dedupe(r: _Reader, raw: Any, path: str) -> DedupeRules | None:
    m = r.obj(raw, path, {"household_window_days_by_event_type"})
    if m is None:
        return None
    windows = r.get(m, path, "household_window_days_by_event_type", r.days_by_event_type, default=())
    return None if windows is None else DedupeRules(windows)


def _read_cpa_caps(r: _Reader, raw: Any, path: str) -> CpaCaps | None:
    m = r.obj(raw, path, {"contract", "per_partner"})
    if m is None:
        return None
    contract = r.get(m, path, "contract", lambda v, p: _read_cap_limits(r, v, p), default=CapLimits())
    partner = r.get(m, path, "per_partner", lambda v, p: _read_cap_limits(r, v, p), default=CapLimits())
    if contract is None or partner is None:
        return None
    return CpaCaps(contract=contract, per_partner=partner)


def _read(raw: Any, *, strict: bool = True) -> tuple[ContractTerms | None, list[Problem]]:
    r = _Reader(strict=strict)
    m = r.obj(raw, "", {"contract_type", "common", "cpm", "cpa"})
    if m is None:
        return None, r.problems
    ctype = r.get(m, "", "contract_type", r.enum(ContractType))
    common = r.get(m, "", "common", lambda v, p: _read_common(r, v))
    cpm: CpmTerms | None = None
    cpa: CpaTerms | None = None
    if ctype is ContractType.CPM:
        cpm = r.get(m, "", "cpm", lambda v, p: _read_cpm(r, v))
        if m.get("cpa") is not None:
            r.problem("cpa", "a cpm contract has no cpa terms")
    elif ctype is ContractType.CPA:
        cpa = r.get(m, "", "cpa", lambda v, p: _read_cpa(r, v))
        if m.get("cpm") is not None:
            r.problem("cpm", "a cpa contract has no cpm terms")
    if r.problems or ctype is None or common is None:
        return None, r.problems
    return ContractTerms(contract_type=ctype, common=common, cpm=cpm, cpa=cpa), []


def read_terms(raw: Any) -> tuple[ContractTerms | None, list[Problem]]:
    """Terms coming in (an API body): typed terms and every problem, bounds included, in one
    pass: ``(terms, [])`` or ``(None, problems)``."""
    return _read(raw)


def validate_terms(raw: Mapping[str, Any]) -> list[Problem]:
    """Every problem in ``raw`` (bounds included), each with its field path; empty when valid."""
    return _read(raw)[1]


def parse_terms(raw: Mapping[str, Any]) -> ContractTerms:
    """Typed terms from their JSON shape (stored or published terms); raises
    :class:`TermsInvalid` listing every problem.

    The bounds of ``tally_billing.bounds`` are input limits, checked by :func:`read_terms` /
    :func:`validate_terms` when terms come in; terms stored under an earlier day's limits keep
    parsing here (history is immutable, so a version once approved is never re-judged)."""
    terms, problems = _read(raw, strict=False)
    if problems or terms is None:
        raise TermsInvalid(problems or [Problem("$", "invalid terms")])
    return terms


# --------------------------------------------------------------------------- JSON out


def _price_json(p: Price) -> dict[str, Any]:
    if p.kind is PriceKind.FLAT:
        assert p.amount is not None
        return {"kind": "flat", "amount": format_decimal(p.amount)}
    assert p.percent is not None
    return {"kind": "percent", "percent": format_decimal(p.percent)}


def _opt_dec(d: Decimal | None) -> str | None:
    return None if d is None else format_decimal(d)


def _caps_json(c: CapLimits) -> dict[str, Any]:
    return {
        "max_conversions_per_period": c.max_conversions_per_period,
        "max_amount_per_period": _opt_dec(c.max_amount_per_period),
    }


def terms_to_json(t: ContractTerms) -> dict[str, Any]:
    """The JSON shape of ``t``; ``parse_terms(terms_to_json(t)) == t``."""
    c = t.common
    out: dict[str, Any] = {
        "contract_type": t.contract_type.value,
        "common": {
            "currency": c.currency,
            "time_zone": c.time_zone,
            "billing_period": c.billing_period.value,
            "payment_terms_days": c.payment_terms_days,
            "flight_start": c.flight_start.isoformat(),
            "flight_end": None if c.flight_end is None else c.flight_end.isoformat(),
            "campaign_ids": list(c.campaign_ids),
            "po_reference": c.po_reference,
            "measurement": c.measurement.value,
            "advertiser_id": c.advertiser_id,
            "auto_renew": c.auto_renew,
            "renewal_term_months": c.renewal_term_months,
            "notice_period_days": c.notice_period_days,
            "escalator_pct": _opt_dec(c.escalator_pct),
            "attribution_tail": c.attribution_tail,
            "committed_value": _opt_dec(c.committed_value),
        },
        "cpm": None,
        "cpa": None,
    }
    if t.cpm is not None:
        card = t.cpm.rate_card
        out["cpm"] = {
            "rate_card": {
                "kind": card.kind.value,
                "tier_basis": card.tier_basis.value,
                "bands": [{"from_impressions": b.from_impressions, "rate_cpm": format_decimal(b.rate_cpm)} for b in card.bands],
            },
            "budget_caps": {
                "total": _opt_dec(t.cpm.budget_caps.total),
                "per_period": _opt_dec(t.cpm.budget_caps.per_period),
            },
            "minimum_commitment_per_period": _opt_dec(t.cpm.minimum_commitment_per_period),
        }
    if t.cpa is not None:
        a = t.cpa
        out["cpa"] = {
            "payouts": [
                {
                    "event_type": row.event_type,
                    "advertiser_price": _price_json(row.advertiser_price),
                    "partner_payout": _price_json(row.partner_payout),
                    "tiers": [
                        {
                            "from_conversions": tier.from_conversions,
                            "advertiser_price": _price_json(tier.advertiser_price),
                            "partner_payout": _price_json(tier.partner_payout),
                        }
                        for tier in row.tiers
                    ],
                }
                for row in a.payouts
            ],
            "partner_overrides": [
                {
                    "partner_id": o.partner_id,
                    "event_type": o.event_type,
                    "effective_from": o.effective_from.isoformat(),
                    "partner_payout": None if o.partner_payout is None else _price_json(o.partner_payout),
                    "lookback_days": o.lookback_days,
                    "caps": None if o.caps is None else _caps_json(o.caps),
                }
                for o in a.partner_overrides
            ],
            "attribution": {
                "lookback_days": a.attribution.lookback_days,
                "lookback_days_by_event_type": dict(a.attribution.lookback_days_by_event_type),
                "model": a.attribution.model.value,
                "min_delay_seconds": a.attribution.min_delay_seconds,
            },
            "dedupe": {"household_window_days_by_event_type": dict(a.dedupe.household_window_days_by_event_type)},
            "caps": {"contract": _caps_json(a.caps.contract), "per_partner": _caps_json(a.caps.per_partner)},
            "reversal_lock_days": a.reversal_lock_days,
        }
    return out


# --------------------------------------------------------------------------- policy helpers


def _periods_in_flight(common: CommonTerms) -> int | None:
    """How many billing periods the flight touches, by calendar arithmetic (constant time: a
    long flight must not cost a loop per period on an API's event loop). The flight starts at
    local midnight of ``flight_start`` and ends on the local date ``flight_end``, so the periods
    are those containing these two local dates and every one between."""
    if common.flight_end is None:
        return None
    first, last = common.flight_start, common.flight_end
    if common.billing_period is PeriodKind.MONTH:
        return (last.year - first.year) * 12 + (last.month - first.month) + 1
    first_monday = first - timedelta(days=first.weekday())
    last_monday = last - timedelta(days=last.weekday())
    return (last_monday - first_monday).days // 7 + 1


def committed_value(t: ContractTerms) -> Decimal | None:
    """The contract's committed value for approval policy, in contract currency.

    The explicit ``common.committed_value`` wins; otherwise a CPM total budget cap; otherwise
    the per-period minimum commitment (CPM) or contract amount cap (CPA) times the number of
    billing periods the flight touches.  ``None`` when nothing bounds the contract.
    """
    if t.common.committed_value is not None:
        return t.common.committed_value
    per_period: Decimal | None = None
    if t.cpm is not None:
        if t.cpm.budget_caps.total is not None:
            return t.cpm.budget_caps.total
        per_period = t.cpm.minimum_commitment_per_period or t.cpm.budget_caps.per_period
    if t.cpa is not None:
        per_period = t.cpa.caps.contract.max_amount_per_period
    periods = _periods_in_flight(t.common)
    if per_period is None or periods is None:
        return None
    with exact():
        return per_period * periods


def escalate(t: ContractTerms, pct: Decimal) -> ContractTerms:
    """Terms for a renewal with every CPM rate and every flat price/payout raised by ``pct`` %.

    Escalated rates and flat prices are rounded half-even to the currency's minor unit with
    :func:`round_to_minor` (a renewal states prices a person can read on the contract).
    Percentage prices, caps, minimum commitments and committed value are not escalated: a
    percentage of order value already follows prices, and caps are negotiated amounts.
    """
    if pct < -100:
        raise ValueError("an escalator below -100 % would make prices negative")
    cur = currency(t.common.currency)
    with exact():
        factor = 1 + pct / 100

    def up(d: Decimal) -> Decimal:
        with exact():
            raised = d * factor
        return round_to_minor(raised, cur)

    def up_price(p: Price) -> Price:
        if p.kind is PriceKind.FLAT and p.amount is not None:
            return Price.flat(up(p.amount))
        return p

    cpm = t.cpm
    if cpm is not None:
        card = cpm.rate_card
        bands = tuple(RateBand(b.from_impressions, up(b.rate_cpm)) for b in card.bands)
        cpm = replace(cpm, rate_card=replace(card, bands=bands))
    cpa = t.cpa
    if cpa is not None:
        cpa = replace(
            cpa,
            payouts=tuple(
                replace(
                    row,
                    advertiser_price=up_price(row.advertiser_price),
                    partner_payout=up_price(row.partner_payout),
                    tiers=tuple(
                        replace(
                            tier,
                            advertiser_price=up_price(tier.advertiser_price),
                            partner_payout=up_price(tier.partner_payout),
                        )
                        for tier in row.tiers
                    ),
                )
                for row in cpa.payouts
            ),
            partner_overrides=tuple(
                replace(o, partner_payout=None if o.partner_payout is None else up_price(o.partner_payout)) for o in cpa.partner_overrides
            ),
        )
    return replace(t, cpm=cpm, cpa=cpa)
