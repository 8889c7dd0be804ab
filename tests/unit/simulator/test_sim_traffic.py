"""The simulator is deterministic, and its recomputation follows the written rules."""

from __future__ import annotations

from collections import Counter
from datetime import date
from decimal import Decimal

import pytest

from tally_billing.money import currency
from tally_sim.expected import LiveContract, recompute
from tally_sim.run import _chunks
from tally_sim.scenario import build, previous_month
from tally_sim.traffic import TrafficMix, generate, window

MONTH = date(2026, 10, 1)


def _live(run_id: str = "t", impressions: int = 4000) -> tuple[list[LiveContract], list[dict]]:
    s = build(5, MONTH, run_id)
    return [LiveContract(f"ctr-{c.key}", c.terms) for c in s.contracts], generate(s, TrafficMix(impressions=impressions))


def test_same_seed_same_traffic_and_ids_follow_the_run() -> None:
    _, a = _live("r1")
    _, b = _live("r1")
    _, c = _live("r2")
    assert a == b
    assert a[0]["event"]["impression_id"].startswith("r1-") and c[0]["event"]["impression_id"].startswith("r2-")


def test_events_stay_inside_the_window_and_reversals_follow_conversions() -> None:
    s = build(5, MONTH, "t")
    start, end = window(s)
    events = generate(s, TrafficMix(impressions=4000))
    assert all(start.isoformat()[:10] <= e["event"]["event_time"][:10] <= end.isoformat()[:10] for e in events)
    kinds = [e["event"].get("kind", "impression") for e in events]
    assert "reversal" in kinds and kinds.index("reversal") > max(i for i, k in enumerate(kinds) if k == "conversion")


def test_recompute_totals_are_sums_of_rounded_lines_and_apply_the_minimum() -> None:
    live, events = _live(impressions=20_000)
    exp = recompute(live, events)
    by_contract = {k[0]: v for k, v in exp.lines.items()}
    for (_advertiser, cur, _period), total in exp.invoices.items():
        assert total == total.quantize(currency(cur).quantum)  # sums of lines rounded to the minor unit
    jpy = by_contract["ctr-cpm-volume-jpy"]
    assert sum(jpy.values()) == Decimal(9000)  # below the minimum commitment: topped up to it exactly
    eur = by_contract["ctr-cpm-graduated-eur"]
    assert sum(eur.values()) == Decimal("25.00")  # the per-period cap binds
    outcomes = Counter(v.split(":")[0] for v in exp.outcomes.values())
    assert outcomes["attributed"] > 0 and outcomes["rejected"] > 0 and outcomes["reversed"] > 0
    assert set(exp.payouts) == {("t-ptn-streamly", "USD", "2026-10"), ("t-ptn-castly", "USD", "2026-10")}


def test_postbacks_travel_alone_and_batches_are_bounded() -> None:
    _, events = _live()
    chunks = list(_chunks(events))
    assert sum(len(c) for c in chunks) == len(events)
    assert all(len(c) == 1 for c in chunks if c[0]["via"] == "postback")
    assert all(len({e["kind"] for e in c}) == 1 and len(c) <= 1000 for c in chunks)


def test_the_demo_scenario_uses_the_console_tenants_and_a_restart_never_reuses_event_ids() -> None:
    from datetime import UTC, datetime

    from tally_sim.traffic import LiveTraffic

    demo = build(7, MONTH, "")
    assert {c.advertiser_id for c in demo.contracts} >= {"adv-acme", "adv-globex"}
    assert set(demo.partners) == {"ptn-streamly", "ptn-castly"}
    assert all(not cid.startswith("-") for c in demo.contracts for cid in c.campaign_ids)
    assert build(7, MONTH, "").contracts == demo.contracts  # a restart finds the same contracts by name
    now = datetime(2026, 10, 15, 12, tzinfo=UTC)
    first, second = (LiveTraffic(demo, TrafficMix(), session=s).tick(200, now) for s in ("a1", "b2"))
    ids = lambda evs: {e["event"].get("impression_id") or e["event"]["conversion_id"] for e in evs}  # noqa: E731
    assert ids(first) and not ids(first) & ids(second)
    assert all(e["event"]["household_id"].startswith("hh-") for e in first)


@pytest.mark.parametrize(("today", "month"), [
    (date(2026, 12, 1), date(2026, 11, 1)), (date(2027, 1, 1), date(2026, 12, 1)), (date(2026, 1, 31), date(2025, 12, 1)),
    (date(2028, 2, 29), date(2028, 1, 1)), (date(2028, 3, 1), date(2028, 2, 1)), (date(2026, 12, 31), date(2026, 11, 1)),
])
def test_previous_month_on_awkward_days(today: date, month: date) -> None:
    assert previous_month(today) == month


@pytest.mark.parametrize("now", ["2026-12-01T01:30:00+00:00",  # New York and Los Angeles still in November
                                 "2026-12-31T20:00:00+00:00",  # Tokyo and Berlin already in January
                                 "2028-02-29T12:00:00+00:00", "2026-03-08T07:30:00+00:00"])  # a leap day; a DST change
def test_the_live_scenario_flights_cover_now_in_every_contracts_time_zone(now: str) -> None:
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    from tally_sim.scenario import live_scenario

    instant = datetime.fromisoformat(now)
    scenario = live_scenario(7, instant, "")
    for c in scenario.contracts:
        common = c.terms["common"]
        local = instant.astimezone(ZoneInfo(common["time_zone"])).date()
        assert date.fromisoformat(common["flight_start"]) <= local < date.fromisoformat(common["flight_end"]), (c.key, local)
        assert date.fromisoformat(common["flight_start"]) >= date(instant.year, instant.month, 1) - timedelta(days=1)
    assert live_scenario(7, instant, "").contracts == scenario.contracts  # a restart the same day finds them by name
