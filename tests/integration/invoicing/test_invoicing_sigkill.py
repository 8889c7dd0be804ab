"""SIGKILL the consumer process mid-stream, restart it, and reconcile to the cent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal

import asyncpg
import pytest

from tally_streams.avro import SchemaCatalog
from tally_streams.kafka import SyncProducer, producer_config
from tally_streams.topics import ADJUSTMENTS, PERIODS_CLOSED

from .invoicing_support import adjustment, closed, cpm_line, wait_for

pytestmark = pytest.mark.integration

ADVERTISERS = 20
CONTRACTS_PER_ADVERTISER = 25


def start_consumer(dsn: str, bootstrap: str, pc_topic: str, adj_topic: str, group: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TALLY_INVOICING_DATABASE_URL": dsn, "TALLY_KAFKA_BOOTSTRAP": bootstrap,
           "TALLY_INVOICING_PERIODS_CLOSED_TOPIC": pc_topic, "TALLY_INVOICING_ADJUSTMENTS_TOPIC": adj_topic,
           "TALLY_INVOICING_CONSUMER_GROUP": group, "TALLY_INVOICING_BATCH_MAX": "7", "TALLY_INVOICING_LOG_LEVEL": "WARNING"}
    return subprocess.Popen([sys.executable, "-m", "tally_invoicing", "consume"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_sigkill_mid_stream_no_duplicate_and_exact_totals(
    inv_dsn: str, inv_pool: asyncpg.Pool, catalog: SchemaCatalog, kafka_bootstrap: str, make_topic: Callable[..., str],
) -> None:
    pc_topic, adj_topic = make_topic(PERIODS_CLOSED, suffix="pc"), make_topic(ADJUSTMENTS, suffix="adj")
    producer = SyncProducer(producer_config(kafka_bootstrap), catalog)
    expected: dict[str, Decimal] = {}
    n_closes = 0
    for a in range(ADVERTISERS):
        adv = f"adv-{a}"
        expected[adv] = Decimal(0)
        for c in range(CONTRACTS_PER_ADVERTISER):
            impressions = 1000 + 37 * c + a  # e.g. 1037 × 3.333 / 1000 = 3.456321 → 3.46
            rec = closed(f"ctr-{a}-{c}", adv, lines=[cpm_line(impressions, "3.333")])
            producer.produce(pc_topic, "period_closed", rec, key=rec["contract_id"])
            expected[adv] += (Decimal(impressions) * Decimal("3.333") / 1000).quantize(Decimal("0.01"))
            n_closes += 1
    adjustments = 0
    for a in range(ADVERTISERS):
        adj = adjustment(f"ctr-{a}-0", f"adv-{a}", kind="ivt_credit", quantity=-10, amount="-0.03333",
                         applies="2026-03", corrects="2026-03", line_type="cpm_impressions", price_point="band:0",
                         event_type=None, unit_price="3.333", adjustment_id=f"ivt-{a}")
        producer.produce(adj_topic, "adjustment", adj, key=adj["contract_id"])
        expected[f"adv-{a}"] += Decimal("-0.03")
        adjustments += 1
    producer.flush()

    group = f"test-inv-kill-{os.getpid()}"
    proc = start_consumer(inv_dsn, kafka_bootstrap, pc_topic, adj_topic, group)
    try:
        async def some_applied() -> bool:
            return bool(await inv_pool.fetchval("SELECT count(*) FROM period_closes") >= 40)

        await wait_for(some_applied, timeout_s=60, what="the consumer to be mid-stream")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        at_kill = await inv_pool.fetchval("SELECT count(*) FROM period_closes")
        assert at_kill < n_closes, "the kill should land mid-stream"
        proc = start_consumer(inv_dsn, kafka_bootstrap, pc_topic, adj_topic, group)

        async def all_applied() -> bool:
            closes = await inv_pool.fetchval("SELECT count(*) FROM period_closes")
            adjs = await inv_pool.fetchval("SELECT count(*) FROM adjustments")
            return bool(closes == n_closes and adjs == adjustments)

        await wait_for(all_applied, timeout_s=120, what="every record applied after the restart")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)

    assert await inv_pool.fetchval("SELECT count(*) FROM invoices") == ADVERTISERS
    assert await inv_pool.fetchval("SELECT count(*) FROM invoice_lines WHERE kind = 'cpm_impressions'") == n_closes
    assert await inv_pool.fetchval("SELECT count(*) FROM invoice_lines WHERE kind = 'adjustment'") == adjustments
    assert await inv_pool.fetchval(
        "SELECT count(*) FROM (SELECT close_id, kind, price_point FROM invoice_lines WHERE close_id IS NOT NULL "
        "GROUP BY 1, 2, 3 HAVING count(*) > 1) d") == 0
    totals = {r["advertiser_id"]: r["total"] for r in await inv_pool.fetch("SELECT advertiser_id, total FROM invoices")}
    assert totals == expected
    for r in await inv_pool.fetch(
            "SELECT i.total, (SELECT sum(amount) FROM invoice_lines l WHERE l.invoice_id = i.id) AS s FROM invoices i"):
        assert r["total"] == r["s"]
