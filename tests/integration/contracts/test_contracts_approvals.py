"""Approval policy, maker-checker, stale approvals and concurrent approvals, through the API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from .conftest import APPROVER, APPROVER2, FINANCE, OPS, OPS2, Env, cpm_terms, make_env, token

pytestmark = pytest.mark.integration


async def _submitted(env: Env, total: str = "50000.00") -> str:
    c = await env.ok("POST", "/contracts", OPS, {"name": "Approvals", "terms": cpm_terms(total=total)})
    await env.ok("POST", f"/contracts/{c['id']}/versions/1/submit", OPS)
    return str(c["id"])


async def test_policy_requires_finance_above_100k_committed_value(env: Env) -> None:
    small = await env.ok("GET", f"/contracts/{await _submitted(env, '100000.00')}/versions/1", OPS)
    assert small["required_approvals"] == {"approver": 1}
    cid = await _submitted(env, "100000.01")
    v = await env.ok("GET", f"/contracts/{cid}/versions/1", OPS)
    assert v["required_approvals"] == {"approver": 1, "finance": 1}
    v = await env.ok("POST", f"/contracts/{cid}/versions/1/approve", APPROVER, {})
    assert v["state"] == "submitted" and v["missing_approvals"] == {"finance": 1}
    status, body, _ = await env.call("POST", f"/contracts/{cid}/versions/1/approve", APPROVER2, {})
    assert status == 403 and body["missing_approvals"] == {"finance": 1}
    v = await env.ok("POST", f"/contracts/{cid}/versions/1/approve", FINANCE, {})
    assert v["state"] == "approved" and sorted(a["role"] for a in v["approvals"]) == ["approver", "finance"]


async def test_roles_outside_the_policy_cannot_approve(env: Env) -> None:
    cid = await _submitted(env)
    status, _, _ = await env.call("POST", f"/contracts/{cid}/versions/1/approve", OPS2, {})
    assert status == 403


@pytest.fixture
async def strict_env(fresh_database: str) -> AsyncIterator[Env]:
    policy = {"rules": [{"require": {"approver": 2}},
                        {"when": {"contract_type": "cpm", "committed_value_over": "1000"}, "require": {"finance": 1}}]}
    async for e in make_env(fresh_database, policy):
        yield e


async def test_a_configured_policy_by_type_and_value(strict_env: Env) -> None:
    cid = await _submitted(strict_env, "5000.00")
    v = await strict_env.ok("GET", f"/contracts/{cid}/versions/1", OPS)
    assert v["required_approvals"] == {"approver": 2, "finance": 1}


async def test_concurrent_approvals_yield_exactly_what_the_policy_needs(env: Env) -> None:
    cid = await _submitted(env, "500000.00")  # needs one approver and one finance
    approvers = [token(f"approver-{i}", "approver") for i in range(4)] + [token(f"finance-{i}", "finance") for i in range(4)]
    results = await asyncio.gather(*(env.call("POST", f"/contracts/{cid}/versions/1/approve", t, {}) for t in approvers))
    statuses = sorted(s for s, _, _ in results)
    assert statuses.count(200) == 2, statuses
    assert set(statuses) <= {200, 403, 409}
    v = await env.ok("GET", f"/contracts/{cid}/versions/1", OPS)
    assert v["state"] == "approved" and sorted(a["role"] for a in v["approvals"]) == ["approver", "finance"]
    conn = await asyncpg.connect(env.dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM approvals WHERE contract_id = $1", cid) == 2
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE contract_id = $1 AND topic = 'terms'", cid) == 1
    finally:
        await conn.close()


async def test_two_approvers_at_the_same_moment_when_one_is_needed(env: Env) -> None:
    cid = await _submitted(env)
    a, b = await asyncio.gather(env.call("POST", f"/contracts/{cid}/versions/1/approve", APPROVER, {}),
                                env.call("POST", f"/contracts/{cid}/versions/1/approve", APPROVER2, {}))
    assert sorted([a[0], b[0]]) == [200, 409]
    v = await env.ok("GET", f"/contracts/{cid}/versions/1", OPS)
    assert len(v["approvals"]) == 1


async def test_edge_case_17_approver_who_authored_and_approval_after_a_change(env: Env) -> None:
    both = token("bea", "ops", "approver")
    c = await env.ok("POST", "/contracts", both, {"name": "Edge 17", "terms": cpm_terms(total="500000.00")})
    cid = c["id"]
    path = f"/contracts/{cid}/versions/1"
    await env.ok("POST", f"{path}/submit", OPS)
    # the author cannot approve, and neither can the submitter
    status, body, _ = await env.call("POST", f"{path}/approve", both, {})
    assert status == 403 and body["type"].endswith("maker-checker")
    submitter = token("olivia", "ops", "approver")  # same subject as OPS, who submitted
    status, _, _ = await env.call("POST", f"{path}/approve", submitter, {})
    assert status == 403
    # an editor becomes an author too
    reviewed = await env.ok("GET", path, APPROVER)
    await env.ok("POST", f"{path}/approve", APPROVER, {}, {"If-Match": reviewed["etag"]})
    await env.ok("POST", f"{path}/withdraw", OPS2)
    current = await env.ok("GET", path, OPS2)
    await env.ok("PUT", path, OPS2, {"terms": cpm_terms(total="500000.00", rate="20.00")}, {"If-Match": current["etag"]})
    await env.ok("POST", f"{path}/submit", OPS)
    # finance reviewed the old content: their approval is refused as stale
    status, body, headers = await env.call("POST", f"{path}/approve", FINANCE, {}, {"If-Match": reviewed["etag"]})
    assert status == 412 and headers["ETag"] != reviewed["etag"]
    # the approver's earlier approval did not carry over to the changed version
    v = await env.ok("GET", path, OPS)
    assert v["state"] == "submitted" and v["approvals"] == [] and v["missing_approvals"] == {"approver": 1, "finance": 1}
    status, _, _ = await env.call("POST", f"{path}/approve", token("oscar", "approver"), {})  # oscar edited it
    assert status == 403
    await env.ok("POST", f"{path}/approve", FINANCE, {}, {"If-Match": v["etag"]})
    v = await env.ok("POST", f"{path}/approve", APPROVER, {})
    assert v["state"] == "approved" and v["submission"] == 2
    assert sorted(v["authors"]) == ["bea", "oscar"]


async def test_reject_needs_a_comment_and_is_final(env: Env) -> None:
    cid = await _submitted(env)
    status, body, _ = await env.call("POST", f"/contracts/{cid}/versions/1/reject", APPROVER, {})
    assert status == 422 and body["errors"] == [{"field": "comment", "message": "is required"}]
    v = await env.ok("POST", f"/contracts/{cid}/versions/1/reject", APPROVER, {"comment": "rate too low"})
    assert (v["state"], v["decision_comment"]) == ("rejected", "rate too low")
    status, _, _ = await env.call("POST", f"/contracts/{cid}/versions/1/approve", APPROVER2, {})
    assert status == 409
    # a fresh draft can follow a rejected first version
    v2 = await env.ok("POST", f"/contracts/{cid}/amendments", OPS, {"terms": cpm_terms(rate="14.00")})
    assert (v2["version"], v2["kind"]) == (2, "initial")
