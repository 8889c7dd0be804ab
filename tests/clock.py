"""The instant the clock-derived tests treat as now.

Most tests take their instants as arguments; the few whose event times come from the clock read them
here. ``TALLY_TEST_NOW`` (an ISO instant with its offset, e.g. ``2026-11-01T03:59:30Z``) runs them as
if the wall clock read that instant — still advancing — so CI can run them at a month end, a DST
change or a year end (`make test` does once: see the Makefile). Unset, it is the wall clock.

Services that judge records by their arrival (Kafka timestamps, the processor's own clock) stay on the
wall clock; a test run in the past widens their allowances by ``days_behind()`` instead.
"""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime, timedelta

ENV = "TALLY_TEST_NOW"


def _offset() -> timedelta:
    raw = os.environ.get(ENV, "")
    if not raw:
        return timedelta(0)
    fixed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    if fixed.tzinfo is None:
        raise ValueError(f"{ENV} must carry its UTC offset: {raw!r}")
    return fixed - datetime.now(UTC)


_OFFSET = _offset()


def now() -> datetime:
    """The test clock: ``TALLY_TEST_NOW`` advanced by the time since the run began, else the wall clock."""
    return datetime.now(UTC) + _OFFSET


def days_behind() -> int:
    """Whole days (rounded up) by which the test clock lags the wall clock; 0 on the wall clock or ahead."""
    lag = -_OFFSET.total_seconds()
    return math.ceil(lag / 86_400) if lag > 0 else 0
