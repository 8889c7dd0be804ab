"""The Kafka consumer: billing.periods_closed and billing.adjustments → the database.

Shape (arroyo's): poll → decode → apply the whole polled batch in ONE PostgreSQL transaction
(each record keyed by its natural key) → commit the offsets, last. A crash anywhere before
the commit means the batch is read again and every record already applied is recognised by
its key and skipped, so the effect is exactly once even though delivery is at least once.
A record that cannot be decoded or is inconsistent is kept in ``rejected_records`` with its
reason; it is not retried. A database or broker error retries the same batch (bounded
backoff) and never commits past it.

A record the database refuses (a data error or a constraint violation: a fault of that
record, not of the database) aborts the batch transaction. The batch is then rolled back and
applied again with a SAVEPOINT per record, so only that record is rolled back and rejected and
the good records of the batch commit. Savepoints are not used on the first attempt because
they cost two round trips per record and almost every batch is clean. Any other database
error rolls back the whole batch, which is then retried as it is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

import asyncpg
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from tally_kit import audit
from tally_kit.clock import wait_or_stop
from tally_streams.avro import DecodeError, SchemaCatalog
from tally_streams.kafka import consumer_config, skip_end_of_partition
from tally_streams.records import AdjustmentRecord, PeriodClosedRecord

from .apply import Source, apply_adjustment, apply_period_closed, reject_undecodable, reject_unstorable
from .metrics import METRICS

log = logging.getLogger("tally.invoicing.consumer")

#: database errors caused by the record itself (SQLSTATE classes 22 and 23): retrying the same
#: record would fail the same way, so it is rejected; every other error retries the batch
RECORD_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)


class InvoicingConsumer:
    def __init__(self, *, bootstrap: str, group_id: str, periods_closed_topic: str, adjustments_topic: str,
                 pool: asyncpg.Pool, catalog: SchemaCatalog, batch_max: int = 200) -> None:
        self.pool = pool
        self.batch_max = batch_max
        self.periods_closed_codec = catalog.codec("period_closed", record=PeriodClosedRecord)
        self.adjustment_codec = catalog.codec("adjustment", record=AdjustmentRecord)
        self.periods_closed_topic = periods_closed_topic
        self.adjustments_topic = adjustments_topic
        self._consumer = Consumer(consumer_config(bootstrap, group_id, **{"client.id": "tally-invoicing"}))
        self._consumer.subscribe([periods_closed_topic, adjustments_topic])
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        METRICS.consumer_up.set(1)
        backoff_s = 0.2
        pending: list[Message] = []
        try:
            while not self._stopping.is_set():
                if not pending:
                    pending = await asyncio.to_thread(self._poll)
                    if not pending:
                        continue
                try:
                    await self.apply_batch(pending)
                    await asyncio.to_thread(self._commit, pending)
                    pending = []
                    backoff_s = 0.2
                except (OSError, asyncpg.PostgresError, KafkaException, asyncpg.InterfaceError) as exc:
                    # transient: keep the batch, do not commit, retry after a bounded backoff
                    METRICS.consumer_errors.inc()
                    log.warning("batch failed; retrying", extra={"error": str(exc), "backoff_s": backoff_s})
                    await wait_or_stop(self._stopping, backoff_s)
                    backoff_s = min(backoff_s * 2, 10.0)
        finally:
            METRICS.consumer_up.set(0)
            await asyncio.to_thread(self._consumer.close)

    def _poll(self) -> list[Message]:
        msgs = self._consumer.consume(num_messages=self.batch_max, timeout=0.5)
        out = []
        for m in msgs:
            err = m.error()
            if err is not None:
                skip_end_of_partition(err)
                continue
            out.append(m)
        return out

    async def apply_batch(self, msgs: Sequence[Message]) -> list[str]:
        """Apply every message in one transaction (one durable commit per batch); outcomes are
        counted only once it committed, so a rolled-back and retried batch is not counted twice."""
        started = time.perf_counter()
        async with self.pool.acquire() as conn:
            try:
                async with conn.transaction():
                    await audit.lock_head(conn)  # head first, as the API's lifecycle does: no deadlock
                    outcomes = [await self.apply_message(conn, m, isolate=False) for m in msgs]
            except RECORD_ERRORS as exc:
                log.warning("a record was refused by the database; applying the batch record by record",
                            extra={"error": str(exc)})
                async with conn.transaction():
                    await audit.lock_head(conn)
                    outcomes = [await self.apply_message(conn, m, isolate=True) for m in msgs]
        for m, outcome in zip(msgs, outcomes, strict=True):
            if outcome == "conflict":
                METRICS.records.labels(_where(m)[0], "rejected").inc()
            METRICS.records.labels(_where(m)[0], outcome).inc()
        METRICS.batch_seconds.observe(time.perf_counter() - started)
        return outcomes

    async def apply_message(self, conn: asyncpg.Connection, m: Message, *, isolate: bool) -> str:
        """Apply one message inside the batch transaction: ``applied``, ``duplicate``, ``rejected``
        or ``conflict``. With ``isolate``, in a SAVEPOINT of its own: a record the database
        refuses is rolled back to it and rejected, and the batch goes on."""
        topic, partition, offset = _where(m)
        src = Source(topic, partition, offset)
        raw = m.value()
        apply: Callable[[asyncpg.Connection], Awaitable[str]]
        try:
            if topic == self.periods_closed_topic:
                closed = self.periods_closed_codec.decode(raw)
                apply = partial(apply_period_closed, rec=closed, src=src)
            else:
                adjustment = self.adjustment_codec.decode(raw)
                apply = partial(apply_adjustment, adj=adjustment, src=src)
        except DecodeError as exc:
            await reject_undecodable(conn, src, exc.kind, exc.reason, raw)
            return "rejected"
        if not isolate:
            return await apply(conn)
        try:
            async with conn.transaction():  # a SAVEPOINT inside the batch transaction
                return await apply(conn)
        except RECORD_ERRORS as exc:
            await reject_unstorable(conn, src, exc, raw)
            return "rejected"

    def _commit(self, msgs: Sequence[Message]) -> None:
        top: dict[tuple[str, int], int] = {}
        for m in msgs:
            topic, partition, offset = _where(m)
            top[(topic, partition)] = max(top.get((topic, partition), -1), offset)
        offsets = [TopicPartition(t, p, o + 1) for (t, p), o in sorted(top.items())]
        if offsets:
            self._consumer.commit(offsets=offsets, asynchronous=False)
            METRICS.commits.inc()


def _where(m: Message) -> tuple[str, int, int]:
    """Topic, partition and offset of a consumed (not an error) message."""
    topic, partition, offset = m.topic(), m.partition(), m.offset()
    assert topic is not None and partition is not None and offset is not None
    return topic, partition, offset
