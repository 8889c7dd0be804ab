"""One polled batch = one transaction: good records commit, bad ones are rejected, a replay
of the same batch changes nothing, and the audit chain stays valid."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import asyncpg
import pytest
from confluent_kafka import Message

from tally_invoicing.consumer import InvoicingConsumer
from tally_kit import audit
from tally_streams.avro import SchemaCatalog
from tally_streams.topics import ADJUSTMENTS, PERIODS_CLOSED

from .invoicing_support import closed, cpm_line

pytestmark = pytest.mark.integration


async def _state(pool: asyncpg.Pool) -> dict[str, object]:
    row = await pool.fetchrow(
        """SELECT (SELECT count(*) FROM period_closes) AS closes, (SELECT count(*) FROM invoices) AS invoices,
                  (SELECT count(*) FROM invoice_lines) AS lines, (SELECT count(*) FROM rejected_records) AS rejected,
                  (SELECT count(*) FROM audit_log) AS audit, (SELECT hash FROM audit_chain_head) AS head,
                  (SELECT COALESCE(sum(total), 0) FROM invoices) AS total""")
    return dict(row)


async def test_batch_commits_good_records_rejects_bad_ones_and_replays_to_nothing(
    inv_pool: asyncpg.Pool, catalog: SchemaCatalog, kafka_bootstrap: str, make_topic: Callable[..., str],
) -> None:
    pc_topic, adj_topic = make_topic(PERIODS_CLOSED, suffix="pc"), make_topic(ADJUSTMENTS, suffix="adj")
    codec = catalog.codec("period_closed")
    good_a = closed("ctr-a", "adv-1", lines=[cpm_line(1000, "5.00")])                      # 5.00
    good_b = closed("ctr-b", "adv-1", lines=[cpm_line(2001, "10.00")])                     # 20.01
    invalid = closed("ctr-c", "adv-1", lines=[{**cpm_line(1000, "5.00"), "amount_exact": Decimal("4.99")}])
    refused = closed("ctr-\x00nul", "adv-1", lines=[cpm_line(1000, "5.00")])  # PostgreSQL refuses NUL in text
    conflicting = {**good_a, "po_reference": "PO-other"}                      # same close_id, other content
    batch = [Message(topic=pc_topic, partition=0, offset=off, value=value) for off, value in enumerate([
        codec.encode(good_a), b"not avro at all", codec.encode(invalid), codec.encode(refused), codec.encode(good_b),
        codec.encode(conflicting), codec.encode(good_a)])]

    consumer = InvoicingConsumer(bootstrap=kafka_bootstrap, group_id="test-inv-batch", periods_closed_topic=pc_topic,
                                 adjustments_topic=adj_topic, pool=inv_pool, catalog=catalog, batch_max=50)
    try:
        outcomes = await consumer.apply_batch(batch)
        assert outcomes == ["applied", "rejected", "rejected", "rejected", "applied", "conflict", "duplicate"]
        first = await _state(inv_pool)
        # Both good records landed on one draft, the refused one (rolled back to its savepoint
        # between them) left nothing behind.
        assert (first["closes"], first["invoices"], first["lines"]) == (2, 1, 2)
        assert first["total"] == Decimal("25.01")
        rejected = await inv_pool.fetch("SELECT kafka_offset, error_kind, natural_key, raw FROM rejected_records "
                                        "ORDER BY kafka_offset")
        assert [(r["kafka_offset"], r["error_kind"]) for r in rejected] == [
            (1, "not_single_object"), (2, "invalid"), (3, "database"), (5, "conflict")]
        assert rejected[2]["raw"] == batch[3].value()  # the refused record is kept whole
        async with inv_pool.acquire() as conn:
            assert await audit.verify(conn) is None

        # Redelivery of the same batch (a crash before the offset commit) changes nothing.
        again = await consumer.apply_batch(batch)
        assert again == ["duplicate", "rejected", "rejected", "rejected", "duplicate", "conflict", "duplicate"]
        assert await _state(inv_pool) == first
        async with inv_pool.acquire() as conn:
            assert await audit.verify(conn) is None
    finally:
        consumer._consumer.close()


async def test_api_writes_take_the_audit_head_before_the_document_so_a_batch_cannot_deadlock_them(
    inv_pool: asyncpg.Pool, catalog: SchemaCatalog, kafka_bootstrap: str, make_topic: Callable[..., str],
) -> None:
    import asyncio

    from tally_invoicing import lifecycle
    from tally_invoicing.domain import INVOICE
    from tally_kit.auth import Principal

    pc_topic, adj_topic = make_topic(PERIODS_CLOSED, suffix="pc"), make_topic(ADJUSTMENTS, suffix="adj")
    consumer = InvoicingConsumer(bootstrap=kafka_bootstrap, group_id="test-inv-order", periods_closed_topic=pc_topic,
                                 adjustments_topic=adj_topic, pool=inv_pool, catalog=catalog, batch_max=50)
    try:
        rec = closed("ctr-order", "adv-order", lines=[cpm_line(1000, "5.00")])
        assert await consumer.apply_batch([Message(topic=pc_topic, partition=0, offset=0,
                                                             value=catalog.codec("period_closed").encode(rec))]) == [
            "applied"]
    finally:
        consumer._consumer.close()
    invoice_id = await inv_pool.fetchval("SELECT id FROM invoices WHERE advertiser_id = 'adv-order'")
    async with inv_pool.acquire() as batch, inv_pool.acquire() as api:
        api_pid = await api.fetchval("SELECT pg_backend_pid()")
        tx = batch.transaction()
        await tx.start()
        try:
            await audit.lock_head(batch)  # what a batch transaction does first
            call = asyncio.create_task(lifecycle.send(api, INVOICE, invoice_id, Principal("fiona", frozenset({"finance"}))))
            for _ in range(400):  # until the API call waits on a lock (bounded)
                if await inv_pool.fetchval("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1",
                                           api_pid):
                    break
                assert not call.done(), "the API write went ahead while a batch held the audit head"
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the API call never waited for the audit head")
            # it waits for the head without holding the invoice: the batch can still lock the draft
            assert await batch.fetchval("SELECT 1 FROM invoices WHERE id = $1 FOR UPDATE NOWAIT", invoice_id) == 1
        finally:
            await tx.rollback()
        with pytest.raises(Exception, match="send"):  # a draft cannot be sent: it ran once the head was free
            await call
