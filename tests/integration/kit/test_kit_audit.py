"""tally_kit.audit against the real PostgreSQL: append, concurrency, immutability, tampering."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import pytest

from tally_kit import audit

pytestmark = pytest.mark.integration


@pytest.fixture
async def audit_db(fresh_database: str) -> AsyncIterator[str]:
    conn = await asyncpg.connect(fresh_database)
    try:
        await conn.execute(audit.AUDIT_DDL)
    finally:
        await conn.close()
    yield fresh_database


@pytest.fixture
async def conn(audit_db: str) -> AsyncIterator[asyncpg.Connection]:
    """One connection to the audit database, closed after the test."""
    conn = await asyncpg.connect(audit_db)
    try:
        yield conn
    finally:
        await conn.close()


async def _append(conn: asyncpg.Connection, n: int, entity: str = "c-1") -> None:
    async with conn.transaction():
        await audit.append(conn, entity_type="contract", entity_id=entity, action=f"step-{n}", actor="alice",
                           before={"n": n - 1}, after={"n": n, "amount": Decimal("10.50")})


async def test_appends_verify_and_read_back_in_order(conn: asyncpg.Connection) -> None:
    for n in range(1, 4):
        await _append(conn, n)
    assert await audit.verify(conn) is None
    entries = await audit.entries_for(conn, "contract", "c-1")
    assert [e.action for e in entries] == ["step-1", "step-2", "step-3"]
    assert entries[0].prev_hash == audit.GENESIS_HASH and entries[1].prev_hash == entries[0].hash
    assert entries[2].after == {"n": 3, "amount": "10.50"}


async def test_append_outside_a_transaction_is_refused(conn: asyncpg.Connection) -> None:
    with pytest.raises(audit.AuditError):
        await audit.append(conn, entity_type="x", entity_id="1", action="a", actor="u")


async def test_rolled_back_append_leaves_no_trace_and_the_chain_holds(conn: asyncpg.Connection) -> None:
    await _append(conn, 1)
    with pytest.raises(RuntimeError):
        async with conn.transaction():
            await audit.append(conn, entity_type="contract", entity_id="c-1", action="doomed", actor="u")
            raise RuntimeError("the change failed")
    await _append(conn, 2)
    assert [e.action for e in await audit.entries_for(conn, "contract", "c-1")] == ["step-1", "step-2"]
    assert await audit.verify(conn) is None


async def test_concurrent_appends_never_fork_the_chain(audit_db: str) -> None:
    pool = await asyncpg.create_pool(audit_db, min_size=4, max_size=8)
    assert pool is not None
    try:
        async def writer(i: int) -> None:
            async with pool.acquire() as conn:
                for n in range(5):
                    await _append(conn, n, entity=f"c-{i}")

        await asyncio.gather(*(writer(i) for i in range(6)))
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM audit_log") == 30
            assert await conn.fetchval("SELECT count(DISTINCT prev_hash) FROM audit_log") == 30
            assert await audit.verify(conn) is None
    finally:
        await pool.close()


async def test_the_service_role_cannot_update_delete_or_truncate_audit_rows(conn: asyncpg.Connection) -> None:
    await _append(conn, 1)
    for sql in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log", "TRUNCATE audit_log"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute(sql)
    assert await conn.fetchval("SELECT actor FROM audit_log") == "alice"


async def _tamper(conn: asyncpg.Connection, sql: str) -> None:
    """Only the table owner can do this, and only by disabling the trigger (documented in README)."""
    async with conn.transaction():
        await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete")
        await conn.execute(sql)
        await conn.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update_delete")


@pytest.mark.parametrize(("sql", "seq", "reason"), [
    ("UPDATE audit_log SET after = '{\"n\": 99}' WHERE seq = 2", 2, "edited"),
    ("DELETE FROM audit_log WHERE seq = 2", 3, "prev_hash"),
    ("DELETE FROM audit_log WHERE seq = 4", 4, "removed from the end"),
])
async def test_tampering_is_reported_at_the_first_broken_link(conn: asyncpg.Connection, sql: str, seq: int, reason: str) -> None:
    for n in range(1, 5):
        await _append(conn, n)
    await _tamper(conn, sql)
    broken = await audit.verify(conn)
    assert broken is not None
    assert broken.seq == seq and reason in broken.reason


async def test_verify_cli_exits_1_and_names_the_broken_seq(audit_db: str, conn: asyncpg.Connection) -> None:
    for n in range(1, 3):
        await _append(conn, n)
    ok = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "tally_kit.audit", "verify", "--dsn", audit_db],
                                 capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "2 entries verified" in ok.stdout
    await _tamper(conn, "UPDATE audit_log SET actor = 'mallory' WHERE seq = 1")
    bad = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "tally_kit.audit", "verify", "--dsn", audit_db],
                                  capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "seq 1" in bad.stdout

