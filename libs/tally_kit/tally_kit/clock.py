"""The one injectable clock of every service: the ``Clock`` protocol and its three clocks.

Production uses ``WallClock``. A test in one process stands a ``FixedClock`` still and moves it
(contracts' status changes and notice periods, attribution's settle gate). Tests across processes
point a service's ``*_CLOCK_FILE`` setting at a file holding an ISO-8601 instant (``FileClock``);
every process reads it (cheaply: only when the file changed), so a test moves time for all of
them at once — metering closes a period without waiting a month.

A loop that waits between rounds (a relay's idle poll, a consumer's backoff) waits with
``wait_or_stop``, so that shutting down never waits out a pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class WallClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that stands still until a test moves it."""

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("the clock needs an aware datetime")
        self._at = at

    def now(self) -> datetime:
        return self._at

    def set(self, at: datetime) -> None:
        self._at = at

    def advance(self, delta: timedelta) -> datetime:
        self._at += delta
        return self._at


class FileClock:
    """Reads the instant written in ``path``; the file's mtime is checked on each call."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int] | None = None
        self._value = datetime.now(UTC)

    def now(self) -> datetime:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return self._value
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            text = self.path.read_text().strip()
            if text:
                value = datetime.fromisoformat(text)
                if value.tzinfo is None:
                    raise ValueError(f"clock file {self.path} holds a naive time {text!r}")
                self._value = value.astimezone(UTC)
                self._stamp = stamp
        return self._value

    @staticmethod
    def set(path: str | os.PathLike[str], instant: datetime) -> None:
        """Write ``instant`` atomically (tests call this to move time)."""
        p = Path(path)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(instant.astimezone(UTC).isoformat())
        os.replace(tmp, p)


def clock_from_setting(path: str | None) -> Clock:
    """The clock a ``*_CLOCK_FILE`` setting asks for: the file's, or (empty) the wall clock."""
    return FileClock(path) if path else WallClock()


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds`` of real time, or less when ``stop`` is set meanwhile (then return at once)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
