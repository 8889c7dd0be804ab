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


async def test_the_number_filter_finds_a_document_by_its_number_only_within_the_callers_tenant(
        inv_pool: asyncpg.Pool, make_client: Any) -> None:
    for i, (adv, ptr) in enumerate((("adv-a", "ptr-1"), ("adv-b", "ptr-2"), ("adv-a", "ptr-1"))):
        rec = closed(f"ctr-{adv}-{i}", adv, contract_type="cpa", lines=[cpa_line(1, "10.00")],
                     payouts=[payout(ptr, 1, "60.00")], period_key=f"2026-0{i + 3}")
        async with inv_pool.acquire() as conn:
            await apply_period_closed(conn, rec, Source("pc", 0, i))
    invoices = await inv_pool.fetch("SELECT id, advertiser_id FROM invoices ORDER BY period_key")
    client = await make_client()
    # the first two invoices are finalized (numbered); the third, adv-a's, stays a draft without a number
    numbers: dict[str, str] = {}
    for inv in invoices[:2]:
        r = await client.post(f"/invoices/{inv['id']}/finalize", headers=FINANCE_1)
        assert r.status == 200
        numbers[inv["advertiser_id"]] = (await r.json())["number"]
    inv_a, inv_b = str(invoices[0]["id"]), str(invoices[1]["id"])
    year_prefix = numbers["adv-a"].rsplit("-", 1)[0] + "-"  # INV-YYYY-

    async def listed(path: str, hdr: dict[str, str]) -> list[str]:
        r = await client.get(path, headers=hdr)
        assert r.status == 200, (path, await r.text())
        return [x["id"] for x in (await r.json())["items"]]

    # an internal role: the whole number, any case, or its start followed by *
    assert await listed(f"/invoices?number={numbers['adv-b']}", FINANCE_1) == [inv_b]
    assert await listed(f"/invoices?number={numbers['adv-b'].lower()}", FINANCE_1) == [inv_b]
    assert await listed(f"/invoices?number={numbers['adv-b'][:-1]}", FINANCE_1) == []  # exact unless *
    assert await listed(f"/invoices?number={year_prefix}*", FINANCE_1) == [inv_a, inv_b]  # never the draft
    assert await listed(f"/invoices?number={year_prefix}*&advertiser_id=adv-a", FINANCE_1) == [inv_a]
    assert await listed(f"/invoices?number={numbers['adv-b']}&advertiser_id=adv-a", FINANCE_1) == []
    assert await listed("/invoices?number=", FINANCE_1) == [str(i["id"]) for i in invoices]  # empty: no filter
    # a tenant: its own invoice by number, never another's, neither whole nor by prefix
    assert await listed(f"/invoices?number={numbers['adv-a']}", ADV_A) == [inv_a]
    assert await listed(f"/invoices?number={numbers['adv-b']}", ADV_A) == []
    assert await listed(f"/invoices?number={numbers['adv-b']}&advertiser_id=adv-b", ADV_A) == []
    assert await listed(f"/invoices?number={year_prefix}*", ADV_A) == [inv_a]
    assert await listed("/invoices?number=INV-*", ADV_B) == [inv_b]
    assert await listed(f"/invoices?number={numbers['adv-a']}", PTR_1) == []

    # credit notes, on their own number
    r = await client.post(f"/invoices/{inv_b}/void", headers=FINANCE_1, json={"reason": "test"})
    assert r.status == 201
    note = await r.json()
    assert await listed(f"/credit-notes?number={note['number']}", FINANCE_1) == [note["id"]]
    assert await listed("/credit-notes?number=CN-*", ADV_B) == [note["id"]]
    assert await listed(f"/credit-notes?number={note['number']}", ADV_A) == []
    assert await listed(f"/credit-notes?number={numbers['adv-b']}", FINANCE_1) == []  # the invoice's number is not its

    # payout statements, on theirs
    st_1 = await inv_pool.fetchval("SELECT id FROM payout_statements WHERE partner_id = 'ptr-1' ORDER BY period_key LIMIT 1")
    r = await client.post(f"/statements/{st_1}/finalize", headers=FINANCE_1)
    assert r.status == 200
    st_number = (await r.json())["number"]
    assert await listed(f"/statements?number={st_number}", PTR_1) == [str(st_1)]
    assert await listed(f"/statements?number={st_number}", PTR_2) == []
    assert await listed(f"/statements?number={st_number}", ADV_A) == []
