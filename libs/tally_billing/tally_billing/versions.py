"""Contract versions: which one is effective at an instant, and splitting events between them."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from tally_billing.periods import (
    Period,
    ensure_aware,
    flight_end_instant,
    flight_start_instant,
)
from tally_billing.terms import ContractTerms, TermsInvalid, parse_terms

__all__ = [
    "ContractVersion",
    "InvalidVersions",
    "effective_version",
    "in_flight",
    "split_by_version",
    "step_instants",
    "version_in_force",
    "versions_from_record",
    "versions_in_period",
]

E = TypeVar("E")


@dataclass(frozen=True)
class ContractVersion:
    contract_id: str
    version: int
    #: first instant (UTC) at which these terms govern events, inclusive
    effective_from: datetime
    #: instant (UTC) at which they stop governing, exclusive; ``None`` = open-ended
    effective_to: datetime | None
    terms: ContractTerms

    def __post_init__(self) -> None:
        ensure_aware(self.effective_from)
        if self.effective_to is not None and ensure_aware(self.effective_to) <= self.effective_from:
            raise ValueError("effective_to must be after effective_from")

    def covers(self, instant: datetime) -> bool:
        i = ensure_aware(instant)
        return self.effective_from <= i and (self.effective_to is None or i < self.effective_to)


def effective_version(versions: Sequence[ContractVersion], instant: datetime) -> ContractVersion | None:
    """The version governing ``instant``: the latest ``effective_from`` ≤ instant wins (a later
    amendment supersedes an earlier one from its start); its ``effective_to`` is exclusive.
    Equal ``effective_from`` is decided by the higher version number."""
    i = ensure_aware(instant)
    started = [v for v in versions if v.effective_from <= i]
    if not started:
        return None
    best = max(started, key=lambda v: (v.effective_from, v.version))
    return best if best.covers(i) else None


def in_flight(terms: ContractTerms, instant: datetime) -> bool:
    """True when ``instant`` lies in the flight: from local midnight of ``flight_start`` to
    23:59:59.999999 local on ``flight_end`` (inclusive), in the contract's time zone."""
    c = terms.common
    i = ensure_aware(instant)
    if i < flight_start_instant(c.flight_start, c.time_zone):
        return False
    return c.flight_end is None or i <= flight_end_instant(c.flight_end, c.time_zone)


def version_in_force(versions: Sequence[ContractVersion], instant: datetime) -> ContractVersion | None:
    """The effective version at ``instant`` if ``instant`` is also inside that version's flight."""
    v = effective_version(versions, instant)
    return v if v is not None and in_flight(v.terms, instant) else None


_ONE_US = timedelta(microseconds=1)


def step_instants(versions: Iterable[ContractVersion]) -> list[datetime]:
    """The instants (UTC, ascending, distinct) at which ``effective_version`` or ``in_flight``
    of these versions can change: every ``effective_from`` and ``effective_to``, every flight
    start and one microsecond after every flight end. Between two of them both are constant, so
    a caller computes its answer once per step and looks an instant up by bisection."""
    points: set[datetime] = set()
    for v in versions:
        points.add(ensure_aware(v.effective_from))
        if v.effective_to is not None:
            points.add(ensure_aware(v.effective_to))
        c = v.terms.common
        points.add(ensure_aware(flight_start_instant(c.flight_start, c.time_zone)))
        if c.flight_end is not None:
            try:
                points.add(ensure_aware(flight_end_instant(c.flight_end, c.time_zone)) + _ONE_US)
            except OverflowError:  # the flight ends at the end of time: no step there
                pass
    return sorted(points)


def split_by_version(
    versions: Sequence[ContractVersion],
    events: Iterable[E],
    occurred_at: Callable[[E], datetime],
) -> tuple[dict[int, list[E]], list[E]]:
    """Events grouped by the version effective at their event time, plus those no version
    governs (before the first version, after termination, or between versions)."""
    grouped: dict[int, list[E]] = {}
    orphans: list[E] = []
    for e in events:
        v = effective_version(versions, occurred_at(e))
        if v is None:
            orphans.append(e)
        else:
            grouped.setdefault(v.version, []).append(e)
    return grouped, orphans


def versions_in_period(versions: Sequence[ContractVersion], period: Period) -> list[ContractVersion]:
    """Versions that govern some instant of ``period``, in event-time order."""
    out: list[ContractVersion] = []
    for v in versions:
        if v.effective_from >= period.end:
            continue
        if v.effective_to is not None and v.effective_to <= period.start:
            continue
        # A version fully superseded by a later one starting no later than it does governs nothing.
        shadowed = any(
            w.effective_from <= v.effective_from and (w.effective_from, w.version) > (v.effective_from, v.version) for w in versions
        )
        if not shadowed:
            out.append(v)
    return sorted(out, key=lambda v: (v.effective_from, v.version))


class InvalidVersions(ValueError):
    """A ``contracts.terms`` record whose versions cannot be decoded; says which one and why."""


def versions_from_record(rec: Mapping[str, Any]) -> tuple[ContractVersion, ...]:
    """The approved versions of a ``contracts.terms`` record (decoded, with datetimes), in
    (effective_from, version) order — the one decoder every consumer uses.

    A termination (``terminated_at``) ends the version in force at that instant there
    (exclusive) and drops every version that would only have started after it.
    Raises :class:`InvalidVersions` naming the version whose terms do not parse."""
    cid = str(rec["contract_id"])
    end = rec.get("terminated_at")
    out: list[ContractVersion] = []
    for v in rec["versions"]:
        try:
            terms = parse_terms(json.loads(v["terms_json"]))
        except (TermsInvalid, ValueError, TypeError, KeyError) as exc:
            raise InvalidVersions(f"version {v.get('version')} has invalid terms: {exc}") from exc
        effective_to = v.get("effective_to")
        if end is not None and (effective_to is None or end < effective_to):
            effective_to = end
        if effective_to is not None and effective_to <= v["effective_from"]:
            continue  # terminated before it ever took effect
        out.append(ContractVersion(cid, int(v["version"]), v["effective_from"], effective_to, terms))
    return tuple(sorted(out, key=lambda x: (x.effective_from, x.version)))
