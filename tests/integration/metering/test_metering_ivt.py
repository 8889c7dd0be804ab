"""IVT found after the fact (docs/DOMAIN.md edge case 22): a vendor's report moves impressions from valid
to invalid usage in the ledger, and every period it reaches is re-rated at the marginal price —
flat rate, across a graduated tier, under a binding cap (a zero credit) — in a closed period as
``ivt_credit`` adjustments, in an open one as a lower running total. A report that claims more
than a window holds is refused whole, naming the window; a report id applies once."""

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

T0 = datetime(2026, 1, 1, 5, tzinfo=UTC)
FEB10 = datetime(2026, 2, 10, 15, tzinfo=UTC)
MAR2 = datetime(2026, 3, 2, 15, tzinfo=UTC)


def cpm(campaign: str, bands: list[tuple[int, str]], *, kind: str = "flat", per_period: str | None = None) -> dict[str, Any]:
    t = cpm_terms_json()
    t["common"].update({"time_zone": "America/New_York", "campaign_ids": [campaign], "advertiser_id": "adv-ivt",
                        "flight_start": "2026-01-01", "flight_end": "2026-12-31", "auto_renew": False,
                        "renewal_term_months": None, "escalator_pct": None, "notice_period_days": 0})
    t["cpm"] = {"rate_card": {"kind": kind, "tier_basis": "period",
                              "bands": [{"from_impressions": f, "rate_cpm": r} for f, r in bands]},
                "budget_caps": {"total": None, "per_period": per_period}, "minimum_commitment_per_period": None}
    return t


def imps(campaign: str, at: datetime, n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        iid = uuid.uuid4().hex
        out.append({"impression_id": iid, "event_time": at + timedelta(milliseconds=500 * i), "advertiser_id": "adv-ivt",
                    "campaign_id": campaign, "partner_id": None, "household_id": f"hh-{iid}", "device_type": "ctv",
                    "ivt": "none", "measurement_source": "first_party"})
    return out


def report(report_id: str, entries: list[tuple[str, datetime, datetime, str, int]]) -> dict[str, Any]:
    return {"report_id": report_id, "vendor": "vendor-ias", "advertiser_id": "adv-ivt", "received_at": datetime.now(UTC),
            "entries": [{"campaign_id": c, "window_start": s, "window_end": e, "ivt_class": k,
                         "measurement_source": "first_party", "count": n} for c, s, e, k, n in entries]}


HOUR = timedelta(hours=1)


@pytest.fixture(scope="module")
def run(module_world: Any) -> Iterator[dict[str, Any]]:
    w = module_world
    w.publish_terms("I-flat", [(1, T0, None, cpm("c-flat", [(0, "10.00")]))])
    w.publish_terms("I-tier", [(1, T0, None, cpm("c-tier", [(0, "10.00"), (1000, "5.00")], kind="graduated"))])
    w.publish_terms("I-cap", [(1, T0, None, cpm("c-cap", [(0, "10.00")], per_period="15.00"))])
    w.publish_terms("I-open", [(1, T0, None, cpm("c-open", [(0, "10.00")]))])
    w.set_clock(datetime(2026, 2, 20, 12, tzinfo=UTC))
    w.start_thread_worker("w-ivt")
    w.produce("impressions", "impression", imps("c-flat", FEB10, 1000) + imps("c-tier", FEB10, 1500)
              + imps("c-cap", FEB10, 2000), lambda r: r["household_id"])
    w.wait_idle()
    w.set_clock(datetime(2026, 3, 2, 20, tzinfo=UTC))
    w.wait_for("periods_closed", "period_closed", lambda rs: {"I-flat/2026-02", "I-tier/2026-02", "I-cap/2026-02"}
               <= {r["close_id"] for r in rs})
    w.produce("impressions", "impression", imps("c-open", MAR2, 1000), lambda r: r["household_id"])
    reports = [
        report("r-flat", [("c-flat", FEB10, FEB10 + HOUR, "givt", 100)]),
        report("r-tier", [("c-tier", FEB10, FEB10 + HOUR, "sivt", 600)]),
        report("r-cap", [("c-cap", FEB10, FEB10 + HOUR, "givt", 300)]),
        report("r-open", [("c-open", MAR2, MAR2 + HOUR, "givt", 250)]),
        # entry 0 alone would fit, entry 1 claims more than its window holds: nothing of it applies
        report("r-too-many", [("c-flat", FEB10, FEB10 + HOUR, "givt", 10),
                              ("c-flat", FEB10 + timedelta(minutes=15), FEB10 + HOUR, "sivt", 5000)]),
        report("r-flat", [("c-flat", FEB10, FEB10 + HOUR, "givt", 100)]),  # the vendor sent it again
    ]
    w.wait_idle()
    w.produce("ivt_reports", "ivt_report", reports, lambda r: r["report_id"])
    outcomes = w.wait_for("ivt_outcomes", "ivt_report_outcome", lambda rs: len(rs) >= len(reports))
    w.wait_idle()
    yield {
        "outcomes": outcomes,
        "closed": {r["close_id"]: r for r in w.read_all("periods_closed", "period_closed")},
        "adjustments": w.read_all("adjustments", "adjustment"),
        "totals": {r["total_id"]: r for r in w.read_all("running_totals", "running_total")},
    }


def adjustments(run: dict[str, Any], contract: str) -> dict[tuple[str, int, str], tuple[int, Decimal]]:
    out: dict[tuple[str, int, str], list[Any]] = defaultdict(lambda: [0, Decimal(0)])
    for a in run["adjustments"]:
        if a["contract_id"] == contract:
            assert a["kind"] == "ivt_credit" and a["corrects_period_key"] == "2026-02"
            out[(a["line_type"], a["contract_version"], a["price_point"])][0] += a["quantity"]
            out[(a["line_type"], a["contract_version"], a["price_point"])][1] += a["amount_exact"]
    return {k: (q, amount) for k, (q, amount) in out.items()}


def test_ivt_credit_at_a_flat_rate(run: dict[str, Any]) -> None:
    assert adjustments(run, "I-flat") == {("cpm_impressions", 1, "band:0"): (-100, Decimal("-1.00"))}


def test_ivt_credit_across_a_graduated_tier_is_priced_at_the_margin(run: dict[str, Any]) -> None:
    # billed 1,000 at 10.00 + 500 at 5.00; 600 invalid leave 900: the top 500 at 5.00 go first
    assert adjustments(run, "I-tier") == {("cpm_impressions", 1, "band:0"): (-100, Decimal("-1.00")),
                                          ("cpm_impressions", 1, "band:1"): (-500, Decimal("-2.50"))}


def test_ivt_credit_under_a_binding_cap_is_zero(run: dict[str, Any]) -> None:
    adj = adjustments(run, "I-cap")
    assert adj == {("cpm_over_delivery", 1, "over_delivery"): (-300, Decimal(0))}
    assert sum(a for _, a in adj.values()) == 0


def test_ivt_in_the_open_period_lowers_the_running_total(run: dict[str, Any]) -> None:
    total = run["totals"]["I-open/2026-03"]
    assert total["status"] == "open" and total["amount_exact"] == Decimal("7.50")
    assert total["counts"]["ivt_givt"] == 250 and total["counts"]["billable"] == 750


def test_a_report_claiming_more_than_its_window_holds_is_refused_whole(run: dict[str, Any]) -> None:
    [refused] = [o for o in run["outcomes"] if o["report_id"] == "r-too-many"]
    assert refused["status"] == "refused" and refused["credited"] == 0
    assert refused["campaign_id"] == "c-flat" and refused["window_start"] == FEB10 + timedelta(minutes=15)
    assert "entries[1]" in refused["reason"] and "flags 5000" in refused["reason"]
    assert not [a for a in run["adjustments"] if "r-too-many" in a["adjustment_id"]]


def test_a_report_id_applies_once(run: dict[str, Any]) -> None:
    statuses = [o["status"] for o in run["outcomes"] if o["report_id"] == "r-flat"]
    assert statuses == ["applied", "duplicate"]
    assert [o["credited"] for o in run["outcomes"] if o["report_id"] == "r-flat"] == [100, 0]


def test_replay_from_the_raw_topics_agrees_with_every_closed_period(run: dict[str, Any], module_world: Any) -> None:
    module_world.assert_replay_agrees(run["closed"])
