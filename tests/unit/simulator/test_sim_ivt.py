"""The simulator's recomputation of vendors' IVT reports and late IOs (issue 15), and the reports
and approvals `tally_sim run` plans: a credit leaves the contract's in-scope impressions of its
version and period before rating, so a flat rate loses the credited impressions' price and a
graduated card is re-rated across its tier; a late IO changes nothing owed."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from tally_billing.money import currency, round_to_minor
from tally_billing.periods import local_midnight
from tally_sim.expected import LiveContract, ivt_window, recompute
from tally_sim.run import plan_ivt_reports, split_for_late_io
from tally_sim.scenario import build
from tally_sim.traffic import TrafficMix, generate

MONTH = date(2026, 10, 1)
DAY = date(2026, 10, 14)


def _contract(key: str, **cpm: Any) -> LiveContract:
    sim = next(c for c in build(5, MONTH, "t").contracts if c.key == key)
    terms = copy.deepcopy(sim.terms)
    terms["cpm"].update(cpm)
    return LiveContract(f"ctr-{key}", terms)


FLAT = "cpm-flat-usd"  # 12.50 USD per mille, New York
GRADUATED = "cpm-graduated-eur"  # 9.00 up to 1,500 impressions, then 7.125; Berlin
NO_CAP = {"budget_caps": {"total": None, "per_period": None}}


def _impressions(c: LiveContract, n: int, day: date = DAY, *, prefix: str = "imp") -> list[dict[str, Any]]:
    """``n`` valid impressions of the contract's first campaign, one a minute from the local
    ``day``'s 01:00 on (so they stay inside that local day)."""
    common = c.terms_json["common"]
    start = local_midnight(day, common["time_zone"]) + timedelta(hours=1)
    assert n <= 22 * 60
    return [{"kind": "impression", "via": "batch", "event": {
        "impression_id": f"{prefix}-{day}-{i:05d}", "event_time": (start + timedelta(minutes=i)).isoformat().replace("+00:00", "Z"),
        "advertiser_id": common["advertiser_id"], "campaign_id": common["campaign_ids"][0], "partner_id": None,
        "household_id": f"hh-{i % 50}", "device_type": "ctv", "ivt": "none", "measurement_source": "first_party"}}
        for i in range(n)]


def _report(c: LiveContract, report_id: str, *entries: dict[str, Any]) -> dict[str, Any]:
    common = c.terms_json["common"]
    return {"kind": "ivt_report", "via": "ivt_report", "event": {
        "report_id": report_id, "advertiser_id": common["advertiser_id"],
        "entries": [{"campaign_id": common["campaign_ids"][0], "ivt_class": "sivt", "measurement_source": "first_party",
                     **e} for e in entries]}}


def _day(c: LiveContract, count: int, day: date = DAY) -> dict[str, Any]:
    return {"count": count, "date": day.isoformat(), "time_zone": c.terms_json["common"]["time_zone"]}


def _invoice(c: LiveContract, record: list[dict[str, Any]]) -> Decimal:
    exp = recompute([c], record)
    common = c.terms_json["common"]
    return exp.invoices[(common["advertiser_id"], common["currency"], "2026-10")]


def test_a_credit_at_a_flat_rate_removes_the_credited_impressions_price() -> None:
    c = _contract(FLAT)
    traffic = _impressions(c, 1000)
    assert _invoice(c, traffic) == Decimal("12.50")  # 1,000 × 12.50 / 1000
    record = [*traffic, _report(c, "r1", _day(c, 400))]
    assert _invoice(c, record) == Decimal("7.50")  # 600 left
    assert recompute([c], record).ivt_reports == {"r1": ("applied", 400)}


def test_a_credit_across_a_graduated_tier_is_re_rated_at_the_marginal_prices() -> None:
    c = _contract(GRADUATED, **NO_CAP)
    traffic = _impressions(c, 1000, DAY) + _impressions(c, 1000, DAY + timedelta(days=1))
    # 1,500 × 9.00 / 1000 + 500 × 7.125 / 1000 = 13.50 + 3.5625
    assert recompute([c], traffic).lines[(c.contract_id, "2026-10")] == {"v1/band:0": Decimal("13.50"),
                                                                          "v1/band:1": Decimal("3.56")}
    # 600 credited: 1,400 left, all in the first band — the credit takes 500 at 7.125 and 100 at 9.00
    exp = recompute([c], [*traffic, _report(c, "r1", _day(c, 600))])
    assert exp.lines[(c.contract_id, "2026-10")] == {"v1/band:0": Decimal("12.60")}
    assert exp.invoices[("t-adv-bier", "EUR", "2026-10")] == Decimal("12.60")
    # 200 credited: 1,800 left, still across the tier
    assert _invoice(c, [*traffic, _report(c, "r2", _day(c, 200))]) == Decimal("13.50") + Decimal("2.14")  # 300 × 7.125 = 2.1375


def test_under_a_binding_cap_a_credit_is_worth_nothing() -> None:
    c = _contract(GRADUATED)  # per-period cap 25.00 EUR: reached at 3,114 impressions
    traffic = _impressions(c, 1200, DAY) + _impressions(c, 1200, DAY + timedelta(days=1)) + \
        _impressions(c, 1200, DAY + timedelta(days=2))
    assert _invoice(c, traffic) == Decimal("25.00")
    assert _invoice(c, [*traffic, _report(c, "r1", _day(c, 300))]) == Decimal("25.00")  # 3,300 still past the cap
    assert _invoice(c, [*traffic, _report(c, "r1", _day(c, 600))]) < Decimal("25.00")  # 3,000: below it


def test_a_report_claiming_more_than_its_window_holds_is_refused_whole_and_an_id_applies_once() -> None:
    c = _contract(FLAT)
    traffic = _impressions(c, 1000, DAY) + _impressions(c, 1000, DAY + timedelta(days=1))
    other = _day(c, 100, DAY + timedelta(days=1))
    refused = _report(c, "r1", other, _day(c, 1001))  # the second entry's day holds 1,000: nothing of r1 applies
    again = _report(c, "r2", _day(c, 800))
    exp = recompute([c], [*traffic, refused, again, again])  # r2 twice: once
    assert exp.ivt_reports == {"r1": ("refused", 0), "r2": ("applied", 800)}
    assert exp.invoices[("t-adv-acme", "USD", "2026-10")] == Decimal("15.00")  # 2,000 − 800 = 1,200


def test_entries_take_the_latest_buckets_first_after_the_report_s_earlier_entries() -> None:
    c = _contract(FLAT)
    traffic = _impressions(c, 120)  # 01:00..02:59 local: eight 15-minute buckets of 15
    start = local_midnight(DAY, "America/New_York") + timedelta(hours=1)
    first_hour = {"window_start": start.isoformat(), "window_end": (start + timedelta(hours=1)).isoformat()}
    whole_day = _day(c, 60)
    # the day's 60 latest are the second hour: the first hour's 60 are still there for the second entry
    assert recompute([c], [*traffic, _report(c, "r1", whole_day, {**first_hour, "count": 60})]).ivt_reports == \
        {"r1": ("applied", 120)}
    # 61 from the day reach into the first hour: it then holds 59, and a claim of 60 refuses the report
    assert recompute([c], [*traffic, _report(c, "r1", _day(c, 61), {**first_hour, "count": 60})]).ivt_reports == \
        {"r1": ("refused", 0)}


def test_ivt_reports_count_only_valid_unique_impressions_of_their_measurement_source() -> None:
    c = _contract(FLAT)
    traffic = _impressions(c, 10)
    dup = dict(traffic[0])
    flagged = _impressions(c, 5, prefix="bad")
    for e in flagged:
        e["event"] = {**e["event"], "ivt": "givt"}
    third = _impressions(c, 5, prefix="third")
    for e in third:
        e["event"] = {**e["event"], "measurement_source": "third_party"}
    record = [*traffic, dup, *flagged, *third]
    assert recompute([c], [*record, _report(c, "r1", _day(c, 10))]).ivt_reports == {"r1": ("applied", 10)}
    assert recompute([c], [*record, _report(c, "r1", _day(c, 11))]).ivt_reports == {"r1": ("refused", 0)}
    third_party = {**_day(c, 5), "measurement_source": "third_party"}
    assert recompute([c], [*record, _report(c, "r1", third_party)]).ivt_reports == {"r1": ("applied", 5)}


def test_a_local_day_window_runs_from_local_midnight_to_local_midnight() -> None:
    start, end = ivt_window({"date": "2026-10-25", "time_zone": "Europe/Berlin"})  # the day summer time ends
    assert (start, end) == (datetime(2026, 10, 24, 22, tzinfo=UTC), datetime(2026, 10, 25, 23, tzinfo=UTC))
    assert ivt_window({"window_start": "2026-10-01T00:15:00Z", "window_end": "2026-10-01T01:00:00Z"}) == \
        (datetime(2026, 10, 1, 0, 15, tzinfo=UTC), datetime(2026, 10, 1, 1, tzinfo=UTC))


def test_planned_reports_credit_half_a_campaign_day_inside_the_flight_and_the_recomputation_agrees() -> None:
    s = build(5, MONTH, "t")
    live = [LiveContract(f"ctr-{c.key}", c.terms) for c in s.contracts]
    events = generate(s, TrafficMix(impressions=6000))
    reports = plan_ivt_reports(live, events, 5, seed=s.seed, run_id=s.run_id)
    assert reports == plan_ivt_reports(live, events, 5, seed=s.seed, run_id=s.run_id)  # seeded
    assert len(reports) == 5 and len({r["report_id"] for r in reports}) == 5
    cpm = {c.advertiser_id: c for c in s.contracts if c.contract_type == "cpm"}
    assert [r["advertiser_id"] for r in reports[:3]] == list(cpm)  # the CPM contracts take turns
    windows = set()
    for r in reports:
        (entry,) = r["entries"]
        contract = cpm[r["advertiser_id"]]
        assert entry["campaign_id"] in contract.campaign_ids and entry["time_zone"] == contract.terms["common"]["time_zone"]
        assert MONTH <= date.fromisoformat(entry["date"]) < date(2026, 11, 1) and entry["count"] > 0
        start, end = ivt_window(entry)
        valid = {e["event"]["impression_id"] for e in events if e["kind"] == "impression" and e["event"]["ivt"] == "none"
                 and e["event"]["campaign_id"] == entry["campaign_id"]
                 and start <= datetime.fromisoformat(e["event"]["event_time"].replace("Z", "+00:00")) < end}
        assert entry["count"] == len(valid) // 2
        windows.add((entry["campaign_id"], entry["date"]))
    assert len(windows) == 5
    lines = [{"kind": "ivt_report", "via": "ivt_report", "event": r} for r in reports]
    before, with_ivt = recompute(live, events), recompute(live, [*events, *lines])
    assert with_ivt.ivt_reports == {r["report_id"]: ("applied", r["entries"][0]["count"]) for r in reports}
    acme = ("t-adv-acme", "USD", "2026-10")  # flat, no cap: the credited impressions leave the one line
    credited = sum(r["entries"][0]["count"] for r in reports if r["advertiser_id"] == "t-adv-acme")
    in_scope = len({e["event"]["impression_id"] for e in events if e["kind"] == "impression" and e["event"]["ivt"] == "none"
                    and e["event"]["campaign_id"] in cpm["t-adv-acme"].campaign_ids})
    assert credited > 0
    assert before.invoices[acme] == round_to_minor(Decimal(in_scope) * Decimal("0.0125"), currency("USD"))
    assert with_ivt.invoices[acme] == round_to_minor(Decimal(in_scope - credited) * Decimal("0.0125"), currency("USD"))
    assert with_ivt.payouts == before.payouts  # attribution does not read IVT reports


def test_a_late_io_changes_nothing_owed_and_splits_the_traffic_about_in_half() -> None:
    s = build(5, MONTH, "t")
    live = [LiveContract(f"ctr-{c.key}", c.terms, late_io=c.key == FLAT) for c in s.contracts]
    events = generate(s, TrafficMix(impressions=4000))
    before, after = split_for_late_io(events, live)
    assert before + after == events and abs(len(before) - len(after)) <= 1
    assert split_for_late_io(events, [LiveContract(lc.contract_id, lc.terms_json) for lc in live]) == (events, [])
    approved = {"kind": "contract_approved", "via": "contracts_api", "event": {"contract_id": "ctr-cpm-flat-usd"}}
    assert recompute(live, [*before, approved, *after]).invoices == recompute(live, events).invoices
