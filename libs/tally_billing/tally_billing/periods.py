"""Billing periods: calendar months and ISO weeks in a contract's IANA time zone.

A period is the half-open UTC interval ``[start, end)`` between two local midnights.  ``end``
of one period is by construction ``start`` of the next, so periods partition time with no gap
or overlap, whatever daylight-saving does in between.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "DEFAULT_GRACE",
    "Period",
    "PeriodKind",
    "close_time",
    "ensure_aware",
    "flight_end_instant",
    "flight_start_instant",
    "local_midnight",
    "next_period",
    "period_by_key",
    "period_containing",
    "previous_period",
    "zone",
]

DEFAULT_GRACE = timedelta(hours=2)


class PeriodKind(StrEnum):
    MONTH = "month"
    WEEK = "week"


@dataclass(frozen=True)
class Period:
    kind: PeriodKind
    tz: str
    #: first instant of the period (local midnight of its first day), tz-aware UTC
    start: datetime
    #: first instant of the next period (exclusive), tz-aware UTC
    end: datetime
    #: ``"2026-03"`` for a month, ISO week ``"2026-W10"`` for a week
    key: str

    def __contains__(self, instant: object) -> bool:
        return isinstance(instant, datetime) and self.start <= ensure_aware(instant) < self.end


def zone(tz: str) -> ZoneInfo:
    """The IANA zone ``tz``; ``ValueError`` when unknown."""
    if not isinstance(tz, str) or not tz or tz.startswith("/") or ".." in tz:
        raise ValueError(f"unknown time zone {tz!r}")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {tz!r}") from None


def ensure_aware(instant: datetime) -> datetime:
    """``instant`` in UTC; naive datetimes are refused (an instant without a zone is no instant)."""
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"naive datetime {instant.isoformat()} is not an instant; give it a zone")
    return instant.astimezone(UTC)


@lru_cache(maxsize=8192)
def local_midnight(day: date, tz: str) -> datetime:
    """The first instant (UTC) whose local date in ``tz`` is ``day``.

    When midnight itself is skipped by a DST jump the day starts at the first local time that
    exists (fold=0 resolves the gap to the post-transition instant).  When midnight occurs
    twice, the earlier occurrence starts the day.

    Remembered per (day, zone) — a pure function of both, asked for every exposure and contract
    (flight start and end, period bounds) by attribution's decisions.
    """
    z = zone(tz)
    naive = datetime.combine(day, time())
    candidate = naive.replace(tzinfo=z, fold=0).astimezone(UTC)
    # A skipped midnight maps (fold=0) to an instant whose local date may still be the day
    # before; the day then starts at the transition, the first instant with the new date.
    if candidate.astimezone(z).date() < day:
        candidate = naive.replace(tzinfo=z, fold=1).astimezone(UTC)
    return candidate


def _month_start(year: int, month: int) -> date:
    return date(year, month, 1)


def _add_month(d: date) -> date:
    return date(d.year + (d.month == 12), d.month % 12 + 1, 1)


def _period_from_first_day(first_day: date, tz: str, kind: PeriodKind) -> Period:
    if kind is PeriodKind.MONTH:
        next_first = _add_month(first_day)
        key = f"{first_day.year:04d}-{first_day.month:02d}"
    else:
        next_first = first_day + timedelta(days=7)
        iso = first_day.isocalendar()
        key = f"{iso.year:04d}-W{iso.week:02d}"
    return Period(
        kind=kind,
        tz=tz,
        start=local_midnight(first_day, tz),
        end=local_midnight(next_first, tz),
        key=key,
    )


def _first_day_of(day: date, kind: PeriodKind) -> date:
    if kind is PeriodKind.MONTH:
        return _month_start(day.year, day.month)
    return day - timedelta(days=day.weekday())


#: the last period answered per (zone, kind): periods tile time, so the one whose
#: ``[start, end)`` holds an instant is the answer for it (consecutive asks mostly share one)
_LAST_PERIOD: dict[tuple[str, PeriodKind], Period] = {}


def period_containing(instant: datetime, tz: str, kind: PeriodKind) -> Period:
    """The billing period of ``kind`` in zone ``tz`` that contains ``instant``."""
    kind = PeriodKind(kind)
    utc_instant = ensure_aware(instant)
    held = _LAST_PERIOD.get((tz, kind))
    if held is not None and held.start <= utc_instant < held.end:
        return held
    p = _period_containing(utc_instant, tz, kind)
    _LAST_PERIOD[(tz, kind)] = p
    return p


def _period_containing(utc_instant: datetime, tz: str, kind: PeriodKind) -> Period:
    local_day = utc_instant.astimezone(zone(tz)).date()
    p = _period_from_first_day(_first_day_of(local_day, kind), tz, kind)
    # A repeated local hour around midnight can put an instant's local date on the other
    # side of a boundary; the UTC interval is the authority, so step until it contains it.
    while utc_instant < p.start:
        p = previous_period(p)
    while utc_instant >= p.end:
        p = next_period(p)
    return p


_MONTH_KEY = re.compile(r"(\d{4})-(\d{2})")
_WEEK_KEY = re.compile(r"(\d{4})-W(\d{2})")


def period_by_key(key: str, tz: str, kind: PeriodKind) -> Period:
    """The period named ``key`` (``"2026-03"`` or ``"2026-W10"``) in zone ``tz``."""
    kind = PeriodKind(kind)
    if kind is PeriodKind.MONTH:
        m = _MONTH_KEY.fullmatch(key)
        if m is None or not 1 <= int(m.group(2)) <= 12 or int(m.group(1)) < 1:
            raise ValueError(f"not a month key: {key!r}")
        first = date(int(m.group(1)), int(m.group(2)), 1)
    else:
        m = _WEEK_KEY.fullmatch(key)
        if m is None:
            raise ValueError(f"not an ISO week key: {key!r}")
        try:
            first = date.fromisocalendar(int(m.group(1)), int(m.group(2)), 1)
        except ValueError:
            raise ValueError(f"not an ISO week key: {key!r}") from None
    return _period_from_first_day(first, tz, kind)


def is_period_key(key: str) -> bool:
    """Whether ``key`` names a period: a month (``2026-03``, 01 to 12) or an ISO week
    (``2026-W10``, one the ISO calendar of that year has)."""
    for kind in PeriodKind:
        try:
            period_by_key(key, "UTC", kind)
        except ValueError:
            continue
        return True
    return False


def next_period(p: Period) -> Period:
    first = p.end.astimezone(zone(p.tz)).date()
    return _period_from_first_day(_first_day_of(first, p.kind), p.tz, p.kind)


def previous_period(p: Period) -> Period:
    last_day = (p.start.astimezone(zone(p.tz)) - timedelta(days=1)).date()
    return _period_from_first_day(_first_day_of(last_day, p.kind), p.tz, p.kind)


def close_time(p: Period, grace: timedelta = DEFAULT_GRACE) -> datetime:
    """When ``p`` closes: its end plus the grace time for late events."""
    if grace < timedelta(0):
        raise ValueError("grace must be ≥ 0")
    return p.end + grace


def flight_end_instant(end_date: date, tz: str) -> datetime:
    """The last instant of the flight: 23:59:59.999999 local on ``end_date``, as UTC.

    Computed as one microsecond before the next local midnight, which is the same instant on
    ordinary days and still well-defined on days where 23:59 does not exist or occurs twice.
    """
    return local_midnight(end_date + timedelta(days=1), tz) - timedelta(microseconds=1)


def flight_start_instant(start_date: date, tz: str) -> datetime:
    """The first instant of the flight: local midnight of ``start_date``, as UTC."""
    return local_midnight(start_date, tz)
