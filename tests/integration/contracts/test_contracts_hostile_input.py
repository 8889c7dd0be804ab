"""Hostile input against the contracts API (issue 16): every out-of-bounds value, NUL byte, lone
surrogate, deep or duplicated JSON and wrong media type is a 4xx naming the field, before any
work — nothing is written, and nothing afterwards answers 500."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest
from yarl import URL

from tally_kit.auth import mint_token

from .conftest import ADMIN, APPROVER, OPS, SECRET, Env, cpa_terms, cpm_terms

pytestmark = pytest.mark.asyncio


async def _count(env: Env) -> tuple[int, int, int]:
    conn = await asyncpg.connect(env.dsn)
    try:
        row = await conn.fetchrow("SELECT (SELECT count(*) FROM contracts) c, (SELECT count(*) FROM contract_versions) v, "
                                  "(SELECT count(*) FROM outbox) o")
        assert row is not None
        return int(row["c"]), int(row["v"]), int(row["o"])
    finally:
        await conn.close()


async def _raw(env: Env, method: str, path: str | URL, data: bytes, content_type: str = "application/json",
               tok: str = OPS) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {tok}", "Content-Type": content_type}
    async with env.client.request(method, path, data=data, headers=headers) as resp:
        text = await resp.text()
        return resp.status, json.loads(text) if "json" in resp.content_type else text


def _fields(problem: Any) -> list[str]:
    return [e["field"] for e in problem.get("errors", [])]


@pytest.mark.parametrize(("field", "value"), [
    ("notice_period_days", 1_000_000),
    ("payment_terms_days", 1_000_000),
    ("renewal_term_months", 1_000_000),
    ("flight_end", "9999-12-31"),
    ("flight_start", "0001-01-01"),
    ("po_reference", "x" * 101),
    ("advertiser_id", "adv acme"),
    ("campaign_ids", [f"c-{i}" for i in range(1001)]),
    ("committed_value", "1" * 40),
])
async def test_a_term_beyond_its_bound_is_422_naming_it_and_nothing_is_written(env: Env, field: str, value: Any) -> None:
    before = await _count(env)
    terms = cpm_terms(auto_renew=True, months=12)
    terms["common"][field] = value
    status, body, _ = await env.call("POST", "/contracts", OPS, {"name": "poison", "terms": terms})
    assert status == 422, body
    assert f"terms.common.{field}" in _fields(body)
    assert await _count(env) == before


async def test_a_long_flight_with_a_minimum_commitment_is_refused_at_once(env: Env) -> None:
    terms = cpm_terms(start="2026-04-01", end="9999-01-01")
    terms["cpm"]["minimum_commitment_per_period"] = "100.00"
    terms["cpm"]["budget_caps"] = {"total": None, "per_period": None}
    status, body, _ = await env.call("POST", "/contracts", OPS, {"name": "long", "terms": terms})
    assert status == 422 and "terms.common.flight_end" in _fields(body)


async def test_a_contract_at_the_largest_notice_period_stays_readable_and_terminable(env: Env) -> None:
    terms = cpm_terms(start="2026-04-01", end="2036-03-31", auto_renew=True, months=120, notice=365)
    cid = await env.approved_contract(terms)
    got = await env.ok("GET", f"/contracts/{cid}", APPROVER)
    assert got["renewal"]["notice_deadline"] is not None
    v = await env.ok("POST", f"/contracts/{cid}/terminate", OPS, {"effective_date": "2028-01-01", "reason": "done"})
    assert v["kind"] == "termination"
    assert await env.service.tick() is not None


async def test_nul_bytes_and_lone_surrogates_in_a_body_are_422(env: Env) -> None:
    before = await _count(env)
    nul = json.dumps({"name": "a\u0000b", "terms": cpm_terms()}).encode()
    status, body = await _raw(env, "POST", "/contracts", nul)
    assert status == 422 and _fields(body) == ["name"], body
    lone = b'{"name": "a\\ud800b", "terms": ' + json.dumps(cpm_terms()).encode() + b"}"
    status, body = await _raw(env, "POST", "/contracts", lone)
    assert status == 422 and _fields(body) == ["name"], body
    in_terms = cpm_terms()
    in_terms["common"]["po_reference"] = "\ud800"
    status, body = await _raw(env, "POST", "/contracts",
                              json.dumps({"name": "n", "terms": in_terms}).encode())
    assert status == 422 and _fields(body) == ["terms.common.po_reference"], body
    assert await _count(env) == before


async def test_nul_and_surrogates_in_path_and_query_are_404_and_422(env: Env) -> None:
    status, _, _ = await env.call("GET", "/contracts/ctr_%00", OPS)
    assert status == 404
    status, _, _ = await env.call("GET", "/contracts/ctr_%ED%A0%80", OPS)
    assert status == 404
    status, body, _ = await env.call("GET", "/contracts?q=%00", OPS)
    assert status == 422 and _fields(body) == ["query.q"], body
    status, body, _ = await env.call("GET", URL("/contracts?q=%ED%A0%80", encoded=True), OPS)  # type: ignore[arg-type]
    assert status in (200, 422), body  # the URL decoder may already replace the bad bytes
    status, body, _ = await env.call("GET", "/contracts?q=" + "x" * 201, OPS)
    assert status == 422 and _fields(body) == ["query.q"]


async def test_a_cursor_hiding_a_nul_or_an_odd_shape_is_422(env: Env) -> None:
    import base64

    for key in (["2026-01-01T00:00:00+00:00", "\u0000"], ["2026-01-01T00:00:00+00:00", "x" * 300],
                ["2026-01-01T00:00:00", "ctr_1"], [[[[1]]]]):
        cursor = base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")
        status, body, _ = await env.call("GET", f"/contracts?cursor={cursor}", OPS)
        assert status == 422 and "query.cursor" in _fields(body), (key, body)
    status, body, _ = await env.call("GET", "/contracts?cursor=" + "A" * 2000, OPS)
    assert status == 422
    cid = await env.approved_contract(cpm_terms())
    cursor = base64.urlsafe_b64encode(json.dumps([2**70]).encode()).decode().rstrip("=")
    status, body, _ = await env.call("GET", f"/contracts/{cid}/audit?cursor={cursor}", ADMIN)
    assert status == 422 and "query.cursor" in _fields(body)


async def test_version_numbers_beyond_2_31_are_404_in_a_path_and_422_in_a_query(env: Env) -> None:
    cid = await env.approved_contract(cpm_terms())
    for n in (2**31, 10**30, "1e3", "٣"):
        status, _, _ = await env.call("GET", f"/contracts/{cid}/versions/{n}", OPS)
        assert status == 404, n
    status, body, _ = await env.call("GET", f"/contracts/{cid}/diff?from=1&to={2**31}", OPS)
    assert status == 422 and _fields(body) == ["query.to"]
    status, _, _ = await env.call("GET", f"/contracts/{'x' * 300}", OPS)
    assert status == 404


async def test_deep_json_duplicate_keys_and_non_json_bodies_are_refused(env: Env) -> None:
    before = await _count(env)
    status, body = await _raw(env, "POST", "/contracts", b"[" * 100_000 + b"]" * 100_000)
    assert status == 422, body
    status, body = await _raw(env, "POST", "/contracts", b'{"name": "a", "name": "b", "terms": {}}')
    assert status == 422 and "duplicate key" in json.dumps(body)
    status, body = await _raw(env, "POST", "/contracts", json.dumps({"name": "n", "terms": cpm_terms()}).encode(),
                              content_type="text/plain")
    assert status == 415, body
    status, body = await _raw(env, "POST", "/contracts", b'{"name": NaN}')
    assert status == 422
    assert await _count(env) == before


async def test_tokens_with_untyped_or_inconsistent_claims_are_401(env: Env) -> None:
    for claims in ({"tenant_type": "advertiser", "tenant_id": ["adv-acme"]},
                   {"tenant_type": "advertiser", "tenant_id": 42},
                   {"tenant_type": "partner", "tenant_id": "adv-acme"}):
        tok = mint_token(SECRET, "eve", ["advertiser"], tenant_type="advertiser", tenant_id="x")
        import jwt

        payload = jwt.decode(tok, SECRET, algorithms=["HS256"], audience="tally")
        payload.update(claims)
        forged = jwt.encode(payload, SECRET, algorithm="HS256")
        status, _, _ = await env.call("GET", "/contracts", forged)
        assert status == 401, claims
    nul_sub = mint_token(SECRET, "eve\u0000", ["ops"])
    status, _, _ = await env.call("GET", "/contracts", nul_sub)
    assert status == 401


async def test_if_match_star_does_not_skip_the_lost_update_guard(env: Env) -> None:
    c = await env.ok("POST", "/contracts", OPS, {"name": "n", "terms": cpm_terms()})
    status, _, _ = await env.call("PUT", f"/contracts/{c['id']}/versions/1", OPS, {"terms": cpm_terms()},
                                  headers={"If-Match": "*"})
    assert status == 428


async def test_lists_names_and_comments_have_limits(env: Env) -> None:
    status, body, _ = await env.call("POST", "/contracts", OPS, {"name": "x" * 201, "terms": cpm_terms()})
    assert status == 422 and _fields(body) == ["name"]
    status, body, _ = await env.call("POST", "/contracts", OPS,
                                     {"name": "n", "terms": cpm_terms(), "partner_ids": [f"p{i}" for i in range(101)]})
    assert status == 422 and _fields(body) == ["partner_ids"]
    terms = cpa_terms()
    terms["cpa"]["partner_overrides"] = terms["cpa"]["partner_overrides"] * 201
    status, body, _ = await env.call("POST", "/contracts", OPS, {"name": "n", "terms": terms})
    assert status == 422 and "terms.cpa.partner_overrides" in _fields(body)
    status, body, _ = await env.call("POST", "/contracts", OPS, {"name": "n", "terms": cpm_terms(), "comment": "c" * 2001})
    assert status == 422 and _fields(body) == ["comment"]


async def test_a_renewal_past_the_last_date_is_a_conflict_not_a_broken_version(env: Env) -> None:
    cid = await env.approved_contract(cpm_terms(start="2190-01-01", end="2199-12-31", total="100.00"))
    status, body, _ = await env.call("POST", f"/contracts/{cid}/renew", OPS, {})
    assert status == 409, body
    assert (await env.call("GET", f"/contracts/{cid}", OPS))[0] == 200


async def test_hostile_bodies_with_an_idempotency_key_are_4xx_too(env: Env) -> None:
    for i, data in enumerate((b'{"name": "a\\u0000", "terms": {}}', b'{"name": "\\ud800", "terms": {}}',
                              b"[" * 50 + b"]" * 50, b'{"a\\u0000": 1, "a\\u0000": 2}')):
        headers = {"Authorization": f"Bearer {OPS}", "Content-Type": "application/json", "Idempotency-Key": f"hostile-{i}"}
        for _ in range(2):  # the first answer, then its replay
            async with env.client.post("/contracts", data=data, headers=headers) as resp:
                assert resp.status == 422, (data, await resp.text())


async def test_a_contract_poisoned_before_the_bounds_existed_reads_and_ticks_without_a_500(env: Env) -> None:
    """Terms stored before the bounds (here: a notice of a million days, written straight into the
    draft as an older release accepted it) keep parsing — history is not re-judged — and no read,
    tick or termination request of the contract answers 500."""
    c = await env.ok("POST", "/contracts", OPS, {"name": "old poison", "terms": cpm_terms(auto_renew=True, months=12)})
    conn = await asyncpg.connect(env.dsn)
    try:
        await conn.execute("""UPDATE contract_versions SET terms = jsonb_set(terms, '{common,notice_period_days}', '1000000')
                              WHERE contract_id = $1 AND version = 1""", c["id"])
    finally:
        await conn.close()
    await env.ok("POST", f"/contracts/{c['id']}/versions/1/submit", OPS)
    await env.approve_fully(c["id"], 1)
    got = await env.ok("GET", f"/contracts/{c['id']}", APPROVER)
    assert got["renewal"]["auto_renew"] is True
    await env.service.tick()
    assert env.service.last_tick_failures == []
    status, body, _ = await env.call("POST", f"/contracts/{c['id']}/terminate", OPS,
                                     {"effective_date": "2027-01-01", "reason": "stop"})
    assert status == 422 and _fields(body) == ["effective_date"]
    status, _, _ = await env.call("POST", f"/contracts/{c['id']}/cancel-auto-renewal", OPS, {})
    assert status == 409


async def test_a_body_over_a_mebibyte_is_413(env: Env) -> None:
    status, _ = await _raw(env, "POST", "/contracts", b'{"name": "' + b"x" * (1024 * 1024) + b'"}')
    assert status == 413
