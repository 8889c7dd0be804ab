"""tally_kit.audit.watch_chain against the real PostgreSQL: the gauge the TallyAuditChainBroken alert reads."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from tally_kit import audit, db

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(fresh_database: str) -> AsyncIterator[asyncpg.Pool]:
    conn = await asyncpg.connect(fresh_database)
    try:
        await conn.execute(audit.AUDIT_DDL)
    finally:
        await conn.close()
    p = await db.create_pool(fresh_database, max_size=2)
    try:
        yield p
    finally:
        await p.close()


async def _until(registry: CollectorRegistry, name: str, wanted: float, timeout_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while registry.get_sample_value(name) != wanted:
        assert asyncio.get_running_loop().time() < deadline, f"{name} = {registry.get_sample_value(name)}, wanted {wanted}"
        await asyncio.sleep(0.05)


async def test_the_watch_reports_a_sound_chain_then_the_first_tampering(pool: asyncpg.Pool) -> None:
    registry = CollectorRegistry()
    gauges = audit.ChainGauges(registry)
    assert math.isnan(registry.get_sample_value("tally_audit_chain_ok") or 0.0)  # not verified yet: no verdict
    async with pool.acquire() as conn:
        for n in range(1, 4):
            async with conn.transaction():
                await audit.append(conn, entity_type="contract", entity_id="c-1", action=f"step-{n}", actor="alice",
                                   after={"n": n})
    stop = asyncio.Event()
    task = asyncio.create_task(audit.watch_chain(pool, gauges, stop, interval_s=0.2))
    try:
        await _until(registry, "tally_audit_chain_ok", 1.0)
        await _until(registry, "tally_audit_chain_entries_verified", 3.0)
        async with pool.acquire() as conn, conn.transaction():  # only the owner, and only with the trigger off
            await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete")
            await conn.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2")
            await conn.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update_delete")
        await _until(registry, "tally_audit_chain_ok", 0.0)
        assert registry.get_sample_value("tally_audit_chain_entries_verified") == 1.0  # seq 1 held, seq 2 broke
        assert (registry.get_sample_value("tally_audit_chain_verified_timestamp_seconds") or 0) > 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
