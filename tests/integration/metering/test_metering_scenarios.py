"""Worked scenarios against the real broker (docs/DOMAIN.md edge cases 1, 3, 4, 5, 8, 9, 12, 14).

One metering run serves every scenario: each scenario has its own contract, the clock moves
through three phases, and each test checks its contract's outputs.

* phase 1, clock 2026-02-20 12:00Z: February events.
* phase 2, clock 2026-03-01 12:00Z (February has closed everywhere): March events, late
  February events, duplicates of closed ones, a reversal after close.
* phase 3, clock 2026-04-15: March and the March weeks close.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from tally_billing.examples import cpa_terms_json, cpm_terms_json

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def cpm(campaign: str, *, kind: str = "flat", bands: list[tuple[int, str]] | None = None, tz: str = "America/New_York",
        basis: str = "period", per_period: str | None = None, total: str | None = None, minimum: str | None = None,
        period: str = "month", advertiser: str = "adv-acme") -> dict[str, Any]:
    t = cpm_terms_json()
    t["common"].update({"time_zone": tz, "campaign_ids": [campaign], "billing_period": period, "advertiser_id": advertiser,
                        "flight_start": "2026-01-01", "flight_end": "2026-12-31", "auto_renew": False,
                        "renewal_term_months": None, "escalator_pct": None, "notice_period_days": 0})
    t["cpm"] = {
        "rate_card": {"kind": kind, "tier_basis": basis,
                      "bands": [{"from_impressions": f, "rate_cpm": r} for f, r in (bands or [(0, "10.00")])]},
        "budget_caps": {"total": total, "per_period": per_period},
        "minimum_commitment_per_period": minimum,
    }
    return t


def imp(campaign: str, at: datetime, iid: str | None = None, **kw: Any) -> dict[str, Any]:
    iid = iid or uuid.uuid4().hex
    # A retried impression comes from the same household, so it lands in the same partition.
    rec = {"impression_id": iid, "event_time": at, "advertiser_id": "adv-acme", "campaign_id": campaign,
           "partner_id": None, "household_id": f"hh-{iid}", "device_type": "ctv", "ivt": "none",
           "measurement_source": "first_party"}
    rec.update(kw)
    return rec


def conv(conversion_id: str, at: datetime, amount: str, payout: str, *, kind: str = "conversion",
         original: str | None = None, original_at: datetime | None = None) -> dict[str, Any]:
    return {"conversion_id": conversion_id, "kind": kind, "original_conversion_id": original, "contract_id": "S-cpa",
            "contract_version": 1, "advertiser_id": "adv-shop", "partner_id": "partner-tv1", "event_type": "purchase",
            "event_time": at, "original_event_time": original_at, "exposure_id": "imp-x", "exposure_time": at - timedelta(hours=1),
            "rule": "last_touch/7d", "currency": "EUR", "advertiser_amount": Decimal(amount), "partner_payout": Decimal(payout),
            "decided_at": at}


def spread(start: datetime, n: int, step: timedelta = timedelta(seconds=1)) -> list[datetime]:
    return [start + i * step for i in range(n)]


@pytest.fixture(scope="module")
def run(module_world: Any) -> Iterator[dict[str, Any]]:
    w = module_world
    ny_mar15 = datetime(2026, 3, 15, 4, tzinfo=UTC)  # 2026-03-15 00:00 in New York (EDT)
    w.publish_terms("S-amend", [(1, T0, None, cpm("c-amend", bands=[(0, "10.00")])),
                                (2, ny_mar15, None, cpm("c-amend", bands=[(0, "12.00")]))])
    w.publish_terms("S-tier", [(1, T0, None, cpm("c-tier", kind="graduated", bands=[(0, "10.00"), (1000, "5.00")]))])
    w.publish_terms("S-vol", [(1, T0, None, cpm("c-vol", kind="volume", bands=[(0, "10.00"), (1000, "5.00")]))])
    w.publish_terms("S-life", [(1, T0, None, cpm("c-life", kind="graduated", basis="lifetime",
                                                  bands=[(0, "10.00"), (1000, "5.00")]))])
    w.publish_terms("S-cap", [(1, T0, None, cpm("c-cap", per_period="15.00"))])
    w.publish_terms("S-dup", [(1, T0, None, cpm("c-dup"))])
    w.publish_terms("S-late", [(1, T0, None, cpm("c-late", bands=[(0, "7.50")]))])
    w.publish_terms("S-week", [(1, T0, None, cpm("c-week", period="week"))])
    w.publish_terms("S-kiri", [(1, T0, None, cpm("c-kiri", tz="Pacific/Kiritimati"))])
    w.publish_terms("S-min", [(1, T0, None, cpm("c-min", minimum="5000.00"))])
    cpa = cpa_terms_json()
    cpa["common"]["flight_start"] = "2026-01-01"
    w.publish_terms("S-cpa", [(1, T0, None, cpa)])

    w.set_clock(datetime(2026, 2, 20, 12, tzinfo=UTC))
    w.start_thread_worker()
    feb = datetime(2026, 2, 10, tzinfo=UTC)
    dup_ids = [f"dup-{i}" for i in range(1000)]
    late_ids = [f"late-{i}" for i in range(100)]
    phase1 = (
        [imp("c-life", t) for t in spread(feb, 800)]
        + [imp("c-dup", t, iid) for t, iid in zip(spread(feb, 1000), dup_ids, strict=True)]
        + [imp("c-dup", feb, iid) for iid in dup_ids[:200]]  # ad-server retries in the same stream
        + [imp("c-late", t, iid) for t, iid in zip(spread(feb, 100), late_ids, strict=True)]
        + [imp("c-kiri", datetime(2026, 2, 28, 9, 30, tzinfo=UTC)) for _ in range(3)]  # 23:30 Feb 28 at +14
        + [imp("c-min", feb) for _ in range(10)]
        + [imp("c-cap", feb, ivt="givt") for _ in range(5)]
    )
    w.produce("impressions", "impression", phase1, lambda r: r["household_id"])
    w.produce("attributed", "attributed_conversion", [
        conv("cv-1", feb, "12.50", "8.00"), conv("cv-2", feb, "10.00", "6.40"), conv("cv-3", feb, "7.25", "4.64"),
        conv("cv-2", feb, "10.00", "6.40"),  # attribution re-emitted after a crash
        conv("rv-2a", feb + timedelta(days=1), "-4.00", "-2.56", kind="reversal", original="cv-2", original_at=feb),
    ], lambda r: r["contract_id"])
    w.wait_idle()

    w.set_clock(datetime(2026, 3, 1, 12, tzinfo=UTC))
    w.wait_for("periods_closed", "period_closed", lambda rs: {"S-dup/2026-02", "S-late/2026-02", "S-cpa/2026-02"}
               <= {r["close_id"] for r in rs})
    mar = datetime(2026, 3, 5, tzinfo=UTC)
    phase2 = (
        [imp("c-amend", t) for t in spread(ny_mar15 - timedelta(hours=2), 1000, timedelta(microseconds=100))]
        + [imp("c-amend", t) for t in spread(ny_mar15, 500)]
        + [imp("c-tier", t) for t in spread(mar, 1500)]
        + [imp("c-vol", t) for t in spread(mar, 1500)]
        + [imp("c-life", t) for t in spread(mar, 400)]
        + [imp("c-cap", t) for t in spread(mar, 2000)]
        + [imp("c-dup", feb, iid) for iid in dup_ids[:100]]  # duplicates of a closed period: not late events
        + [imp("c-dup", mar, f"dup-mar-{i}") for i in range(50)]
        + [imp("c-late", feb + timedelta(days=1), f"late-after-{i}") for i in range(40)]
        + [imp("c-late", feb, iid) for iid in late_ids[:10]]
        + [imp("c-week", datetime(2026, 3, 9, 3, 30, tzinfo=UTC)) for _ in range(7)]  # Sun 23:30 EDT: W10
        + [imp("c-week", datetime(2026, 3, 9, 4, 30, tzinfo=UTC)) for _ in range(11)]  # Mon 00:30 EDT: W11
        + [imp("c-week", datetime(2026, 3, 2, 4, 30, tzinfo=UTC)) for _ in range(2)]  # Sun 23:30 EST: W09
        + [imp("c-kiri", datetime(2026, 2, 28, 10, 30, tzinfo=UTC)) for _ in range(5)]  # 00:30 Mar 1 at +14
    )
    w.produce("impressions", "impression", phase2, lambda r: r["household_id"])
    w.produce("attributed", "attributed_conversion", [
        conv("rv-1", mar, "-12.50", "-8.00", kind="reversal", original="cv-1", original_at=feb),
        conv("rv-1", mar, "-12.50", "-8.00", kind="reversal", original="cv-1", original_at=feb),  # re-emitted
        conv("cv-4", mar, "3.00", "1.92"),
    ], lambda r: r["contract_id"])
    w.wait_idle()
    w.set_clock(datetime(2026, 4, 15, tzinfo=UTC))
    closed = w.wait_for("periods_closed", "period_closed",
                        lambda rs: {"S-amend/2026-03", "S-week/2026-W11", "S-cpa/2026-03", "S-cap/2026-03"}
                        <= {r["close_id"] for r in rs})
    yield {
        "closed": {r["close_id"]: r for r in closed},
        "closed_list": closed,
        "adjustments": w.read_all("adjustments", "adjustment"),
        "alerts": w.read_all("budget_alerts", "budget_alert"),
        "totals": w.read_all("running_totals", "running_total"),
        "impressions": w.read_positions("impressions", "impression"),
    }


def lines(record: dict[str, Any]) -> list[tuple[str, int, str, int, Decimal]]:
    return [(ln["line_type"], ln["contract_version"], ln["price_point"], ln["quantity"], ln["amount_exact"])
            for ln in record["lines"]]


def test_every_period_closes_exactly_once(run: dict[str, Any]) -> None:
    ids = [r["close_id"] for r in run["closed_list"]]
    assert len(ids) == len(set(ids))
    assert "S-min/2026-01" in run["closed"]  # a period without events still closes


def test_amendment_mid_period_splits_by_event_time(run: dict[str, Any]) -> None:
    r = run["closed"]["S-amend/2026-03"]
    assert lines(r) == [("cpm_impressions", 1, "band:0", 1000, Decimal("10.00")),
                        ("cpm_impressions", 2, "band:0", 500, Decimal("6.00"))]


def test_graduated_tier_crossed_inside_a_batch(run: dict[str, Any]) -> None:
    assert lines(run["closed"]["S-tier/2026-03"]) == [("cpm_impressions", 1, "band:0", 1000, Decimal("10.00")),
                                                      ("cpm_impressions", 1, "band:1", 500, Decimal("2.50"))]
    assert lines(run["closed"]["S-vol/2026-03"]) == [("cpm_impressions", 1, "band:1", 1500, Decimal("7.50"))]


def test_lifetime_tier_basis_continues_across_periods(run: dict[str, Any]) -> None:
    assert lines(run["closed"]["S-life/2026-02"]) == [("cpm_impressions", 1, "band:0", 800, Decimal("8.00"))]
    assert lines(run["closed"]["S-life/2026-03"]) == [("cpm_impressions", 1, "band:0", 200, Decimal("2.00")),
                                                      ("cpm_impressions", 1, "band:1", 200, Decimal("1.00"))]


def test_cap_reached_mid_batch_bills_exactly_up_to_the_cap(run: dict[str, Any]) -> None:
    r = run["closed"]["S-cap/2026-03"]
    assert lines(r) == [("cpm_impressions", 1, "band:0", 1500, Decimal("15.00")),
                        ("cpm_over_delivery", 1, "over_delivery", 500, Decimal(0))]
    assert r["counts"]["over_delivery"] == 500 and r["counts"]["billable"] == 1500
    feb = run["closed"]["S-cap/2026-02"]
    assert feb["counts"]["ivt_givt"] == 5 and feb["lines"] == []
    alerts = [(a["alert_id"], a["threshold_pct"]) for a in run["alerts"] if a["contract_id"] == "S-cap"]
    assert sorted(alerts) == [("S-cap/2026-03/per_period/100", 100), ("S-cap/2026-03/per_period/50", 50),
                              ("S-cap/2026-03/per_period/80", 80)]


def test_duplicates_are_counted_once_even_after_close(run: dict[str, Any]) -> None:
    feb = run["closed"]["S-dup/2026-02"]
    assert lines(feb) == [("cpm_impressions", 1, "band:0", 1000, Decimal("10.00"))]
    assert feb["counts"]["duplicate"] == 200 and feb["counts"]["received"] == 1200
    assert not [a for a in run["adjustments"] if a["contract_id"] == "S-dup"]
    assert lines(run["closed"]["S-dup/2026-03"]) == [("cpm_impressions", 1, "band:0", 50, Decimal("0.50"))]


def test_late_event_after_close_becomes_an_adjustment(run: dict[str, Any]) -> None:
    assert lines(run["closed"]["S-late/2026-02"]) == [("cpm_impressions", 1, "band:0", 100, Decimal("0.75"))]
    adj = [a for a in run["adjustments"] if a["contract_id"] == "S-late"]
    assert {a["kind"] for a in adj} == {"late_event"}
    assert {(a["corrects_period_key"], a["applies_to_period_key"]) for a in adj} == {("2026-02", "2026-03")}
    assert sum(a["quantity"] for a in adj) == 40  # the 10 re-sent ids were duplicates
    assert sum(a["amount_exact"] for a in adj) == Decimal("0.30")
    assert len({a["adjustment_id"] for a in adj}) == len(adj)


def test_reversal_after_close_is_a_clawback_of_the_billed_amounts(run: dict[str, Any]) -> None:
    feb = run["closed"]["S-cpa/2026-02"]
    # cv-2 was re-emitted (counted once) and partly reversed before the close.
    assert lines(feb) == [("cpa_conversions", 1, "event:purchase", 3, Decimal("25.75"))]
    assert [(p["partner_id"], p["quantity"], p["amount_exact"]) for p in feb["payouts"]] == [
        ("partner-tv1", 3, Decimal("16.48"))]
    adj = [a for a in run["adjustments"] if a["contract_id"] == "S-cpa"]
    assert [(a["kind"], a["quantity"], a["amount_exact"], a["partner_payout_exact"], a["corrects_period_key"],
             a["applies_to_period_key"]) for a in adj] == [
        ("reversal_after_close", -1, Decimal("-12.50"), Decimal("-8.00"), "2026-02", "2026-03")]
    assert lines(run["closed"]["S-cpa/2026-03"]) == [("cpa_conversions", 1, "event:purchase", 1, Decimal("3.00"))]


def test_dst_week_and_far_time_zone_periods(run: dict[str, Any]) -> None:
    c = run["closed"]
    assert c["S-week/2026-W10"]["lines"][0]["quantity"] == 7
    assert c["S-week/2026-W11"]["lines"][0]["quantity"] == 11
    assert c["S-week/2026-W09"]["lines"][0]["quantity"] == 2
    w10 = c["S-week/2026-W10"]
    assert w10["period_start"] == datetime(2026, 3, 2, 5, tzinfo=UTC)  # EST midnight
    assert w10["period_end"] == datetime(2026, 3, 9, 4, tzinfo=UTC)  # EDT midnight: a 167-hour week
    assert c["S-kiri/2026-02"]["lines"][0]["quantity"] == 3
    assert c["S-kiri/2026-02"]["period_end"] == datetime(2026, 2, 28, 10, tzinfo=UTC)
    assert c["S-kiri/2026-03"]["lines"][0]["quantity"] == 5


def test_minimum_commitment_travels_on_the_close(run: dict[str, Any]) -> None:
    r = run["closed"]["S-min/2026-02"]
    assert r["minimum_commitment"] == Decimal("5000.00")
    assert lines(r) == [("cpm_impressions", 1, "band:0", 10, Decimal("0.10"))]
    assert run["closed"]["S-min/2026-01"]["minimum_commitment"] == Decimal("5000.00")
    assert run["closed"]["S-min/2026-01"]["lines"] == []
    assert run["closed"]["S-tier/2026-03"]["minimum_commitment"] is None


def test_source_offsets_and_running_totals(run: dict[str, Any]) -> None:
    r = run["closed"]["S-dup/2026-02"]
    assert r["source_offsets"] and all(o["offset"] > 0 for o in r["source_offsets"])
    # each partition's entry is that partition's own: one past its last record the period holds
    feb_life: dict[int, int] = {}
    for partition, offset, rec in run["impressions"]:
        if rec["campaign_id"] == "c-life" and rec["event_time"].month == 2:
            feb_life[partition] = max(feb_life.get(partition, -1), offset + 1)
    assert len(feb_life) > 1, "the scenario spreads c-life over partitions"
    assert {o["partition"]: o["offset"] for o in run["closed"]["S-life/2026-02"]["source_offsets"]} == feb_life
    latest = {t["total_id"]: t for t in run["totals"]}
    assert latest["S-tier/2026-03"]["status"] == "closed"
    assert latest["S-tier/2026-03"]["amount_exact"] == Decimal("12.50")
