"""Data access of the invoicing API and the document lifecycle: every query the HTTP handlers
and ``lifecycle`` need, invoices and payout statements through one set of functions driven by
their :class:`~tally_invoicing.domain.DocumentKind` (the table names come from there, never
from a request). Each function runs on the caller's connection and transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from tally_kit import audit
from tally_kit.db import like_literal

from .domain import DocumentKind

#: what a list can be of: documents, and credit notes (which have no lifecycle)
LISTABLE = frozenset({"invoices", "payout_statements", "credit_notes"})


# ------------------------------------------------------------------ documents and their lines


async def document(conn: asyncpg.Connection, kind: DocumentKind, doc_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT * FROM {kind.table} WHERE id = $1", doc_id)


async def locked(conn: asyncpg.Connection, kind: DocumentKind, doc_id: UUID) -> asyncpg.Record | None:
    """The document under its row lock, taken after the audit chain head's: the consumer's batch
    transaction holds the head while it locks drafts, so the other order could deadlock with it."""
    await audit.lock_head(conn)
    return await conn.fetchrow(f"SELECT * FROM {kind.table} WHERE id = $1 FOR UPDATE", doc_id)


async def lines(conn: asyncpg.Connection, kind: DocumentKind, doc_id: UUID) -> list[asyncpg.Record]:
    return await conn.fetch(f"SELECT * FROM {kind.lines_table} WHERE {kind.line_fk} = $1 ORDER BY line_no", doc_id)


async def line_count(conn: asyncpg.Connection, kind: DocumentKind, doc_id: UUID) -> int:
    return int(await conn.fetchval(f"SELECT count(*) FROM {kind.lines_table} WHERE {kind.line_fk} = $1", doc_id))


async def line_of(conn: asyncpg.Connection, kind: DocumentKind, doc_id: UUID, line_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT * FROM {kind.lines_table} WHERE id = $1 AND {kind.line_fk} = $2",
                               line_id, doc_id)


async def history(conn: asyncpg.Connection, kind: DocumentKind, doc_id: UUID) -> list[audit.AuditEntry]:
    return await audit.entries_for(conn, kind.name, str(doc_id), limit=200)


async def close_of(conn: asyncpg.Connection, close_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """SELECT close_id, contract_id, period_key, closed_at, source_offsets, kafka_topic, kafka_partition,
                  kafka_offset FROM period_closes WHERE close_id = $1""", close_id)


async def adjustments_on(conn: asyncpg.Connection, kind: DocumentKind, line_id: UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"""SELECT adjustment_id, kind, corrects_period_key, amount_exact, partner_payout_exact, kafka_topic,
                   kafka_partition, kafka_offset, record->>'source_event_id' AS source_event_id,
                   record->>'source_topic' AS source_topic, record->'source_partition' AS source_partition,
                   record->'source_offset' AS source_offset
            FROM adjustments WHERE {kind.adjustment_line_col} = $1 ORDER BY applied_at, adjustment_id""", line_id)


# ------------------------------------------------------------------ credit notes


async def credit_note(conn: asyncpg.Connection, note_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM credit_notes WHERE id = $1", note_id)


async def credit_note_of(conn: asyncpg.Connection, invoice_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT id, number FROM credit_notes WHERE invoice_id = $1", invoice_id)


async def credit_note_lines(conn: asyncpg.Connection, note_id: UUID) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM credit_note_lines WHERE credit_note_id = $1 ORDER BY position", note_id)


async def add_credit_note(conn: asyncpg.Connection, invoice: asyncpg.Record, *, number: str, year: int, seq: int,
                          reason: str, issue_date: date, by: str) -> asyncpg.Record:
    """The full credit note of ``invoice``: its total, negated."""
    row: asyncpg.Record = await conn.fetchrow(
        """INSERT INTO credit_notes (invoice_id, advertiser_id, currency, number, number_year, number_seq, total,
               reason, issue_date, created_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *""",
        invoice["id"], invoice["advertiser_id"], invoice["currency"], number, year, seq, -invoice["total"], reason,
        issue_date, by)
    return row


async def add_credit_note_lines(conn: asyncpg.Connection, note_id: UUID, invoice_lines: Sequence[asyncpg.Record]
                                ) -> None:
    """One credit line per invoice line, in order, each its line's amount negated."""
    await conn.executemany(
        """INSERT INTO credit_note_lines (credit_note_id, invoice_line_id, description, quantity, unit_price, amount,
               position) VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        [(note_id, ln["id"], f"Credit: {ln['description']}", ln["quantity"], ln["unit_price"], -ln["amount"], i)
         for i, ln in enumerate(invoice_lines, start=1)])


async def invoiced_line(conn: asyncpg.Connection, line_id: UUID) -> asyncpg.Record | None:
    """An invoice line with its invoice's advertiser, currency, status and period."""
    return await conn.fetchrow(
        """SELECT l.*, i.advertiser_id, i.currency, i.status AS invoice_status, i.period_key AS invoice_period_key
           FROM invoice_lines l
           JOIN invoices i ON i.id = l.invoice_id WHERE l.id = $1""", line_id)


async def add_manual_credit_line(conn: asyncpg.Connection, invoice_id: UUID, original: asyncpg.Record, *,
                                 credit: Decimal, reason: str, by: str) -> asyncpg.Record:
    """A manual credit of ``credit`` (> 0) on the draft ``invoice_id``, correcting ``original``
    (an ``invoiced_line``)."""
    row: asyncpg.Record = await conn.fetchrow(
        """INSERT INTO invoice_lines (invoice_id, contract_id, kind, adjustment_kind, description, contract_version,
               price_point, event_type, quantity, unit, unit_price, amount_exact, amount, corrects_period_key,
               corrects_invoice_id, corrects_line_id, created_by)
           VALUES ($1, $2, 'adjustment', 'manual_credit', $3, $4, $5, $6, 1, 'per_unit', $7, $7, $7, $8, $9, $10, $11)
           RETURNING *""",
        invoice_id, original["contract_id"], f"Manual credit: {reason}", original["contract_version"],
        original["price_point"], original["event_type"], -credit, original["invoice_period_key"],
        original["invoice_id"], original["id"], by)
    return row


async def invoice_number(conn: asyncpg.Connection, invoice_id: UUID) -> str | None:
    number: str | None = await conn.fetchval("SELECT number FROM invoices WHERE id = $1", invoice_id)
    return number


# ------------------------------------------------------------------ lists


async def list_page(conn: asyncpg.Connection, table: str, equal: Sequence[tuple[str, Any]],
                    after: tuple[datetime, UUID], limit: int, *, prefix: Sequence[tuple[str, str]] = ()
                    ) -> list[asyncpg.Record]:
    """Up to ``limit + 1`` rows of ``table`` after the cursor ``(created_at, id)``, where every
    ``(column, value)`` of ``equal`` holds and every ``(column, start)`` of ``prefix`` is a text
    column starting with ``start`` (columns are the caller's constants)."""
    assert table in LISTABLE
    args: list[Any] = []
    where = []
    for col, value in equal:
        args.append(value)
        where.append(f"{col} = ${len(args)}")
    for col, start in prefix:
        args.append(like_literal(start) + "%")
        where.append(f"{col} LIKE ${len(args)}")
    args += [after[0], after[1]]
    where.append(f"(created_at, id) > (${len(args) - 1}, ${len(args)})")
    args.append(limit + 1)
    sql = f"SELECT * FROM {table} WHERE {' AND '.join(where)} ORDER BY created_at, id LIMIT ${len(args)}"
    return await conn.fetch(sql, *args)


# ------------------------------------------------------------------ ledger and rejected records


#: the account balance filters: query parameter → column
BALANCE_FILTERS = (("currency", "e.currency"), ("party_id", "l.party_id"), ("account", "l.account_code"))


async def account_balances(conn: asyncpg.Connection, filters: Mapping[str, str], *, by_party: bool
                           ) -> list[asyncpg.Record]:
    args: list[Any] = []
    where = ["true"]
    for q, col in BALANCE_FILTERS:
        if filters.get(q):
            args.append(filters[q])
            where.append(f"{col} = ${len(args)}")
    party_cols = ", l.party_type, l.party_id" if by_party else ""
    return await conn.fetch(
        f"""SELECT a.code, a.name, a.kind, e.currency{party_cols},
                   SUM(CASE WHEN l.amount > 0 THEN l.amount ELSE 0 END) AS debits,
                   SUM(CASE WHEN l.amount < 0 THEN -l.amount ELSE 0 END) AS credits,
                   SUM(l.amount) AS balance
            FROM journal_lines l JOIN journal_entries e ON e.id = l.entry_id
            JOIN ledger_accounts a ON a.code = l.account_code
            WHERE {' AND '.join(where)}
            GROUP BY a.code, a.name, a.kind, e.currency{party_cols} ORDER BY a.code, e.currency{party_cols}""", *args)


async def trial_balance(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT e.currency, a.code, a.name, a.kind,
                  SUM(CASE WHEN l.amount > 0 THEN l.amount ELSE 0 END) AS debits,
                  SUM(CASE WHEN l.amount < 0 THEN -l.amount ELSE 0 END) AS credits
           FROM journal_lines l JOIN journal_entries e ON e.id = l.entry_id
           JOIN ledger_accounts a ON a.code = l.account_code
           GROUP BY e.currency, a.code, a.name, a.kind ORDER BY e.currency, a.code""")


async def journal_entries(conn: asyncpg.Connection, after_entry_no: int, source_id: str | None, limit: int
                          ) -> list[asyncpg.Record]:
    """Up to ``limit + 1`` entries after ``after_entry_no``, of one source when ``source_id``."""
    args: list[Any] = [after_entry_no]
    extra = ""
    if source_id:
        args.append(source_id)
        extra = f" AND source_id = ${len(args)}"
    args.append(limit + 1)
    return await conn.fetch(
        f"SELECT * FROM journal_entries WHERE entry_no > $1{extra} ORDER BY entry_no LIMIT ${len(args)}", *args)


async def journal_lines(conn: asyncpg.Connection, entry_id: UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT account_code, party_type, party_id, amount FROM journal_lines WHERE entry_id = $1 ORDER BY id", entry_id)


async def rejected_records(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT kafka_topic, kafka_partition, kafka_offset, natural_key, error_kind, reason, rejected_at
           FROM rejected_records ORDER BY rejected_at DESC LIMIT 500""")


# ------------------------------------------------------------------ lifecycle writes


async def next_number(conn: asyncpg.Connection, series: str, year: int) -> int:
    """The next number of ``series`` in ``year``. The counter row stays locked until the
    calling transaction ends: concurrent finalizations queue here, and a rollback gives the
    number back, so the series has no gap and no duplicate."""
    value: int = await conn.fetchval(
        """INSERT INTO number_series (series, year, last_value) VALUES ($1, $2, 1)
           ON CONFLICT (series, year) DO UPDATE SET last_value = number_series.last_value + 1
           RETURNING last_value""", series, year)
    return value


async def prepare(conn: asyncpg.Connection, kind: DocumentKind, doc_id: UUID, by: str) -> asyncpg.Record:
    """The first of the four eyes: who prepared it, and when."""
    row: asyncpg.Record = await conn.fetchrow(
        f"UPDATE {kind.table} SET prepared_by = $2, prepared_at = now(), updated_at = now() WHERE id = $1 RETURNING *",
        doc_id, by)
    return row


async def finalize(conn: asyncpg.Connection, kind: DocumentKind, doc_id: UUID, *, number: str, year: int, seq: int,
                   issue_date: date, by: str, approver: str | None, extra: Mapping[str, Any]) -> asyncpg.Record:
    """Status finalized with its number and issue date; ``extra`` are the kind's own columns
    (an invoice's due date, a statement's settlement)."""
    cols = list(extra)
    sets = "".join(f", {col} = ${i}" for i, col in enumerate(cols, start=8))
    row: asyncpg.Record = await conn.fetchrow(
        f"""UPDATE {kind.table} SET status = 'finalized', number = $2, number_year = $3, number_seq = $4,
                issue_date = $5, finalized_by = $6, approved_by = $7, finalized_at = now(), updated_at = now(),
                prepared_by = COALESCE(prepared_by, $6), prepared_at = COALESCE(prepared_at, now()){sets}
            WHERE id = $1 RETURNING *""",
        doc_id, number, year, seq, issue_date, by, approver, *(extra[c] for c in cols))
    return row


#: the status a transition sets → the prefix of its ``…_by`` / ``…_at`` columns
STAMPS = {"sent": "sent", "paid": "paid", "void": "voided"}


async def mark(conn: asyncpg.Connection, kind: DocumentKind, doc_id: UUID, status: str, by: str,
               **columns: Any) -> asyncpg.Record:
    """Set ``status`` with who and when (``STAMPS``), and the transition's own ``columns``."""
    stamp = STAMPS[status]
    names = list(columns)
    sets = "".join(f", {col} = ${i}" for i, col in enumerate(names, start=4))
    row: asyncpg.Record = await conn.fetchrow(
        f"""UPDATE {kind.table} SET status = $2, {stamp}_by = $3, {stamp}_at = now(), updated_at = now(){sets}
            WHERE id = $1 RETURNING *""", doc_id, status, by, *(columns[c] for c in names))
    return row


async def carry_forward_source(conn: asyncpg.Connection, partner_id: str, currency_code: str) -> asyncpg.Record | None:
    """The latest finalized statement of this partner and currency whose balance was carried and
    not yet taken by another statement (locked: one statement takes it)."""
    return await conn.fetchrow(
        """SELECT id, carried_out FROM payout_statements s
           WHERE partner_id = $1 AND currency = $2 AND status <> 'draft' AND carried_out <> 0
             AND NOT EXISTS (SELECT 1 FROM payout_statements n WHERE n.carried_in_from = s.id)
           ORDER BY finalized_at DESC LIMIT 1 FOR UPDATE""", partner_id, currency_code)


async def add_journal_entry(conn: asyncpg.Connection, *, currency_code: str, description: str, source_type: str,
                            source_id: str, posted_by: str, lines: Sequence[tuple[str, Decimal]], party_type: str,
                            party_id: str) -> UUID:
    entry_id: UUID = await conn.fetchval(
        """INSERT INTO journal_entries (currency, description, source_type, source_id, posted_by)
           VALUES ($1, $2, $3, $4, $5) RETURNING id""", currency_code, description, source_type, source_id, posted_by)
    await conn.executemany(
        "INSERT INTO journal_lines (entry_id, account_code, party_type, party_id, amount) VALUES ($1, $2, $3, $4, $5)",
        [(entry_id, account, party_type, party_id, amount) for account, amount in lines])
    return entry_id
