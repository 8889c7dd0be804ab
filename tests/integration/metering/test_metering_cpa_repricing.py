"""A backdated CPA amendment re-prices the conversions already decided in its span, on the real
broker (issue 15, item 4).

P1 (Europe/Berlin, monthly) pays per signup (4.00 / partner 2.50) and per purchase (12.5 % / 8 %
of the order value). February's conversions are decided under v1, February closes, then a v2
backdated to 15 February lowers the signup payout to 1.75 and the purchase price to 10 % / 6.25 %.
The conversions after 15 February — and the partial reversal of one of them — move to v2 as
``backdated_amendment`` adjustments for the advertiser and the partner; the ones before stay.
Then a conversion arriving late for February is priced by v2 at once, a restart re-derives
nothing, and ``tally_metering replay`` agrees with the closed period plus its adjustments.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from tally_billing.examples import cpa_terms_json

pytestmark = pytest.mark.integration

JAN1 = datetime(2025, 12, 31, 23, tzinfo=UTC)  # local midnight in Berlin
FEB15 = datetime(2026, 2, 14, 23, tzinfo=UTC)


def cpa(signup_payout: str, purchase_price: str, purchase_payout: str) -> dict[str, Any]:
    t = cpa_terms_json()
    t["common"].update(advertiser_id="adv-cr", time_zone="Europe/Berlin", campaign_ids=["c-cr"], flight_start="2026-01-01",
                       flight_end="2026-12-31", auto_renew=False, renewal_term_months=None)
    t["cpa"]["payouts"] = [
        {"event_type": "signup", "advertiser_price": {"kind": "flat", "amount": "4.00"},
         "partner_payout": {"kind": "flat", "amount": signup_payout}, "tiers": []},
        {"event_type": "purchase", "advertiser_price": {"kind": "percent", "percent": purchase_price},
         "partner_payout": {"kind": "percent", "percent": purchase_payout}, "tiers": []},
    ]
    t["cpa"]["partner_overrides"] = []
    return t


def conv(cid: str, at: datetime, event_type: str, amount: str, payout: str, *, order_value: str | None = None,
         tier: int | None = 0, kind: str = "conversion", original: str | None = None,
         original_at: datetime | None = None, completes: bool | None = None) -> dict[str, Any]:
    """As attribution writes it (v2: with the facts it decided from)."""
    return {"conversion_id": cid, "kind": kind, "original_conversion_id": original, "contract_id": "P1",
            "contract_version": 1, "advertiser_id": "adv-cr", "partner_id": "partner-a", "event_type": event_type,
            "event_time": at, "original_event_time": original_at, "exposure_id": "imp-x",
            "exposure_time": at - timedelta(hours=1), "rule": "last_touch/7d", "currency": "EUR",
            "advertiser_amount": Decimal(amount), "partner_payout": Decimal(payout), "decided_at": at,
            "order_value": None if order_value is None else Decimal(order_value),
            "tier_position": tier if kind == "conversion" else None, "reversal_completes": completes}


def points(closed: dict[str, Any], adjustments: list[dict[str, Any]]) -> dict[tuple[str, int, str], tuple[int, Decimal]]:
    """(advertiser | partner, version, event type) -> (net conversions, exact amount): the closed
    period's lines and payouts plus every adjustment that corrects it."""
    acc: dict[tuple[str, int, str], list[Any]] = defaultdict(lambda: [0, Decimal(0)])
    for ln in closed["lines"]:
        acc[("advertiser", ln["contract_version"], ln["event_type"])][0] += ln["quantity"]
        acc[("advertiser", ln["contract_version"], ln["event_type"])][1] += ln["amount_exact"]
    for p in closed["payouts"]:
        acc[(p["partner_id"], p["contract_version"], p["event_type"])][0] += p["quantity"]
        acc[(p["partner_id"], p["contract_version"], p["event_type"])][1] += p["amount_exact"]
    for a in adjustments:
        if a["corrects_period_key"] != closed["period_key"] or a["contract_id"] != closed["contract_id"]:
            continue
        acc[("advertiser", a["contract_version"], a["event_type"])][0] += a["quantity"]
        acc[("advertiser", a["contract_version"], a["event_type"])][1] += a["amount_exact"]
        if a["partner_id"] is not None:
            acc[(a["partner_id"], a["contract_version"], a["event_type"])][0] += a["quantity"]
            acc[(a["partner_id"], a["contract_version"], a["event_type"])][1] += a["partner_payout_exact"]
    return {k: (q, a) for k, (q, a) in acc.items() if q or a}


def test_a_backdated_cpa_amendment_after_close_re_prices_advertiser_and_partner(metering_world: Any) -> None:
    w = metering_world
    w.publish_terms("P1", [(1, JAN1, None, cpa("2.50", "12.5", "8"))])
    w.set_clock(datetime(2026, 2, 25, 12, tzinfo=UTC))
    w.start_thread_worker("w-cpa-1")
    feb5, feb18, feb20 = (datetime(2026, 2, d, 12, tzinfo=UTC) for d in (5, 18, 20))
    w.produce("attributed", "attributed_conversion", [
        conv("s1", feb5, "signup", "4.00", "2.50"),
        conv("s2", feb18, "signup", "4.00", "2.50", tier=1),
        conv("p1", feb18, "purchase", "10.00", "6.40", order_value="80.00"),
        # half of p1's order refunded (a partial reversal does not end the conversion)
        conv("p1-r", feb20, "purchase", "-5.00", "-3.20", order_value="40.00", kind="reversal", original="p1",
             original_at=feb18, completes=False),
    ], lambda r: r["contract_id"])
    w.wait_idle()
    w.set_clock(datetime(2026, 3, 1, 12, tzinfo=UTC))
    closed = w.wait_for("periods_closed", "period_closed", lambda rs: any(r["close_id"] == "P1/2026-02" for r in rs))
    feb = next(r for r in closed if r["close_id"] == "P1/2026-02")
    assert points(feb, []) == {
        ("advertiser", 1, "signup"): (2, Decimal("8.00")), ("partner-a", 1, "signup"): (2, Decimal("5.00")),
        ("advertiser", 1, "purchase"): (1, Decimal("5.00")), ("partner-a", 1, "purchase"): (1, Decimal("3.20")),
    }

    w.publish_terms("P1", [(1, JAN1, FEB15, cpa("2.50", "12.5", "8")), (2, FEB15, None, cpa("1.75", "10", "6.25"))],
                    revision=2)
    adjustments = w.wait_for("adjustments", "adjustment", lambda rs: sum(r["kind"] == "backdated_amendment" for r in rs) >= 4)
    want = {
        ("advertiser", 1, "signup"): (1, Decimal("4.00")), ("partner-a", 1, "signup"): (1, Decimal("2.50")),
        ("advertiser", 2, "signup"): (1, Decimal("4.00")), ("partner-a", 2, "signup"): (1, Decimal("1.75")),
        # 10 % of 80 less 10 % of the 40 refunded; 6.25 % likewise
        ("advertiser", 2, "purchase"): (1, Decimal("4.00")), ("partner-a", 2, "purchase"): (1, Decimal("2.50")),
    }
    assert points(feb, adjustments) == want
    amend = [a for a in adjustments if a["kind"] == "backdated_amendment"]
    assert {(a["corrects_period_key"], a["applies_to_period_key"]) for a in amend} == {("2026-02", "2026-03")}
    assert all(a["partner_id"] == "partner-a" and a["source_event_id"] == "P1@2" for a in amend)

    # a restart from the changelogs re-derives nothing; a conversion late for February is priced by v2
    w.wait_idle()
    w.stop_all()
    w.start_thread_worker("w-cpa-2")
    w.produce("attributed", "attributed_conversion", [conv("s3", feb20, "signup", "4.00", "2.50", tier=2)],
              lambda r: r["contract_id"])
    adjustments = w.wait_for("adjustments", "adjustment", lambda rs: any(r["kind"] == "late_event" for r in rs))
    w.wait_idle()
    adjustments = w.read_all("adjustments", "adjustment")
    assert sum(a["kind"] == "backdated_amendment" for a in adjustments) == len(amend)
    late = [a for a in adjustments if a["kind"] == "late_event"]
    assert [(a["contract_version"], a["amount_exact"], a["partner_payout_exact"]) for a in late] == [
        (2, Decimal("4.00"), Decimal("1.75"))]
    want[("advertiser", 2, "signup")] = (2, Decimal("8.00"))
    want[("partner-a", 2, "signup")] = (2, Decimal("3.50"))
    assert points(feb, adjustments) == want
    ids = [a["adjustment_id"] for a in adjustments]
    assert len(ids) == len(set(ids))
    w.assert_replay_agrees(["P1/2026-02"])


def test_an_amendment_inside_the_open_period_re_prices_its_running_total(metering_world: Any) -> None:
    w = metering_world
    w.publish_terms("P1", [(1, JAN1, None, cpa("2.50", "12.5", "8"))])
    w.set_clock(datetime(2026, 3, 20, 12, tzinfo=UTC))
    w.start_thread_worker("w-cpa-open")
    mar10 = datetime(2026, 3, 10, 12, tzinfo=UTC)
    w.produce("attributed", "attributed_conversion", [conv("m1", mar10, "purchase", "25.00", "16.00", order_value="200.00")],
              lambda r: r["contract_id"])
    w.wait_for("running_totals", "running_total", lambda rs: any(
        r["total_id"] == "P1/2026-03" and r["amount_exact"] == Decimal("25.00") for r in rs))
    w.publish_terms("P1", [(1, JAN1, datetime(2026, 2, 28, 23, tzinfo=UTC), cpa("2.50", "12.5", "8")),
                           (2, datetime(2026, 2, 28, 23, tzinfo=UTC), None, cpa("2.50", "10", "6.25"))], revision=2)
    totals = w.wait_for("running_totals", "running_total", lambda rs: any(
        r["total_id"] == "P1/2026-03" and r["amount_exact"] == Decimal("20.00") for r in rs))
    last = [r for r in totals if r["total_id"] == "P1/2026-03"][-1]
    assert [(ln["contract_version"], ln["quantity"]) for ln in last["lines"]] == [(2, 1)]
    assert not w.read_all("adjustments", "adjustment")
