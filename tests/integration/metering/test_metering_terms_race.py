"""A contract's first impressions arriving before the worker has read its terms are counted
under the contract, not as no_contract: the worker re-reads contracts.terms to its end before
calling a campaign unknown, and re-reads the batch if that found something."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tally_billing.examples import cpm_terms_json

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 2, 20, 12, tzinfo=UTC)


def terms(campaign: str) -> dict[str, Any]:
    t = cpm_terms_json()
    t["common"].update({"campaign_ids": [campaign], "flight_start": "2026-01-01", "flight_end": "2026-12-31",
                        "auto_renew": False, "renewal_term_months": None, "escalator_pct": None,
                        "notice_period_days": 0})
    return t


def impressions(campaign: str, n: int) -> list[dict[str, Any]]:
    at = NOW - timedelta(hours=1)
    return [{"impression_id": uuid.uuid4().hex, "event_time": at + timedelta(seconds=i), "advertiser_id": "adv-acme",
             "campaign_id": campaign, "partner_id": None, "household_id": f"hh-{i}", "device_type": "ctv",
             "ivt": "none", "measurement_source": "first_party"} for i in range(n)]


def test_impressions_of_a_contract_whose_terms_the_worker_has_not_read_yet_are_still_counted(metering_world: Any) -> None:
    w = metering_world
    w.publish_terms("R-known", [(1, T0, None, terms("c-known"))])
    w.set_clock(NOW)
    worker = w.start_thread_worker()
    # The worker's terms consumer falls behind: its per-step poll reads nothing from now on.
    worker.poll_terms = lambda timeout_s=0.0: 0
    w.publish_terms("R-new", [(1, T0, None, terms("c-new"))])
    w.produce("impressions", "impression", impressions("c-new", 40) + impressions("c-unknown", 5),
              lambda r: r["household_id"])

    def counted(totals: list[dict[str, Any]]) -> bool:
        latest = {t["total_id"]: t for t in totals}
        row = latest.get("R-new/2026-02")
        return row is not None and row["counts"].get("billable", 0) == 40

    w.wait_for("running_totals", "running_total", counted)
    w.wait_idle()
    events = worker.metrics.events
    assert events.labels("impression", "no_contract")._value.get() == 5  # a campaign no contract covers


def test_a_batch_of_only_uncovered_impressions_commits_and_counts_them(metering_world: Any) -> None:
    w = metering_world
    w.publish_terms("R-known", [(1, T0, None, terms("c-known"))])
    w.set_clock(NOW)
    worker = w.start_thread_worker()
    w.produce("impressions", "impression", impressions("c-nobody", 30), lambda r: r["household_id"])
    w.wait_idle()  # the group's offsets reach the end: the batch committed
    w.assert_alive()
    assert worker.metrics.events.labels("impression", "no_contract")._value.get() == 30
