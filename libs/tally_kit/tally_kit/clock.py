"""The injectable clock of the stream services (metering's period closes, pacing's ``as_of``).

Production uses the wall clock. Tests point a service's ``*_CLOCK_FILE`` setting at a file holding
an ISO-8601 instant; every process reads it (cheaply: only when the file changed), so a test moves
time for all of them at once — metering closes a period without waiting a month.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class WallClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


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
