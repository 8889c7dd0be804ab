"""Document lifecycle: finalize (gap-free number, four-eyes, journal entry), send, mark paid,
void through a full credit note; payout statements with carry-forward; manual credits.

Every transition runs in one transaction with its audit entry and its journal entry, and
locks the document row first (``FOR UPDATE``), so two concurrent requests on one document
serialise and the second sees the first's result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from tally_billing.money import currency, is_rounded, round_to_minor
from tally_kit import audit
from tally_kit.auth import Principal
from tally_kit.problems import ApiError

from . import domain
from .apply import draft_invoice, refresh_invoice_total
from .metrics import METRICS

INVOICE_SERIES = "INV"
CREDIT_NOTE_SERIES = "CN"
STATEMENT_SERIES = "PS"


@dataclass(frozen=True)
class Policy:
    four_eyes_threshold: dict[str, Decimal]
    minimum_payout: dict[str, Decimal]

    def threshold(self, currency_code: str) -> Decimal:
        return self.four_eyes_threshold.get(currency_code, self.four_eyes_threshold["*"])

    def min_payout(self, currency_code: str) -> Decimal:
        return self.minimum_payout.get(currency_code, self.minimum_payout["*"])


def today() -> date:
    return datetime.now(UTC).date()


async def next_number(conn: asyncpg.Connection, series: str, year: int) -> int:
    """The next number of ``series`` in ``year``. The counter row stays locked until the
    calling transaction ends: concurrent finalizations queue here, and a rollback gives the
    number back, so the series has no gap and no duplicate."""
    value: int = await conn.fetchval(
        """INSERT INTO number_series (series, year, last_value) VALUES ($1, $2, 1)
           ON CONFLICT (series, year) DO UPDATE SET last_value = number_series.last_value + 1
           RETURNING last_value""", series, year)
    return value


async def post_journal(conn: asyncpg.Connection, *, currency_code: str, description: str, source_type: str,
                       source_id: str, posted_by: str, lines: Sequence[domain.JournalLine],
                       party_type: str, party_id: str) -> UUID | None:
    """One balanced journal entry (the database re-checks the balance at commit)."""
    if not lines:
        return None
    entry_id: UUID = await conn.fetchval(
        """INSERT INTO journal_entries (currency, description, source_type, source_id, posted_by)
           VALUES ($1, $2, $3, $4, $5) RETURNING id""", currency_code, description, source_type, source_id, posted_by)
    await conn.executemany(
        "INSERT INTO journal_lines (entry_id, account_code, party_type, party_id, amount) VALUES ($1, $2, $3, $4, $5)",
        [(entry_id, account, party_type, party_id, amount) for account, amount in lines])
    await audit.append(conn, entity_type="journal_entry", entity_id=str(entry_id), action="posted", actor=posted_by,
                       after={"source_type": source_type, "source_id": source_id, "currency": currency_code,
                              "lines": [{"account": a, "amount": amt} for a, amt in lines]})
    METRICS.journal_entries.labels(source_type).inc()
    return entry_id


def _snapshot(row: asyncpg.Record, fields: Sequence[str]) -> dict[str, Any]:
    return {f: (str(row[f]) if isinstance(row[f], UUID) else row[f]) for f in fields}


_INV_FIELDS = ("status", "number", "total", "prepared_by", "approved_by", "issue_date", "due_date")
_ST_FIELDS = ("status", "number", "lines_total", "carried_in", "balance", "amount_payable", "carried_out", "prepared_by")


async def _locked(conn: asyncpg.Connection, table: str, doc_id: UUID, what: str) -> asyncpg.Record:
    # The audit chain head before the document: the consumer's batch transaction holds the head
    # while it locks drafts, so taking them in the other order could deadlock with it.
    await audit.lock_head(conn)
    row = await conn.fetchrow(f"SELECT * FROM {table} WHERE id = $1 FOR UPDATE", doc_id)
    if row is None:
        raise ApiError(404, f"{what} not found")
    return row


def _require_status(row: asyncpg.Record, allowed: Sequence[str], action: str, what: str) -> None:
    if row["status"] not in allowed:
        raise ApiError(409, f"cannot {action} a {row['status']} {what} (allowed from: {', '.join(allowed)})",
                       type_="https://tally.dev/problems/invalid-transition", status_now=row["status"])


def _four_eyes(row: asyncpg.Record, amount: Decimal, who: Principal, policy: Policy, what: str
               ) -> tuple[bool, str | None]:
    """(finalize now?, approver). Above the threshold the first finance user prepares, and a
    different finance user finalizes; the preparer cannot approve their own preparation."""
    if not domain.needs_second_approver(amount, policy.threshold(row["currency"])):
        return True, None
    if row["prepared_by"] is None:
        return False, None
    if row["prepared_by"] == who.subject:
        raise ApiError(403, f"this {what} is above the four-eyes threshold: a second finance user, not the preparer "
                            f"({row['prepared_by']}), must finalize it",
                       type_="https://tally.dev/problems/four-eyes")
    return True, who.subject


async def finalize_invoice(conn: asyncpg.Connection, invoice_id: UUID, who: Principal, policy: Policy
                           ) -> tuple[asyncpg.Record, bool]:
    """Finalize (or, above the four-eyes threshold, prepare). Returns (row, finalized?)."""
    async with conn.transaction():
        row = await _locked(conn, "invoices", invoice_id, "invoice")
        _require_status(row, ("draft",), "finalize", "invoice")
        lines = await conn.fetchval("SELECT count(*) FROM invoice_lines WHERE invoice_id = $1", invoice_id)
        if lines == 0:
            raise ApiError(409, "an invoice without lines cannot be finalized")
        now_final, approver = _four_eyes(row, row["total"], who, policy, "invoice")
        if not now_final:
            updated = await conn.fetchrow(
                "UPDATE invoices SET prepared_by = $2, prepared_at = now(), updated_at = now() WHERE id = $1 RETURNING *",
                invoice_id, who.subject)
            await audit.append(conn, entity_type="invoice", entity_id=str(invoice_id), action="prepared",
                               actor=who.subject, before=_snapshot(row, _INV_FIELDS), after=_snapshot(updated, _INV_FIELDS))
            METRICS.transitions.labels("invoice", "prepare").inc()
            return updated, False
        issue = today()
        seq = await next_number(conn, INVOICE_SERIES, issue.year)
        number = domain.document_number(INVOICE_SERIES, issue.year, seq)
        due = issue + timedelta(days=row["payment_terms_days"] or 0)
        updated = await conn.fetchrow(
            """UPDATE invoices SET status = 'finalized', number = $2, number_year = $3, number_seq = $4, issue_date = $5,
                   due_date = $6, finalized_by = $7, approved_by = $8, finalized_at = now(), updated_at = now(),
                   prepared_by = COALESCE(prepared_by, $7), prepared_at = COALESCE(prepared_at, now())
               WHERE id = $1 RETURNING *""",
            invoice_id, number, issue.year, seq, issue, due, who.subject, approver)
        await post_journal(conn, currency_code=row["currency"], description=f"Invoice {number}", source_type="invoice",
                           source_id=str(invoice_id), posted_by=who.subject, lines=domain.invoice_journal(row["total"]),
                           party_type="advertiser", party_id=row["advertiser_id"])
        await audit.append(conn, entity_type="invoice", entity_id=str(invoice_id), action="finalized", actor=who.subject,
                           tenant_type="advertiser", tenant_id=row["advertiser_id"],
                           before=_snapshot(row, _INV_FIELDS), after=_snapshot(updated, _INV_FIELDS))
    METRICS.transitions.labels("invoice", "finalize").inc()
    return updated, True


async def send_invoice(conn: asyncpg.Connection, invoice_id: UUID, who: Principal) -> asyncpg.Record:
    async with conn.transaction():
        row = await _locked(conn, "invoices", invoice_id, "invoice")
        _require_status(row, ("finalized",), "send", "invoice")
        updated = await conn.fetchrow(
            "UPDATE invoices SET status = 'sent', sent_by = $2, sent_at = now(), updated_at = now() WHERE id = $1 RETURNING *",
            invoice_id, who.subject)
        await audit.append(conn, entity_type="invoice", entity_id=str(invoice_id), action="sent", actor=who.subject,
                           before=_snapshot(row, _INV_FIELDS), after=_snapshot(updated, _INV_FIELDS))
    METRICS.transitions.labels("invoice", "send").inc()
    return updated


async def mark_invoice_paid(conn: asyncpg.Connection, invoice_id: UUID, who: Principal, reference: str | None
                            ) -> asyncpg.Record:
    async with conn.transaction():
        row = await _locked(conn, "invoices", invoice_id, "invoice")
        _require_status(row, ("finalized", "sent"), "mark paid", "invoice")
        updated = await conn.fetchrow(
            """UPDATE invoices SET status = 'paid', paid_by = $2, paid_at = now(), payment_reference = $3, updated_at = now()
               WHERE id = $1 RETURNING *""", invoice_id, who.subject, reference)
        await post_journal(conn, currency_code=row["currency"], description=f"Payment of invoice {row['number']}",
                           source_type="invoice_payment", source_id=str(invoice_id), posted_by=who.subject,
                           lines=domain.invoice_payment_journal(row["total"]), party_type="advertiser",
                           party_id=row["advertiser_id"])
        await audit.append(conn, entity_type="invoice", entity_id=str(invoice_id), action="paid", actor=who.subject,
                           before=_snapshot(row, _INV_FIELDS), after={**_snapshot(updated, _INV_FIELDS),
                                                                       "payment_reference": reference})
    METRICS.transitions.labels("invoice", "pay").inc()
    return updated


async def void_invoice(conn: asyncpg.Connection, invoice_id: UUID, who: Principal, reason: str) -> asyncpg.Record:
    """Void a finalized (or sent) invoice by issuing a credit note for its full amount; returns the note."""
    async with conn.transaction():
        row = await _locked(conn, "invoices", invoice_id, "invoice")
        _require_status(row, ("finalized", "sent"), "void", "invoice")
        issue = today()
        seq = await next_number(conn, CREDIT_NOTE_SERIES, issue.year)
        number = domain.document_number(CREDIT_NOTE_SERIES, issue.year, seq)
        note = await conn.fetchrow(
            """INSERT INTO credit_notes (invoice_id, advertiser_id, currency, number, number_year, number_seq, total,
                   reason, issue_date, created_by)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *""",
            invoice_id, row["advertiser_id"], row["currency"], number, issue.year, seq, -row["total"], reason, issue,
            who.subject)
        lines = await conn.fetch(
            "SELECT * FROM invoice_lines WHERE invoice_id = $1 ORDER BY line_no", invoice_id)
        await conn.executemany(
            """INSERT INTO credit_note_lines (credit_note_id, invoice_line_id, description, quantity, unit_price, amount,
                   position) VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            [(note["id"], ln["id"], f"Credit: {ln['description']}", ln["quantity"], ln["unit_price"], -ln["amount"], i)
             for i, ln in enumerate(lines, start=1)])
        updated = await conn.fetchrow(
            "UPDATE invoices SET status = 'void', voided_by = $2, voided_at = now(), updated_at = now() WHERE id = $1 RETURNING *",
            invoice_id, who.subject)
        await post_journal(conn, currency_code=row["currency"], description=f"Credit note {number} for invoice {row['number']}",
                           source_type="credit_note", source_id=str(note["id"]), posted_by=who.subject,
                           lines=domain.credit_note_journal(row["total"]), party_type="advertiser",
                           party_id=row["advertiser_id"])
        await audit.append(conn, entity_type="credit_note", entity_id=str(note["id"]), action="issued", actor=who.subject,
                           tenant_type="advertiser", tenant_id=row["advertiser_id"],
                           after={"number": number, "invoice_id": str(invoice_id), "total": note["total"], "reason": reason})
        await audit.append(conn, entity_type="invoice", entity_id=str(invoice_id), action="voided", actor=who.subject,
                           before=_snapshot(row, _INV_FIELDS),
                           after={**_snapshot(updated, _INV_FIELDS), "credit_note": number})
    METRICS.transitions.labels("invoice", "void").inc()
    return note


async def add_manual_credit(conn: asyncpg.Connection, who: Principal, *, corrects_line_id: UUID, amount: Decimal,
                            period_key: str, reason: str) -> asyncpg.Record:
    """A credit granted by finance: a negative adjustment line on the advertiser's open draft
    for ``period_key``, pointing at the finalized line it corrects."""
    async with conn.transaction():
        await audit.lock_head(conn)  # before the draft's lock, as in _locked
        original = await conn.fetchrow(
            """SELECT l.*, i.advertiser_id, i.currency, i.status AS invoice_status, i.period_key AS invoice_period_key
               FROM invoice_lines l
               JOIN invoices i ON i.id = l.invoice_id WHERE l.id = $1""", corrects_line_id)
        if original is None:
            raise ApiError(404, "invoice line not found")
        if original["invoice_status"] == "draft":
            raise ApiError(409, "a draft's lines are corrected before finalization, not credited")
        cur = currency(original["currency"])
        if amount <= 0 or not is_rounded(amount, cur):
            raise ApiError(422, "amount must be > 0 with at most the currency's minor-unit decimals",
                           errors=[{"field": "amount", "message": f"must be > 0 with at most {cur.minor_unit} decimals"}])
        credit = round_to_minor(amount, cur)  # whole minor units already: only the currency's spelling
        if original["amount"] > 0 and credit > original["amount"]:
            raise ApiError(422, "a manual credit cannot exceed the line it corrects",
                           errors=[{"field": "amount", "message": f"must be ≤ {original['amount']}"}])
        inv = await draft_invoice(conn, original["advertiser_id"], cur.code, period_key, who.subject)
        line = await conn.fetchrow(
            """INSERT INTO invoice_lines (invoice_id, contract_id, kind, adjustment_kind, description, contract_version,
                   price_point, event_type, quantity, unit, unit_price, amount_exact, amount, corrects_period_key,
                   corrects_invoice_id, corrects_line_id, created_by)
               VALUES ($1, $2, 'adjustment', 'manual_credit', $3, $4, $5, $6, 1, 'per_unit', $7, $7, $7, $8, $9, $10, $11)
               RETURNING *""",
            inv["id"], original["contract_id"], f"Manual credit: {reason}", original["contract_version"],
            original["price_point"], original["event_type"], -credit, original["invoice_period_key"],
            original["invoice_id"], corrects_line_id, who.subject)
        total = await refresh_invoice_total(conn, inv["id"])
        await audit.append(conn, entity_type="invoice", entity_id=str(inv["id"]), action="manual_credit_added",
                           actor=who.subject, tenant_type="advertiser", tenant_id=original["advertiser_id"],
                           before={"total": inv["total"]},
                           after={"total": total, "line_id": str(line["id"]), "amount": -credit,
                                  "corrects_line_id": str(corrects_line_id), "reason": reason})
    METRICS.transitions.labels("invoice", "manual_credit").inc()
    return line


# ------------------------------------------------------------------ payout statements


async def finalize_statement(conn: asyncpg.Connection, statement_id: UUID, who: Principal, policy: Policy
                             ) -> tuple[asyncpg.Record, bool]:
    async with conn.transaction():
        row = await _locked(conn, "payout_statements", statement_id, "payout statement")
        _require_status(row, ("draft",), "finalize", "payout statement")
        # The carry-forward: the latest finalized statement of this partner and currency whose
        # balance was carried and not yet taken by another statement.
        carry = await conn.fetchrow(
            """SELECT id, carried_out FROM payout_statements s
               WHERE partner_id = $1 AND currency = $2 AND status <> 'draft' AND carried_out <> 0
                 AND NOT EXISTS (SELECT 1 FROM payout_statements n WHERE n.carried_in_from = s.id)
               ORDER BY finalized_at DESC LIMIT 1 FOR UPDATE""", row["partner_id"], row["currency"])
        carried_in = carry["carried_out"] if carry else domain.ZERO
        settlement = domain.settle_payout(carried_in, row["lines_total"], policy.min_payout(row["currency"]))
        now_final, approver = _four_eyes(row, row["lines_total"], who, policy, "payout statement")
        if not now_final:
            updated = await conn.fetchrow(
                "UPDATE payout_statements SET prepared_by = $2, prepared_at = now() WHERE id = $1 RETURNING *",
                statement_id, who.subject)
            await audit.append(conn, entity_type="payout_statement", entity_id=str(statement_id), action="prepared",
                               actor=who.subject, before=_snapshot(row, _ST_FIELDS), after=_snapshot(updated, _ST_FIELDS))
            return updated, False
        issue = today()
        seq = await next_number(conn, STATEMENT_SERIES, issue.year)
        number = domain.document_number(STATEMENT_SERIES, issue.year, seq)
        updated = await conn.fetchrow(
            """UPDATE payout_statements SET status = 'finalized', number = $2, number_year = $3, number_seq = $4,
                   issue_date = $5, carried_in = $6, carried_in_from = $7, balance = $8, minimum_payout = $9,
                   amount_payable = $10, carried_out = $11, finalized_by = $12, approved_by = $13, finalized_at = now(),
                   prepared_by = COALESCE(prepared_by, $12), prepared_at = COALESCE(prepared_at, now()), updated_at = now()
               WHERE id = $1 RETURNING *""",
            statement_id, number, issue.year, seq, issue, settlement.carried_in, carry["id"] if carry else None,
            settlement.balance, policy.min_payout(row["currency"]), settlement.amount_payable, settlement.carried_out,
            who.subject, approver)
        await post_journal(conn, currency_code=row["currency"], description=f"Payout statement {number}",
                           source_type="payout_statement", source_id=str(statement_id), posted_by=who.subject,
                           lines=domain.statement_journal(row["lines_total"]), party_type="partner",
                           party_id=row["partner_id"])
        await audit.append(conn, entity_type="payout_statement", entity_id=str(statement_id), action="finalized",
                           actor=who.subject, tenant_type="partner", tenant_id=row["partner_id"],
                           before=_snapshot(row, _ST_FIELDS), after=_snapshot(updated, _ST_FIELDS))
    METRICS.transitions.labels("payout_statement", "finalize").inc()
    return updated, True


async def send_statement(conn: asyncpg.Connection, statement_id: UUID, who: Principal) -> asyncpg.Record:
    async with conn.transaction():
        row = await _locked(conn, "payout_statements", statement_id, "payout statement")
        _require_status(row, ("finalized",), "send", "payout statement")
        updated = await conn.fetchrow(
            "UPDATE payout_statements SET status = 'sent', sent_by = $2, sent_at = now() WHERE id = $1 RETURNING *",
            statement_id, who.subject)
        await audit.append(conn, entity_type="payout_statement", entity_id=str(statement_id), action="sent",
                           actor=who.subject, before=_snapshot(row, _ST_FIELDS), after=_snapshot(updated, _ST_FIELDS))
    METRICS.transitions.labels("payout_statement", "send").inc()
    return updated


async def mark_statement_paid(conn: asyncpg.Connection, statement_id: UUID, who: Principal, reference: str | None
                              ) -> asyncpg.Record:
    async with conn.transaction():
        row = await _locked(conn, "payout_statements", statement_id, "payout statement")
        _require_status(row, ("finalized", "sent"), "mark paid", "payout statement")
        if row["amount_payable"] == 0:
            raise ApiError(409, "nothing is payable on this statement: its balance was carried forward")
        updated = await conn.fetchrow(
            """UPDATE payout_statements SET status = 'paid', paid_by = $2, paid_at = now(), payment_reference = $3
               WHERE id = $1 RETURNING *""", statement_id, who.subject, reference)
        await post_journal(conn, currency_code=row["currency"], description=f"Payout of statement {row['number']}",
                           source_type="payout_payment", source_id=str(statement_id), posted_by=who.subject,
                           lines=domain.payout_payment_journal(row["amount_payable"]), party_type="partner",
                           party_id=row["partner_id"])
        await audit.append(conn, entity_type="payout_statement", entity_id=str(statement_id), action="paid",
                           actor=who.subject, before=_snapshot(row, _ST_FIELDS),
                           after={**_snapshot(updated, _ST_FIELDS), "payment_reference": reference})
    METRICS.transitions.labels("payout_statement", "pay").inc()
    return updated
