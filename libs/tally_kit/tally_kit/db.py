"""asyncpg pool bound to an aiohttp app's lifecycle, with JSON and exact-decimal codecs.

``numeric`` columns come back as ``decimal.Decimal`` (asyncpg's default); ``json``/``jsonb``
values are (de)serialised with Decimals written as strings, so no amount ever passes
through a float.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import asyncpg
from aiohttp import web

POOL_KEY: web.AppKey[asyncpg.Pool] = web.AppKey("tally_db_pool", asyncpg.Pool)


def _default(o: Any) -> Any:
    if isinstance(o, Decimal):
        return str(o)
    if hasattr(o, "isoformat"):
        return o.isoformat()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def dumps(obj: Any) -> str:
    return json.dumps(obj, default=_default, separators=(",", ":"), sort_keys=True)


def like_literal(text: str) -> str:
    """``text`` matched literally inside a LIKE/ILIKE pattern (backslash is PostgreSQL's default
    escape character): a user's ``%`` or ``_`` is a character, not a wildcard."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, init=init_connection)
    assert pool is not None
    return pool


def pool_context(dsn_of: Callable[[web.Application], str], *, max_size: int = 10) -> Callable[[web.Application], AsyncIterator[None]]:
    """An aiohttp cleanup context: the pool opens at startup and closes at shutdown."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        app[POOL_KEY] = await create_pool(dsn_of(app), max_size=max_size)
        try:
            yield
        finally:
            await app[POOL_KEY].close()

    return ctx


async def drop_database(admin: asyncpg.Connection, name: str, *, attempts: int = 20, pause_s: float = 0.5) -> None:
    """``DROP DATABASE IF EXISTS name WITH (FORCE)`` for throwaway databases (tests, benchmarks).

    FORCE terminates the database's sessions, but a role that is not a superuser may not
    terminate an autovacuum worker, which PostgreSQL starts in a busy new database: the drop
    fails with InsufficientPrivilege until the worker is done, in well under a second or so.
    So it is retried, boundedly."""
    import asyncio

    for attempt in range(attempts):
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except asyncpg.InsufficientPrivilegeError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(pause_s)
