"""docs/DOMAIN.md edge cases 2, 15 and 16 (17 is in test_contracts_approvals.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from .conftest import APPROVER, FINANCE, OPS, Env, cpm_terms
from .helpers_contracts import outbox

pytestmark = pytest.mark.integration


async def test_edge_case_02_backdated_amendment_into_a_closed_period(env: Env) -> None:
    # now is 2026-03-10: February (New York) closed on March 1st + 2 h grace
    cid = await env.approved_contract(cpm_terms(start="2026-01-01", end="2026-12-31"))
    new_terms = cpm_terms(start="2026-01-01", end="2026-12-31", rate="11.00")
    status, body, _ = await env.call("POST", f"/contracts/{cid}/amendments", OPS,
                                     {"terms": new_terms, "effective_from": "2026-02-15"})
    assert status == 422 and [e["field"] for e in body["errors"]] == ["effective_from"]
    assert "closed billing period" in body["errors"][0]["message"]
    v = await env.ok("POST", f"/contracts/{cid}/amendments", OPS,
                     {"terms": new_terms, "effective_from": "2026-02-15", "backdated": True})
    assert v["backdated"] is True
    v = await env.ok("POST", f"/contracts/{cid}/versions/2/submit", OPS)
    assert v["required_approvals"] == {"approver": 1, "finance": 1}
    v = await env.ok("POST", f"/contracts/{cid}/versions/2/approve", APPROVER, {})
    assert v["state"] == "submitted" and v["missing_approvals"] == {"finance": 1}
    v = await env.ok("POST", f"/contracts/{cid}/versions/2/approve", FINANCE, {})
    assert v["state"] == "approved"
    approved = [e for e in await outbox(env.dsn, env.catalog, "events", cid) if e["event_type"] == "version.approved"]
    assert approved[-1]["backdated"] is True and approved[-1]["version"] == 2
    assert approved[-1]["effective_at"] == datetime(2026, 2, 15, 5, tzinfo=UTC)
    # billing gets the new version effective in the past (it produces adjustments); v1 is untouched, only superseded
    picture = (await outbox(env.dsn, env.catalog, "terms", cid))[-1]
    v1, v2 = picture["versions"]
    assert v1["effective_to"] == v2["effective_from"] == datetime(2026, 2, 15, 5, tzinfo=UTC)
    assert json.loads(v1["terms_json"])["cpm"]["rate_card"]["bands"][0]["rate_cpm"] == "12.50"
    # an amendment in the open period needs no flag and no finance
    v3 = await env.ok("POST", f"/contracts/{cid}/amendments", OPS, {"terms": new_terms, "effective_from": "2026-03-01"})
    assert v3["backdated"] is False


async def test_edge_case_15_termination_with_future_date_then_ended_with_attribution_tail(env: Env) -> None:
    cid = await env.approved_contract(cpm_terms(start="2026-03-01", end="2026-12-31", notice=30))
    assert (await env.ok("GET", f"/contracts/{cid}", OPS))["status"] == "active"  # approved mid-flight
    status, body, _ = await env.call("POST", f"/contracts/{cid}/terminate", OPS,
                                     {"effective_date": "2026-04-01", "reason": "too early"})
    assert status == 422 and [e["field"] for e in body["errors"]] == ["effective_date"]
    await env.ok("POST", f"/contracts/{cid}/terminate", OPS, {"effective_date": "2026-05-01", "reason": "budget cut"})
    assert (await env.ok("GET", f"/contracts/{cid}", OPS))["status"] == "active"  # until approved
    await env.ok("POST", f"/contracts/{cid}/versions/2/approve", APPROVER, {})
    got = await env.ok("GET", f"/contracts/{cid}", OPS)
    assert got["status"] == "terminating"
    status, _, _ = await env.call("POST", f"/contracts/{cid}/terminate", OPS, {"effective_date": "2026-06-01", "reason": "x"})
    assert status == 409
    for suffix, body in (("/amendments", {"terms": cpm_terms(), "effective_from": "2026-04-01"}), ("/renew", {})):
        status, problem, _ = await env.call("POST", f"/contracts/{cid}{suffix}", OPS, body)
        assert status == 409 and "terminated" in problem["detail"]
    picture = (await outbox(env.dsn, env.catalog, "terms", cid))[-1]
    ends = datetime(2026, 5, 1, 4, tzinfo=UTC)  # midnight New York (EDT)
    assert picture["status"] == "terminating" and picture["terminated_at"] == ends
    assert picture["versions"][0]["effective_to"] == ends
    # the attribution tail travels with the terms: conversions after termination still count for exposures before it
    assert json.loads(picture["versions"][0]["terms_json"])["common"]["attribution_tail"] is True
    env.clock.set(datetime(2026, 5, 1, 4, tzinfo=UTC))
    assert await env.service.tick() == ["contract.status_changed"]
    assert (await env.ok("GET", f"/contracts/{cid}", OPS))["status"] == "ended"
    assert (await outbox(env.dsn, env.catalog, "terms", cid))[-1]["status"] == "ended"


async def test_edge_case_16_auto_renewal_with_escalator_and_cancellation_inside_notice(env: Env) -> None:
    terms = cpm_terms(start="2026-01-01", end="2026-03-31", auto_renew=True, notice=30, escalator="3", months=3)
    cid = await env.approved_contract(terms)
    # the term ends 2026-04-01 04:00Z; the notice deadline is 30 days earlier: 2026-03-02 04:00Z < now
    status, body, _ = await env.call("POST", f"/contracts/{cid}/cancel-auto-renewal", OPS, {"reason": "too late"})
    assert status == 409 and "notice period" in body["detail"] and body["notice_deadline"] == "2026-03-02T04:00:00+00:00"
    assert await env.service.tick() == ["contract.renewed"]
    assert await env.service.tick() == []  # a second pass (or a second replica) renews nothing more
    versions = (await env.ok("GET", f"/contracts/{cid}/versions", OPS))["items"]
    renewal = versions[-1]
    assert (renewal["kind"], renewal["state"], renewal["authors"]) == ("renewal", "approved", ["scheduler"])
    assert renewal["terms"]["cpm"]["rate_card"]["bands"][0]["rate_cpm"] == "12.88"  # 12.50 × 1.03 = 12.875, half-even
    assert renewal["terms"]["common"]["flight_start"] == "2026-04-01"
    assert renewal["terms"]["common"]["flight_end"] == "2026-06-30"
    assert renewal["effective_from"] == "2026-04-01T04:00:00+00:00"


async def test_edge_case_16_cancellation_before_the_notice_period_stops_the_renewal(env: Env) -> None:
    terms = cpm_terms(start="2026-03-01", end="2026-05-31", auto_renew=True, notice=30, escalator="3")
    cid = await env.approved_contract(terms)
    got = await env.ok("POST", f"/contracts/{cid}/cancel-auto-renewal", OPS, {"reason": "not renewing"})
    assert got["renewal"]["cancelled"] is True and got["renewal"]["notice_deadline"] == "2026-05-02T04:00:00+00:00"
    status, _, _ = await env.call("POST", f"/contracts/{cid}/cancel-auto-renewal", OPS, {})
    assert status == 409
    env.clock.set(datetime(2026, 5, 20, tzinfo=UTC))
    assert await env.service.tick() == []  # past the notice deadline, and no renewal
    env.clock.set(datetime(2026, 6, 1, 4, tzinfo=UTC))
    assert await env.service.tick() == ["contract.status_changed"]
    got = await env.ok("GET", f"/contracts/{cid}", OPS)
    assert got["status"] == "ended" and [v["kind"] for v in got["versions"]] == ["initial"]
