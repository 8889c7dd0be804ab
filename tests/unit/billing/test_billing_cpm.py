from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tally_billing.aggregate import AggregateState
from tally_billing.cpm import VersionCount, budget_alerts_crossed, impressions_amount, rate_cpm_period
from tally_billing.examples import cpm_terms_json
from tally_billing.invoice_lines import LineKind, cpm_adjustments, cpm_lines, line_amount, lines_total
from tally_billing.money import currency, exact, round_to_minor
from tally_billing.periods import PeriodKind, period_by_key
from tally_billing.terms import ContractTerms, parse_terms
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
    lines = cpm_lines("c-1", "2026-03", r, USD)
    # 335 × 10 / 1000 = 3.35 ; 408 × 12 / 1000 = 4.896 → 4.90
    assert [line.amount for line in lines] == [D("3.35"), D("4.90")]


def test_edge_case_03_graduated_tier_crossed_inside_one_batch() -> None:
    t = terms("graduated", GRADUATED)
    state = AggregateState.empty("c-1", "2026-03").with_impressions(1, 900)
    # one batch of 300 crosses the 1000 threshold: 100 at 10.00 and 200 at 8.00
    before = rate_cpm_period([VersionCount(version(t), state.cpm_impressions[1])])
    state = state.merge(AggregateState.empty("c-1", "2026-03").with_impressions(1, 300))
    after = rate_cpm_period([VersionCount(version(t), state.cpm_impressions[1])])
    assert [(p.rate_cpm, p.impressions) for p in after.price_points] == [(D("10.00"), 1000), (D("8.00"), 200)]
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
    lines = cpm_lines("c-1", "2026-03", r, USD)
    over = [line for line in lines if line.kind is LineKind.OVER_DELIVERY]
    assert len(over) == 1 and over[0].quantity == 1750 and over[0].amount == 0
    assert lines_total(lines) == D("20.00")
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
    assert line_amount(D(2500), D("0.001"), jpy) == D("2")
    assert line_amount(D(3500), D("0.001"), jpy) == D("4")
    # BHD: 5 × 0.0001 = 0.0005 → 0.000; 15 × 0.0001 = 0.0015 → 0.002
    assert line_amount(D(5), D("0.0001"), bhd) == D("0.000")
    assert line_amount(D(15), D("0.0001"), bhd) == D("0.002")
    # USD half-cent: 125 impressions at 1 CPM = 0.125 → 0.12; 135 → 0.135 → 0.14
    assert line_amount(D(125), D("0.001"), USD) == D("0.12")
    assert line_amount(D(135), D("0.001"), USD) == D("0.14")
    t = terms(bands=[(0, "250")], cur="JPY")
    r = rate_cpm_period([VersionCount(version(t), 1010)])  # 252.5 yen → 252
    assert [line.amount for line in cpm_lines("c", "2026-03", r, jpy)] == [D("252")]
    t = terms(bands=[(0, "0.125")], cur="BHD", minimum="1.000")
    r = rate_cpm_period([VersionCount(version(t), 1004)])  # 0.1255 BHD → 0.126 (half-even: 0.1255 → 0.126)
    lines = cpm_lines("c", "2026-03", r, bhd)
    assert [line.amount for line in lines] == [D("0.126"), D("0.874")]


def test_edge_case_14_minimum_commitment_not_reached_and_exceeded() -> None:
    t = terms(minimum="50.00")
    short = cpm_lines("c", "2026-03", rate_cpm_period([VersionCount(version(t), 3333)]), USD)
    # 33.33 billed, shortfall 16.67, total exactly the minimum
    assert [(line.kind, line.amount) for line in short] == [(LineKind.CPM, D("33.33")), (LineKind.MINIMUM_SHORTFALL, D("16.67"))]
    assert lines_total(short) == D("50.00")
    enough = cpm_lines("c", "2026-03", rate_cpm_period([VersionCount(version(t), 6000)]), USD)
    assert [line.kind for line in enough] == [LineKind.CPM] and lines_total(enough) == D("60.00")
    none = cpm_lines("c", "2026-03", rate_cpm_period([VersionCount(version(t), 0)]), USD)
    assert [(line.kind, line.amount) for line in none] == [(LineKind.MINIMUM_SHORTFALL, D("50.00"))]


def test_late_impressions_become_adjustment_deltas() -> None:
    t = terms("graduated", GRADUATED)
    closed = rate_cpm_period([VersionCount(version(t), 900)])
    corrected = rate_cpm_period([VersionCount(version(t), 1200)])
    adj = cpm_adjustments("c-1", "2026-02", closed, corrected, "late_event")
    assert [(a.unit_price, a.quantity) for a in adj] == [(D("0.01"), D(100)), (D("0.008"), D(200))]


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
    for line in cpm_lines("c", "k", r, USD):
        with exact():
            assert line.amount == round_to_minor(line.quantity * line.unit_price, USD)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**9), st.decimals(min_value=0, max_value=1000, places=3))
def test_rounding_happens_once(impressions: int, rate: Decimal) -> None:
    exact_amount = impressions_amount(impressions, rate)
    with exact():
        assert line_amount(D(impressions), rate / 1000, USD) == round_to_minor(exact_amount, USD)
