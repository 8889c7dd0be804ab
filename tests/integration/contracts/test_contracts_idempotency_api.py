"""Idempotency-Key on the contracts API: replay, mismatch, in flight."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from .conftest import OPS, OPS2, Env, cpm_terms

pytestmark = pytest.mark.integration


async def test_create_replays_with_the_same_key_and_body(env: Env) -> None:
    body = {"name": "Idem", "terms": cpm_terms()}
    s1, first, h1 = await env.call("POST", "/contracts", OPS, body, {"Idempotency-Key": "create-1"})
    s2, second, h2 = await env.call("POST", "/contracts", OPS, body, {"Idempotency-Key": "create-1"})
    assert s1 == s2 == 201 and first == second and h2["Idempotent-Replayed"] == "true"
    assert h1["Location"] == h2["Location"] and h1["ETag"] == h2["ETag"]
    assert len((await env.ok("GET", "/contracts", OPS))["items"]) == 1
    # the same key from another user is that user's own key
    s3, third, _ = await env.call("POST", "/contracts", OPS2, body, {"Idempotency-Key": "create-1"})
    assert s3 == 201 and third["id"] != first["id"]


async def test_same_key_with_a_different_body_is_422(env: Env) -> None:
    assert (await env.call("POST", "/contracts", OPS, {"name": "A", "terms": cpm_terms()}, {"Idempotency-Key": "k"}))[0] == 201
    status, body, _ = await env.call("POST", "/contracts", OPS, {"name": "B", "terms": cpm_terms()}, {"Idempotency-Key": "k"})
    assert status == 422 and body["type"].endswith("idempotency-mismatch")
    assert len((await env.ok("GET", "/contracts", OPS))["items"]) == 1


async def test_same_key_while_the_first_is_in_flight_is_409(env: Env) -> None:
    c = await env.ok("POST", "/contracts", OPS, {"name": "Busy", "terms": cpm_terms()})
    path = f"/contracts/{c['id']}/versions/1/submit"
    blocker = await asyncpg.connect(env.dsn)
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("SELECT 1 FROM contracts WHERE id = $1 FOR UPDATE", c["id"])  # the first request waits here
        first = asyncio.create_task(env.call("POST", path, OPS, None, {"Idempotency-Key": "submit-1"}))
        deadline = asyncio.get_running_loop().time() + 10
        while await blocker.fetchval("SELECT count(*) FROM idempotency_keys WHERE key = 'submit-1'") == 0:
            assert asyncio.get_running_loop().time() < deadline, "the first request never claimed its key"
            await asyncio.sleep(0.02)
        status, body, headers = await env.call("POST", path, OPS, None, {"Idempotency-Key": "submit-1"})
        assert status == 409 and body["type"].endswith("idempotency-in-flight") and headers["Retry-After"] == "1"
        await tx.rollback()
        s1, v1, _ = await first
        assert s1 == 200 and v1["state"] == "submitted"
        s3, v3, h3 = await env.call("POST", path, OPS, None, {"Idempotency-Key": "submit-1"})
        assert s3 == 200 and v3 == v1 and h3["Idempotent-Replayed"] == "true"
    finally:
        await blocker.close()
