"""Edge case 20: a tenant asking for another tenant's invoice, statement or credit note gets 404,
lists show only its own documents, and the ledger and writes are closed to tenants."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from tally_invoicing.apply import Source, apply_period_closed

from .invoicing_support import FINANCE_1, auth, closed, cpa_line, payout

pytestmark = pytest.mark.integration

ADV_A = auth("user-a", "advertiser", advertiser="adv-a")
ADV_B = auth("user-b", "advertiser", advertiser="adv-b")
PTR_1 = auth("user-p1", "partner", partner="ptr-1")
PTR_2 = auth("user-p2", "partner", partner="ptr-2")


async def test_tenant_isolation_on_every_endpoint(inv_pool: asyncpg.Pool, make_client: Any) -> None:
    for i, (adv, ptr) in enumerate((("adv-a", "ptr-1"), ("adv-b", "ptr-2"))):
        rec = closed(f"ctr-{adv}", adv, contract_type="cpa", lines=[cpa_line(1, "10.00")], payouts=[payout(ptr, 1, "60.00")])
        async with inv_pool.acquire() as conn:
            await apply_period_closed(conn, rec, Source("pc", 0, i))
    inv_a = await inv_pool.fetchrow("SELECT * FROM invoices WHERE advertiser_id = 'adv-a'")
    line_a = await inv_pool.fetchval("SELECT id FROM invoice_lines WHERE invoice_id = $1", inv_a["id"])
    st_1 = await inv_pool.fetchrow("SELECT * FROM payout_statements WHERE partner_id = 'ptr-1'")
    sline_1 = await inv_pool.fetchval("SELECT id FROM statement_lines WHERE statement_id = $1", st_1["id"])
    client = await make_client()
    assert (await client.post(f"/invoices/{inv_a['id']}/finalize", headers=FINANCE_1)).status == 200
    r = await client.post(f"/invoices/{inv_a['id']}/void", headers=FINANCE_1, json={"reason": "test"})
    note_a = (await r.json())["id"]

    reads = [f"/invoices/{inv_a['id']}", f"/invoices/{inv_a['id']}/export.pdf", f"/invoices/{inv_a['id']}/export.csv",
             f"/invoices/{inv_a['id']}/history", f"/invoices/{inv_a['id']}/lines/{line_a}/lineage",
             f"/credit-notes/{note_a}", f"/credit-notes/{note_a}/export.pdf", f"/credit-notes/{note_a}/export.csv"]
    st_reads = [f"/statements/{st_1['id']}", f"/statements/{st_1['id']}/export.pdf",
                f"/statements/{st_1['id']}/export.csv", f"/statements/{st_1['id']}/history",
                f"/statements/{st_1['id']}/lines/{sline_1}/lineage"]
    for path in reads:
        assert (await client.get(path, headers=ADV_A)).status == 200, path
        for other in (ADV_B, PTR_1):
            r = await client.get(path, headers=other)
            assert r.status == 404, path
            assert r.content_type == "application/problem+json"
    for path in st_reads:
        assert (await client.get(path, headers=PTR_1)).status == 200, path
        for other in (PTR_2, ADV_A):
            assert (await client.get(path, headers=other)).status == 404, path

    # lists: only one's own documents
    async def listed(path: str, hdr: dict[str, str]) -> list[str]:
        r = await client.get(path, headers=hdr)
        assert r.status == 200
        return [x["id"] for x in (await r.json())["items"]]

    assert await listed("/invoices", ADV_A) == [str(inv_a["id"])]
    assert await listed("/invoices?advertiser_id=adv-b", ADV_A) == []
    assert await listed("/invoices", PTR_1) == []
    assert len(await listed("/invoices", FINANCE_1)) == 2
    assert await listed("/credit-notes", ADV_B) == []
    assert await listed("/credit-notes", ADV_A) == [note_a]
    assert await listed("/statements", PTR_1) == [str(st_1["id"])]
    assert await listed("/statements", ADV_A) == []

    # writes and the ledger are not for tenants (and another tenant's id stays invisible)
    for hdr in (ADV_A, ADV_B, PTR_1):
        for path in (f"/invoices/{inv_a['id']}/send", f"/statements/{st_1['id']}/finalize", "/manual-credits"):
            assert (await client.post(path, headers=hdr, json={})).status == 403, path
        for path in ("/ledger/accounts", "/ledger/trial-balance", "/ledger/entries", "/rejected-records", "/audit/verify"):
            assert (await client.get(path, headers=hdr)).status == 403, path
    assert (await client.get("/invoices")).status == 401
    # public documentation
    spec = await (await client.get("/openapi.json")).json()
    assert spec["openapi"] == "3.1.0" and "/invoices/{id}/finalize" in spec["paths"]
    assert (await client.get("/docs")).status == 200
    metrics = await (await client.get("/metrics")).text()
    assert "tally_invoicing_transitions_total" in metrics and "tally_http_requests_total" in metrics
