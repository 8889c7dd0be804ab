from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from tally_billing.examples import cpm_terms_json
from tally_billing.periods import PeriodKind, flight_end_instant, flight_start_instant, period_by_key
from tally_billing.terms import parse_terms
from tally_billing.versions import (
    ContractVersion,
    InvalidVersions,
    effective_version,
    in_flight,
    split_by_version,
    step_instants,
    version_in_force,
    versions_from_record,
    versions_in_period,
)

TERMS = parse_terms(cpm_terms_json())


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def v(n: int, start: datetime, end: datetime | None = None) -> ContractVersion:
    return ContractVersion("c-1", n, start, end, TERMS)


V1 = v(1, utc(2026, 1, 1, 5))
V2 = v(2, utc(2026, 3, 15, 4))
V3 = v(3, utc(2026, 6, 1, 4), utc(2026, 9, 1, 4))


@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        (utc(2025, 12, 31), None),
        (utc(2026, 1, 1, 5), 1),
        (utc(2026, 3, 15, 3, 59, 59), 1),
        (utc(2026, 3, 15, 4), 2),  # effective_from is inclusive
        (utc(2026, 6, 1, 4), 3),
        (utc(2026, 9, 1, 3, 59), 3),
        (utc(2026, 9, 1, 4), None),  # effective_to is exclusive and nothing follows
    ],
)
def test_effective_version(instant: datetime, expected: int | None) -> None:
    got = effective_version([V3, V1, V2], instant)
    assert (got.version if got else None) == expected



def test_step_instants_are_every_place_the_version_in_force_can_change() -> None:
    c = TERMS.common
    steps = step_instants([V3, V1, V2, V1])
    expected = {V1.effective_from, V2.effective_from, V3.effective_from, V3.effective_to,
                flight_start_instant(c.flight_start, c.time_zone)}
    if c.flight_end is not None:
        expected.add(flight_end_instant(c.flight_end, c.time_zone) + timedelta(microseconds=1))
    assert steps == sorted(expected) and all(s.tzinfo is UTC for s in steps)
    # between two steps nothing changes: the answer at a step holds until just before the next
    one_us = timedelta(microseconds=1)
    for start, nxt in pairwise(steps):
        for f in (effective_version, version_in_force):
            assert f([V1, V2, V3], start) == f([V1, V2, V3], nxt - one_us), (f.__name__, start)

def test_same_effective_from_higher_version_wins() -> None:
    a, b = v(1, utc(2026, 1, 1)), v(2, utc(2026, 1, 1))
    got = effective_version([b, a], utc(2026, 2, 1))
    assert got is not None and got.version == 2
    assert versions_in_period([a, b], period_by_key("2026-01", "UTC", PeriodKind.MONTH)) == [b]


def test_version_validation() -> None:
    with pytest.raises(ValueError):
        ContractVersion("c", 1, datetime(2026, 1, 1), None, TERMS)
    with pytest.raises(ValueError):
        v(1, utc(2026, 2, 1), utc(2026, 1, 1))


def test_flight_bounds_in_contract_zone() -> None:
    # Flight 2026-01-01 .. 2026-12-31 in New York.
    assert not in_flight(TERMS, utc(2026, 1, 1, 4, 59, 59))
    assert in_flight(TERMS, utc(2026, 1, 1, 5))
    assert in_flight(TERMS, datetime(2027, 1, 1, 4, 59, 59, 999999, tzinfo=UTC))
    assert not in_flight(TERMS, utc(2027, 1, 1, 5))
    assert version_in_force([V1], utc(2027, 2, 1)) is None


def test_amendment_mid_period_splits_events_by_event_time() -> None:
    march = period_by_key("2026-03", "America/New_York", PeriodKind.MONTH)
    events = [march.start + timedelta(days=d) for d in range(31)]
    grouped, orphans = split_by_version([V1, V2], events, lambda e: e)
    assert orphans == []
    # 1–14 March (local) under version 1, 15–31 March under version 2.
    assert len(grouped[1]) == 14 and len(grouped[2]) == 17
    assert max(grouped[1]) < V2.effective_from <= min(grouped[2])
    assert [x.version for x in versions_in_period([V2, V1, V3], march)] == [1, 2]


def _record(versions: list[tuple[int, datetime, datetime | None]], terminated_at: datetime | None = None,
            terms: str | None = None) -> dict[str, object]:
    return {"contract_id": "c-1", "terminated_at": terminated_at,
            "versions": [{"version": n, "effective_from": f, "effective_to": t, "terms_json": terms or json.dumps(cpm_terms_json())}
                         for n, f, t in versions]}


def test_versions_from_record_orders_and_cuts_at_termination() -> None:
    """One decoder for every consumer (attribution, metering, replay): versions in effect order;
    a termination ends the version in force there and drops those that would start after it."""
    rec = _record([(2, utc(2026, 3, 15, 4), None), (1, utc(2026, 1, 1, 5), utc(2026, 3, 15, 4))])
    assert [(x.version, x.effective_to) for x in versions_from_record(rec)] == [(1, utc(2026, 3, 15, 4)), (2, None)]
    cut = versions_from_record({**rec, "terminated_at": utc(2026, 2, 1)})
    assert [(x.version, x.effective_from, x.effective_to) for x in cut] == [(1, utc(2026, 1, 1, 5), utc(2026, 2, 1))]
    at_start = versions_from_record({**rec, "terminated_at": utc(2026, 3, 15, 4)})
    assert [x.version for x in at_start] == [1]  # v2 would only have started at the termination
    assert versions_from_record({**rec, "terminated_at": utc(2025, 12, 1)}) == ()


def test_versions_from_record_names_the_version_whose_terms_do_not_parse() -> None:
    with pytest.raises(InvalidVersions, match="version 1 has invalid terms"):
        versions_from_record(_record([(1, utc(2026, 1, 1, 5), None)], terms="{not json"))
    with pytest.raises(InvalidVersions, match="version 1 has invalid terms"):
        versions_from_record(_record([(1, utc(2026, 1, 1, 5), None)], terms=json.dumps({"contract_type": "cpm"})))
