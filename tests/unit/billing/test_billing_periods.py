from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tally_billing.periods import (
    PeriodKind,
    close_time,
    flight_end_instant,
    next_period,
    period_by_key,
    period_containing,
    previous_period,
)

ZONES = [
    "UTC",
    "America/New_York",
    "Europe/London",
    "Europe/Berlin",
    "Australia/Sydney",
    "Pacific/Kiritimati",
    "Pacific/Pago_Pago",
    "America/Santiago",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
]


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("instant", "tz", "kind", "key", "start", "end"),
    [
        # New York March 2026 contains the spring-forward day (8 March): 31 days minus one hour.
        (utc(2026, 3, 15), "America/New_York", "month", "2026-03", utc(2026, 3, 1, 5), utc(2026, 4, 1, 4)),
        # 04:30 UTC on 1 March is still February in New York.
        (utc(2026, 3, 1, 4, 30), "America/New_York", "month", "2026-02", utc(2026, 2, 1, 5), utc(2026, 3, 1, 5)),
        # November: fall back on 1 November, so the month is one hour longer.
        (utc(2026, 11, 10), "America/New_York", "month", "2026-11", utc(2026, 11, 1, 4), utc(2026, 12, 1, 5)),
        # ISO week containing the US spring-forward Sunday (Mon 2 Mar – Sun 8 Mar).
        (utc(2026, 3, 8, 12), "America/New_York", "week", "2026-W10", utc(2026, 3, 2, 5), utc(2026, 3, 9, 4)),
        # ISO week 1 of 2026 starts on Monday 29 December 2025.
        (utc(2025, 12, 31), "UTC", "week", "2026-W01", utc(2025, 12, 29), utc(2026, 1, 5)),
        # Far zone UTC+14: its March starts on 28 February at 10:00 UTC.
        (utc(2026, 2, 28, 11), "Pacific/Kiritimati", "month", "2026-03", utc(2026, 2, 28, 10), utc(2026, 3, 31, 10)),
        # Far zone UTC-11: still 31 January there at 05:00 UTC on 1 February.
        (utc(2026, 2, 1, 5), "Pacific/Pago_Pago", "month", "2026-01", utc(2026, 1, 1, 11), utc(2026, 2, 1, 11)),
        # Sydney: DST ends on 5 April 2026 (UTC+11 → UTC+10).
        (utc(2026, 4, 15), "Australia/Sydney", "month", "2026-04", utc(2026, 3, 31, 13), utc(2026, 4, 30, 14)),
    ],
)
def test_period_containing(instant: datetime, tz: str, kind: str, key: str, start: datetime, end: datetime) -> None:
    p = period_containing(instant, tz, PeriodKind(kind))
    assert (p.key, p.start, p.end) == (key, start, end)
    assert instant in p
    assert period_by_key(key, tz, PeriodKind(kind)) == p


def test_edge_case_12_periods_across_dst_and_far_zone() -> None:
    # DST: the New York March period is 743 hours, November 721, October 744.
    ny = "America/New_York"
    hours = {
        k: (p.end - p.start) / timedelta(hours=1)
        for k in ("2026-03", "2026-10", "2026-11")
        for p in [period_by_key(k, ny, PeriodKind.MONTH)]
    }
    assert hours == {"2026-03": 743, "2026-10": 744, "2026-11": 721}
    # The instant 1 ms before the period end belongs to it; the end belongs to the next.
    march = period_by_key("2026-03", ny, PeriodKind.MONTH)
    assert period_containing(march.end - timedelta(microseconds=1), ny, PeriodKind.MONTH) == march
    assert period_containing(march.end, ny, PeriodKind.MONTH) == next_period(march)
    # Far zone: the same UTC instant is in different months in Kiritimati and Pago Pago.
    instant = utc(2026, 3, 31, 12)
    assert period_containing(instant, "Pacific/Kiritimati", PeriodKind.MONTH).key == "2026-04"
    assert period_containing(instant, "Pacific/Pago_Pago", PeriodKind.MONTH).key == "2026-03"
    # Santiago skips local midnight on 6 Sep 2026 (00:00 → 01:00): the week starts at 01:00.
    week = period_containing(utc(2026, 9, 9), "America/Santiago", PeriodKind.WEEK)
    assert week.start == utc(2026, 9, 7, 3)
    sunday = period_containing(utc(2026, 9, 6, 4), "America/Santiago", PeriodKind.WEEK)
    assert sunday.end == week.start


def test_naive_datetime_refused() -> None:
    with pytest.raises(ValueError):
        period_containing(datetime(2026, 3, 1), "UTC", PeriodKind.MONTH)


def test_bad_keys_and_zones() -> None:
    for key, kind in [("2026-13", "month"), ("2026-3", "month"), ("2026-W54", "week"), ("x", "week")]:
        with pytest.raises(ValueError):
            period_by_key(key, "UTC", PeriodKind(kind))
    with pytest.raises(ValueError):
        period_containing(utc(2026, 1, 1), "Mars/Olympus", PeriodKind.MONTH)


def test_close_time_default_grace_two_hours() -> None:
    p = period_by_key("2026-03", "America/New_York", PeriodKind.MONTH)
    assert close_time(p) == utc(2026, 4, 1, 6)
    assert close_time(p, timedelta(0)) == p.end
    with pytest.raises(ValueError):
        close_time(p, timedelta(hours=-1))


def test_flight_end_instant() -> None:
    assert flight_end_instant(date(2026, 3, 31), "America/New_York") == datetime(2026, 4, 1, 3, 59, 59, 999999, tzinfo=UTC)
    assert flight_end_instant(date(2026, 12, 31), "UTC") == datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def test_next_and_previous_are_inverse() -> None:
    p = period_by_key("2026-W01", "Europe/London", PeriodKind.WEEK)
    assert previous_period(next_period(p)) == p
    assert next_period(period_by_key("2026-12", "UTC", PeriodKind.MONTH)).key == "2027-01"


instants = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC))


@settings(max_examples=150)
@given(instant=instants, tz=st.sampled_from(ZONES), kind=st.sampled_from(list(PeriodKind)))
def test_periods_partition_time_without_gap_or_overlap(instant: datetime, tz: str, kind: PeriodKind) -> None:
    p = period_containing(instant, tz, kind)
    assert p.start <= instant < p.end
    nxt, prv = next_period(p), previous_period(p)
    assert nxt.start == p.end and prv.end == p.start  # no gap, no overlap
    assert period_containing(p.end, tz, kind) == nxt
    assert period_containing(p.start - timedelta(microseconds=1), tz, kind) == prv
    assert period_by_key(p.key, tz, kind) == p
    hours = (p.end - p.start) / timedelta(hours=1)
    if kind is PeriodKind.WEEK:
        assert 166 <= hours <= 170
    else:
        assert 28 * 24 - 2 <= hours <= 31 * 24 + 2
