"""The whole lifecycle across injected time, with its events, terms records and audit trail."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from tally_kit import audit

from .conftest import ADMIN, APPROVER, OPS, Env, cpm_terms
from .helpers_contracts import outbox

pytestmark = pytest.mark.integration


async def test_full_lifecycle_draft_active_amended_renewed_terminated_ended(env: Env) -> None:
    terms = cpm_terms(start="2026-04-01", end="2026-06-30", auto_renew=True, notice=30, escalator="3", months=3)
    c = await env.ok("POST", "/contracts", OPS, {"name": "Acme spring", "terms": terms})
    cid = c["id"]
    assert c["status"] == "draft" and c["draft"]["state"] == "draft"

    await env.ok("POST", f"/contracts/{cid}/versions/1/submit", OPS)
    assert (await env.ok("GET", f"/contracts/{cid}", OPS))["status"] == "pending_approval"
    v1 = await env.ok("POST", f"/contracts/{cid}/versions/1/approve", APPROVER, {"comment": "looks right"})
    assert v1["state"] == "approved" and v1["approvals"][0]["approver"] == "alex"
    assert (await env.ok("GET", f"/contracts/{cid}", OPS))["status"] == "scheduled"

    # time passes: the flight starts
    env.clock.set(datetime(2026, 4, 2, 12, tzinfo=UTC))
    assert await env.service.tick() == ["contract.status_changed"]
    got = await env.ok("GET", f"/contracts/{cid}", OPS)
    assert (got["status"], got["current_version"]) == ("active", 1)

    # amended from May 1st at a new rate
    amended = cpm_terms(start="2026-04-01", end="2026-06-30", auto_renew=True, notice=30, escalator="3", months=3,
                        rate="15.00")
    v2 = await env.ok("POST", f"/contracts/{cid}/amendments", OPS, {"terms": amended, "effective_from": "2026-05-01"})
    assert (v2["version"], v2["kind"], v2["backdated"]) == (2, "amendment", False)
    await env.ok("POST", f"/contracts/{cid}/versions/2/submit", OPS)
    await env.ok("POST", f"/contracts/{cid}/versions/2/approve", APPROVER, {})
    diff = await env.ok("GET", f"/contracts/{cid}/diff?from=1&to=2", OPS)
    changed = {ch["path"]: (ch["from"], ch["to"]) for ch in diff["changes"]}
    assert changed["terms.cpm.rate_card.bands[0].rate_cpm"] == ("12.50", "15.00")
    assert "effective_from" in changed
    env.clock.set(datetime(2026, 5, 2, 12, tzinfo=UTC))
    assert await env.service.tick() == ["version.activated"]
    assert (await env.ok("GET", f"/contracts/{cid}", OPS))["current_version"] == 2

    # the notice deadline (30 days before the July 1st term end) passes: auto-renewal with +3 %
    env.clock.set(datetime(2026, 6, 2, 12, tzinfo=UTC))
    assert await env.service.tick() == ["contract.renewed"]
    v3 = await env.ok("GET", f"/contracts/{cid}/versions/3", OPS)
    assert (v3["kind"], v3["state"]) == ("renewal", "approved")
    assert v3["terms"]["cpm"]["rate_card"]["bands"][0]["rate_cpm"] == "15.45"
    assert (v3["terms"]["common"]["flight_start"], v3["terms"]["common"]["flight_end"]) == ("2026-07-01", "2026-09-30")
    assert await env.service.tick() == []  # idempotent: nothing more to do at the same instant
    env.clock.set(datetime(2026, 7, 2, 12, tzinfo=UTC))
    assert await env.service.tick() == ["version.activated"]

    # terminated mid-term, effective in the future
    v4 = await env.ok("POST", f"/contracts/{cid}/terminate", OPS, {"effective_date": "2026-08-15", "reason": "budget cut"})
    assert (v4["kind"], v4["state"]) == ("termination", "submitted")
    await env.ok("POST", f"/contracts/{cid}/versions/4/approve", APPROVER, {})
    got = await env.ok("GET", f"/contracts/{cid}", OPS)
    assert got["status"] == "terminating" and got["terminated_at"] == "2026-08-15T04:00:00+00:00"
    env.clock.set(datetime(2026, 8, 15, 3, 59, tzinfo=UTC))
    assert await env.service.tick() == []
    env.clock.set(datetime(2026, 8, 15, 4, 0, tzinfo=UTC))
    assert await env.service.tick() == ["contract.status_changed"]
    assert (await env.ok("GET", f"/contracts/{cid}", OPS))["status"] == "ended"
    assert await env.service.tick() == []

    events = await outbox(env.dsn, env.catalog, "events", cid)
    assert [e["event_type"] for e in events] == [
        "contract.created", "version.submitted", "version.approved", "contract.status_changed",
        "version.drafted", "version.submitted", "version.approved", "version.activated", "contract.renewed",
        "version.activated", "contract.termination_requested", "contract.terminated", "contract.status_changed"]
    assert [e["revision"] for e in events] == list(range(1, len(events) + 1))
    assert len({e["event_id"] for e in events}) == len(events)
    assert [e["status"] for e in events][-3:] == ["active", "terminating", "ended"]

    terms_records = await outbox(env.dsn, env.catalog, "terms", cid)
    last = terms_records[-1]
    assert last["status"] == "ended" and last["terminated_at"] == datetime(2026, 8, 15, 4, tzinfo=UTC)
    assert [v["version"] for v in last["versions"]] == [1, 2, 3]
    assert last["versions"][0]["effective_to"] == last["versions"][1]["effective_from"]
    assert last["versions"][2]["effective_to"] == datetime(2026, 8, 15, 4, tzinfo=UTC)
    assert json.loads(last["versions"][2]["terms_json"])["cpm"]["rate_card"]["bands"][0]["rate_cpm"] == "15.45"
    assert [r["revision"] for r in terms_records] == sorted(r["revision"] for r in terms_records)

    trail = await env.ok("GET", f"/contracts/{cid}/audit?limit=200", OPS)
    assert [e["action"] for e in trail["items"]] == [e["event_type"] for e in events]
    assert (await env.ok("GET", "/audit/verify", ADMIN))["ok"] is True


async def test_validation_errors_name_every_invalid_field(env: Env) -> None:
    terms = cpm_terms()
    terms["common"]["currency"] = "XXX"
    del terms["common"]["time_zone"]
    terms["cpm"]["rate_card"]["bands"][0]["rate_cpm"] = 12.5
    terms["surprise"] = True
    status, body, headers = await env.call("POST", "/contracts", OPS, {"name": "", "terms": terms, "extra": 1,
                                                                       "partner_ids": "p1"})
    assert status == 422 and headers["Content-Type"].startswith("application/problem+json")
    fields = {e["field"] for e in body["errors"]}
    assert fields == {"name", "extra", "partner_ids", "terms.surprise", "terms.common.currency", "terms.common.time_zone",
                      "terms.cpm.rate_card.bands[0].rate_cpm"}
    status, body, _ = await env.call("POST", "/contracts", OPS, {})
    assert status == 422 and {e["field"] for e in body["errors"]} == {"name", "terms"}
    status, body, _ = await env.call("GET", "/contracts?status=bogus&effective_on=tomorrow&limit=0", OPS)
    assert status == 422 and {e["field"] for e in body["errors"]} == {"query.status", "query.effective_on", "query.limit"}
    conn = await asyncpg.connect(env.dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM contracts") == 0  # nothing half-written
    finally:
        await conn.close()


async def test_draft_edits_need_the_current_etag(env: Env) -> None:
    c = await env.ok("POST", "/contracts", OPS, {"name": "Etag", "terms": cpm_terms()})
    path = f"/contracts/{c['id']}/versions/1"
    status, _, headers = await env.call("GET", path, OPS)
    first_etag = headers["ETag"]
    status, body, _ = await env.call("PUT", path, OPS, {"terms": cpm_terms(rate="13.00")})
    assert status == 428
    status, body, headers = await env.call("PUT", path, OPS, {"terms": cpm_terms(rate="13.00")}, {"If-Match": first_etag})
    assert status == 200 and headers["ETag"] != first_etag and body["terms"]["cpm"]["rate_card"]["bands"][0]["rate_cpm"] == "13.00"
    # a second editor still holding the first ETag loses nothing: 412, and the first edit stands
    status, body, headers = await env.call("PUT", path, OPS, {"terms": cpm_terms(rate="99.00")}, {"If-Match": first_etag})
    assert status == 412 and body["current_etag"] == headers["ETag"]
    got = await env.ok("GET", path, OPS)
    assert got["terms"]["cpm"]["rate_card"]["bands"][0]["rate_cpm"] == "13.00"
    # only drafts are editable
    await env.ok("POST", f"{path}/submit", OPS)
    status, _, _ = await env.call("PUT", path, OPS, {"terms": cpm_terms()}, {"If-Match": got["etag"]})
    assert status == 412
    now_etag = (await env.ok("GET", path, OPS))["etag"]
    status, body, _ = await env.call("PUT", path, OPS, {"terms": cpm_terms()}, {"If-Match": now_etag})
    assert status == 409 and "submitted" in body["detail"]


async def test_approved_versions_are_immutable_in_the_database(env: Env) -> None:
    cid = await env.approved_contract(cpm_terms())
    conn = await asyncpg.connect(env.dsn)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="immutable"):
            await conn.execute("UPDATE contract_versions SET terms = '{}' WHERE contract_id = $1", cid)
    finally:
        await conn.close()


async def test_list_filters_and_cursor_pagination(env: Env) -> None:
    ids = []
    for i in range(3):
        env.clock.advance(timedelta(seconds=1))  # the clock stands still otherwise: order by creation
        ids.append(await env.approved_contract(cpm_terms(advertiser=f"adv-{i % 2}"), name=f"Spring {i}"))
    env.clock.advance(timedelta(seconds=1))
    draft = await env.ok("POST", "/contracts", OPS, {"name": "Autumn draft", "terms": cpm_terms(advertiser="adv-0")})
    page1 = await env.ok("GET", "/contracts?limit=2", OPS)
    page2 = await env.ok("GET", f"/contracts?limit=2&cursor={page1['next_cursor']}", OPS)
    assert [c["id"] for c in page1["items"] + page2["items"]] == [*ids, draft["id"]] and page2["next_cursor"] is None
    assert [c["id"] for c in (await env.ok("GET", "/contracts?advertiser_id=adv-0", OPS))["items"]] == [ids[0], ids[2], draft["id"]]
    assert [c["id"] for c in (await env.ok("GET", "/contracts?status=draft", OPS))["items"]] == [draft["id"]]
    assert [c["id"] for c in (await env.ok("GET", "/contracts?q=autumn", OPS))["items"]] == [draft["id"]]
    assert len((await env.ok("GET", "/contracts?effective_on=2026-04-01", OPS))["items"]) == 3
    assert (await env.ok("GET", "/contracts?effective_on=2026-03-31", OPS))["items"] == []
    assert (await env.ok("GET", "/contracts?effective_on=2026-07-01", OPS))["items"] == []
    assert len((await env.ok("GET", "/contracts?contract_type=cpm&status=scheduled", OPS))["items"]) == 3


async def test_audit_chain_tampering_is_reported_by_the_verify_endpoint(env: Env) -> None:
    await env.approved_contract(cpm_terms())
    conn = await asyncpg.connect(env.dsn)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2")
        # the owner-only path: disable the trigger inside one transaction (see README, "Audit")
        async with conn.transaction():
            await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete")
            await conn.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2")
            await conn.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update_delete")
        assert await audit.verify(conn) == audit.BrokenLink(2, "content does not match its hash (the entry was edited)")
    finally:
        await conn.close()
    result = await env.ok("GET", "/audit/verify", ADMIN)
    assert result["ok"] is False and result["first_broken_link"]["seq"] == 2
    status, _, _ = await env.call("GET", "/audit/verify", OPS)
    assert status == 403
