"""A batch of running totals gives the table values and alerts of record-by-record processing,
however the records are cut into batches (only the writes in between are saved), and batch
writes land in the changelog partition of their source record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tally_billing.pacing import EVEN
from tally_billing.periods import PeriodKind, period_by_key
from tally_pacing.state import (
    PacingRules,
    PeriodState,
    TotalUpdate,
    alert_due,
    apply_total,
    evaluate,
    fold_period,
    hour_key,
    hour_value,
    hours_to_write,
    newer,
    next_alert,
)

MARCH = period_by_key("2026-03", "America/New_York", PeriodKind.MONTH)
RULES = PacingRules(EVEN, Decimal(10), Decimal(20), Decimal(5))
NOW = datetime(2026, 3, 20, tzinfo=UTC)
T0 = datetime(2026, 3, 4, 10, tzinfo=UTC)


def update(minute: int, amount: int, *, cap: str = "3000") -> TotalUpdate:
    t = T0 + timedelta(minutes=minute)
    return TotalUpdate.from_record({
        "total_id": "c-1/2026-03", "contract_id": "c-1", "advertiser_id": "adv-a", "contract_type": "cpm",
        "currency": "USD", "time_zone": MARCH.tz, "period_kind": "month", "period_key": "2026-03",
        "period_start": MARCH.start, "period_end": MARCH.end, "status": "open",
        "amount_exact": Decimal(amount) / 8, "budget_cap_per_period": Decimal(cap), "budget_cap_total": None,
        "minimum_commitment": None, "counts": {"billable": amount}, "latest_event_time": t,
        "updated_at": t + timedelta(seconds=2)})


def one_by_one(updates: list[TotalUpdate], interval_s: int) -> tuple[PeriodState | None, dict[str, Any],
                                                                     list[dict[str, Any]]]:
    """What the worker did before batching: every record written on its own."""
    state: PeriodState | None = None
    hours: dict[str, dict[str, Any]] = {}
    alerts: list[dict[str, Any]] = []
    for u in updates:
        k = hour_key(u.total_id, u.hour)
        if newer(hours.get(k), u):
            hours[k] = hour_value(u)
        stale = state is not None and state.updated_at > u.updated_at
        state = apply_total(state, u)
        if not stale and alert_due(state, u.updated_at, interval_s):
            state, alert = next_alert(state, evaluate(state, None, u.updated_at, RULES), RULES, NOW)
            if alert is not None:
                alerts.append(alert)
    return state, hours, alerts


def in_batches(updates: list[TotalUpdate], cuts: list[int], interval_s: int, *, killed_in: int | None = None
               ) -> tuple[PeriodState | None, dict[str, Any], list[dict[str, Any]]]:
    """The batched path of ``tally_pacing.app``: per batch one fold per period and the hours it
    writes; the series reads the newest total's hour from the period state (``api``).

    ``killed_in``: the worker is SIGKILLed in that batch after its alerts and ``hourly`` writes
    were acknowledged and before its ``periods`` write was (the worker waits for the former
    before the latter), and the batch, whose offsets were not committed, is processed again from
    the restored period state of the batch before; its alerts go out again, with the same ids."""
    state: PeriodState | None = None
    hours: dict[str, dict[str, Any]] = {}
    alerts: list[dict[str, Any]] = []
    bounds = sorted({0, len(updates), *(c % (len(updates) + 1) for c in cuts)})
    batches = [updates[a:b] for a, b in pairwise(bounds)]
    lost = None
    if killed_in is not None and batches:
        lost = killed_in % len(batches)
        batches.insert(lost + 1, batches[lost])
    for n, batch in enumerate(batches):
        step = fold_period(state, batch, None, RULES, interval_s, NOW)
        assert len(step.stale) == len(batch)
        for k, v in hours_to_write(state, batch, step.state).items():
            if newer(hours.get(k), v) and v != hours.get(k):
                hours[k] = v
        alerts.extend(a for a in step.alerts if a["alert_id"] not in {b["alert_id"] for b in alerts})
        if n != lost:
            state = PeriodState.from_json(step.state.to_json())  # through the table's JSON, as in the worker
    read_back = dict(hours)
    if state is not None:
        read_back[hour_key(state.total_id, state.hour)] = hour_value(state)
    return state, read_back, alerts


# minutes after T0 (out of order on purpose: a replay racing newer records), cumulative amounts
updates_st = st.lists(st.tuples(st.integers(0, 60 * 24 * 6), st.integers(0, 30_000)), min_size=1, max_size=40).map(
    lambda xs: [update(m, a) for m, a in xs])


@settings(max_examples=150, deadline=None)
@given(updates_st, st.lists(st.integers(0, 1000), max_size=6), st.sampled_from([0, 30, 3600]))
def test_batches_give_the_values_and_alerts_of_record_by_record_processing(
        updates: list[TotalUpdate], cuts: list[int], interval_s: int) -> None:
    assert in_batches(updates, cuts, interval_s) == one_by_one(updates, interval_s)


@settings(max_examples=150, deadline=None)
@given(updates_st, st.lists(st.integers(0, 1000), max_size=6), st.sampled_from([0, 30, 3600]), st.integers(0, 6))
def test_a_batch_replayed_after_a_kill_between_its_table_writes_gives_the_same_values_and_alerts(
        updates: list[TotalUpdate], cuts: list[int], interval_s: int, killed_in: int) -> None:
    assert in_batches(updates, cuts, interval_s, killed_in=killed_in) == one_by_one(updates, interval_s)


def test_a_batch_alerts_as_each_record_would_have_and_keeps_the_stale_ones_out() -> None:
    # spend far ahead of an even pace of 3,000: the cap is projected inside March
    ups = [update(0, 8000), update(1, 8800), update(-30, 100), update(2, 9600)]
    step = fold_period(None, ups, None, RULES, 3600, NOW)
    assert step.stale == [False, False, True, False]
    assert [a["state"] for a in step.alerts] == ["cap_exhaustion_projected"]
    assert step.state.amount == Decimal(1200) and step.state.alert_seq == 1
    assert step.state.first_hour == datetime(2026, 3, 4, 9, tzinfo=UTC)  # widened by the stale one
    # the later records of the batch were within the hour's interval of the first: evaluated once
    assert step.state.evaluated_at == ups[0].updated_at
    # the newest total's hour is the period state's own; only the other hour is written
    assert hours_to_write(None, ups, step.state) == {"c-1/2026-03/2026-03-04T09": hour_value(ups[2])}
    # a later total in the next hour: the hour just left is written from the state that held it
    nxt = update(62, 10_000)
    moved = fold_period(step.state, [nxt], None, RULES, 3600, NOW)
    assert hours_to_write(step.state, [nxt], moved.state) == {"c-1/2026-03/2026-03-04T10": hour_value(step.state)}


def test_batch_writes_name_their_source_partition(monkeypatch: pytest.MonkeyPatch) -> None:
    from faust.types import TP

    from tally_kit.clock import WallClock
    from tally_kit.settings import load
    from tally_pacing.app import RoutedTable, build
    from tally_pacing.settings import SPEC

    built = build(load(SPEC, {"TALLY_PACING_APP_ID": "unit-pacing", "TALLY_PACING_TOPIC_RUNNING_TOTALS": "totals"}),
                  WallClock())
    hourly = built.app.tables["hourly"]
    assert isinstance(hourly, RoutedTable)
    sent: list[tuple[int | None, str, Any]] = []

    class Sent:
        class message:  # noqa: N801 - the shape of faust's FutureMessage
            partition = 0

    def capture(partition: int | None, key: str, value: Any, *args: Any) -> Any:
        sent.append((partition, key, value))
        Sent.message.partition = partition or 0
        return Sent

    monkeypatch.setattr(hourly, "send_changelog", capture)
    hourly.put(TP("totals", 3), "c-1/2026-03/2026-03-04T10", {"amount": "1"})
    hourly.put(TP("totals", 1), "c-2/2026-03/2026-03-04T10", {"amount": "2"})
    assert sent == [(3, "c-1/2026-03/2026-03-04T10", {"amount": "1"}), (1, "c-2/2026-03/2026-03-04T10", {"amount": "2"})]
    assert hourly["c-2/2026-03/2026-03-04T10"] == {"amount": "2"}
    try:  # outside a stream and without a partition, faust's own rule applies
        hourly.partition_for_key("x")
    except TypeError:
        pass
    else:
        raise AssertionError("a write without a partition was routed")


def test_the_timer_judges_only_stalled_periods_with_a_budget_in_their_period() -> None:
    from tally_pacing.state import stalled

    state = apply_total(None, update(0, 8000))
    value = state.to_json()
    at = state.updated_at
    assert not stalled(value, at + timedelta(seconds=29), 30)  # a total came within the interval
    assert stalled(value, at + timedelta(seconds=30), 30)
    evaluated = {**value, "evaluated_at_us": value["updated_at_us"] + 20_000_000}
    assert not stalled(evaluated, at + timedelta(seconds=30), 30)  # judged 10 s ago
    assert stalled(evaluated, at + timedelta(seconds=50), 30)
    assert not stalled({**value, "cap_per_period": None}, at + timedelta(days=1), 30)  # nothing to pace against
    assert stalled({**value, "cap_per_period": None, "minimum_commitment": "500"}, at + timedelta(days=1), 30)
    assert not stalled(value, MARCH.end, 30)  # the period is over
