"""Period totals — the one model of what a (contract, period) has billed: mergeable counts and
exact CPA sums, rated into lines; line differences are adjustments.

Nothing here does I/O. ``tally_billing.cpm.rate_cpm_period`` prices; this module keeps the
*counts* it prices from. A period's totals are a commutative monoid —
counts per category, pre-cap billable impressions per contract version, exact CPA sums per
(version, event type) and per partner, and the highest source offsets included — so totals
built from any split of the input (per partition, per batch) merge to the same result, and
every amount is derived from counts when it is needed, never accumulated with rounding.

The impression part of a period's totals is derived from the usage ledger
(:mod:`tally_billing.ledger`). Metering keeps these totals; invoicing reads the lines they rate
to (``period_closed`` and ``adjustment`` records).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Context, Decimal, Inexact, localcontext
from typing import Any

from .cpm import BUDGET_ALERT_THRESHOLDS_PCT, VersionCount, impressions_amount, rate_cpm_period
from .money import Currency, exact, round_to_minor
from .periods import Period
from .routing import OUTSIDE_FLIGHT as OUTSIDE_FLIGHT  # re-exported: every category is totals.<NAME>
from .routing import UNCOVERED as UNCOVERED
from .routing import Contract
from .versions import ContractVersion, versions_in_period

SEP = "\x1f"  # separator inside composite keys (never appears in ids)
ZERO = Decimal(0)

# Impression categories, in the order they are decided (the first that applies wins).
RECEIVED = "received"
DUPLICATE = "duplicate"
OTHER_MEASUREMENT = "other_measurement"
IVT_GIVT = "ivt_givt"
IVT_SIVT = "ivt_sivt"
# OUTSIDE_FLIGHT and UNCOVERED are defined with the routing that decides them (contracts.py)
IN_SCOPE = "in_scope"  # valid, unique, in flight, covered: billable unless past a cap
BILLABLE = "billable"
OVER_DELIVERY = "over_delivery"
CONVERSIONS_ATTRIBUTED = "conversions_attributed"
CONVERSIONS_REVERSED = "conversions_reversed"
REVERSAL_RECORDS = "reversal_records"
DUPLICATE_CONVERSIONS = "duplicate_conversions"

#: the categories derived from the usage ledger (everything else in ``counts`` comes from conversions)
IMPRESSION_CATEGORIES = frozenset({RECEIVED, DUPLICATE, OTHER_MEASUREMENT, IVT_GIVT, IVT_SIVT, OUTSIDE_FLIGHT,
                                   UNCOVERED})



def _add(a: Decimal, b: Decimal) -> Decimal:
    with exact():
        return a + b


def _add_point(points: dict[str, tuple[int, Decimal]], key: str, quantity: int, amount: Decimal) -> None:
    """Add to one CPA price point; a point that nets to nothing (a conversion re-priced onto
    another version) disappears, so no line of zero is ever billed."""
    q, a = points.get(key, (0, ZERO))
    q, a = q + quantity, _add(a, amount)
    if q == 0 and a == 0:
        points.pop(key, None)
    else:
        points[key] = (q, a)


@dataclass
class PeriodTotals:
    """Mergeable totals of one contract in one billing period."""

    counts: dict[str, int] = field(default_factory=dict)
    #: pre-cap billable impressions per contract version
    in_scope_by_version: dict[int, int] = field(default_factory=dict)
    #: CPA: "version<SEP>event_type" -> [net conversions, exact advertiser amount]
    cpa: dict[str, tuple[int, Decimal]] = field(default_factory=dict)
    #: CPA: "partner<SEP>version<SEP>event_type" -> [net conversions, exact payout]
    payouts: dict[str, tuple[int, Decimal]] = field(default_factory=dict)
    #: "topic<SEP>partition" -> next offset after the last record included
    offsets: dict[str, int] = field(default_factory=dict)
    max_event_us: int = 0

    def count(self, category: str, n: int = 1) -> None:
        self.counts[category] = self.counts.get(category, 0) + n

    def add_in_scope(self, version: int, n: int = 1) -> None:
        self.in_scope_by_version[version] = self.in_scope_by_version.get(version, 0) + n

    def add_cpa(self, version: int, event_type: str, quantity: int, amount: Decimal,
                partner_id: str | None, payout: Decimal) -> None:
        _add_point(self.cpa, f"{version}{SEP}{event_type}", quantity, amount)
        if partner_id is not None:
            _add_point(self.payouts, f"{partner_id}{SEP}{version}{SEP}{event_type}", quantity, payout)

    def include_offset(self, topic: str, partition: int, next_offset: int) -> None:
        k = f"{topic}{SEP}{partition}"
        if next_offset > self.offsets.get(k, -1):
            self.offsets[k] = next_offset

    def merge(self, other: PeriodTotals) -> None:
        for k, n in other.counts.items():
            self.count(k, n)
        for v, n in other.in_scope_by_version.items():
            self.add_in_scope(v, n)
        for k, (q, a) in other.cpa.items():
            q0, a0 = self.cpa.get(k, (0, ZERO))
            self.cpa[k] = (q0 + q, _add(a0, a))
        for k, (q, a) in other.payouts.items():
            q0, a0 = self.payouts.get(k, (0, ZERO))
            self.payouts[k] = (q0 + q, _add(a0, a))
        for k, o in other.offsets.items():
            if o > self.offsets.get(k, -1):
                self.offsets[k] = o
        self.max_event_us = max(self.max_event_us, other.max_event_us)

    def replace_usage(self, usage: PeriodTotals, impressions_topic: str) -> None:
        """Take the impression part (categories, in-scope counts, impressions offsets) from
        ``usage``, a fresh derivation from the ledger; the conversion part stays."""
        counts = {k: n for k, n in self.counts.items() if k not in IMPRESSION_CATEGORIES}
        for k, n in usage.counts.items():
            counts[k] = counts.get(k, 0) + n
        self.counts = counts
        self.in_scope_by_version = dict(usage.in_scope_by_version)
        prefix = f"{impressions_topic}{SEP}"
        offsets = {k: o for k, o in self.offsets.items() if not k.startswith(prefix)}
        offsets.update({k: o for k, o in usage.offsets.items() if k.startswith(prefix)})
        self.offsets = offsets
        self.max_event_us = max(self.max_event_us, usage.max_event_us)

    def to_json(self) -> dict[str, Any]:
        return {
            "counts": self.counts,
            "in_scope": {str(v): n for v, n in self.in_scope_by_version.items()},
            "cpa": {k: [q, str(a)] for k, (q, a) in self.cpa.items()},
            "payouts": {k: [q, str(a)] for k, (q, a) in self.payouts.items()},
            "offsets": self.offsets,
            "max_event_us": self.max_event_us,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PeriodTotals:
        return cls(
            counts=dict(d.get("counts", {})),
            in_scope_by_version={int(v): int(n) for v, n in d.get("in_scope", {}).items()},
            cpa={k: (int(q), Decimal(a)) for k, (q, a) in d.get("cpa", {}).items()},
            payouts={k: (int(q), Decimal(a)) for k, (q, a) in d.get("payouts", {}).items()},
            offsets={k: int(o) for k, o in d.get("offsets", {}).items()},
            max_event_us=int(d.get("max_event_us", 0)),
        )


# --------------------------------------------------------------------------- lines


@dataclass(frozen=True)
class Line:
    line_type: str  # cpm_impressions | cpm_over_delivery | cpa_conversions
    contract_version: int
    price_point: str
    event_type: str | None
    quantity: int
    unit: str  # per_thousand | per_unit
    unit_price: Decimal
    amount_exact: Decimal

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.line_type, self.contract_version, self.price_point)


@dataclass(frozen=True)
class PayoutLine:
    partner_id: str
    contract_version: int
    event_type: str
    quantity: int
    amount_exact: Decimal

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.partner_id, self.contract_version, self.event_type)


@dataclass(frozen=True)
class Rating:
    lines: tuple[Line, ...]
    payouts: tuple[PayoutLine, ...]
    minimum_commitment: Decimal | None

    @property
    def amount(self) -> Decimal:
        with exact():
            return sum((ln.amount_exact for ln in self.lines), ZERO)

    def quantity(self, line_type: str) -> int:
        return sum(ln.quantity for ln in self.lines if ln.line_type == line_type)


_UNIT_PRICE_DISPLAY = Currency("unit-price", 12)  # the Avro decimal scale of unit_price, not a currency


def display_unit_price(amount: Decimal, quantity: int) -> Decimal:
    """amount ÷ quantity for a line whose items have different prices (percentage CPA prices).

    Exact when it can be; otherwise rounded half-even to the schema's 12 decimals through the
    one rounding function. Informational only: invoices use ``amount_exact``. Zero quantity
    (partial refunds only) shows a zero unit price.
    """
    if quantity == 0:
        return ZERO
    try:
        with exact():
            q = amount / quantity
        if -q.as_tuple().exponent <= 12:  # type: ignore[operator]
            return q
    except Inexact:
        pass
    with localcontext(Context(prec=60)):
        q = amount / quantity
    return round_to_minor(q, _UNIT_PRICE_DISPLAY)


def versions_governing(contract: Contract, period: Period) -> list[ContractVersion]:
    return versions_in_period(list(contract.versions), period)


def terms_at_end(contract: Contract, period: Period) -> ContractVersion:
    """The version that governs the end of ``period`` (else the last one touching it, else the first)."""
    inside = versions_governing(contract, period)
    if inside:
        return inside[-1]
    before = [v for v in contract.versions if v.effective_from < period.end]
    return before[-1] if before else contract.versions[0]


def rate_period(
    contract: Contract,
    period: Period,
    totals: PeriodTotals,
    *,
    prior_lifetime_impressions: int = 0,
    prior_billed_total: Decimal = ZERO,
) -> Rating:
    """The lines of one contract's period, derived from its counts."""
    lines: list[Line] = []
    minimum: Decimal | None = None
    end_terms = terms_at_end(contract, period).terms
    if contract.contract_type == "cpm":
        counts = []
        for v, n in sorted(totals.in_scope_by_version.items()):
            if n == 0:
                continue
            version = contract.version(v)
            if version is None:
                raise ValueError(f"contract {contract.contract_id} has no version {v}")
            counts.append(VersionCount(version, n))
        rating = rate_cpm_period(counts, prior_lifetime_impressions=prior_lifetime_impressions,
                                 prior_billed_total=prior_billed_total)
        merged: dict[tuple[int, int], tuple[Decimal, int]] = {}
        for p in rating.price_points:
            rate, n = merged.get((p.version, p.band_index), (p.rate_cpm, 0))
            merged[(p.version, p.band_index)] = (rate, n + p.impressions)
        for (version_no, band), (rate, n) in sorted(merged.items()):
            amount = impressions_amount(n, rate)
            lines.append(Line("cpm_impressions", version_no, f"band:{band}", None, n, "per_thousand", rate, amount))
        for version_no, n in rating.over_delivery:
            lines.append(Line("cpm_over_delivery", version_no, "over_delivery", None, n, "per_thousand", ZERO, ZERO))
        if end_terms.cpm is not None:
            minimum = end_terms.cpm.minimum_commitment_per_period
    payouts: list[PayoutLine] = []
    for k, (q, a) in sorted(totals.cpa.items()):
        v_s, event_type = k.split(SEP)
        lines.append(Line("cpa_conversions", int(v_s), f"event:{event_type}", event_type, q, "per_unit",
                          display_unit_price(a, q), a))
    for k, (q, a) in sorted(totals.payouts.items()):
        partner, v_s, event_type = k.split(SEP)
        payouts.append(PayoutLine(partner, int(v_s), event_type, q, a))
    return Rating(tuple(lines), tuple(payouts), minimum)


def diff_lines(before: Iterable[Line], after: Iterable[Line]) -> list[Line]:
    """What changed from ``before`` to ``after``, per price point (quantity and exact amount).

    Adjustments are these differences, so a closed period plus its adjustments always equals
    the rating of every event that belongs to it — telescoping, whatever order they came in.
    """
    b = {ln.key: ln for ln in before}
    a = {ln.key: ln for ln in after}
    out = []
    for k in sorted(set(a) | set(b)):
        old, new = b.get(k), a.get(k)
        q = (new.quantity if new else 0) - (old.quantity if old else 0)
        with exact():
            amount = (new.amount_exact if new else ZERO) - (old.amount_exact if old else ZERO)
        if q == 0 and amount == 0:
            continue
        ref = new or old
        assert ref is not None
        unit_price = ref.unit_price if ref.line_type != "cpa_conversions" else display_unit_price(amount, q)
        out.append(Line(ref.line_type, ref.contract_version, ref.price_point, ref.event_type, q, ref.unit,
                        unit_price, amount))
    return out


def alert_thresholds(spent: Decimal, cap: Decimal | None) -> list[int]:
    """Thresholds (50/80/100 % of ``cap``) that ``spent`` has reached."""
    if cap is None or cap <= 0:
        return []
    with exact():
        return [pct for pct in BUDGET_ALERT_THRESHOLDS_PCT if spent * 100 >= cap * pct]
