"""``tally_metering_period_close_overdue_seconds``: 0 while periods close on time, growing while
the worker does not step (the ``TallyPeriodCloseOverdue`` alert of deploy/prometheus reads it)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry

from tally_billing.periods import close_time, period_by_key
from tally_billing.routing import ContractBook
from tally_metering.engine import StageTwo
from tally_metering.metrics import WorkerMetrics
from tally_metering.state import TotalsStore

from .test_metering_stage_two import NY, SETTINGS, TZ, _record, terms

GRACE = timedelta(seconds=SETTINGS.metering_grace_seconds)


def _stage_two() -> tuple[StageTwo, dict[str, list[dict[str, Any]]]]:
    effects: dict[str, list[dict[str, Any]]] = defaultdict(list)
    book = ContractBook()
    book.apply(_record("K1", [(1, NY["jan1"], None, terms(["c1"], [(0, "10.00")], None))], 1, None))
    two = StageTwo(SETTINGS, book, lambda kind, rec, key: effects[kind].append(rec), WorkerMetrics(CollectorRegistry()))
    two.stores[0] = TotalsStore(0)
    return two, effects


def test_nothing_is_overdue_before_the_first_close_check() -> None:
    two, _ = _stage_two()
    assert two.close_overdue_s(datetime(2030, 1, 1, tzinfo=UTC)) == 0.0


def test_a_worker_that_steps_closes_on_time_and_one_that_stops_stepping_falls_behind() -> None:
    two, effects = _stage_two()
    feb_closes = close_time(period_by_key("2026-02", TZ, "month"), GRACE)  # 1 March, New York midnight + grace
    two.close_due(datetime(2026, 2, 10, tzinfo=UTC))  # January closed (empty: it is still owed its lines)
    assert [r["period_key"] for r in effects["period_closed"]] == ["2026-01"]
    assert two.next_close == feb_closes
    assert two.close_overdue_s(feb_closes - timedelta(seconds=1)) == 0.0
    # no step since: the clock runs past February's close time and the gauge counts the seconds
    assert two.close_overdue_s(feb_closes + timedelta(minutes=45)) == 2700.0
    two.close_due(feb_closes + timedelta(minutes=45))  # the worker steps again: February closes, nothing overdue
    assert [r["period_key"] for r in effects["period_closed"]] == ["2026-01", "2026-02"]
    assert two.close_overdue_s(feb_closes + timedelta(minutes=45)) == 0.0


def test_the_worker_exports_the_gauge_at_scrape_time() -> None:
    two, _ = _stage_two()
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    now = [datetime(2026, 2, 10, tzinfo=UTC)]
    metrics.period_close_overdue.set_function(lambda: two.close_overdue_s(now[0]))
    two.close_due(now[0])
    assert registry.get_sample_value("tally_metering_period_close_overdue_seconds") == 0.0
    assert two.next_close is not None
    now[0] = two.next_close + timedelta(hours=1)
    assert registry.get_sample_value("tally_metering_period_close_overdue_seconds") == 3600.0
