"""Metering re-rates the past (docs/DOMAIN.md: "the order of arrival never changes what is billed").

One metering run on the real broker, the clock moving through phases:

* 2026-02-20 12:00Z — February usage arrives, some of it for campaigns no contract covers yet;
  a late IO (L1) is approved mid-period and bills everything its flight covers.
* 2026-03-01 12:00Z — February has closed. A second late IO (L2) arrives after its period's
  close and is closed at once with the usage that waited; a backdated amendment (B1) and a
  backdated termination (T1) of closed periods become ``backdated_amendment`` adjustments; an
  amendment inside the open period (O1) changes its running total.
* the worker is then replaced by another: nothing is emitted twice.

Every check is "closed lines + adjustments = the rating of the final picture", per price point.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from tally_billing.examples import cpm_terms_json

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, 5, tzinfo=UTC)  # 2026-01-01 00:00 in New York
FEB10, FEB20 = datetime(2026, 2, 10, 15, tzinfo=UTC), datetime(2026, 2, 20, 1, tzinfo=UTC)
NY_FEB15 = datetime(2026, 2, 15, 5, tzinfo=UTC)  # 2026-02-15 00:00 EST
NY_MAR1 = datetime(2026, 3, 1, 5, tzinfo=UTC)
MAR1 = datetime(2026, 3, 1, 7, tzinfo=UTC)  # 02:00 on 1 March in New York


def cpm(campaign: str, rate: str) -> dict[str, Any]:
    t = cpm_terms_json()
    t["common"].update({"time_zone": "America/New_York", "campaign_ids": [campaign], "advertiser_id": "adv-rr",
                        "flight_start": "2026-01-01", "flight_end": "2026-12-31", "auto_renew": False,
                        "renewal_term_months": None, "escalator_pct": None, "notice_period_days": 0})
    t["cpm"] = {"rate_card": {"kind": "flat", "tier_basis": "period", "bands": [{"from_impressions": 0, "rate_cpm": rate}]},
                "budget_caps": {"total": None, "per_period": None}, "minimum_commitment_per_period": None}
    return t


def imps(campaign: str, at: datetime, n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        iid = uuid.uuid4().hex
        out.append({"impression_id": iid, "event_time": at + timedelta(seconds=i), "advertiser_id": "adv-rr",
                    "campaign_id": campaign, "partner_id": None, "household_id": f"hh-{iid}", "device_type": "ctv",
                    "ivt": "none", "measurement_source": "first_party"})
    return out


def price_points(records: list[dict[str, Any]], quantity: str = "quantity") -> dict[tuple[str, int, str], tuple[int, Decimal]]:
    out: dict[tuple[str, int, str], list[Any]] = defaultdict(lambda: [0, Decimal(0)])
    for r in records:
        k = (r["line_type"], r["contract_version"], r["price_point"])
        out[k][0] += r[quantity]
        out[k][1] += r["amount_exact"]
    return {k: (q, a) for k, (q, a) in out.items() if q or a}


@pytest.fixture(scope="module")
def run(module_world: Any) -> Iterator[dict[str, Any]]:
    w = module_world
    send = lambda records: w.produce("impressions", "impression", records, lambda r: r["household_id"])  # noqa: E731
    w.publish_terms("B1", [(1, T0, None, cpm("c-b1", "10.00"))])
    w.publish_terms("T1", [(1, T0, None, cpm("c-t1", "10.00"))])
    w.publish_terms("O1", [(1, T0, None, cpm("c-o1", "10.00"))])
    w.set_clock(datetime(2026, 2, 20, 12, tzinfo=UTC))
    worker = w.start_thread_worker("w-rerate-1")
    send(imps("c-l1", FEB10, 100) + imps("c-l2", FEB10, 200) + imps("c-b1", FEB10, 500) + imps("c-b1", FEB20, 500)
         + imps("c-t1", FEB10, 500) + imps("c-t1", FEB20, 500))
    w.wait_idle()
    waiting = worker.metrics.events.labels("impression", "no_contract")._value.get()
    w.publish_terms("L1", [(1, T0, None, cpm("c-l1", "20.00"))])  # the IO is signed after delivery began
    send(imps("c-l1", FEB20, 50))

    def l1_total(rs: list[dict[str, Any]]) -> bool:
        return any(r["total_id"] == "L1/2026-02" and r["counts"].get("billable") == 150 for r in rs)

    w.wait_for("running_totals", "running_total", l1_total)
    w.set_clock(datetime(2026, 3, 1, 12, tzinfo=UTC))
    w.wait_for("periods_closed", "period_closed", lambda rs: {"B1/2026-02", "T1/2026-02", "L1/2026-02"}
               <= {r["close_id"] for r in rs})
    w.publish_terms("L2", [(1, T0, None, cpm("c-l2", "5.00"))])  # signed after February closed
    w.publish_terms("B1", [(1, T0, NY_FEB15, cpm("c-b1", "10.00")), (2, NY_FEB15, None, cpm("c-b1", "12.00"))], revision=2)
    w.publish_terms("T1", [(1, T0, None, cpm("c-t1", "10.00"))], revision=2, terminated_at=NY_FEB15)
    send(imps("c-o1", MAR1, 1000))
    w.wait_for("running_totals", "running_total", lambda rs: any(
        r["total_id"] == "O1/2026-03" and r["counts"].get("billable") == 1000 for r in rs))
    w.publish_terms("O1", [(1, T0, NY_MAR1, cpm("c-o1", "10.00")), (2, NY_MAR1, None, cpm("c-o1", "30.00"))], revision=2)
    w.wait_for("adjustments", "adjustment", lambda rs: {"B1", "T1"} <= {r["contract_id"] for r in rs})
    w.wait_for("periods_closed", "period_closed", lambda rs: "L2/2026-02" in {r["close_id"] for r in rs})
    w.wait_for("running_totals", "running_total", lambda rs: any(
        r["total_id"] == "O1/2026-03" and r["amount_exact"] == Decimal("30.00") for r in rs))
    w.wait_idle()
    before_restart = w.read_all("adjustments", "adjustment")
    # another worker takes over from the changelogs: nothing is emitted again
    w.stop_all()
    w.start_thread_worker("w-rerate-2")
    send(imps("c-b1", FEB20, 10))  # and a late event still adjusts the amended period at its new price
    w.wait_for("adjustments", "adjustment", lambda rs: any(r["kind"] == "late_event" for r in rs))
    w.wait_idle()
    yield {
        "waiting": waiting,
        "closed": {r["close_id"]: r for r in w.read_all("periods_closed", "period_closed")},
        "closed_list": w.read_all("periods_closed", "period_closed"),
        "adjustments": w.read_all("adjustments", "adjustment"),
        "before_restart": before_restart,
        "totals": {r["total_id"]: r for r in w.read_all("running_totals", "running_total")},
    }


def billed(run: dict[str, Any], contract: str, period: str) -> dict[tuple[str, int, str], tuple[int, Decimal]]:
    """closed lines + every adjustment correcting the period, per price point"""
    records = list(run["closed"][f"{contract}/{period}"]["lines"])
    records += [a for a in run["adjustments"] if a["contract_id"] == contract and a["corrects_period_key"] == period]
    return price_points(records)


def test_usage_no_contract_covered_waits_and_a_late_io_bills_all_of_it(run: dict[str, Any]) -> None:
    assert run["waiting"] == 300  # c-l1 and c-l2: counted, kept, not lost
    assert billed(run, "L1", "2026-02") == {("cpm_impressions", 1, "band:0"): (150, Decimal("3.00"))}
    assert not [a for a in run["adjustments"] if a["contract_id"] == "L1"]


def test_a_late_io_after_its_period_closed_closes_it_with_the_usage_that_waited(run: dict[str, Any]) -> None:
    assert billed(run, "L2", "2026-02") == {("cpm_impressions", 1, "band:0"): (200, Decimal("1.00"))}
    assert run["closed"]["L2/2026-01"]["lines"] == []  # its flight's empty January closes too


def test_backdated_amendment_after_close_adjusts_each_price_point(run: dict[str, Any]) -> None:
    closed = price_points(run["closed"]["B1/2026-02"]["lines"])
    assert closed == {("cpm_impressions", 1, "band:0"): (1000, Decimal("10.00"))}
    adj = [a for a in run["adjustments"] if a["contract_id"] == "B1" and a["kind"] == "backdated_amendment"]
    assert sorted((a["contract_version"], a["quantity"], a["amount_exact"]) for a in adj) == [
        (1, -500, Decimal("-5.00")), (2, 500, Decimal("6.00"))]
    assert {(a["corrects_period_key"], a["applies_to_period_key"]) for a in adj} == {("2026-02", "2026-03")}
    # the 10 late impressions after the restart are priced by the amended terms (v2 from 15 Feb)
    assert billed(run, "B1", "2026-02") == {("cpm_impressions", 1, "band:0"): (500, Decimal("5.00")),
                                            ("cpm_impressions", 2, "band:0"): (510, Decimal("6.12"))}


def test_backdated_termination_after_close_credits_what_it_ends(run: dict[str, Any]) -> None:
    adj = [a for a in run["adjustments"] if a["contract_id"] == "T1"]
    assert [(a["kind"], a["quantity"], a["amount_exact"]) for a in adj] == [
        ("backdated_amendment", -500, Decimal("-5.00"))]
    assert billed(run, "T1", "2026-02") == {("cpm_impressions", 1, "band:0"): (500, Decimal("5.00"))}


def test_amendment_inside_the_open_period_changes_the_running_total(run: dict[str, Any]) -> None:
    total = run["totals"]["O1/2026-03"]
    assert total["status"] == "open" and total["amount_exact"] == Decimal("30.00")
    assert [(ln["contract_version"], ln["quantity"]) for ln in total["lines"]] == [(2, 1000)]
    assert not [a for a in run["adjustments"] if a["contract_id"] == "O1"]


def test_each_close_and_adjustment_once_across_a_worker_change(run: dict[str, Any]) -> None:
    ids = [a["adjustment_id"] for a in run["adjustments"]]
    assert len(ids) == len(set(ids))
    closes = [r["close_id"] for r in run["closed_list"]]
    assert len(closes) == len(set(closes))
    after = {a["adjustment_id"] for a in run["adjustments"]} - {a["adjustment_id"] for a in run["before_restart"]}
    assert {a["kind"] for a in run["adjustments"] if a["adjustment_id"] in after} == {"late_event"}


def test_replay_from_the_raw_topics_agrees_with_every_closed_period(run: dict[str, Any], module_world: Any) -> None:
    module_world.assert_replay_agrees(run["closed"])
    # a forged adjustment (as if metering had billed 7 impressions twice) is found, to the price point
    forged = {**run["adjustments"][0], "adjustment_id": "forged", "contract_id": "L1", "corrects_period_key": "2026-02",
              "kind": "late_event", "line_type": "cpm_impressions", "contract_version": 1, "price_point": "band:0",
              "partner_id": None, "partner_payout_exact": None, "quantity": 7, "amount_exact": Decimal("0.14")}
    module_world.produce("adjustments", "adjustment", [forged], lambda r: r["contract_id"])
    code, out = module_world.replay("L1", "2026-02")
    assert code == 1 and "DIFF cpm_impressions v1 band:0: published 157 / 3.14  recomputed 150 / 3" in out
    assert module_world.replay("L1", "2027-01")[0] == 2  # never closed
