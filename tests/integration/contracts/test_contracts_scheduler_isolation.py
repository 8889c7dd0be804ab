"""The scheduler isolates failures (issue 16): a contract that fails in a tick is logged, counted
in ``tally_contracts_scheduler_failures_total`` and retried by the next tick, while every other
contract due in the same tick is handled."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from .conftest import Env, cpm_terms

pytestmark = pytest.mark.asyncio

START = datetime(2026, 4, 2, 12, tzinfo=UTC)  # both flights (from 2026-04-01) have started


async def _cached_status(env: Env, contract_id: str) -> str:
    conn = await asyncpg.connect(env.dsn)
    try:
        return str(await conn.fetchval("SELECT status FROM contracts WHERE id = $1", contract_id))
    finally:
        await conn.close()


async def test_a_contract_failing_in_a_tick_does_not_stop_the_others(env: Env, monkeypatch: pytest.MonkeyPatch,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    ids = sorted([await env.approved_contract(cpm_terms(), name=f"iso-{i}") for i in range(3)])
    poisoned = ids[0]  # first in the tick's order: before the fix, nothing after it was handled
    real_facts = env.service.repo.facts

    async def facts(conn: Any, contract_id: str) -> Any:
        if contract_id == poisoned:
            raise RuntimeError("deliberately broken contract")
        return await real_facts(conn, contract_id)

    monkeypatch.setattr(env.service.repo, "facts", facts)
    metrics = env.service.metrics
    assert metrics is not None
    before = metrics.scheduler_failures._value.get()
    with caplog.at_level(logging.ERROR, logger="tally.contracts.service"):
        done = await env.service.tick(START)
    assert done.count("contract.status_changed") == 2
    assert [await _cached_status(env, c) for c in ids] == ["scheduled", "active", "active"]
    assert env.service.last_tick_failures == [poisoned]
    assert metrics.scheduler_failures._value.get() == before + 1
    assert any(getattr(r, "contract_id", None) == poisoned for r in caplog.records)

    monkeypatch.setattr(env.service.repo, "facts", real_facts)  # fixed: the next tick retries it
    assert await env.service.tick(START) == ["contract.status_changed"]
    assert await _cached_status(env, poisoned) == "active"
    assert env.service.last_tick_failures == []
