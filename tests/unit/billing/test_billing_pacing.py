"""Pacing arithmetic: expected spend, pace, projections and the hourly series, exact (no floats)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from itertools import pairwise

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tally_billing.pacing import (
    BACK_LOADED,
    EVEN,
    FRONT_LOADED,
    Curve,
    Granularity,
    HourTotal,
    PacingState,
    PacingStatus,
    Window,
    alert_state,
    flight_window,
    hour_of,
    lifetime_spend,
    pace,
    pace_total_cap,
    pacing_window,
    parse_curve,
    series,
)
from tally_billing.periods import PeriodKind, flight_end_instant, flight_start_instant, period_by_key

MARCH_NY = period_by_key("2026-03", "America/New_York", PeriodKind.MONTH)  # 743 hours (spring forward)
WINDOW = Window(MARCH_NY.start, MARCH_NY.end)

amounts = st.decimals(min_value=0, max_value=Decimal("1e12"), places=12, allow_nan=False, allow_infinity=False)
positive_amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("1e12"), places=12,
                               allow_nan=False, allow_infinity=False)
offsets_us = st.integers(min_value=-10 * 86_400_000_000, max_value=WINDOW.length_us + 10 * 86_400_000_000)
curves = st.sampled_from([EVEN, FRONT_LOADED, BACK_LOADED, parse_curve("0:0,0.1:0,0.9:1,1:1")])


def at(us: int) -> datetime:
    return WINDOW.start + timedelta(microseconds=us)


def test_even_pacing_halfway_through_march_in_new_york_expects_half_the_budget() -> None:
    halfway = WINDOW.start + timedelta(microseconds=WINDOW.length_us // 2)
    p = pace(spend=Decimal("5000"), as_of=halfway, window=WINDOW, budget=Decimal("10000"), cap=Decimal("10000"))
    assert p.elapsed_share == Decimal("0.500000")
    assert p.expected_spend == Decimal("5000.000000000000")
    assert p.pace_pct == Decimal("100.00")
    assert p.status is PacingStatus.ON_PACE
    assert p.projected_spend == Decimal("10000.000000000000")
    assert p.projected_cap_at == WINDOW.end  # reached exactly at the end: not before it
    assert alert_state(p, under_threshold_pct=Decimal(20)) is PacingState.ON_PACE


def test_over_pacing_projects_the_instant_the_cap_is_reached() -> None:
    # a quarter of March gone, half the cap spent: at this run rate the cap is reached halfway
    quarter = WINDOW.start + timedelta(microseconds=WINDOW.length_us // 4)
    p = pace(spend=Decimal("500"), as_of=quarter, window=WINDOW, budget=Decimal("1000"), cap=Decimal("1000"))
    assert p.status is PacingStatus.OVER and p.pace_pct == Decimal("200.00")
    assert p.projected_spend == Decimal("2000.000000000000")
    assert p.projected_cap_at is not None
    assert abs(p.projected_cap_at - (WINDOW.start + timedelta(microseconds=WINDOW.length_us // 2))) <= timedelta(microseconds=1)
    assert alert_state(p, under_threshold_pct=Decimal(20)) is PacingState.CAP_EXHAUSTION_PROJECTED


def test_under_pacing_beyond_the_threshold_alerts_and_inside_the_tolerance_recovers() -> None:
    half = WINDOW.start + timedelta(microseconds=WINDOW.length_us // 2)
    under = pace(spend=Decimal("300"), as_of=half, window=WINDOW, budget=Decimal("1000"), cap=Decimal("1000"))
    assert under.status is PacingStatus.UNDER and under.pace_pct == Decimal("60.00")
    assert under.projected_cap_at is None
    assert alert_state(under, under_threshold_pct=Decimal(20)) is PacingState.UNDER_PACING
    # 85 %: outside the 10 % tolerance, inside the 20 % threshold — the previous state holds
    between = pace(spend=Decimal("425"), as_of=half, window=WINDOW, budget=Decimal("1000"))
    assert between.status is PacingStatus.UNDER
    assert alert_state(between, under_threshold_pct=Decimal(20), previous=PacingState.UNDER_PACING) is PacingState.UNDER_PACING
    assert alert_state(between, under_threshold_pct=Decimal(20), previous=PacingState.ON_PACE) is PacingState.ON_PACE
    back = pace(spend=Decimal("480"), as_of=half, window=WINDOW, budget=Decimal("1000"))
    assert alert_state(back, under_threshold_pct=Decimal(20), previous=PacingState.UNDER_PACING) is PacingState.ON_PACE


def test_no_budget_and_not_started() -> None:
    p = pace(spend=Decimal("10"), as_of=WINDOW.start + timedelta(days=3), window=WINDOW, budget=None)
    assert p.status is PacingStatus.NO_BUDGET and p.expected_spend is None and p.pace_pct is None
    assert p.projected_spend is not None and p.projected_cap_at is None
    early = pace(spend=Decimal(0), as_of=WINDOW.start - timedelta(days=1), window=WINDOW, budget=Decimal(100))
    assert early.status is PacingStatus.NOT_STARTED and early.expected_spend == 0 and early.projected_spend is None


def test_a_reached_cap_is_reported_and_never_projected() -> None:
    p = pace(spend=Decimal("1000"), as_of=WINDOW.start + timedelta(days=9), window=WINDOW, budget=Decimal("1000"),
             cap=Decimal("1000"))
    assert p.cap_reached and p.projected_cap_at is None
    assert alert_state(p, under_threshold_pct=Decimal(20), previous=PacingState.CAP_EXHAUSTION_PROJECTED) \
        is PacingState.CAP_EXHAUSTION_PROJECTED


def test_the_window_is_the_period_cut_to_the_flight() -> None:
    tz = "America/New_York"
    w = pacing_window(MARCH_NY.start, MARCH_NY.end, flight_start=flight_start_instant(datetime(2026, 3, 10).date(), tz),
                      flight_end=flight_end_instant(datetime(2026, 3, 20).date(), tz))
    assert w is not None
    assert w.start == datetime(2026, 3, 10, 4, tzinfo=UTC)  # EDT from 8 March
    assert w.end == datetime(2026, 3, 21, 4, tzinfo=UTC)  # exclusive: one µs after the flight's last instant
    assert pacing_window(MARCH_NY.start, MARCH_NY.end, flight_end=MARCH_NY.start - timedelta(days=1)) is None
    # the elapsed share is real time: 11 days of 24 h
    assert w.elapsed(w.start + timedelta(days=11) / 2) == Fraction(1, 2)


def test_a_dst_week_is_paced_over_its_real_169_hours() -> None:
    week = period_by_key("2026-W44", "America/New_York", PeriodKind.WEEK)  # 26 Oct – 2 Nov 2026, fall back
    w = Window(week.start, week.end)
    assert w.length_us == 169 * 3_600_000_000
    p = pace(spend=Decimal("0"), as_of=week.start + timedelta(hours=13), window=w, budget=Decimal("169"))
    assert p.expected_spend == Decimal("13.000000000000")


def test_curves_parse_and_refuse_nonsense() -> None:
    assert parse_curve("even") is EVEN
    c = parse_curve("0:0, 0.5:0.7, 1:1")
    assert c.share_at(Fraction(1, 4)) == Fraction(7, 20)
    for bad in ("", "0:0", "0:0,1:0.9", "0:0,0.5:0.6,0.4:0.7,1:1", "0:0,0.5:0.8,0.6:0.7,1:1", "0:0,1.5:1",
                "0:0,0.5:nan,1:1", "0:0,1e-1:0.1,1:1"):
        with pytest.raises(ValueError):
            parse_curve(bad)


def test_negative_or_float_amounts_are_refused() -> None:
    with pytest.raises(ValueError, match="spend"):
        pace(spend=Decimal(-1), as_of=WINDOW.start, window=WINDOW, budget=Decimal(1))
    with pytest.raises(ValueError, match="budget"):
        pace(spend=Decimal(1), as_of=WINDOW.start, window=WINDOW, budget=1.5)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- properties


@settings(max_examples=300, deadline=None)
@given(budget=amounts, a=offsets_us, b=offsets_us, curve=curves)
def test_expected_spend_grows_with_time_from_zero_to_the_budget(budget: Decimal, a: int, b: int, curve: Curve) -> None:
    lo, hi = sorted((a, b))
    pa = pace(spend=Decimal(0), as_of=at(lo), window=WINDOW, budget=budget, curve=curve)
    pb = pace(spend=Decimal(0), as_of=at(hi), window=WINDOW, budget=budget, curve=curve)
    assert pa.expected_spend is not None and pb.expected_spend is not None
    assert Decimal(0) <= pa.expected_spend <= pb.expected_spend <= budget
    if hi >= WINDOW.length_us:
        assert pb.expected_spend == budget
    if lo <= 0:
        assert pa.expected_spend == 0


@settings(max_examples=300, deadline=None)
@given(budget=positive_amounts, spend=amounts, t=st.integers(min_value=1, max_value=WINDOW.length_us))
def test_even_expected_spend_is_the_budget_times_the_elapsed_share_rounded_once(budget: Decimal, spend: Decimal,
                                                                                 t: int) -> None:
    p = pace(spend=spend, as_of=at(t), window=WINDOW, budget=budget)
    exact = Fraction(budget) * Fraction(t, WINDOW.length_us)
    assert p.expected_spend is not None
    assert abs(Fraction(p.expected_spend) - exact) <= Fraction(1, 2 * 10 ** 12)
    for value in (p.expected_spend, p.projected_spend, p.pace_pct, p.elapsed_share):
        assert value is None or type(value) is Decimal


@settings(max_examples=300, deadline=None)
@given(budget=positive_amounts, spend=amounts, t=st.integers(min_value=1, max_value=WINDOW.length_us),
       tolerance=st.integers(min_value=0, max_value=50), curve=curves)
def test_the_status_follows_the_pace_and_the_tolerance(budget: Decimal, spend: Decimal, t: int, tolerance: int,
                                                       curve: Curve) -> None:
    p = pace(spend=spend, as_of=at(t), window=WINDOW, budget=budget, curve=curve, tolerance_pct=Decimal(tolerance))
    share = curve.share_at(Fraction(t, WINDOW.length_us))
    expected = Fraction(budget) * share
    if expected == 0:
        assert p.status is (PacingStatus.OVER if spend > 0 else PacingStatus.ON_PACE)
        return
    ratio = Fraction(spend) / expected * 100
    if abs(ratio - 100) <= tolerance:
        assert p.status is PacingStatus.ON_PACE
    elif ratio < 100:
        assert p.status is PacingStatus.UNDER
    else:
        assert p.status is PacingStatus.OVER


@settings(max_examples=300, deadline=None)
@given(cap=positive_amounts, spend=positive_amounts, t=st.integers(min_value=1, max_value=WINDOW.length_us),
       curve=curves)
def test_the_cap_is_projected_inside_the_window_exactly_when_the_projected_spend_reaches_it(
        cap: Decimal, spend: Decimal, t: int, curve: Curve) -> None:
    p = pace(spend=spend, as_of=at(t), window=WINDOW, budget=cap, cap=cap, curve=curve)
    if spend >= cap:
        assert p.cap_reached and p.projected_cap_at is None
        return
    assume(curve.share_at(Fraction(t, WINDOW.length_us)) > 0)
    assert p.projected_spend is not None and p.projected_spend >= spend
    if p.projected_cap_at is None:
        assert p.projected_spend < cap
    else:
        assert p.projected_spend >= cap
        assert p.as_of <= p.projected_cap_at + timedelta(microseconds=1) and p.projected_cap_at <= WINDOW.end
        # at the projected instant, spend at the current pace along the curve is the cap (to the µs)
        share_now = curve.share_at(WINDOW.elapsed(p.as_of))
        later = curve.share_at(WINDOW.elapsed(p.projected_cap_at + timedelta(microseconds=1)))
        assert Fraction(spend) * later / share_now >= Fraction(cap) or later == 1


@settings(max_examples=200, deadline=None)
@given(spend=positive_amounts, t=st.integers(min_value=1, max_value=WINDOW.length_us))
def test_even_projection_is_the_run_rate_since_the_start(spend: Decimal, t: int) -> None:
    p = pace(spend=spend, as_of=at(t), window=WINDOW, budget=None)
    exact = Fraction(spend) * WINDOW.length_us / t
    assert p.projected_spend is not None and abs(Fraction(p.projected_spend) - exact) <= Fraction(1, 2 * 10 ** 12)


# --------------------------------------------------------------------------- series


def test_hourly_series_carries_the_cumulative_total_through_hours_without_updates() -> None:
    s = MARCH_NY.start
    hours = {s: HourTotal(Decimal("1.5"), 1000), s + timedelta(hours=3): HourTotal(Decimal("4.5"), 3000)}
    pts = series(hours, period_start=MARCH_NY.start, period_end=MARCH_NY.end, tz=MARCH_NY.tz)
    assert [p.spend for p in pts] == [Decimal("1.5"), 0, 0, Decimal("3.0")]
    assert [p.cumulative_spend for p in pts] == [Decimal("1.5"), Decimal("1.5"), Decimal("1.5"), Decimal("4.5")]
    assert [p.billable for p in pts] == [1000, 0, 0, 2000]
    assert pts[0].start == s and pts[-1].end == s + timedelta(hours=4)


def test_daily_series_uses_the_local_days_of_the_contract_zone_and_its_dst_day_has_23_hours() -> None:
    s = MARCH_NY.start  # 1 March 05:00 UTC
    hours = {s + timedelta(hours=h): HourTotal(Decimal(h + 1), h + 1) for h in range(0, 24 * 9)}
    days = series(hours, period_start=MARCH_NY.start, period_end=MARCH_NY.end, tz=MARCH_NY.tz,
                  granularity=Granularity.DAY)
    assert len(days) == 9 + 1  # the 8th is 23 hours long, so 216 hours reach into the 10th
    assert [(d.end - d.start) // timedelta(hours=1) for d in days[:9]] == [24] * 7 + [23, 24]
    assert days[7].spend == Decimal(23)
    assert sum((d.spend for d in days), Decimal(0)) == days[-1].cumulative_spend == Decimal(216)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.integers(min_value=0, max_value=742), st.tuples(amounts, st.integers(0, 10 ** 9)),
                       min_size=1, max_size=60),
       st.sampled_from(list(Granularity)))
def test_series_spend_sums_to_the_last_cumulative_total(raw: dict[int, tuple[Decimal, int]], g: Granularity) -> None:
    hours = {MARCH_NY.start + timedelta(hours=h): HourTotal(a, b) for h, (a, b) in raw.items()}
    pts = series(hours, period_start=MARCH_NY.start, period_end=MARCH_NY.end, tz=MARCH_NY.tz, granularity=g)
    last = hours[max(hours)]
    assert sum((p.spend for p in pts), Decimal(0)) == last.amount == pts[-1].cumulative_spend
    assert sum(p.billable for p in pts) == last.billable
    assert all(a.end == b.start for a, b in pairwise(pts))


def test_hour_of_floors_to_the_utc_hour() -> None:
    assert hour_of(datetime(2026, 3, 8, 6, 59, 59, 999999, tzinfo=UTC)) == datetime(2026, 3, 8, 6, tzinfo=UTC)


# --------------------------------------------------------------------------- the total (lifetime) cap


@settings(max_examples=200, deadline=None)
@given(st.lists(amounts, max_size=30))
def test_lifetime_spend_is_the_exact_sum_of_the_periods(spends: list[Decimal]) -> None:
    assert Fraction(lifetime_spend(spends)) == sum((Fraction(s) for s in spends), Fraction(0))


@settings(max_examples=200, deadline=None)
@given(cap=positive_amounts, spends=st.lists(amounts, min_size=1, max_size=5), t=offsets_us, curve=curves)
def test_a_one_period_flight_paces_its_total_cap_as_the_period_paces_its_cap(
        cap: Decimal, spends: list[Decimal], t: int, curve: Curve) -> None:
    # the flight is exactly March: the lifetime window is the period's, the spend all periods'
    last = WINDOW.end - timedelta(microseconds=1)
    got = pace_total_cap(period_spends=spends, as_of=at(t), flight_start=WINDOW.start, flight_end=last,
                         cap_total=cap, curve=curve)
    assert got == pace(spend=lifetime_spend(spends), as_of=at(t), window=WINDOW, budget=cap, cap=cap, curve=curve)


@settings(max_examples=200, deadline=None)
@given(cap=positive_amounts, days=st.integers(1, 400), t=st.integers(0, 400 * 86_400_000_000), curve=curves)
def test_the_total_cap_is_spread_over_the_whole_flight_and_expected_in_full_once_the_curve_is_at_one(
        cap: Decimal, days: int, t: int, curve: Curve) -> None:
    start = datetime(2026, 1, 1, 5, tzinfo=UTC)
    end = start + timedelta(days=days) - timedelta(microseconds=1)
    p = pace_total_cap(period_spends=[], as_of=start + timedelta(microseconds=t), flight_start=start, flight_end=end,
                       cap_total=cap, curve=curve)
    assert p is not None and p.window == flight_window(start, end) and p.window.end == start + timedelta(days=days)
    assert p.expected_spend is not None and p.expected_spend <= cap
    assert (p.expected_spend == cap) == (curve.share_at(p.window.elapsed(p.as_of)) == 1)
    if t >= days * 86_400_000_000:  # the flight is over
        assert p.elapsed_share == 1 and p.expected_spend == cap


def test_an_open_ended_flight_has_no_total_cap_pacing() -> None:
    assert flight_window(WINDOW.start, None) is None
    assert pace_total_cap(period_spends=[Decimal(5)], as_of=WINDOW.end, flight_start=WINDOW.start, flight_end=None,
                          cap_total=Decimal(10)) is None
    with pytest.raises(ValueError):
        lifetime_spend([Decimal("NaN")])
