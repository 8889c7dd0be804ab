"""Invoice lifecycle against real PostgreSQL: rounding, minimum commitment, numbering under
concurrency, four-eyes, credit notes, payouts carried forward, the ledger, PDF export."""

from __future__ import annotations

import asyncio
import io
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from pypdf import PdfReader

from tally_invoicing.apply import Source, apply_adjustment, apply_period_closed
from tally_kit import audit

from .invoicing_support import FINANCE_1, FINANCE_2, adjustment, auth, closed, cpa_line, cpm_line, payout

pytestmark = pytest.mark.integration
_offset = iter(range(10_000))


async def apply_close(pool: asyncpg.Pool, rec: dict[str, Any]) -> str:
    async with pool.acquire() as conn:
        return await apply_period_closed(conn, rec, Source("billing.periods_closed", 0, next(_offset)))


async def invoice_of(pool: asyncpg.Pool, advertiser: str, period: str = "2026-03") -> asyncpg.Record:
    return await pool.fetchrow("SELECT * FROM invoices WHERE advertiser_id = $1 AND period_key = $2 AND status = 'draft'",
                               advertiser, period)


async def test_jpy_and_bhd_rounding_half_even_once_per_line(inv_pool: asyncpg.Pool, make_client: Any) -> None:
    # JPY has no minor unit: 1001 impressions at 0.5 JPY CPM = 0.5005 → 1; 3000 at 0.5 = 1.5 → 2 (half-even);
    # 5000 at 0.5 = 2.5 → 2 (half-even, not 3).
    jpy = closed("ctr-jpy", "adv-jp", currency="JPY", lines=[cpm_line(1001, "0.5"), cpm_line(3000, "0.5", band=1),
                                                             cpm_line(5000, "0.5", band=2)])
    # BHD has three decimals: 1 impression at 2.5 CPM = 0.0025 → 0.002 (half-even); 3 at 2.5 = 0.0075 → 0.008;
    # 123457 at 1.234 = 152.345938 → 152.346.
    bhd = closed("ctr-bhd", "adv-bh", currency="BHD", lines=[cpm_line(1, "2.5"), cpm_line(3, "2.5", band=1),
                                                             cpm_line(123_457, "1.234", band=2)])
    assert await apply_close(inv_pool, jpy) == "applied"
    assert await apply_close(inv_pool, bhd) == "applied"
    jp = await invoice_of(inv_pool, "adv-jp")
    amounts = [r["amount"] for r in await inv_pool.fetch(
        "SELECT amount FROM invoice_lines WHERE invoice_id = $1 ORDER BY line_no", jp["id"])]
    assert amounts == [Decimal(1), Decimal(2), Decimal(2)]
    assert jp["total"] == Decimal(5)  # the sum of the rounded lines
    bh = await invoice_of(inv_pool, "adv-bh")
    amounts = [r["amount"] for r in await inv_pool.fetch(
        "SELECT amount FROM invoice_lines WHERE invoice_id = $1 ORDER BY line_no", bh["id"])]
    assert amounts == [Decimal("0.002"), Decimal("0.008"), Decimal("152.346")]
    assert bh["total"] == Decimal("152.356")
    client = await make_client()
    body = await (await client.get(f"/invoices/{jp['id']}", headers=FINANCE_1)).json()
    assert body["total"] == "5" and [ln["amount"] for ln in body["lines"]] == ["1", "2", "2"]
    body = await (await client.get(f"/invoices/{bh['id']}", headers=FINANCE_1)).json()
    assert body["total"] == "152.356"
    assert body["lines"][0]["amount_exact"] == "0.0025"


@pytest.mark.parametrize(("billed_rate", "expected_lines", "expected_total"), [
    ("2.00", 2, Decimal("5000.00")),   # 1,000,001 × 2.00 / 1000 = 2000.002 → 2000.00; shortfall 3000.00
    ("6.00", 1, Decimal("6000.01")),   # 1,000,001 × 6.00 / 1000 = 6000.006 → 6000.01: above the minimum, no shortfall
])
async def test_minimum_commitment_not_reached_and_exceeded(
    inv_pool: asyncpg.Pool, billed_rate: str, expected_lines: int, expected_total: Decimal,
) -> None:
    rec = closed("ctr-min", "adv-min", lines=[cpm_line(1_000_001, billed_rate)], minimum="5000.00")
    await apply_close(inv_pool, rec)
    inv = await invoice_of(inv_pool, "adv-min")
    lines = await inv_pool.fetch("SELECT * FROM invoice_lines WHERE invoice_id = $1 ORDER BY line_no", inv["id"])
    assert len(lines) == expected_lines
    assert inv["total"] == expected_total
    if expected_lines == 2:
        shortfall = next(ln for ln in lines if ln["kind"] == "minimum_commitment_shortfall")
        assert shortfall["amount"] == Decimal("3000.00")


async def test_concurrent_finalization_numbers_are_gap_free(inv_pool: asyncpg.Pool, make_client: Any) -> None:
    n = 12
    for i in range(n):
        await apply_close(inv_pool, closed(f"ctr-{i}", f"adv-{i}", lines=[cpm_line(1000, "5.00")]))
    ids = [r["id"] for r in await inv_pool.fetch("SELECT id FROM invoices")]
    client = await make_client()

    async def finalize(inv_id: UUID) -> int:
        r = await client.post(f"/invoices/{inv_id}/finalize", headers=FINANCE_1)
        return r.status

    # every invoice finalized by two concurrent requests: one wins, the other gets 409
    statuses = await asyncio.gather(*(finalize(i) for i in ids for _ in range(2)))
    assert sorted(statuses) == [200] * n + [409] * n
    seqs = sorted(r["number_seq"] for r in await inv_pool.fetch("SELECT number_seq FROM invoices"))
    assert seqs == list(range(1, n + 1))
    numbers = {r["number"] for r in await inv_pool.fetch("SELECT number FROM invoices")}
    assert len(numbers) == n


async def test_four_eyes_above_threshold(inv_pool: asyncpg.Pool, make_client: Any) -> None:
    await apply_close(inv_pool, closed("ctr-big", "adv-big", lines=[cpm_line(1_000_000, "20.00")]))  # 20,000.00
    inv = await invoice_of(inv_pool, "adv-big")
    client = await make_client()
    r = await client.post(f"/invoices/{inv['id']}/finalize", headers=FINANCE_1)
    assert r.status == 202 and (await r.json())["prepared_by"] == "fin-alice"
    r = await client.post(f"/invoices/{inv['id']}/finalize", headers=FINANCE_1)
    assert r.status == 403 and "second finance user" in (await r.json())["detail"]
    r = await client.post(f"/invoices/{inv['id']}/finalize", headers=auth("ops-1", "ops"))
    assert r.status == 403
    # a new line arriving after preparation withdraws it: what was reviewed changed
    await apply_close(inv_pool, closed("ctr-big2", "adv-big", lines=[cpm_line(1000, "1.00")]))
    r = await client.post(f"/invoices/{inv['id']}/finalize", headers=FINANCE_2)
    assert r.status == 202 and (await r.json())["prepared_by"] == "fin-bob"
    r = await client.post(f"/invoices/{inv['id']}/finalize", headers=FINANCE_1)
    body = await r.json()
    assert r.status == 200 and body["status"] == "finalized"
    assert body["prepared_by"] == "fin-bob" and body["approved_by"] == "fin-alice"
    # below the threshold one finance user finalizes alone
    await apply_close(inv_pool, closed("ctr-small", "adv-small", lines=[cpm_line(1000, "5.00")]))
    small = await invoice_of(inv_pool, "adv-small")
    r = await client.post(f"/invoices/{small['id']}/finalize", headers=FINANCE_1)
    assert r.status == 200 and (await r.json())["approved_by"] is None


async def test_void_through_credit_note_and_ledger(inv_pool: asyncpg.Pool, make_client: Any) -> None:
    await apply_close(inv_pool, closed("ctr-v", "adv-v", lines=[cpm_line(200_000, "12.345")]))  # 2469.00
    inv = await invoice_of(inv_pool, "adv-v")
    client = await make_client()
    hdr = {**FINANCE_1, "Idempotency-Key": "fin-v-1"}
    r = await client.post(f"/invoices/{inv['id']}/finalize", headers=hdr)
    assert r.status == 200
    again = await client.post(f"/invoices/{inv['id']}/finalize", headers=hdr)
    assert again.status == 200 and again.headers.get("Idempotent-Replayed") == "true"
    r = await client.post(f"/invoices/{inv['id']}/send", headers=FINANCE_1)
    assert (await r.json())["status"] == "sent"
    r = await client.post(f"/invoices/{inv['id']}/void", headers=FINANCE_1, json={})
    assert r.status == 422
    r = await client.post(f"/invoices/{inv['id']}/void", headers=FINANCE_1, json={"reason": "wrong PO"})
    assert r.status == 201
    note = await r.json()
    assert note["number"] == f"CN-{note['number_year']}-000001" and note["total"] == "-2469.00"
    assert [ln["amount"] for ln in note["lines"]] == ["-2469.00"]
    r = await client.post(f"/invoices/{inv['id']}/void", headers=FINANCE_1, json={"reason": "again"})
    assert r.status == 409
    # ledger: invoice posted receivable/revenue, the credit note reversed it
    tb = await (await client.get("/ledger/trial-balance", headers=FINANCE_1)).json()
    assert tb["balanced"] is True
    bal = await (await client.get("/ledger/accounts?currency=USD", headers=FINANCE_1)).json()
    assert {r["code"]: r["balance"] for r in bal["items"]} == {"1100": "0", "4000": "0"}
    # the finalized (now void) invoice cannot be edited, even by SQL
    with pytest.raises(asyncpg.CheckViolationError):
        await inv_pool.execute("UPDATE invoices SET total = 1 WHERE id = $1", inv["id"])
    with pytest.raises(asyncpg.CheckViolationError):
        await inv_pool.execute("UPDATE invoice_lines SET amount = 1 WHERE invoice_id = $1", inv["id"])
    async with inv_pool.acquire() as conn:
        assert await audit.verify(conn) is None
        actions = [e.action for e in await audit.entries_for(conn, "invoice", str(inv["id"]))]
    assert actions == ["created", "lines_added", "finalized", "sent", "voided"]


async def test_database_refuses_an_unbalanced_journal_entry(inv_pool: asyncpg.Pool) -> None:
    async with inv_pool.acquire() as conn:
        with pytest.raises(asyncpg.CheckViolationError, match="unbalanced"):
            async with conn.transaction():
                entry = await conn.fetchval(
                    """INSERT INTO journal_entries (currency, description, source_type, source_id, posted_by)
                       VALUES ('USD', 'bad', 'test', 'x1', 'tester') RETURNING id""")
                await conn.execute("INSERT INTO journal_lines (entry_id, account_code, amount) VALUES ($1, '1100', 10)", entry)
                await conn.execute("INSERT INTO journal_lines (entry_id, account_code, amount) VALUES ($1, '4000', -9.99)",
                                   entry)
        with pytest.raises(asyncpg.CheckViolationError):
            async with conn.transaction():
                await conn.execute("""INSERT INTO journal_entries (currency, description, source_type, source_id, posted_by)
                                      VALUES ('USD', 'empty', 'test', 'x2', 'tester')""")
        # a balanced one commits; afterwards the ledger is append-only
        async with conn.transaction():
            entry = await conn.fetchval(
                """INSERT INTO journal_entries (currency, description, source_type, source_id, posted_by)
                   VALUES ('USD', 'ok', 'test', 'x3', 'tester') RETURNING id""")
            await conn.execute("INSERT INTO journal_lines (entry_id, account_code, amount) VALUES ($1, '1100', 10)", entry)
            await conn.execute("INSERT INTO journal_lines (entry_id, account_code, amount) VALUES ($1, '4000', -10)", entry)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE journal_lines SET amount = 11 WHERE entry_id = $1 AND amount > 0", entry)
        assert await conn.fetchval("SELECT count(*) FROM journal_entries") == 1


async def test_payout_minimum_carried_forward_and_negative_balance_never_paid(
    inv_pool: asyncpg.Pool, make_client: Any,
) -> None:
    client = await make_client()

    async def finalize_statement(period: str) -> dict[str, Any]:
        st = await inv_pool.fetchrow("SELECT id FROM payout_statements WHERE partner_id = 'ptr-c' AND period_key = $1", period)
        r = await client.post(f"/statements/{st['id']}/finalize", headers=FINANCE_1)
        assert r.status == 200, await r.text()
        return dict(await r.json())

    # March: 30.00 owed, under the 50 minimum → nothing paid, 30.00 carried
    await apply_close(inv_pool, closed("ctr-c", "adv-c", contract_type="cpa", lines=[cpa_line(3, "45.00")],
                                       payouts=[payout("ptr-c", 3, "30.00")]))
    march = await finalize_statement("2026-03")
    assert (march["amount_payable"], march["carried_out"]) == ("0.00", "30.00")
    r = await client.post(f"/statements/{march['id']}/mark-paid", headers=FINANCE_1)
    assert r.status == 409
    # April: a clawback of 45.00 → balance 30 - 45 = -15.00, carried, never paid
    async with inv_pool.acquire() as conn:
        await apply_adjustment(conn, adjustment("ctr-c", "adv-c", kind="reversal_after_close", quantity=-1, amount="-60",
                                                partner_id="ptr-c", payout_amount="-45.00"), Source("adj", 0, 1))
    april = await finalize_statement("2026-04")
    assert (april["carried_in"], april["balance"], april["amount_payable"], april["carried_out"]) == \
        ("30.00", "-15.00", "0.00", "-15.00")
    # May: 100.00 owed → 85.00 paid, nothing carried
    rec = closed("ctr-c", "adv-c", period_key="2026-05", contract_type="cpa", lines=[cpa_line(5, "150.00")],
                 payouts=[payout("ptr-c", 5, "100.00")])
    await apply_close(inv_pool, rec)
    may = await finalize_statement("2026-05")
    assert (may["carried_in"], may["amount_payable"], may["carried_out"]) == ("-15.00", "85.00", "0.00")
    r = await client.post(f"/statements/{may['id']}/mark-paid", headers=FINANCE_1, json={"payment_reference": "wire-1"})
    assert (await r.json())["status"] == "paid"
    bal = await (await client.get("/ledger/accounts", headers=FINANCE_1)).json()
    balances = {r["code"]: Decimal(r["balance"]) for r in bal["items"]}
    # cost 30 - 45 + 100 = 85 expensed; 85 paid out; nothing left payable
    assert balances["5000"] == Decimal("85") and balances["2100"] == 0 and balances["1000"] == Decimal("-85")


async def test_pdf_and_csv_exports_carry_number_and_total(inv_pool: asyncpg.Pool, make_client: Any) -> None:
    await apply_close(inv_pool, closed("ctr-pdf", "adv-pdf", lines=[cpm_line(123_456, "7.77")]))  # 959.25312 → 959.25
    inv = await invoice_of(inv_pool, "adv-pdf")
    client = await make_client()
    number = (await (await client.post(f"/invoices/{inv['id']}/finalize", headers=FINANCE_1)).json())["number"]
    r = await client.get(f"/invoices/{inv['id']}/export.pdf", headers=auth("a", "advertiser", advertiser="adv-pdf"))
    assert r.status == 200 and r.content_type == "application/pdf"
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(await r.read())).pages)
    assert number in text and "959.25" in text
    r = await client.get(f"/invoices/{inv['id']}/export.csv", headers=FINANCE_1)
    csv_text = await r.text()
    assert f"# Invoice,{number}" in csv_text and "# Total,959.25" in csv_text
