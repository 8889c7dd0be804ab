"""Service kit: the one clock protocol and its three clocks (wall, fixed, file)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from tally_kit.clock import Clock, FileClock, FixedClock, WallClock, clock_from_setting, wait_or_stop

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def test_the_wall_clock_reads_aware_utc_now() -> None:
    before = datetime.now(UTC)
    clock: Clock = WallClock()
    now = clock.now()
    assert now.tzinfo is UTC and before <= now <= datetime.now(UTC)


def test_a_fixed_clock_stands_still_until_moved_and_refuses_a_naive_time() -> None:
    clock = FixedClock(T0)
    assert clock.now() == clock.now() == T0
    assert clock.advance(timedelta(days=1)) == T0 + timedelta(days=1) == clock.now()
    clock.set(T0)
    assert clock.now() == T0
    with pytest.raises(ValueError, match="aware"):
        FixedClock(datetime(2026, 3, 10, 12, 0))


def test_a_file_clock_reads_the_instant_a_test_writes_in_utc(tmp_path: Path) -> None:
    path = tmp_path / "clock"
    FileClock.set(path, datetime(2026, 3, 10, 21, 0, tzinfo=timezone(timedelta(hours=9))))
    clock = clock_from_setting(str(path))
    assert isinstance(clock, FileClock) and clock.now() == T0 and clock.now().tzinfo is UTC
    FileClock.set(path, T0 + timedelta(hours=1, seconds=1))  # another length: a new stamp even within one mtime tick
    assert clock.now() == T0 + timedelta(hours=1, seconds=1)
    path.write_text("2026-03-10T12:00:00")
    with pytest.raises(ValueError, match="naive"):
        clock.now()


def test_an_empty_clock_setting_is_the_wall_clock() -> None:
    assert isinstance(clock_from_setting(""), WallClock) and isinstance(clock_from_setting(None), WallClock)


async def test_wait_or_stop_returns_at_once_when_stopped_and_swallows_its_own_timeout() -> None:
    stop = asyncio.Event()
    await wait_or_stop(stop, 0.01)  # the pause ran out: no TimeoutError escapes
    waiter = asyncio.create_task(wait_or_stop(stop, 3600))
    stop.set()
    # an hour's pause ends as soon as stop is set
    await asyncio.wait_for(waiter, timeout=5)
    assert waiter.done() and waiter.exception() is None
