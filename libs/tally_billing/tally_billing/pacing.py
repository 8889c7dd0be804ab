"""Pacing: spend against the budget expected at an instant of a period and flight, forecasts.

docs/DOMAIN.md ("Pacing"): the expected spend at an instant is the budget times the elapsed share of
the period or flight — even pacing unless a curve says otherwise; a contract is on pace within
a tolerance, under or over outside it; the projected cap instant is where the current pace
reaches the cap.

Definitions (every one is a pure function of its arguments; no clock is read here):

* **window**: the part of the billing period inside the flight, ``[start, end)`` in UTC.
* **elapsed share** ``e``: ``(as_of − start) / (end − start)``, clamped to ``[0, 1]``, exact
  (a :class:`~fractions.Fraction` of microseconds, so a 167- or 169-hour DST week is measured
  in real time).
* **curve**: the cumulative share of the budget expected at each elapsed share, piecewise
  linear through ``(0, 0)`` … ``(1, 1)``; :data:`EVEN` is the diagonal.
* **expected spend** = budget × curve(e).
* **pace** = spend ÷ expected × 100 (%); on pace when ``|pace − 100| ≤ tolerance``.
* **projected spend** (end of the window) = spend ÷ curve(e): the spend keeps following the
  curve at its current pace (for even pacing: the run rate since the window's start).
* **projected cap instant**: the first instant at which ``spend × curve(t) ÷ curve(e)`` reaches
  the cap, when that is inside the window.

Rounding (these are forecasts, never billed — money that is billed is rated elsewhere): the
arithmetic is exact in fractions; each result is rounded once, half-even, amounts to 12
decimal places (the scale of the Avro amounts), percentages to 2, shares to 6, and instants
down to the microsecond (the cap is never projected later than the exact instant).

The series (:func:`series`) turns cumulative totals kept per UTC hour into spend per hour or
per local day of the contract's zone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from enum import StrEnum
from fractions import Fraction
from itertools import pairwise

from .periods import ensure_aware, zone

__all__ = [
    "BACK_LOADED",
    "CURVES",
    "EVEN",
    "FRONT_LOADED",
    "HOUR",
    "Curve",
    "Granularity",
    "HourTotal",
    "Pacing",
    "PacingState",
    "PacingStatus",
    "SeriesPoint",
    "Window",
    "alert_state",
    "flight_window",
    "hour_of",
    "lifetime_spend",
    "pace",
    "pace_total_cap",
    "pacing_window",
    "parse_curve",
    "series",
]

HOUR = timedelta(hours=1)
AMOUNT_PLACES = 12
PCT_PLACES = 2
SHARE_PLACES = 6
#: a bound on curve breakpoints: a curve is a setting, not data
CURVE_POINTS_MAX = 64
_ONE = Fraction(1)
_ZERO = Fraction(0)
_HUNDRED = Fraction(100)
_US = timedelta(microseconds=1)
# Rounding a fraction to a few places never needs more digits than this; Inexact is the point.
_CTX = Context(prec=60, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation])


def _round(value: Fraction, places: int) -> Decimal:
    """``value`` rounded half-even to ``places`` decimals (the one rounding step of this module)."""
    scaled = value * (10 ** places)
    q, r = divmod(scaled.numerator, scaled.denominator)
    twice = 2 * r
    if twice > scaled.denominator or (twice == scaled.denominator and q % 2 == 1):
        q += 1
    return _CTX.scaleb(Decimal(q), -places)


def _frac(d: Decimal) -> Fraction:
    if not d.is_finite():
        raise ValueError(f"{d} is not a finite amount")
    return Fraction(d)


# --------------------------------------------------------------------------- curves


@dataclass(frozen=True)
class Curve:
    """Cumulative expected share of the budget by elapsed share of the window (piecewise linear).

    ``points`` run from ``(0, 0)`` to ``(1, 1)``; x strictly increases, y never decreases.
    """

    name: str
    points: tuple[tuple[Fraction, Fraction], ...]

    def __post_init__(self) -> None:
        pts = self.points
        if not 2 <= len(pts) <= CURVE_POINTS_MAX:
            raise ValueError(f"a curve has 2 to {CURVE_POINTS_MAX} points")
        if pts[0] != (_ZERO, _ZERO) or pts[-1] != (_ONE, _ONE):
            raise ValueError("a curve starts at 0:0 and ends at 1:1")
        for (x0, y0), (x1, y1) in pairwise(pts):
            if x1 <= x0:
                raise ValueError("curve points must have strictly increasing elapsed shares")
            if y1 < y0:
                raise ValueError("a curve's expected share never decreases")

    def share_at(self, elapsed: Fraction) -> Fraction:
        """The expected share of the budget after ``elapsed`` (clamped to [0, 1])."""
        if elapsed <= 0:
            return _ZERO
        if elapsed >= 1:
            return _ONE
        for (x0, y0), (x1, y1) in pairwise(self.points):
            if elapsed <= x1:
                return y0 + (y1 - y0) * (elapsed - x0) / (x1 - x0)
        return _ONE  # pragma: no cover - the last point is x = 1

    def elapsed_for(self, share: Fraction) -> Fraction | None:
        """The first elapsed share at which the curve reaches ``share``; None above 1."""
        if share <= 0:
            return _ZERO
        if share > 1:
            return None
        for (x0, y0), (x1, y1) in pairwise(self.points):
            if y1 >= share:
                if y1 == y0:  # a flat stretch already at the share: its start
                    return x0
                return x0 + (x1 - x0) * (share - y0) / (y1 - y0)
        return _ONE  # pragma: no cover - the last point is y = 1


EVEN = Curve("even", ((_ZERO, _ZERO), (_ONE, _ONE)))
#: 60 % of the budget in the first half of the window
FRONT_LOADED = Curve("front_loaded", ((_ZERO, _ZERO), (Fraction(1, 2), Fraction(3, 5)), (_ONE, _ONE)))
#: 40 % of the budget in the first half of the window
BACK_LOADED = Curve("back_loaded", ((_ZERO, _ZERO), (Fraction(1, 2), Fraction(2, 5)), (_ONE, _ONE)))
CURVES: Mapping[str, Curve] = {c.name: c for c in (EVEN, FRONT_LOADED, BACK_LOADED)}

_SHARE = re.compile(r"(0|1|0?\.\d{1,6}|1\.0{1,6})")


def parse_curve(text: str) -> Curve:
    """A named curve (``even``, ``front_loaded``, ``back_loaded``) or breakpoints
    ``"0:0,0.5:0.6,1:1"`` (elapsed share : expected share, decimals with at most 6 places)."""
    raw = text.strip()
    if raw in CURVES:
        return CURVES[raw]
    parts = [p.strip() for p in raw.split(",")]
    if len(parts) > CURVE_POINTS_MAX:
        raise ValueError(f"a curve has at most {CURVE_POINTS_MAX} points")
    points: list[tuple[Fraction, Fraction]] = []
    for part in parts:
        xy = part.split(":")
        if len(xy) != 2 or not all(_SHARE.fullmatch(v.strip()) for v in xy):
            raise ValueError(f"{part!r} is not 'elapsed:expected' with shares from 0 to 1; "
                             f"or use one of {', '.join(CURVES)}")
        points.append((Fraction(Decimal(xy[0].strip())), Fraction(Decimal(xy[1].strip()))))
    return Curve(raw, tuple(points))


# --------------------------------------------------------------------------- window and pacing


@dataclass(frozen=True)
class Window:
    """The part of a period inside the flight: ``[start, end)``, UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if ensure_aware(self.end) <= ensure_aware(self.start):
            raise ValueError("a pacing window ends after it starts")

    @property
    def length_us(self) -> int:
        return _us(self.end - self.start)

    def elapsed(self, as_of: datetime) -> Fraction:
        """Elapsed share at ``as_of``, exact, clamped to [0, 1]."""
        done = _us(ensure_aware(as_of) - self.start)
        return min(_ONE, max(_ZERO, Fraction(done, self.length_us)))

    def at(self, elapsed: Fraction) -> datetime:
        """The instant at ``elapsed`` share of the window, floored to the microsecond."""
        us = elapsed * self.length_us
        return self.start + timedelta(microseconds=us.numerator // us.denominator)


def _us(d: timedelta) -> int:
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def pacing_window(period_start: datetime, period_end: datetime, *, flight_start: datetime | None = None,
                  flight_end: datetime | None = None) -> Window | None:
    """The period ``[period_start, period_end)`` cut to the flight; None when they do not meet.

    ``flight_end`` is the flight's last instant (``periods.flight_end_instant``: 23:59:59.999999
    local), so the window ends one microsecond after it.
    """
    start = ensure_aware(period_start)
    end = ensure_aware(period_end)
    if flight_start is not None:
        start = max(start, ensure_aware(flight_start))
    if flight_end is not None:
        end = min(end, ensure_aware(flight_end) + _US)
    return Window(start, end) if end > start else None


def flight_window(flight_start: datetime, flight_end: datetime | None) -> Window | None:
    """The whole flight, ``[flight_start, flight_end + 1 µs)`` (``flight_end`` is its last instant,
    as for :func:`pacing_window`), over which a total (lifetime) cap is paced; None when the
    flight is open-ended (a lifetime cap without an end is not spread over anything)."""
    if flight_end is None:
        return None
    start, end = ensure_aware(flight_start), ensure_aware(flight_end) + _US
    return Window(start, end) if end > start else None


def lifetime_spend(period_spends: Iterable[Decimal]) -> Decimal:
    """A contract's spend over its life: the sum of its periods' totals, exact (a credit is negative)."""
    total = Decimal(0)
    for s in period_spends:
        _frac(s)  # finite, or ValueError
        total = _CTX.add(total, s)
    return total


def pace_total_cap(*, period_spends: Iterable[Decimal], as_of: datetime, flight_start: datetime,
                   flight_end: datetime | None, cap_total: Decimal, curve: Curve = EVEN,
                   tolerance_pct: Decimal = Decimal(10)) -> Pacing | None:
    """The pacing of a total (lifetime) cap: the contract's spend over all its periods against the
    cap spread over the whole flight by ``curve`` — :func:`pace` with the flight as the window
    and the cap as both budget and cap. None when the flight is open-ended."""
    window = flight_window(flight_start, flight_end)
    if window is None:
        return None
    spend = lifetime_spend(period_spends)
    if spend < 0:  # credits beyond what was spent: nothing is spent yet
        spend = Decimal(0)
    return pace(spend=spend, as_of=as_of, window=window, budget=cap_total, cap=cap_total, curve=curve,
                tolerance_pct=tolerance_pct)


class PacingStatus(StrEnum):
    NO_BUDGET = "no_budget"  # neither a cap nor a commitment to pace against
    NOT_STARTED = "not_started"  # the window has not begun
    ON_PACE = "on_pace"
    UNDER = "under"
    OVER = "over"


@dataclass(frozen=True)
class Pacing:
    as_of: datetime
    window: Window
    spend: Decimal
    budget: Decimal | None
    cap: Decimal | None
    curve: str
    #: elapsed share of the window, 6 places
    elapsed_share: Decimal
    expected_spend: Decimal | None
    #: spend ÷ expected × 100, 2 places; None while nothing is expected yet
    pace_pct: Decimal | None
    status: PacingStatus
    projected_spend: Decimal | None
    #: first instant at which the cap is projected to be reached inside the window
    projected_cap_at: datetime | None
    cap_reached: bool


def pace(*, spend: Decimal, as_of: datetime, window: Window, budget: Decimal | None, cap: Decimal | None = None,
         curve: Curve = EVEN, tolerance_pct: Decimal = Decimal(10)) -> Pacing:
    """The pacing of ``spend`` at ``as_of`` against ``budget`` over ``window`` (see the module doc).

    ``budget`` is what the window should spend (the period's cap, or its commitment); ``cap`` is
    the amount billing stops at (projected cap instant), usually the same as the budget.
    """
    for name, value in (("spend", spend), ("budget", budget), ("cap", cap), ("tolerance_pct", tolerance_pct)):
        if value is not None and (not isinstance(value, Decimal) or not value.is_finite() or value < 0):
            raise ValueError(f"{name} must be a finite Decimal ≥ 0, not {value!r}")
    as_of = ensure_aware(as_of)
    s = _frac(spend)
    e = window.elapsed(as_of)
    share = curve.share_at(e)

    expected: Fraction | None = None if budget is None else _frac(budget) * share
    pct: Fraction | None = None
    if budget is None:
        status = PacingStatus.NO_BUDGET
    elif e == 0:
        status = PacingStatus.NOT_STARTED
    elif expected == 0:
        status = PacingStatus.OVER if s > 0 else PacingStatus.ON_PACE
    else:
        assert expected is not None
        pct = s / expected * _HUNDRED
        tol = _frac(tolerance_pct)
        if abs(pct - _HUNDRED) <= tol:
            status = PacingStatus.ON_PACE
        else:
            status = PacingStatus.UNDER if pct < _HUNDRED else PacingStatus.OVER

    projected = None if share == 0 else s / share
    cap_reached = cap is not None and s >= _frac(cap)
    cap_at: datetime | None = None
    if cap is not None and not cap_reached and s > 0 and share > 0:
        target = share * _frac(cap) / s  # the curve's share at which spend would reach the cap
        at = curve.elapsed_for(target)
        if at is not None:
            cap_at = window.at(at)
    return Pacing(
        as_of=as_of, window=window, spend=spend, budget=budget, cap=cap, curve=curve.name,
        elapsed_share=_round(e, SHARE_PLACES),
        expected_spend=None if expected is None else _round(expected, AMOUNT_PLACES),
        pace_pct=None if pct is None else _round(pct, PCT_PLACES),
        status=status,
        projected_spend=None if projected is None else _round(projected, AMOUNT_PLACES),
        projected_cap_at=cap_at,
        cap_reached=cap_reached,
    )


# --------------------------------------------------------------------------- alert state


class PacingState(StrEnum):
    """What ad servers are told, once per change (``billing.pacing_alerts``)."""

    ON_PACE = "on_pace"
    CAP_EXHAUSTION_PROJECTED = "cap_exhaustion_projected"
    UNDER_PACING = "under_pacing"


def alert_state(p: Pacing, *, under_threshold_pct: Decimal, previous: PacingState = PacingState.ON_PACE
                ) -> PacingState:
    """The alert state of ``p``.

    * the cap is projected to be reached before the window ends → ``cap_exhaustion_projected``;
    * the pace is more than ``under_threshold_pct`` below 100 → ``under_pacing``;
    * a pace back inside the tolerance → ``on_pace``;
    * otherwise (between the tolerance and the threshold, over without a cap, no budget, not
      started, the cap already reached) the previous state holds: a state is left only by
      reaching another one, so a pace wobbling around a boundary does not repeat alerts.
    """
    if p.projected_cap_at is not None and p.projected_cap_at < p.window.end:
        return PacingState.CAP_EXHAUSTION_PROJECTED
    if p.pace_pct is not None and p.pace_pct < Decimal(100) - under_threshold_pct:
        return PacingState.UNDER_PACING
    if p.status is PacingStatus.ON_PACE and p.pace_pct is not None:
        return PacingState.ON_PACE
    return previous


# --------------------------------------------------------------------------- series


def hour_of(instant: datetime) -> datetime:
    """The UTC hour holding ``instant`` (its start)."""
    t = ensure_aware(instant)
    return t.replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class HourTotal:
    """The period's cumulative totals as of the newest update whose event time falls in an hour."""

    amount: Decimal
    billable: int


class Granularity(StrEnum):
    HOUR = "hour"
    DAY = "day"


@dataclass(frozen=True)
class SeriesPoint:
    start: datetime
    end: datetime
    #: spend in the bucket: the cumulative total at its end minus at its start (negative after a credit)
    spend: Decimal
    cumulative_spend: Decimal
    billable: int
    cumulative_billable: int


def series(hours: Mapping[datetime, HourTotal], *, period_start: datetime, period_end: datetime, tz: str,
           granularity: Granularity = Granularity.HOUR) -> list[SeriesPoint]:
    """Spend per hour (UTC hours) or per local day of ``tz`` over the period, up to its last hour with data.

    ``hours`` holds cumulative totals by UTC hour start; an hour without an entry carries the
    cumulative total before it (spend 0). A day bucket holds the hours that start on that local
    date (in zones with half-hour offsets an hour belongs to the day its start falls in).
    Hours outside the period are ignored.
    """
    start = hour_of(ensure_aware(period_start))
    end = ensure_aware(period_end)
    inside = sorted(h for h in hours if start <= h < end)
    if not inside:
        return []
    last = inside[-1]
    points: list[SeriesPoint] = []
    cum_amount, cum_billable = Decimal(0), 0
    h = start
    while h <= last:
        total = hours.get(h)
        amount = total.amount if total is not None else cum_amount
        billable = total.billable if total is not None else cum_billable
        points.append(SeriesPoint(h, h + HOUR, _sub(amount, cum_amount), amount, billable - cum_billable, billable))
        cum_amount, cum_billable = amount, billable
        h += HOUR
    if granularity is Granularity.HOUR:
        return points
    return _by_day(points, tz, end)


def _sub(a: Decimal, b: Decimal) -> Decimal:
    return _CTX.subtract(a, b)


def _by_day(points: Sequence[SeriesPoint], tz: str, period_end: datetime) -> list[SeriesPoint]:
    z = zone(tz)
    days: list[SeriesPoint] = []
    for p in points:
        day = p.start.astimezone(z).date()
        if days and days[-1].start.astimezone(z).date() == day:
            d = days[-1]
            days[-1] = SeriesPoint(d.start, p.end, _CTX.add(d.spend, p.spend), p.cumulative_spend,
                                   d.billable + p.billable, p.cumulative_billable)
        else:
            days.append(SeriesPoint(p.start, p.end, p.spend, p.cumulative_spend, p.billable, p.cumulative_billable))
    return [SeriesPoint(d.start, min(d.end, period_end), d.spend, d.cumulative_spend, d.billable,
                        d.cumulative_billable) for d in days]

