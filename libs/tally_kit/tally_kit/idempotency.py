"""``Idempotency-Key`` for POSTs in any aiohttp + asyncpg service.

A client sends ``Idempotency-Key: <1-255 printable chars>`` with a POST. Then:

- the first request runs, and its response (status, body, ``Content-Type``/``ETag``/
  ``Location``) is kept for at least ``retention`` (24 h by default) after completion;
- the same key with the same request (method, path, query and body bytes) replays the kept
  response, with ``Idempotent-Replayed: true``;
- the same key with a different request gets **422**;
- the same key while the first request is still running gets **409** (retry later).

Keys are scoped per caller (tenant + subject of the bearer token), so two tenants or two users
never collide. Responses with status ≥ 500, and requests that raise an unexpected exception,
are not kept: the key is released so the client can retry. A request whose process died
mid-flight leaves its key "in flight"; after ``lease`` (5 minutes by default) a retry takes the
key over and runs again, so handlers should be safe to re-run (state-guarded transitions are).

Wiring::

    # tally_kit.migrations.migrate(dsn, folder) creates the table (kit/0002_idempotency)
    app = web.create_app(...)
    install(app)                     # after create_app, before the app starts
    await purge_expired(conn)        # from a periodic job: drops keys older than the retention

The middleware runs inside the kit's problem+json/auth middleware, so the caller is known
and an ``ApiError`` raised by a handler is rendered and kept like any other response.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import asyncpg
from aiohttp import web

from .auth import Principal
from .db import POOL_KEY
from .migrations import KIT_SQL
from .problems import ApiError, problem_response
from .web import Handler, principal

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEPT_HEADERS = ("Content-Type", "ETag", "Location")
DEFAULT_RETENTION = timedelta(hours=24)
DEFAULT_LEASE = timedelta(minutes=5)
MAX_KEY_LENGTH = 255

#: The DDL (the kit's migration ``kit/0002_idempotency``, which :mod:`tally_kit.migrations` applies to every
#: database).
IDEMPOTENCY_DDL = (KIT_SQL / "0002_idempotency.sql").read_text("utf-8")


def scope_of(p: Principal) -> str:
    """The namespace of a caller's keys: tenant and subject."""
    return f"{p.tenant_type or 'internal'}:{p.tenant_id or '-'}:{p.subject}"


def request_hash(method: str, path_qs: str, body: bytes) -> str:
    h = hashlib.sha256()
    for part in (method.upper().encode(), path_qs.encode(), body):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


def _check_key(key: str) -> None:
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise ApiError(400, f"{HEADER} must be 1-{MAX_KEY_LENGTH} printable characters",
                       errors=[{"field": f"header:{HEADER}", "message": "invalid idempotency key"}])


def _replay(row: asyncpg.Record) -> web.Response:
    stored = json.loads(row["response"])
    headers = dict(stored.get("headers") or {})
    content_type = headers.pop("Content-Type", "application/json")
    headers[REPLAYED_HEADER] = "true"
    resp = web.Response(status=row["status"], text=stored.get("body", ""), headers=headers)
    resp.headers["Content-Type"] = content_type
    return resp


async def _claim(pool: asyncpg.Pool, scope: str, key: str, method: str, path: str, digest: str,
                 lease: timedelta) -> web.Response | None:
    """Claim the key for this request (None) or answer from what is recorded (a response)."""
    async with pool.acquire() as conn, conn.transaction():
        inserted = await conn.fetchval(
            """INSERT INTO idempotency_keys (principal, key, method, path, request_hash)
               VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING true""",
            scope, key, method, path, digest)
        if inserted:
            return None
        row = await conn.fetchrow(
            """SELECT request_hash, status, response::text AS response, now() - created_at > $3 AS lease_expired
               FROM idempotency_keys WHERE principal = $1 AND key = $2 FOR UPDATE""", scope, key, lease)
        if row is None:  # purged between the two statements: retry the claim once
            await conn.execute(
                "INSERT INTO idempotency_keys (principal, key, method, path, request_hash) VALUES ($1, $2, $3, $4, $5)",
                scope, key, method, path, digest)
            return None
        if row["request_hash"] != digest:
            raise ApiError(422, f"this {HEADER} was already used for a different request",
                           type_="https://tally.dev/problems/idempotency-mismatch",
                           errors=[{"field": f"header:{HEADER}", "message": "reused with a different request"}])
        if row["status"] is not None:
            return _replay(row)
        if not row["lease_expired"]:
            raise ApiError(409, f"a request with this {HEADER} is still in flight; retry later",
                           type_="https://tally.dev/problems/idempotency-in-flight", headers={"Retry-After": "1"})
        await conn.execute("UPDATE idempotency_keys SET created_at = now() WHERE principal = $1 AND key = $2", scope, key)
        return None


async def _complete(pool: asyncpg.Pool, scope: str, key: str, resp: web.Response) -> None:
    body = resp.body
    text = body.decode("utf-8") if isinstance(body, (bytes, bytearray)) else (resp.text or "")
    headers = {h: resp.headers[h] for h in KEPT_HEADERS if h in resp.headers}
    stored = json.dumps({"headers": headers, "body": text})
    async with pool.acquire() as conn:
        await conn.execute(
            """UPDATE idempotency_keys SET status = $3, response = $4::text::jsonb, completed_at = now()
               WHERE principal = $1 AND key = $2""", scope, key, resp.status, stored)


async def _release(pool: asyncpg.Pool, scope: str, key: str) -> None:
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM idempotency_keys WHERE principal = $1 AND key = $2 AND status IS NULL", scope, key)


def _caller(request: web.Request) -> Principal | None:
    """The authenticated caller, or None on a public path."""
    try:
        return principal(request)
    except ApiError:
        return None


def middleware(
    pool_of: Callable[[web.Application], asyncpg.Pool] = lambda app: app[POOL_KEY],
    *,
    methods: tuple[str, ...] = ("POST",),
    lease: timedelta = DEFAULT_LEASE,
    principal_of: Callable[[web.Request], Principal | None] | None = None,
) -> Any:
    """An aiohttp middleware applying the rules above to ``methods`` carrying the header."""

    @web.middleware
    async def idempotency_mw(request: web.Request, handler: Handler) -> web.StreamResponse:
        key = request.headers.get(HEADER)
        if request.method not in methods or key is None:
            return await handler(request)
        _check_key(key)
        who = (principal_of or _caller)(request)
        scope = scope_of(who) if who is not None else "anonymous"
        body = await request.read()  # cached by aiohttp: the handler reads it again
        digest = request_hash(request.method, request.path_qs, body)
        pool = pool_of(request.app)
        replay = await _claim(pool, scope, key, request.method, request.path, digest, lease)
        if replay is not None:
            return replay
        try:
            resp = await handler(request)
        except ApiError as err:
            resp = problem_response(err, request.path)
        except web.HTTPException:
            await _release(pool, scope, key)  # not a kept response: the client may retry
            raise
        except BaseException:
            await _release(pool, scope, key)
            raise
        if not isinstance(resp, web.Response) or resp.status >= 500:
            await _release(pool, scope, key)
            return resp
        await _complete(pool, scope, key, resp)
        return resp

    return idempotency_mw


def install(app: web.Application, **options: Any) -> None:
    """Add the middleware to an app made by ``tally_kit.web.create_app`` (before it starts)."""
    app.middlewares.append(middleware(**options))


async def purge_expired(conn: asyncpg.Connection, retention: timedelta = DEFAULT_RETENTION) -> int:
    """Delete completed keys older than ``retention`` (never less than 24 h); returns how many."""
    keep = max(retention, DEFAULT_RETENTION)
    result = await conn.execute(
        "DELETE FROM idempotency_keys WHERE completed_at IS NOT NULL AND completed_at < now() - $1::interval", keep)
    return int(result.split()[-1])
