"""The console gateway against a real aiohttp upstream: proxying, header forwarding, streaming
downloads, server-sent event relay without buffering, SPA fallback, auth and demo mode."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from tally_console.app import build_app
from tally_console.settings import load_settings
from tally_kit.auth import TokenVerifier, mint_token

SECRET = "console-test-secret-0123456789abcdef"
VERIFIER = TokenVerifier(SECRET)
DOWNLOAD = bytes(range(256)) * 4096  # 1 MiB, binary


def token(roles: list[str] | None = None, **kw: Any) -> str:
    return mint_token(SECRET, "tester", roles or ["ops"], **kw)


class Upstream:
    """A stand-in service that records what reached it."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.release_second_event = asyncio.Event()
        self.stream_closed = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_route("*", "/v1/echo/{rest:.*}", self.echo)
        self.app.router.add_get("/v1/invoices/inv-1.pdf", self.download)
        self.app.router.add_get("/v1/spend/stream", self.stream)

    async def echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append({"path": request.path_qs, "method": request.method, "headers": request.headers.copy(), "body": body})
        return web.json_response({"path": request.path_qs, "method": request.method, "body": body.decode()},
                                 status=201 if request.method == "POST" else 200, headers={"ETag": '"v7"'})

    async def download(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/pdf",
                                           "Content-Disposition": 'attachment; filename="INV-2025-0001.pdf"'})
        await resp.prepare(request)
        for i in range(0, len(DOWNLOAD), 100_000):
            await resp.write(DOWNLOAD[i:i + 100_000])
        await resp.write_eof()
        return resp

    async def stream(self, request: web.Request) -> web.StreamResponse:
        self.seen.append({"path": request.path_qs, "headers": request.headers.copy()})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            await resp.write(b'event: total\ndata: {"amount": "1.50"}\n\n')
            # the second event waits for the test: the first must already have reached the browser
            await self.release_second_event.wait()
            await resp.write(b'event: total\ndata: {"amount": "3.00"}\n\n')
            await asyncio.sleep(3600)
        finally:
            self.stream_closed.set()
        return resp


@pytest.fixture
def static_dir(tmp_path: Path) -> Path:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text("<!doctype html><title>Tally console</title><div id=root></div>")
    (tmp_path / "assets" / "app-abc123.js").write_text("console.log('tally')")
    return tmp_path


GatewayFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, str]]:
    up = Upstream()
    server = TestServer(up.app)
    await server.start_server()
    yield up, str(server.make_url("")).rstrip("/")
    await server.close()


@pytest.fixture
async def gateway(static_dir: Path, upstream: tuple[Upstream, str]) -> AsyncIterator[GatewayFactory]:
    clients: list[TestClient[web.Request, web.Application]] = []
    _, base = upstream

    async def make(**env: str) -> TestClient[web.Request, web.Application]:
        settings = load_settings({"TALLY_CONSOLE_STATIC_DIR": str(static_dir), "TALLY_CONSOLE_METERING_URL": base,
                                  "TALLY_CONSOLE_CONTRACTS_URL": base, "TALLY_CONSOLE_INVOICING_URL": base,
                                  # nothing listens on port 9 (discard): the "service down" case
                                  "TALLY_CONSOLE_ATTRIBUTION_URL": "http://127.0.0.1:9", **env})
        client = TestClient(TestServer(build_app(settings, VERIFIER), handler_cancellation=True))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.close()


async def test_proxy_forwards_path_query_body_and_authorization(gateway: GatewayFactory, upstream: tuple[Upstream, str]) -> None:
    up, _ = upstream
    client = await gateway()
    bearer = f"Bearer {token()}"
    resp = await client.post("/api/contracts/v1/echo/c-1/versions?status=draft&q=a%20b", data=b'{"currency":"USD"}',
                             headers={"Authorization": bearer, "Content-Type": "application/json", "If-Match": '"v6"',
                                      "Cookie": "session=leak", "Idempotency-Key": "k-1"})
    assert resp.status == 201
    assert resp.headers["ETag"] == '"v7"'
    body = await resp.json()
    assert body == {"path": "/v1/echo/c-1/versions?status=draft&q=a%20b", "method": "POST", "body": '{"currency":"USD"}'}
    seen = up.seen[-1]["headers"]
    assert seen["Authorization"] == bearer
    assert seen["If-Match"] == '"v6"'
    assert seen["Idempotency-Key"] == "k-1"
    assert "Cookie" not in seen
    assert seen["X-Forwarded-Proto"] == "http"
    assert seen["X-Request-Id"]


async def test_requests_without_a_valid_token_stop_at_the_gateway(gateway: GatewayFactory, upstream: tuple[Upstream, str]) -> None:
    up, _ = upstream
    client = await gateway()
    missing = await client.get("/api/contracts/v1/echo/x")
    assert missing.status == 401
    assert missing.content_type == "application/problem+json"
    forged = await client.get("/api/contracts/v1/echo/x", headers={"Authorization": f"Bearer {mint_token('other', 'eve', ['admin'])}"})
    assert forged.status == 401
    assert up.seen == []


async def test_unknown_service_and_unreachable_service_are_problems(gateway: GatewayFactory) -> None:
    client = await gateway()
    auth = {"Authorization": f"Bearer {token()}"}
    unknown = await client.get("/api/payroll/v1/x", headers=auth)
    assert unknown.status == 404
    assert "payroll" in (await unknown.json())["detail"]
    down = await client.get("/api/attribution/v1/impressions", headers=auth)
    assert down.status == 502
    problem = await down.json()
    assert problem["service"] == "attribution"
    assert down.content_type == "application/problem+json"


async def test_downloads_stream_through_byte_for_byte(gateway: GatewayFactory) -> None:
    client = await gateway()
    resp = await client.get("/api/invoicing/v1/invoices/inv-1.pdf", headers={"Authorization": f"Bearer {token(['finance'])}"})
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/pdf"
    assert resp.headers["Content-Disposition"] == 'attachment; filename="INV-2025-0001.pdf"'
    assert await resp.read() == DOWNLOAD


async def test_spend_stream_is_relayed_event_by_event(gateway: GatewayFactory, upstream: tuple[Upstream, str]) -> None:
    up, _ = upstream
    client = await gateway()
    resp = await client.get("/api/metering/v1/spend/stream?contract_id=c-1",
                            headers={"Authorization": f"Bearer {token(['advertiser'], tenant_type='advertiser', tenant_id='adv-1')}",
                                     "Accept": "text/event-stream"})
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream"
    assert resp.headers["X-Accel-Buffering"] == "no"
    assert up.seen[-1]["headers"]["Authorization"].startswith("Bearer ")
    assert up.seen[-1]["path"] == "/v1/spend/stream?contract_id=c-1"

    async def read_event() -> bytes:
        buf = b""
        while not buf.endswith(b"\n\n"):
            buf += await resp.content.readany()
        return buf

    # the first event arrives while the upstream is still holding back the second one
    assert await asyncio.wait_for(read_event(), 5) == b'event: total\ndata: {"amount": "1.50"}\n\n'
    up.release_second_event.set()
    assert await asyncio.wait_for(read_event(), 5) == b'event: total\ndata: {"amount": "3.00"}\n\n'
    resp.close()
    # the browser going away closes the upstream stream too, though the service has nothing to send
    await asyncio.wait_for(up.stream_closed.wait(), 5)
    metrics = await (await client.get("/metrics")).text()
    assert 'tally_console_proxied_requests_total{outcome="200",service="metering"} 1.0' in metrics


async def test_spa_fallback_serves_the_app_shell_and_real_assets(gateway: GatewayFactory, static_dir: Path) -> None:
    client = await gateway()
    for path in ("/", "/contracts/c-42", "/invoices?status=draft"):
        resp = await client.get(path)
        assert resp.status == 200, path
        assert "<title>Tally console</title>" in await resp.text()
        assert resp.headers["Cache-Control"] == "no-cache"
    asset = await client.get("/assets/app-abc123.js")
    assert await asset.text() == "console.log('tally')"
    assert "immutable" in asset.headers["Cache-Control"]
    assert (await client.get("/assets/gone-000.js")).status == 404
    traversal = await client.get(URL("/assets/%2e%2e/%2e%2e/%2e%2e/etc/passwd", encoded=True))
    assert traversal.status == 404
    assert "root:" not in await traversal.text()
    assert (await client.get("/api")).status in {401, 404}


async def test_health_readiness_and_metrics(gateway: GatewayFactory, static_dir: Path) -> None:
    client = await gateway()
    assert (await (await client.get("/healthz")).json())["status"] == "ok"
    assert (await client.get("/readyz")).status == 200
    assert "tally_http_requests_total" in await (await client.get("/metrics")).text()
    (static_dir / "index.html").unlink()
    assert (await client.get("/readyz")).status == 503
    assert (await client.get("/")).status == 503


async def test_demo_mode_is_off_by_default(gateway: GatewayFactory) -> None:
    client = await gateway()
    assert (await client.get("/api/demo/users")).status == 401
    with_token = await client.get("/api/demo/users", headers={"Authorization": f"Bearer {token(['admin'])}"})
    assert with_token.status == 404


async def test_demo_mode_mints_a_verifiable_token_per_role(gateway: GatewayFactory) -> None:
    client = await gateway(TALLY_CONSOLE_DEMO="true")
    resp = await client.get("/api/demo/users")
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    users = (await resp.json())["users"]
    principals = [VERIFIER.verify(u["token"]) for u in users]
    roles = {r for p in principals for r in p.roles}
    assert roles == {"admin", "ops", "approver", "finance", "advertiser", "partner"}
    assert sum(1 for p in principals if "finance" in p.roles) >= 2  # four-eyes needs two finance users
    tenants = {(p.tenant_type, p.tenant_id) for p in principals if p.is_tenant}
    assert ("advertiser", "adv-acme") in tenants and ("partner", "ptn-streamly") in tenants
    assert all(p.subject == u["subject"] for p, u in zip(principals, users, strict=True))
