"""tally_kit.idempotency against the real PostgreSQL, through a tiny aiohttp app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tally_kit import db, idempotency
from tally_kit.auth import TokenVerifier, mint_token
from tally_kit.problems import ApiError
from tally_kit.web import create_app, json_ok

pytestmark = pytest.mark.integration
SECRET = "test-secret-for-idempotency-0123456789"


class Probe:
    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        self.block = False


@pytest.fixture
async def client(fresh_database: str) -> AsyncIterator[tuple[TestClient, Probe]]:
    conn = await asyncpg.connect(fresh_database)
    try:
        await conn.execute(idempotency.IDEMPOTENCY_DDL)
    finally:
        await conn.close()
    probe = Probe()
    app = create_app("idem-test", verifier=TokenVerifier(SECRET))
    app.cleanup_ctx.append(db.pool_context(lambda _: fresh_database))
    idempotency.install(app)

    async def create(request: web.Request) -> web.Response:
        probe.calls += 1
        body = await request.json()
        if probe.block:
            probe.entered.set()
            await probe.release.wait()
        if body.get("fail") == "422":
            raise ApiError(422, "bad thing", errors=[{"field": "fail", "message": "asked to fail"}])
        if body.get("fail") == "500":
            raise RuntimeError("boom")
        return json_ok({"n": probe.calls, "echo": body}, status=201, headers={"Location": f"/things/{probe.calls}"})

    app.router.add_post("/things", create)
    c = TestClient(TestServer(app))
    await c.start_server()
    try:
        yield c, probe
    finally:
        await c.close()


def _h(sub: str = "alice", key: str = "k-1", advertiser: str | None = None) -> dict[str, str]:
    tok = mint_token(SECRET, sub, ["advertiser"] if advertiser else ["ops"],
                     tenant_type="advertiser" if advertiser else None, tenant_id=advertiser)
    return {"Authorization": f"Bearer {tok}", idempotency.HEADER: key}


async def test_replay_returns_the_first_response_without_running_again(client: tuple[TestClient, Probe]) -> None:
    c, probe = client
    first = await c.post("/things", json={"a": 1}, headers=_h())
    again = await c.post("/things", json={"a": 1}, headers=_h())
    assert first.status == again.status == 201
    assert await first.json() == await again.json() == {"n": 1, "echo": {"a": 1}}
    assert again.headers["Location"] == "/things/1" and again.headers[idempotency.REPLAYED_HEADER] == "true"
    assert probe.calls == 1


async def test_same_key_different_body_is_422(client: tuple[TestClient, Probe]) -> None:
    c, probe = client
    assert (await c.post("/things", json={"a": 1}, headers=_h())).status == 201
    r = await c.post("/things", json={"a": 2}, headers=_h())
    assert r.status == 422 and r.content_type == "application/problem+json"
    assert (await r.json())["errors"][0]["field"] == "header:Idempotency-Key"
    assert probe.calls == 1


async def test_same_key_in_flight_is_409_then_replays(client: tuple[TestClient, Probe]) -> None:
    c, probe = client
    probe.block = True
    first = asyncio.create_task(c.post("/things", json={"a": 1}, headers=_h()))
    await asyncio.wait_for(probe.entered.wait(), 10)
    second = await c.post("/things", json={"a": 1}, headers=_h())
    assert second.status == 409 and second.headers["Retry-After"] == "1"
    probe.release.set()
    assert (await first).status == 201
    third = await c.post("/things", json={"a": 1}, headers=_h())
    assert third.status == 201 and third.headers[idempotency.REPLAYED_HEADER] == "true"
    assert probe.calls == 1


async def test_keys_are_per_caller(client: tuple[TestClient, Probe]) -> None:
    c, probe = client
    assert (await c.post("/things", json={"a": 1}, headers=_h("alice"))).status == 201
    r = await c.post("/things", json={"a": 2}, headers=_h("bob"))
    assert r.status == 201 and (await r.json())["n"] == 2
    r = await c.post("/things", json={"a": 3}, headers=_h("alice", advertiser="adv-1"))
    assert r.status == 201 and probe.calls == 3


async def test_client_errors_are_kept_but_server_errors_release_the_key(client: tuple[TestClient, Probe]) -> None:
    c, probe = client
    r1 = await c.post("/things", json={"fail": "422"}, headers=_h(key="k-422"))
    r2 = await c.post("/things", json={"fail": "422"}, headers=_h(key="k-422"))
    assert r1.status == r2.status == 422 and r2.headers[idempotency.REPLAYED_HEADER] == "true"
    assert probe.calls == 1
    r3 = await c.post("/things", json={"fail": "500"}, headers=_h(key="k-500"))
    r4 = await c.post("/things", json={"fail": "500"}, headers=_h(key="k-500"))
    assert r3.status == r4.status == 500 and idempotency.REPLAYED_HEADER not in r4.headers
    assert probe.calls == 3


async def test_purge_keeps_at_least_a_day(client: tuple[TestClient, Probe]) -> None:
    c, _ = client
    assert (await c.post("/things", json={"a": 1}, headers=_h())).status == 201
    assert c.app is not None
    pool = c.app[db.POOL_KEY]
    async with pool.acquire() as conn:
        assert await idempotency.purge_expired(conn, timedelta(seconds=1)) == 0
        await conn.execute("UPDATE idempotency_keys SET completed_at = now() - interval '25 hours'")
        assert await idempotency.purge_expired(conn) == 1
