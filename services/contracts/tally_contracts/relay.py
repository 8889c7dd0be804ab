"""The outbox relay: publishes outbox rows to Kafka in id order, then marks them published.

- One active relay at a time: it holds a session-level advisory lock; other replicas wait
  as hot standbys and take over when the holder's connection goes away (crash included).
- Rows are produced with an idempotent producer (acks=all), keyed by contract id, so one
  contract's records land in one partition in outbox order. A row is marked published only
  after the broker acknowledged it; a crash in between re-publishes the same bytes (same
  ``event_id``) on restart — a duplicate consumers drop by event id, never a loss, and never
  a reorder of first occurrences.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg

from tally_kit.clock import wait_or_stop
from tally_streams.kafka import AsyncProducer, producer_config

from .metrics import ContractMetrics
from .settings import ContractsSettings

log = logging.getLogger("tally.contracts.relay")
RELAY_LOCK_ID = 0x7A11_C0DE


class Relay:
    def __init__(self, dsn: str, bootstrap: str, topics: dict[str, str], *, batch: int = 200, idle_s: float = 0.2,
                 metrics: ContractMetrics | None = None, producer_overrides: dict[str, Any] | None = None) -> None:
        self.dsn, self.bootstrap, self.topics = dsn, bootstrap, topics
        self.batch, self.idle_s, self.metrics = batch, idle_s, metrics
        self.producer_overrides = producer_overrides or {}

    @classmethod
    def from_settings(cls, settings: ContractsSettings, metrics: ContractMetrics | None = None) -> Relay:
        return cls(settings.contracts_database_url, settings.kafka_bootstrap,
                   {"events": settings.contracts_events_topic, "terms": settings.contracts_terms_topic},
                   batch=settings.contracts_relay_batch, idle_s=settings.contracts_relay_idle_s, metrics=metrics)

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set; reconnects and retries on any failure."""
        while not stop.is_set():
            try:
                await self._lead(stop)
            except Exception:
                log.exception("relay round failed; retrying")
                if self.metrics is not None:
                    self.metrics.relay_errors.inc()
                await wait_or_stop(stop, 1.0)

    async def _lead(self, stop: asyncio.Event) -> None:
        conn = await asyncpg.connect(self.dsn)
        producer: AsyncProducer | None = None
        try:
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_ID):
                if stop.is_set():
                    return
                await wait_or_stop(stop, max(self.idle_s, 0.5))
            log.info("relay is the leader")
            producer = AsyncProducer(producer_config(self.bootstrap, client_id="tally-contracts-relay",
                                                     **self.producer_overrides))
            while not stop.is_set():
                if await self.round(conn, producer) == 0:
                    await wait_or_stop(stop, self.idle_s)
        finally:
            if producer is not None:
                with contextlib.suppress(Exception):
                    await producer.close()
            await conn.close()

    async def round(self, conn: asyncpg.Connection, producer: AsyncProducer) -> int:
        """Publish up to ``batch`` pending rows; returns how many were published."""
        rows = await conn.fetch(
            "SELECT id, event_id, topic, contract_id, value FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1",
            self.batch)
        if self.metrics is not None:
            self.metrics.relay_pending.set(await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"))
        if not rows:
            return 0
        acks = [producer.produce(self.topics[r["topic"]], bytes(r["value"]), key=r["contract_id"],
                                 headers=[("event_id", str(r["event_id"]).encode())]) for r in rows]
        await asyncio.gather(*acks)
        await conn.execute("UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])", [r["id"] for r in rows])
        if self.metrics is not None:
            for r in rows:
                self.metrics.relay_published.labels(self.topics[r["topic"]]).inc()
        return len(rows)
