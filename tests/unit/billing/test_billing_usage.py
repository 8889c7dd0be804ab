"""15-minute buckets are exact: no contract boundary in any zone can split one."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tally_billing.periods import PeriodKind, flight_end_instant, local_midnight, period_containing
from tally_billing.usage import BUCKET_US, BUCKETS_PER_DAY, bucket_of, bucket_start, from_micros, is_bucket_boundary, to_micros

FROM_YEAR, TO_YEAR = 1990, 2040
ZONES = sorted(available_timezones())


def _offsets(z: ZoneInfo) -> set[timedelta]:
    """Every UTC offset ``z`` shows between FROM_YEAR and TO_YEAR: a weekly scan finds the weeks
    with a transition, and each such week is read hour by hour (an offset that came and went
    inside one week would be missed; no zone has had one since 1990)."""
    seen: set[timedelta] = set()
    t = datetime(FROM_YEAR, 1, 1, tzinfo=UTC)
    end = datetime(TO_YEAR, 1, 1, tzinfo=UTC)
    step = timedelta(days=7)
    last = t.astimezone(z).utcoffset()
    assert last is not None
    seen.add(last)
    while t < end:
        nxt = t + step
        off = nxt.astimezone(z).utcoffset()
        assert off is not None
        if off != last:  # a transition inside the week: look at every hour of it
            h = t
            while h <= nxt:
                o = h.astimezone(z).utcoffset()
                assert o is not None
                seen.add(o)
                h += timedelta(hours=1)
            last = off
        t = nxt
    return seen


def test_every_zone_offset_in_use_is_a_multiple_of_15_minutes() -> None:
    odd = {}
    for name in ZONES:
        bad = [o for o in _offsets(ZoneInfo(name)) if o % timedelta(minutes=15)]
        if bad:
            odd[name] = bad
    assert not odd, f"zones with offsets that would split a 15-minute bucket: {odd}"
    assert len(ZONES) > 400


@pytest.mark.parametrize("name", ["America/New_York", "Europe/Berlin", "Asia/Kathmandu", "Australia/Lord_Howe",
                                  "Pacific/Chatham", "Asia/Kolkata", "Pacific/Kiritimati", "America/St_Johns"])
def test_local_midnights_period_and_flight_boundaries_are_bucket_boundaries(name: str) -> None:
    day = date(2024, 1, 1)
    while day < date(2029, 1, 1):
        assert is_bucket_boundary(local_midnight(day, name)), (name, day)
        day += timedelta(days=1)
    p = period_containing(datetime(2028, 2, 29, 12, tzinfo=UTC), name, PeriodKind.MONTH)
    assert is_bucket_boundary(p.start) and is_bucket_boundary(p.end)
    # a flight's last microsecond is one before a bucket boundary
    assert is_bucket_boundary(flight_end_instant(date(2026, 11, 1), name) + timedelta(microseconds=1))


def test_a_day_has_96_buckets() -> None:
    assert BUCKETS_PER_DAY == 96
    t = to_micros(datetime(2026, 3, 8, 6, 59, 59, 999_999, tzinfo=UTC))
    assert bucket_of(t) == bucket_of(to_micros(datetime(2026, 3, 8, 6, 45, tzinfo=UTC)))
    assert bucket_of(t + 1) == bucket_of(t) + 1


@given(st.integers(min_value=0, max_value=4_102_444_800_000_000))
def test_bucket_round_trip(t_us: int) -> None:
    b = bucket_of(t_us)
    assert bucket_start(b) <= t_us < bucket_start(b) + BUCKET_US
    assert to_micros(from_micros(t_us)) == t_us
