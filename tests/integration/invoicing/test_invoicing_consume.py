"""Closed periods and adjustments through real Kafka into invoices and payout statements."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from tally_invoicing.consumer import InvoicingConsumer
from tally_invoicing.openapi_spec import build_spec
from tally_streams.avro import SchemaCatalog
from tally_streams.kafka import SyncProducer, producer_config
from tally_streams.topics import ADJUSTMENTS, PERIODS_CLOSED
from tests.apidoc_check import schema_errors

from .invoicing_support import FINANCE_1, adjustment, auth, closed, cpa_line, cpm_line, payout, wait_for

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def running_consumer(pool: asyncpg.Pool, catalog: SchemaCatalog, bootstrap: str, pc_topic: str,
                           adj_topic: str) -> AsyncIterator[InvoicingConsumer]:
    consumer = InvoicingConsumer(bootstrap=bootstrap, group_id=f"test-inv-{uuid.uuid4().hex[:8]}",
                                 periods_closed_topic=pc_topic, adjustments_topic=adj_topic, pool=pool,
                                 catalog=catalog, batch_max=50)
    task = asyncio.create_task(consumer.run())
    try:
        yield consumer
    finally:
        consumer.stop()
        await asyncio.wait_for(task, timeout=20)


def publish(bootstrap: str, catalog: SchemaCatalog, topic: str, schema: str, records: list[dict[str, Any]]) -> None:
    p = SyncProducer(producer_config(bootstrap), catalog)
    for r in records:
        p.produce(topic, schema, r, key=r["contract_id"])
    p.flush()


async def count(pool: asyncpg.Pool, sql: str, *args: Any) -> int:
    return int(await pool.fetchval(sql, *args))


async def test_closed_period_adjustments_and_clawback_through_kafka(
    inv_pool: asyncpg.Pool, make_client: Callable[..., Any], catalog: SchemaCatalog, kafka_bootstrap: str,
    make_topic: Callable[..., str],
) -> None:
    pc_topic, adj_topic = make_topic(PERIODS_CLOSED, suffix="pc"), make_topic(ADJUSTMENTS, suffix="adj")
    cpm = closed("ctr-cpm", "adv-1", lines=[cpm_line(1_000_000, "12.50"), cpm_line(250_001, "10.00", band=1),
                                            {**cpm_line(5_000, "10.00", band=1), "line_type": "cpm_over_delivery",
                                             "amount_exact": Decimal(0)}])
    cpa = closed("ctr-cpa", "adv-1", contract_type="cpa", lines=[cpa_line(3, "100.00"), cpa_line(2, "8.005", "signup")],
                 payouts=[payout("ptr-1", 3, "60.00"), payout("ptr-1", 2, "5.005", "signup"), payout("ptr-2", 1, "1.00")])
    publish(kafka_bootstrap, catalog, pc_topic, "period_closed", [cpm, cpa, cpm])  # cpm twice: a re-emission
    async with running_consumer(inv_pool, catalog, kafka_bootstrap, pc_topic, adj_topic):
        await wait_for(lambda: _applied(inv_pool, 2), what="both closes applied")
        inv = await inv_pool.fetchrow("SELECT * FROM invoices WHERE advertiser_id = 'adv-1' AND period_key = '2026-03'")
        # 12500 + 2500.01 (2500.010) + 0 + 100 + 8.00 (8.005 half-even) = 15108.01
        assert inv["total"] == Decimal("15108.01")
        assert await count(inv_pool, "SELECT count(*) FROM invoice_lines WHERE invoice_id = $1", inv["id"]) == 5
        st1 = await inv_pool.fetchrow("SELECT * FROM payout_statements WHERE partner_id = 'ptr-1'")
        assert st1["lines_total"] == Decimal("65.00")  # 60 + 5.00 (5.005 → 5.00, half-even)

        # Finalize March, then a clawback and a late event arrive for March, carried in April.
        client = await make_client()
        r = await client.post(f"/invoices/{inv['id']}/finalize", headers=FINANCE_1)
        assert r.status == 202  # above the four-eyes threshold: prepared only
        r = await client.post(f"/invoices/{inv['id']}/finalize", headers=auth("fin-bob", "finance"))
        assert r.status == 200, await r.text()
        march = await r.json()
        assert march["number"].startswith("INV-") and march["total"] == "15108.01"

        claw = adjustment("ctr-cpa", "adv-1", kind="reversal_after_close", quantity=-1, amount="-33.333333333333",
                          partner_id="ptr-1", payout_amount="-20.00", unit_price="33.333333333333")
        late = adjustment("ctr-cpm", "adv-1", kind="late_event", quantity=1001, amount="10.01", line_type="cpm_impressions",
                          price_point="band:1", event_type=None, unit_price="10.00")
        publish(kafka_bootstrap, catalog, adj_topic, "adjustment", [claw, late, claw])
        await wait_for(lambda: _adjusted(inv_pool, 2), what="adjustments applied")

    april = await inv_pool.fetchrow("SELECT * FROM invoices WHERE advertiser_id = 'adv-1' AND period_key = '2026-04'")
    assert april["total"] == Decimal("-33.33") + Decimal("10.01")
    claw_line = await inv_pool.fetchrow(
        "SELECT * FROM invoice_lines WHERE invoice_id = $1 AND adjustment_kind = 'reversal_after_close'", april["id"])
    original = await inv_pool.fetchrow(
        "SELECT * FROM invoice_lines WHERE close_id = 'ctr-cpa/2026-03' AND price_point = 'event:purchase'")
    assert claw_line["corrects_line_id"] == original["id"] and claw_line["corrects_invoice_id"] == inv["id"]
    assert claw_line["amount"] == Decimal("-33.33") and claw_line["quantity"] == -1
    # The finalized March invoice did not change.
    assert await inv_pool.fetchval("SELECT total FROM invoices WHERE id = $1", inv["id"]) == Decimal("15108.01")
    # The partner's April statement carries the payout clawback, pointing at the March line.
    st_april = await inv_pool.fetchrow("SELECT * FROM payout_statements WHERE partner_id = 'ptr-1' AND period_key = '2026-04'")
    assert st_april["lines_total"] == Decimal("-20.00")
    # Each application is audited on its document: the total before and after, naming the adjustment and line.
    applied = await inv_pool.fetch(
        "SELECT entity_type, entity_id, tenant_type, tenant_id, before, after FROM audit_log "
        "WHERE action = 'adjustment_applied' ORDER BY seq")
    by_doc = {(a["entity_type"], a["entity_id"]): a for a in applied}
    assert len(applied) == 3 and len(by_doc) == 2  # claw and late on the April invoice, claw on the statement
    on_statement = by_doc[("payout_statement", str(st_april["id"]))]
    assert (on_statement["tenant_type"], on_statement["tenant_id"]) == ("partner", "ptr-1")
    after = _json(on_statement["after"])
    assert Decimal(_json(on_statement["before"])["lines_total"]) == 0  # a new draft
    assert (Decimal(after["lines_total"]), after["adjustment_id"], sorted(after)) == (
        Decimal("-20.00"), claw["adjustment_id"], ["adjustment_id", "line_id", "lines_total"])
    # claw and late are keyed by different contracts, so they may land in either order: the
    # entries name both, and the later one's total is the invoice's
    on_invoice = [a for a in applied if a["entity_type"] == "invoice"]
    assert {(a["entity_id"], a["tenant_type"]) for a in on_invoice} == {(str(april["id"]), "advertiser")}
    assert sorted(_json(a["after"])["adjustment_id"] for a in on_invoice) == sorted([claw["adjustment_id"],
                                                                                   late["adjustment_id"]])
    after = _json(on_invoice[-1]["after"])
    assert Decimal(after["total"]) == april["total"]
    assert sorted(after) == ["adjustment_id", "kind", "line_id", "source", "total"]
    # Replays changed nothing: one row per natural key, duplicates counted, nothing rejected.
    assert await count(inv_pool, "SELECT count(*) FROM period_closes") == 2
    assert await count(inv_pool, "SELECT count(*) FROM adjustments") == 2
    assert await count(inv_pool, "SELECT count(*) FROM rejected_records") == 0

    # Lineage: a CPM line traces to its close and the source offsets.
    line = await inv_pool.fetchrow("SELECT id FROM invoice_lines WHERE close_id = 'ctr-cpm/2026-03' LIMIT 1")
    r = await client.get(f"/invoices/{inv['id']}/lines/{line['id']}/lineage", headers=FINANCE_1)
    lineage = await r.json()
    assert lineage["close"]["close_id"] == "ctr-cpm/2026-03"
    assert lineage["close"]["source_offsets"] == [{"topic": "ads.impressions", "partition": 0, "offset": 42}]
    assert lineage["close"]["kafka_topic"] == pc_topic
    r = await client.get(f"/invoices/{april['id']}/lines/{claw_line['id']}/lineage", headers=FINANCE_1)
    adj_lineage = await r.json()
    assert [a["adjustment_id"] for a in adj_lineage["adjustments"]] == [claw["adjustment_id"]]
    assert adj_lineage["corrects_line_id"] == str(original["id"])

    # The answers with real rows behind them are valid for the document's closed schemas.
    spec = build_spec()
    assert schema_errors(spec, "Lineage", lineage) == []
    assert schema_errors(spec, "Lineage", adj_lineage) == []
    for path, name in ((f"/invoices/{inv['id']}/history", "AuditEntries"), ("/ledger/accounts", "Balances"),
                       ("/ledger/accounts?by=party", "Balances"), ("/ledger/trial-balance", "TrialBalance"),
                       ("/rejected-records", "RejectedRecords"), ("/audit/verify", "AuditVerify")):
        r = await client.get(path, headers=FINANCE_1)
        assert r.status == 200, path
        assert schema_errors(spec, name, await r.json()) == [], path
    r = await client.get("/ledger/entries", headers=FINANCE_1)
    entries = (await r.json())["items"]
    assert entries and all(schema_errors(spec, "JournalEntry", e) == [] for e in entries)



def _json(value: Any) -> Any:
    """A jsonb column as asyncpg hands it back without a codec: text."""
    return json.loads(value) if isinstance(value, str) else value

async def _applied(pool: asyncpg.Pool, n: int) -> bool:
    return bool(await pool.fetchval("SELECT count(*) FROM period_closes") >= n)


async def _adjusted(pool: asyncpg.Pool, n: int) -> bool:
    return bool(await pool.fetchval("SELECT count(*) FROM adjustments") >= n)


async def test_invalid_and_undecodable_records_are_kept_with_the_reason(
    inv_pool: asyncpg.Pool, catalog: SchemaCatalog, kafka_bootstrap: str, make_topic: Callable[..., str],
) -> None:
    pc_topic, adj_topic = make_topic(PERIODS_CLOSED, suffix="pc"), make_topic(ADJUSTMENTS, suffix="adj")
    bad = closed("ctr-x", "adv-x", lines=[{**cpm_line(1000, "5.00"), "amount_exact": Decimal("4.99")}])
    good = closed("ctr-y", "adv-x", lines=[cpm_line(1000, "5.00")])
    p = SyncProducer(producer_config(kafka_bootstrap), catalog)
    p.produce_raw(pc_topic, b"not avro at all", key="ctr-z")
    p.produce(pc_topic, "period_closed", bad, key="ctr-x")
    p.produce(pc_topic, "period_closed", good, key="ctr-y")
    p.flush()
    async with running_consumer(inv_pool, catalog, kafka_bootstrap, pc_topic, adj_topic):
        await wait_for(lambda: _applied(inv_pool, 1), what="good record applied")
    rejected = await inv_pool.fetch("SELECT * FROM rejected_records ORDER BY kafka_offset")
    assert [r["error_kind"] for r in rejected] == ["not_single_object", "invalid"]
    assert "quantity × rate" in rejected[1]["reason"]
    assert await inv_pool.fetchval("SELECT total FROM invoices WHERE advertiser_id = 'adv-x'") == Decimal("5.00")
