"""The scheduler loop: one :meth:`Contracts.tick` every interval (several replicas may run)."""

from __future__ import annotations

import asyncio
import logging
import time

from tally_kit.clock import wait_or_stop

from .bootstrap import Contracts

log = logging.getLogger("tally.contracts.scheduler")


async def run_scheduler(service: Contracts, interval_s: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        try:
            done = await service.tick()
            if done:
                log.info("scheduler tick", extra={"actions": done})
        except Exception:
            log.exception("scheduler tick failed; will retry next interval")
        finally:
            if service.metrics is not None:
                service.metrics.scheduler_tick_seconds.observe(time.perf_counter() - started)
        await wait_or_stop(stop, interval_s)
