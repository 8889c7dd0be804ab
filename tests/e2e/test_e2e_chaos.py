"""End to end under chaos: every service SIGKILLed at least twice while traffic flows and is
processed (the supervisor restarts it), Kafka and PostgreSQL each restarted once — and every
invoice and statement still equals the independent recomputation to the cent."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter

import pytest

from tally_kit.clock import wait_or_stop

from .e2e_flow import describe, run_month
from .e2e_stack import ROOT, SERVICES, Stack

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow]

KILL_EVERY_S = 2.0
CHAOS_BOUND_S = 240.0


async def _stack_sh(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec(str(ROOT / "deploy/bin/stack.sh"), *args, env=dict(os.environ))
    assert await proc.wait() == 0, f"stack.sh {' '.join(args)} failed"


async def chaos(stack: Stack, stop: asyncio.Event, log: list[str]) -> None:
    rng = random.Random(2026)
    kills: Counter[str] = Counter()
    restarted: set[str] = set()
    started = time.monotonic()
    n = 0
    while True:
        done = all(kills[s] >= 2 for s in SERVICES) and restarted == {"kafka", "postgres"}
        if done and stop.is_set():
            return
        assert time.monotonic() - started < CHAOS_BOUND_S, f"chaos did not finish its round: {kills}, {restarted}"
        n += 1
        if n == 6 and "kafka" not in restarted:
            log.append("restart kafka")
            await _stack_sh("kafka-down")
            await _stack_sh("kafka-up")
            restarted.add("kafka")
        elif n == 12 and "postgres" not in restarted:
            log.append("restart postgres")
            await _stack_sh("pg-down")
            await _stack_sh("pg-up")
            restarted.add("postgres")
        else:
            stack.kill_one_behind(rng, kills, log)
        await wait_or_stop(stop, KILL_EVERY_S)


async def test_chaos_month_still_invoices_to_the_cent(stack: Stack) -> None:
    log: list[str] = []
    expected, actual = await run_month(stack, impressions=15_000, seed=23, rate_per_s=600,
                                       chaos=lambda s, stop: chaos(s, stop, log))
    kills = Counter(line.split()[-1] for line in log if line.startswith("kill"))
    assert all(kills[s] >= 2 for s in SERVICES), log
    assert "restart kafka" in log and "restart postgres" in log
    assert actual["invoices"] == expected.invoices, describe(expected, actual) + "\n" + "\n".join(log)
    assert actual["statements"] == expected.payouts, describe(expected, actual)
    numbers = sorted(actual["numbers"])
    assert len(set(numbers)) == len(numbers) == len(expected.invoices)
