"""The scheduler with two replicas at once: every time-driven step happens exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

import asyncpg
import pytest

from tally_contracts.bootstrap import bootstrap
from tally_kit.db import create_pool

from .conftest import Env, cpm_terms
from .helpers_contracts import outbox

pytestmark = pytest.mark.integration


async def test_two_scheduler_replicas_renew_and_activate_exactly_once(env: Env) -> None:
    ids = [await env.approved_contract(cpm_terms(start="2026-04-01", end="2026-06-30", auto_renew=True, notice=10,
                                                 escalator="2", months=1), name=f"Twin {i}") for i in range(6)]
    pool = await create_pool(env.dsn, max_size=4)
    replica = bootstrap(pool, env.clock, env.service.policy, env.catalog)
    try:
        for instant in (datetime(2026, 4, 2, tzinfo=UTC), datetime(2026, 6, 25, tzinfo=UTC),
                        datetime(2026, 7, 2, tzinfo=UTC)):
            env.clock.set(instant)
            a, b = await asyncio.gather(env.service.tick(), replica.tick())
            assert (await env.service.tick()) == [] and (await replica.tick()) == []
            assert len(a + b) == len(ids)  # one step per contract, whichever replica took it
    finally:
        await pool.close()
    for cid in ids:
        kinds = Counter(e["event_type"] for e in await outbox(env.dsn, env.catalog, "events", cid))
        assert kinds["contract.renewed"] == 1 and kinds["contract.status_changed"] == 1 and kinds["version.activated"] == 1
    conn = await asyncpg.connect(env.dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM contract_versions WHERE kind = 'renewal'") == len(ids)
    finally:
        await conn.close()
