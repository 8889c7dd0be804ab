"""Impressions that no contract covers are counted no_contract, and a batch made only of them
commits its offsets (it used to leave no transaction open and stop the worker)."""

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


def test_a_batch_of_only_uncovered_impressions_commits_and_counts_them(metering_world: Any) -> None:
    w = metering_world
    w.publish_terms("R-known", [(1, T0, None, terms("c-known"))])
    w.set_clock(NOW)
    worker = w.start_thread_worker()
    w.produce("impressions", "impression", impressions("c-nobody", 30), lambda r: r["household_id"])
    w.wait_idle()  # the group's offsets reach the end: the batch committed
    w.assert_alive()
    assert worker.metrics.events.labels("impression", "no_contract")._value.get() == 30
