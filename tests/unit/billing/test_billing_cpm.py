from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tally_billing.cpm import VersionCount, budget_alerts_crossed, impressions_amount, rate_cpm_period
from tally_billing.examples import cpm_terms_json
from tally_billing.invoice_lines import SHORTFALL, BilledPeriod, bill, invoice_line, line_amount, sum_lines
from tally_billing.money import Currency, currency, exact, round_to_minor
from tally_billing.periods import PeriodKind, period_by_key
from tally_billing.routing import Contract, build_segments
from tally_billing.terms import ContractTerms, parse_terms
from tally_billing.totals import Line, PeriodTotals, diff_lines, rate_period
from tally_billing.versions import ContractVersion, split_by_version

USD = currency("USD")
D = Decimal


def terms(
    kind: str = "flat",
    bands: list[tuple[int, str]] | None = None,
    basis: str = "period",
    per_period: str | None = None,
    total: str | None = None,
    minimum: str | None = None,
    cur: str = "USD",
) -> ContractTerms:
    raw: dict[str, Any] = cpm_terms_json()
    raw["common"]["currency"] = cur
    raw["cpm"] = {
        "rate_card": {
            "kind": kind,
            "tier_basis": basis,
            "bands": [{"from_impressions": f, "rate_cpm": r} for f, r in (bands or [(0, "10.00")])],
        },
        "budget_caps": {"total": total, "per_period": per_period},
        "minimum_commitment_per_period": minimum,
    }
    return parse_terms(raw)


def version(t: ContractTerms, n: int = 1, start: datetime | None = None) -> ContractVersion:
    return ContractVersion("c-1", n, start or datetime(2026, 1, 1, tzinfo=UTC), None, t)


GRADUATED = [(0, "10.00"), (1000, "8.00"), (5000, "5.00")]
MARCH = period_by_key("2026-03", "America/New_York", PeriodKind.MONTH)


def contract_of(*versions: ContractVersion) -> Contract:
    ordered = tuple(sorted(versions, key=lambda v: (v.effective_from, v.version)))
    return Contract("c-1", "adv-acme", "cpm", 1, ordered, build_segments(ordered))


def in_scope(**by_version: int) -> PeriodTotals:
    """Totals with billable-before-cap impressions per version: ``in_scope(v1=900)``."""
    t = PeriodTotals()
    for v, n in by_version.items():
        t.add_in_scope(int(v.removeprefix("v")), n)
    return t


def billed(t: ContractTerms, impressions: int, cur: Currency = USD) -> BilledPeriod:
    """One version's period as an invoice bills it: rated from its totals, each line rounded once."""
    return bill(rate_period(contract_of(version(t)), MARCH, in_scope(v1=impressions)), cur)


def rows(b: BilledPeriod) -> list[tuple[str, Decimal]]:
    shortfall = [] if b.shortfall is None else [(SHORTFALL, b.shortfall.amount)]
    return [(ln.line.line_type, ln.amount) for ln in b.lines] + shortfall


def cpm_line(impressions: int, rate: str) -> Line:
    return Line("cpm_impressions", 1, "band:0", None, impressions, "per_thousand", D(rate),
                impressions_amount(impressions, D(rate)))


# Worked examples, by hand: amount = Σ impressions × rate ÷ 1000.
@pytest.mark.parametrize(
    ("name", "t", "impressions", "prior", "points", "over", "amount"),
    [
        ("flat", terms(), 2500, 0, [(0, "10.00", 2500)], 0, "25.000"),
        ("flat zero", terms(), 0, 0, [], 0, "0"),
        # graduated 6000: 1000 × 10 + 4000 × 8 + 1000 × 5 = 10 + 32 + 5 = 47.00
        ("graduated", terms("graduated", GRADUATED), 6000, 0, [(0, "10.00", 1000), (1, "8.00", 4000), (2, "5.00", 1000)], 0, "47.000"),
        # volume 6000: band 3 reached, every unit at 5.00 → 30.00
        ("volume", terms("volume", GRADUATED), 6000, 0, [(2, "5.00", 6000)], 0, "30.000"),
        # volume exactly 5000: position 4999 is band 2 → 8.00 → 40.00
        ("volume at threshold", terms("volume", GRADUATED), 5000, 0, [(1, "8.00", 5000)], 0, "40.000"),
        # lifetime basis: 800 earlier impressions, so 200 at 10 then 800 at 8 → 2 + 6.4 = 8.40
        ("graduated lifetime", terms("graduated", GRADUATED, "lifetime"), 1000, 800, [(0, "10.00", 200), (1, "8.00", 800)], 0, "8.400"),
        # period basis ignores lifetime history
        ("graduated period", terms("graduated", GRADUATED, "period"), 1000, 800, [(0, "10.00", 1000)], 0, "10.000"),
        # lifetime volume: 4500 + 1000 reach 5500 → band 3 at 5.00
        ("volume lifetime", terms("volume", GRADUATED, "lifetime"), 1000, 4500, [(2, "5.00", 1000)], 0, "5.000"),
        # per-period cap 12.00 at 10 CPM → 1200 billable, 300 over-delivery
        ("cap", terms(per_period="12.00"), 1500, 0, [(0, "10.00", 1200)], 300, "12.000"),
        # cap 1.00 at 3 CPM: 333 imps = 0.999, 334 = 1.002 > cap → 333 billed
        ("cap not exact", terms(bands=[(0, "3")], per_period="1.00"), 400, 0, [(0, "3", 333)], 67, "0.999"),
    ],
)
def test_cpm_worked_examples(
    name: str, t: ContractTerms, impressions: int, prior: int, points: list[tuple[int, str, int]], over: int, amount: str
) -> None:
    r = rate_cpm_period([VersionCount(version(t), impressions)], prior_lifetime_impressions=prior)
    assert [(p.band_index, str(p.rate_cpm), p.impressions) for p in r.price_points] == points, name
    assert r.over_delivery_impressions == over
    assert r.amount == D(amount)


def test_edge_case_01_amendment_mid_period_two_rates_split_by_event_time() -> None:
    march = period_by_key("2026-03", "America/New_York", PeriodKind.MONTH)
    v1 = ContractVersion("c-1", 1, datetime(2026, 1, 1, 5, tzinfo=UTC), None, terms(bands=[(0, "10.00")]))
    v2 = ContractVersion("c-1", 2, datetime(2026, 3, 15, 4, tzinfo=UTC), None, terms(bands=[(0, "12.00")]))
    # one impression per hour through March
    events = [march.start + timedelta(hours=h) for h in range(int((march.end - march.start) / timedelta(hours=1)))]
    grouped, orphans = split_by_version([v1, v2], events, lambda e: e)
    assert not orphans
    n1, n2 = len(grouped[1]), len(grouped[2])
    assert (n1, n2) == (14 * 24 - 1, 17 * 24)  # 8 March lost an hour to DST
    r = rate_cpm_period([VersionCount(v2, n2), VersionCount(v1, n1)])
    assert [(p.version, p.rate_cpm, p.impressions) for p in r.price_points] == [(1, D("10.00"), 335), (2, D("12.00"), 408)]
    # the invoice bills the same split from the period's totals: 335 × 10 / 1000 = 3.35 ; 408 × 12 / 1000 = 4.896 → 4.90
    b = bill(rate_period(contract_of(v1, v2), march, in_scope(v1=n1, v2=n2)), USD)
    assert [(ln.line.contract_version, ln.line.quantity, ln.amount) for ln in b.lines] == [(1, 335, D("3.35")), (2, 408, D("4.90"))]
    assert b.shortfall is None and b.total == D("8.25")


def test_edge_case_03_graduated_tier_crossed_inside_one_batch() -> None:
    t = terms("graduated", GRADUATED)
    c = contract_of(version(t))
    totals = in_scope(v1=900)
    before = rate_period(c, MARCH, totals)
    # one batch of 300 crosses the 1000 threshold: 100 at 10.00 and 200 at 8.00
    totals.merge(in_scope(v1=300))
    after = rate_period(c, MARCH, totals)
    assert [(ln.unit_price, ln.quantity) for ln in after.lines] == [(D("10.00"), 1000), (D("8.00"), 200)]
    assert [(ln.price_point, ln.quantity, ln.amount_exact) for ln in diff_lines(before.lines, after.lines)] == [
        ("band:0", 100, D("1.000")), ("band:1", 200, D("1.600"))]
    with exact():
        assert after.amount - before.amount == D("1.000") + D("1.600")
    # tiers run across versions: a second version continues at position 1200
    v2 = ContractVersion("c-1", 2, datetime(2026, 3, 20, tzinfo=UTC), None, terms("graduated", [(0, "20"), (1000, "9")]))
    r = rate_cpm_period([VersionCount(version(t), 1200), VersionCount(v2, 100)])
    assert [(p.version, p.rate_cpm, p.impressions) for p in r.price_points][-1] == (2, D("9"), 100)


def test_edge_case_04_budget_cap_reached_mid_batch() -> None:
    t = terms("graduated", GRADUATED, per_period="20.00")
    # 1000 × 10 = 10.00, then 8 CPM: (20 - 10) × 1000 / 8 = 1250 more → exactly 20.00
    r = rate_cpm_period([VersionCount(version(t), 4000)])
    assert r.billable_impressions == 2250 and r.over_delivery_impressions == 1750
    assert r.amount == D("20.000")
    b = billed(t, 4000)
    over = [ln for ln in b.lines if ln.line.line_type == "cpm_over_delivery"]
    assert len(over) == 1 and over[0].line.quantity == 1750 and over[0].amount == 0
    assert b.total == D("20.00")
    # the total cap counts what earlier periods billed
    t2 = terms(total="100.00")
    r2 = rate_cpm_period([VersionCount(version(t2), 5000)], prior_billed_total=D("95.00"))
    assert r2.billable_impressions == 500 and r2.over_delivery_impressions == 4500


def test_volume_cap_lowers_band_until_stable() -> None:
    # 6000 would be 5.00 CPM (30.00) but cap 25.00: at band 2 (8.00) 3125 fit, which is band 2.
    t = terms("volume", GRADUATED, per_period="25.00")
    r = rate_cpm_period([VersionCount(version(t), 6000)])
    assert [(p.rate_cpm, p.impressions) for p in r.price_points] == [(D("8.00"), 3125)]
    assert r.amount <= D("25.00") and r.over_delivery_impressions == 2875


def test_edge_case_13_jpy_and_bhd_rounding_of_a_half() -> None:
    jpy, bhd = currency("JPY"), currency("BHD")
    # JPY: 2500 × 1 / 1000 = 2.5 → 2 (half to even); 3500 → 3.5 → 4
    assert line_amount(cpm_line(2500, "1").amount_exact, jpy) == D("2")
    assert line_amount(cpm_line(3500, "1").amount_exact, jpy) == D("4")
    # BHD: 5 × 0.1 / 1000 = 0.0005 → 0.000; 15 × 0.1 / 1000 = 0.0015 → 0.002
    assert line_amount(cpm_line(5, "0.1").amount_exact, bhd) == D("0.000")
    assert line_amount(cpm_line(15, "0.1").amount_exact, bhd) == D("0.002")
    # USD half-cent: 125 impressions at 1 CPM = 0.125 → 0.12; 135 → 0.135 → 0.14
    assert line_amount(cpm_line(125, "1").amount_exact, USD) == D("0.12")
    assert line_amount(cpm_line(135, "1").amount_exact, USD) == D("0.14")
    # 252.5 yen → 252
    assert [ln.amount for ln in billed(terms(bands=[(0, "250")], cur="JPY"), 1010, jpy).lines] == [D("252")]
    # 0.1255 BHD → 0.126 (half-even), and the shortfall brings it to exactly the minimum 1.000
    b = billed(terms(bands=[(0, "0.125")], cur="BHD", minimum="1.000"), 1004, bhd)
    assert rows(b) == [("cpm_impressions", D("0.126")), (SHORTFALL, D("0.874"))]
    assert b.total == D("1.000")


def test_edge_case_14_minimum_commitment_not_reached_and_exceeded() -> None:
    t = terms(minimum="50.00")
    short = billed(t, 3333)
    # 33.33 billed, shortfall 16.67, total exactly the minimum
    assert rows(short) == [("cpm_impressions", D("33.33")), (SHORTFALL, D("16.67"))]
    assert short.shortfall is not None and (short.shortfall.minimum, short.shortfall.billed) == (D("50.00"), D("33.33"))
    assert short.total == D("50.00")
    enough = billed(t, 6000)
    assert rows(enough) == [("cpm_impressions", D("60.00"))] and enough.total == D("60.00")
    none = billed(t, 0)
    assert rows(none) == [(SHORTFALL, D("50.00"))]
    # the shortfall is measured against the rounded lines: 1001 at 5 CPM = 5.005 → 5.00, so 45.00
    assert rows(billed(terms(bands=[(0, "5")], minimum="50.00"), 1001)) == [("cpm_impressions", D("5.00")), (SHORTFALL, D("45.00"))]


def test_late_impressions_become_adjustment_deltas() -> None:
    t = terms("graduated", GRADUATED)
    c = contract_of(version(t))
    closed = rate_period(c, MARCH, in_scope(v1=900))
    corrected = rate_period(c, MARCH, in_scope(v1=1200))
    adj = diff_lines(closed.lines, corrected.lines)
    assert [(a.price_point, a.unit_price, a.quantity, a.amount_exact) for a in adj] == [
        ("band:0", D("10.00"), 100, D("1.000")), ("band:1", D("8.00"), 200, D("1.600"))]
    # telescoping: the closed lines plus the adjustments are the corrected rating, per price point
    summed: dict[tuple[str, int, str], tuple[int, Decimal]] = {}
    for ln in [*closed.lines, *adj]:
        q, a = summed.get(ln.key, (0, D(0)))
        summed[ln.key] = (q + ln.quantity, a + ln.amount_exact)
    assert summed == {ln.key: (ln.quantity, ln.amount_exact) for ln in corrected.lines}
    # two price points are two document lines: they never add up into one
    with pytest.raises(ValueError, match="one price point"):
        sum_lines(adj)


def test_budget_alerts() -> None:
    assert budget_alerts_crossed(D("0"), D("60"), D("100")) == [50]
    assert budget_alerts_crossed(D("49.99"), D("100.00"), D("100")) == [50, 80, 100]
    assert budget_alerts_crossed(D("80"), D("90"), D("100")) == []
    assert budget_alerts_crossed(D("0"), D("90"), None) == []


cards = st.sampled_from(["flat", "graduated", "volume"])
caps = st.none() | st.integers(1, 100_000).map(lambda c: f"{c}.00")


@settings(max_examples=80, deadline=None)
@given(
    kind=cards,
    basis=st.sampled_from(["period", "lifetime"]),
    per_period=caps,
    total=caps,
    counts=st.lists(st.integers(0, 3_000_000), min_size=1, max_size=3),
    prior=st.integers(0, 10_000_000),
    prior_billed=st.integers(0, 100_000),
)
def test_caps_never_exceeded_and_impressions_conserved(
    kind: str, basis: str, per_period: str | None, total: str | None, counts: list[int], prior: int, prior_billed: int
) -> None:
    bands = [(0, "10.00")] if kind == "flat" else [(0, "12.50"), (1_000_000, "9.10"), (2_000_000, "3.333")]
    t = terms(kind, bands, basis, per_period, total)
    vcs = [VersionCount(version(t, i + 1, datetime(2026, 1, 1 + i, tzinfo=UTC)), n) for i, n in enumerate(counts)]
    r = rate_cpm_period(vcs, prior_lifetime_impressions=prior, prior_billed_total=D(prior_billed))
    assert r.billable_impressions + r.over_delivery_impressions == sum(counts)
    if per_period is not None:
        assert r.amount <= D(per_period)
    if total is not None:
        with exact():
            assert D(prior_billed) + r.amount <= D(total) or r.billable_impressions == 0
    # the period's totals rate to the same price points, and the invoice rounds each line once
    c = contract_of(*(vc.version for vc in vcs))
    totals = PeriodTotals(in_scope_by_version={vc.version.version: vc.impressions for vc in vcs})
    b = bill(rate_period(c, MARCH, totals, prior_lifetime_impressions=prior, prior_billed_total=D(prior_billed)), USD)
    assert sum(ln.line.quantity for ln in b.lines if ln.line.line_type == "cpm_impressions") == r.billable_impressions
    assert sum(ln.line.quantity for ln in b.lines if ln.line.line_type == "cpm_over_delivery") == r.over_delivery_impressions
    with exact():
        assert sum((ln.line.amount_exact for ln in b.lines), D(0)) == r.amount
    for ln in b.lines:
        assert ln.line.amount_exact == impressions_amount(ln.line.quantity, ln.line.unit_price)
        assert ln.amount == round_to_minor(ln.line.amount_exact, USD)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**9), st.decimals(min_value=0, max_value=1000, places=3))
def test_rounding_happens_once(impressions: int, rate: Decimal) -> None:
    """A line bills impressions × rate ÷ 1000 rounded half-even once, checked against rational
    arithmetic (``round`` of a Fraction rounds half to even)."""
    amount = invoice_line(cpm_line(impressions, format(rate, "f")), USD).amount
    cents = round(Fraction(impressions) * Fraction(rate) / 1000 * 100)
    assert amount == D(cents).scaleb(-2)
