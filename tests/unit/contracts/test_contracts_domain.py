"""Unit tests of the contracts service's pure rules (tally_contracts.domain)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from tally_billing.examples import cpm_terms_json
from tally_billing.periods import PeriodKind
from tally_billing.terms import parse_terms
from tally_contracts import domain
from tally_contracts.domain import ApprovalContext, VersionFacts

D = datetime(2026, 4, 1, tzinfo=UTC)


def v(n: int, state: str = "approved", start: datetime = D, end: datetime | None = None, kind: str = "initial") -> VersionFacts:
    return VersionFacts(n, kind, state, start, end)


@pytest.mark.parametrize(("versions", "terminated", "now", "expected"), [
    ([v(1, "draft")], None, D, ("draft", None)),
    ([v(1, "rejected")], None, D, ("draft", None)),
    ([v(1, "submitted")], None, D, ("pending_approval", None)),
    ([v(1)], None, D - timedelta(seconds=1), ("scheduled", None)),
    ([v(1)], None, D, ("active", 1)),
    ([v(1, end=D + timedelta(days=30))], None, D + timedelta(days=30), ("ended", None)),
    ([v(1), v(2, start=D + timedelta(days=5), kind="amendment")], None, D + timedelta(days=5), ("active", 2)),
    ([v(1), v(2, "submitted", kind="amendment")], None, D, ("active", 1)),
    ([v(1)], D + timedelta(days=9), D, ("terminating", 1)),
    ([v(1)], D + timedelta(days=9), D + timedelta(days=9), ("ended", None)),
    ([v(1, end=D + timedelta(days=1)), v(2, start=D + timedelta(days=3), kind="renewal")], None, D + timedelta(days=2),
     ("scheduled", None)),
    ([v(1, end=D + timedelta(days=1)), v(2, start=D + timedelta(days=1), kind="renewal")], None, D + timedelta(days=1),
     ("active", 2)),
])
def test_status_is_derived_from_versions_and_the_clock(versions: list[VersionFacts], terminated: datetime | None,
                                                        now: datetime, expected: tuple[str, int | None]) -> None:
    got = domain.derive_status(versions, terminated, now)
    assert (got.status, got.current_version) == expected


def test_a_termination_version_does_not_price_anything() -> None:
    versions = [v(1), v(2, kind="termination", start=D + timedelta(days=3))]
    assert domain.derive_status(versions, None, D + timedelta(days=4)).current_version == 1


def _ctx(value: str | None, *, kind: str = "initial", ctype: str = "cpm", backdated: bool = False) -> ApprovalContext:
    return ApprovalContext(ctype, kind, "USD", None if value is None else Decimal(value), backdated)


def test_default_policy_needs_finance_above_100k_and_for_unbounded_contracts() -> None:
    policy = domain.parse_policy(domain.DEFAULT_POLICY_JSON)
    assert policy.required(_ctx("100000")) == {"approver": 1}
    assert policy.required(_ctx("100000.01")) == {"approver": 1, "finance": 1}
    assert policy.required(_ctx(None)) == {"approver": 1, "finance": 1}


def test_backdated_versions_always_need_finance() -> None:
    policy = domain.parse_policy({"rules": [{"require": {"approver": 1}}]})
    assert policy.required(_ctx("10", backdated=True)) == {"approver": 1, "finance": 1}


def test_rules_combine_by_the_largest_count_per_role() -> None:
    policy = domain.parse_policy({"rules": [
        {"require": {"approver": 1}},
        {"when": {"contract_type": "cpa"}, "require": {"approver": 2}},
        {"when": {"kind": "termination"}, "require": {"finance": 1}},
    ]})
    assert policy.required(_ctx("1", ctype="cpa")) == {"approver": 2}
    assert policy.required(_ctx("1", kind="termination")) == {"approver": 1, "finance": 1}


def test_policy_problems_are_reported_together() -> None:
    with pytest.raises(domain.PolicyInvalid) as exc:
        domain.parse_policy({"rules": [{"when": {"colour": "red"}, "require": {"approver": 1}},
                                       {"require": {"ops": 1}},
                                       {"when": {"committed_value_over": 5}, "require": {"finance": 1}}]})
    assert [p.split(":")[0] for p in exc.value.problems] == ["rules[0].when", "rules[1].require",
                                                             "rules[2].when.committed_value_over"]


def test_remaining_and_role_picking() -> None:
    need = {"approver": 1, "finance": 1}
    assert domain.remaining(need, ["approver"]) == {"finance": 1}
    assert domain.pick_role({"approver", "finance"}, {"approver": 1, "finance": 1}, None) == "approver"
    assert domain.pick_role({"approver", "finance"}, {"approver": 1, "finance": 1}, "finance") == "finance"
    assert domain.pick_role({"approver"}, {"finance": 1}, None) is None
    assert domain.pick_role({"approver"}, {"approver": 1}, "finance") is None


def test_diff_names_each_changed_field_by_path() -> None:
    a = {"x": {"bands": [{"rate": "1"}, {"rate": "2"}]}, "gone": 1}
    b = {"x": {"bands": [{"rate": "1"}, {"rate": "3"}, {"rate": "4"}]}, "new": True}
    assert domain.diff(a, b) == [
        {"path": "gone", "from": 1, "to": None, "change": "removed"},
        {"path": "new", "from": None, "to": True, "change": "added"},
        {"path": "x.bands[1].rate", "from": "2", "to": "3", "change": "changed"},
        {"path": "x.bands[2]", "from": None, "to": {"rate": "4"}, "change": "added"},
    ]
    assert domain.diff(a, a) == []


def test_renewal_moves_the_flight_and_escalates_rates() -> None:
    raw = cpm_terms_json()
    raw["common"].update(flight_start="2026-01-31", flight_end="2026-02-27", renewal_term_months=1, escalator_pct="3")
    new = domain.renewal_terms(parse_terms(raw))
    assert (new.common.flight_start, new.common.flight_end) == (date(2026, 2, 28), date(2026, 3, 27))
    assert new.cpm is not None and new.cpm.rate_card.bands[0].rate_cpm == Decimal("12.88")
    same = domain.renewal_terms(parse_terms(raw), apply_escalator=False)
    assert same.cpm is not None and same.cpm.rate_card.bands[0].rate_cpm == Decimal("12.50")


def test_term_end_open_period_and_notice_deadline() -> None:
    t = parse_terms(cpm_terms_json())  # New York, flight ends 2026-12-31
    end = domain.term_end(t)
    assert end == datetime(2027, 1, 1, 5, tzinfo=UTC)
    assert domain.notice_deadline(end, 30) == datetime(2026, 12, 2, 5, tzinfo=UTC)
    # March 1st 01:00 New York: February is still open (2 h grace); at 03:00 it is closed
    assert domain.open_period_start(datetime(2026, 3, 1, 6, tzinfo=UTC), "America/New_York", PeriodKind.MONTH) == \
        datetime(2026, 2, 1, 5, tzinfo=UTC)
    assert domain.open_period_start(datetime(2026, 3, 1, 8, tzinfo=UTC), "America/New_York", PeriodKind.MONTH) == \
        datetime(2026, 3, 1, 5, tzinfo=UTC)
