"""Apply consumed records to the database, idempotently.

Each record is applied atomically, keyed by its natural key (``close_id``,
``adjustment_id``): the first application inserts the key together with its lines, a replay
finds the key and changes nothing. Called alone, a record gets a transaction of its own; the
consumer calls it inside the transaction of the whole polled batch instead (see
``consumer.py``), and counts the returned outcome once that transaction committed.
Lines land on the open draft of their (advertiser, currency, period) invoice or (partner,
currency, period) statement; when that period's document was already finalized, a
supplementary draft for the same period is started. Their amounts come from
``tally_billing.invoice_lines`` (each line, and each set of adjustments sharing a line, rounded
once); this module only stores them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from tally_billing.invoice_lines import PAYOUT, SHORTFALL, BilledPeriod, invoice_line, statement_line, sum_lines, sum_payouts
from tally_billing.money import currency
from tally_kit import audit
from tally_streams.records import AdjustmentRecord, PeriodClosedRecord

from . import domain
from .domain import INVOICE, STATEMENT, DocumentKind

log = logging.getLogger("tally.invoicing.apply")

SYSTEM_ACTOR = "system:invoicing-consumer"


def _atomic(conn: asyncpg.Connection) -> contextlib.AbstractAsyncContextManager[Any]:
    """A transaction of its own when called alone; inside a caller's transaction (the consumer's
    batch) nothing more: the caller owns atomicity there, and SAVEPOINTs only when it needs them."""
    return contextlib.nullcontext() if conn.is_in_transaction() else conn.transaction()


@dataclass(frozen=True)
class Source:
    """Where a consumed record came from."""

    topic: str
    partition: int
    offset: int


async def draft(
    conn: asyncpg.Connection, kind: DocumentKind, party_id: str, currency_code: str, period_key: str, actor: str,
) -> asyncpg.Record:
    """The open draft invoice (advertiser, currency, period) or statement (partner, currency,
    period), locked; created when missing."""
    for _ in range(5):
        row = await conn.fetchrow(
            f"""SELECT * FROM {kind.table} WHERE {kind.party_col} = $1 AND currency = $2 AND period_key = $3
                AND status = 'draft' FOR UPDATE""", party_id, currency_code, period_key)
        if row is not None:
            return row
        # "supplementary": the period already has a finalized (non-draft) document
        row = await conn.fetchrow(
            f"""INSERT INTO {kind.table} ({kind.party_col}, currency, period_key) VALUES ($1, $2, $3)
                ON CONFLICT ({kind.party_col}, currency, period_key) WHERE status = 'draft' DO NOTHING
                RETURNING *, EXISTS (SELECT 1 FROM {kind.table} WHERE {kind.party_col} = $1 AND currency = $2
                                     AND period_key = $3 AND status <> 'draft') AS supplementary""",
            party_id, currency_code, period_key)
        if row is not None:
            after: dict[str, Any] = {"status": "draft", kind.party_col: party_id, "currency": currency_code,
                                     "period_key": period_key}
            if kind.tracks_supplementary:
                after["supplementary"] = bool(row["supplementary"])
            await audit.append(conn, entity_type=kind.name, entity_id=str(row["id"]), action="created", actor=actor,
                               tenant_type=kind.party_type, tenant_id=party_id, after=after)
            return row
    raise RuntimeError(f"could not obtain a draft {kind.what} (concurrent finalizations kept winning)")


async def refresh_total(conn: asyncpg.Connection, kind: DocumentKind, doc_id: UUID) -> Decimal:
    """Total = sum of the rounded lines. Any change to a draft's lines withdraws a pending
    four-eyes preparation: what was looked at is no longer what would be finalized."""
    total: Decimal = await conn.fetchval(
        f"""UPDATE {kind.table} SET {kind.total_col} = (SELECT COALESCE(SUM(amount), 0) FROM {kind.lines_table}
                WHERE {kind.line_fk} = $1), prepared_by = NULL, prepared_at = NULL, updated_at = now()
            WHERE id = $1 RETURNING {kind.total_col}""", doc_id)
    return total


async def _reject(conn: asyncpg.Connection, src: Source, natural_key: str | None, kind: str, reason: str,
                  raw: bytes | None) -> None:
    await conn.execute(
        """INSERT INTO rejected_records (kafka_topic, kafka_partition, kafka_offset, natural_key, error_kind, reason, raw)
           VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING""",
        src.topic, src.partition, src.offset, natural_key, kind, reason, raw)
    log.warning("record rejected", extra={"topic": src.topic, "partition": src.partition, "offset": src.offset,
                                          "natural_key": natural_key, "reason": reason})


async def reject_undecodable(conn: asyncpg.Connection, src: Source, kind: str, reason: str, raw: bytes | None) -> None:
    await _reject(conn, src, None, kind, reason, raw)


async def reject_unstorable(conn: asyncpg.Connection, src: Source, exc: asyncpg.PostgresError, raw: bytes | None) -> None:
    """A decoded, valid-looking record the database refused (e.g. a NUL character in a text
    field, a value out of range): kept with its raw bytes and PostgreSQL's reason. The natural
    key is left out because it may be the very value the database refused."""
    reason = f"{type(exc).__name__}: {exc}".replace("\x00", "\\x00")
    await _reject(conn, src, None, "database", reason, raw)


def _ts(v: Any) -> datetime:
    assert isinstance(v, datetime)
    return v


async def apply_period_closed(conn: asyncpg.Connection, rec: PeriodClosedRecord, src: Source) -> str:
    """Apply one closed period. Returns ``applied``, ``duplicate``, ``rejected`` or ``conflict``."""
    problems = domain.validate_close(rec)
    async with _atomic(conn):
        if problems:
            await _reject(conn, src, rec.get("close_id"), "invalid", "; ".join(problems), None)
            return "rejected"
        digest = domain.content_hash(rec)
        inserted = await conn.fetchval(
            """INSERT INTO period_closes (close_id, contract_id, advertiser_id, contract_type, currency, time_zone,
                   period_kind, period_key, period_start, period_end, closed_at, content_hash, record, source_offsets,
                   kafka_topic, kafka_partition, kafka_offset)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
               ON CONFLICT (close_id) DO NOTHING RETURNING true""",
            rec["close_id"], rec["contract_id"], rec["advertiser_id"], rec["contract_type"], rec["currency"],
            rec["time_zone"], rec["period_kind"], rec["period_key"], _ts(rec["period_start"]), _ts(rec["period_end"]),
            _ts(rec["closed_at"]), digest, dict(rec), list(rec["source_offsets"]), src.topic, src.partition, src.offset)
        if not inserted:
            return await _duplicate(conn, "period_closes", "close_id", rec["close_id"], digest, src)
        cur = currency(rec["currency"])
        billed = domain.close_lines(rec)
        rows = _invoice_rows(billed, cur.code)
        if rows:
            inv = await draft(conn, INVOICE, rec["advertiser_id"], cur.code, rec["period_key"], SYSTEM_ACTOR)
            await conn.executemany(
                """INSERT INTO invoice_lines (invoice_id, contract_id, kind, description, contract_version, price_point,
                       event_type, quantity, unit, unit_price, amount_exact, amount, close_id)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)""",
                [(inv["id"], rec["contract_id"], *row, rec["close_id"]) for row in rows])
            # refresh_total and the period, terms and PO of this close, in one statement
            total = await conn.fetchval(
                """UPDATE invoices SET period_start = LEAST(period_start, $2), period_end = GREATEST(period_end, $3),
                       payment_terms_days = LEAST(payment_terms_days, $4),
                       po_references = CASE WHEN $5::text IS NULL OR $5 = ANY(po_references) THEN po_references
                                            ELSE array_append(po_references, $5) END,
                       total = (SELECT COALESCE(SUM(amount), 0) FROM invoice_lines WHERE invoice_id = $1),
                       prepared_by = NULL, prepared_at = NULL, updated_at = now()
                   WHERE id = $1 RETURNING total""",
                inv["id"], _ts(rec["period_start"]), _ts(rec["period_end"]), rec["payment_terms_days"],
                rec.get("po_reference"))
            await audit.append(conn, entity_type="invoice", entity_id=str(inv["id"]), action="lines_added",
                               actor=SYSTEM_ACTOR, tenant_type="advertiser", tenant_id=rec["advertiser_id"],
                               before={"total": inv["total"]},
                               after={"total": total, "close_id": rec["close_id"], "lines": len(rows),
                                      "source": f"{src.topic}[{src.partition}]@{src.offset}"})
        for partner_id, plines in sorted(billed.payouts_by_partner().items()):
            st = await draft(conn, STATEMENT, partner_id, cur.code, rec["period_key"], SYSTEM_ACTOR)
            await conn.executemany(
                """INSERT INTO statement_lines (statement_id, contract_id, advertiser_id, kind, description,
                       contract_version, event_type, quantity, amount_exact, amount, close_id)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
                [(st["id"], rec["contract_id"], rec["advertiser_id"], PAYOUT, domain.payout_description(ln.payout, rec),
                  ln.payout.contract_version, ln.payout.event_type, ln.payout.quantity, ln.payout.amount_exact, ln.amount,
                  rec["close_id"]) for ln in plines])
            total = await refresh_total(conn, STATEMENT, st["id"])
            await audit.append(conn, entity_type="payout_statement", entity_id=str(st["id"]), action="lines_added",
                               actor=SYSTEM_ACTOR, tenant_type="partner", tenant_id=partner_id,
                               before={"lines_total": st["lines_total"]},
                               after={"lines_total": total, "close_id": rec["close_id"], "lines": len(plines)})
    return "applied"


def _invoice_rows(billed: BilledPeriod, cur_code: str) -> list[tuple[Any, ...]]:
    """The ``invoice_lines`` columns kind … amount of a closed period's lines and its shortfall."""
    rows: list[tuple[Any, ...]] = [
        (b.line.line_type, domain.line_description(b.line, cur_code), b.line.contract_version, b.line.price_point,
         b.line.event_type, b.line.quantity, b.line.unit, b.line.unit_price, b.line.amount_exact, b.amount)
        for b in billed.lines]
    s = billed.shortfall
    if s is not None:
        rows.append((SHORTFALL, domain.shortfall_description(s, cur_code), None, None, None, 1, "per_unit",
                     s.amount_exact, s.amount_exact, s.amount))
    return rows


async def _duplicate(conn: asyncpg.Connection, table: str, key_col: str, key: str, digest: str, src: Source) -> str:
    stored = await conn.fetchval(f"SELECT content_hash FROM {table} WHERE {key_col} = $1", key)
    if stored != digest:
        # Same natural key, different content: the first version stands (it may already be on
        # a finalized invoice); the conflicting record is kept for finance to look at.
        await _reject(conn, src, key, "conflict", f"{key_col} {key} was already applied with different content", None)
        return "conflict"
    return "duplicate"


async def _corrected_invoice_line(conn: asyncpg.Connection, adj: Mapping[str, Any]) -> asyncpg.Record | None:
    """The original line an adjustment corrects: same contract, corrected period and price point."""
    return await conn.fetchrow(
        """SELECT l.id, l.invoice_id FROM invoice_lines l
           WHERE l.close_id = $1 AND l.contract_version = $2 AND l.price_point = $3
           ORDER BY l.created_at LIMIT 1""",
        f"{adj['contract_id']}/{adj['corrects_period_key']}", adj["contract_version"], adj["price_point"])


async def _corrected_statement_line(conn: asyncpg.Connection, adj: Mapping[str, Any]) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """SELECT l.id, l.statement_id FROM statement_lines l JOIN payout_statements s ON s.id = l.statement_id
           WHERE l.close_id = $1 AND l.contract_version = $2 AND l.event_type IS NOT DISTINCT FROM $3
             AND s.partner_id = $4 ORDER BY l.created_at LIMIT 1""",
        f"{adj['contract_id']}/{adj['corrects_period_key']}", adj["contract_version"], adj.get("event_type"),
        adj["partner_id"])


async def _aggregated_line(conn: asyncpg.Connection, kind: DocumentKind, doc_id: UUID, key: str
                           ) -> asyncpg.Record | None:
    """The draft's adjustment line of ``key``, locked: adjustments sharing a key share one line."""
    return await conn.fetchrow(
        f"SELECT id, quantity, amount_exact FROM {kind.lines_table} WHERE {kind.line_fk} = $1 AND aggregation_key = $2 "
        "FOR UPDATE", doc_id, key)


async def _set_line_amounts(conn: asyncpg.Connection, kind: DocumentKind, line_id: UUID, quantity: int,
                            amount_exact: Decimal, amount: Decimal) -> None:
    await conn.execute(f"UPDATE {kind.lines_table} SET quantity = $2, amount_exact = $3, amount = $4 WHERE id = $1",
                       line_id, quantity, amount_exact, amount)


async def _landed_on(conn: asyncpg.Connection, kind: DocumentKind, adjustment_id: str, line_id: UUID) -> None:
    """Record the line the adjustment landed on (its lineage)."""
    await conn.execute(f"UPDATE adjustments SET {kind.adjustment_line_col} = $2 WHERE adjustment_id = $1",
                       adjustment_id, line_id)


async def _adjustment_landed(conn: asyncpg.Connection, kind: DocumentKind, doc: Mapping[str, Any],
                             adj: Mapping[str, Any], line_id: UUID, after: dict[str, Any]) -> None:
    """The end of applying an adjustment to one draft: its lineage, the new total, and the audit
    entry (the total before, then the total after followed by ``after``)."""
    await _landed_on(conn, kind, adj["adjustment_id"], line_id)
    total = await refresh_total(conn, kind, doc["id"])
    await audit.append(conn, entity_type=kind.name, entity_id=str(doc["id"]), action="adjustment_applied",
                       actor=SYSTEM_ACTOR, tenant_type=kind.party_type, tenant_id=adj[kind.party_col],
                       before={kind.total_col: doc[kind.total_col]}, after={kind.total_col: total, **after})


async def apply_adjustment(conn: asyncpg.Connection, adj: AdjustmentRecord, src: Source) -> str:
    """Apply one adjustment to the draft invoice (and statement) of its open period. Returns
    ``applied``, ``duplicate``, ``rejected`` or ``conflict``."""
    problems = domain.validate_adjustment(adj)
    async with _atomic(conn):
        if problems:
            await _reject(conn, src, adj.get("adjustment_id"), "invalid", "; ".join(problems), None)
            return "rejected"
        digest = domain.content_hash(adj)
        inserted = await conn.fetchval(
            """INSERT INTO adjustments (adjustment_id, kind, contract_id, advertiser_id, partner_id, currency,
                   corrects_period_key, applies_to_period_key, amount_exact, partner_payout_exact, content_hash, record,
                   kafka_topic, kafka_partition, kafka_offset)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
               ON CONFLICT (adjustment_id) DO NOTHING RETURNING true""",
            adj["adjustment_id"], adj["kind"], adj["contract_id"], adj["advertiser_id"], adj.get("partner_id"),
            adj["currency"], adj["corrects_period_key"], adj["applies_to_period_key"], adj["amount_exact"],
            adj.get("partner_payout_exact"), digest, dict(adj), src.topic, src.partition, src.offset)
        if not inserted:
            return await _duplicate(conn, "adjustments", "adjustment_id", adj["adjustment_id"], digest, src)
        cur = currency(adj["currency"])
        inv = await draft(conn, INVOICE, adj["advertiser_id"], cur.code, adj["applies_to_period_key"], SYSTEM_ACTOR)
        corrected = await _corrected_invoice_line(conn, adj)
        key = domain.adjustment_aggregation_key(adj)
        line = await _aggregated_line(conn, INVOICE, inv["id"], key)
        delta = domain.adjustment_line(adj)
        if line is None:
            billed = invoice_line(delta, cur)
            line_id = await conn.fetchval(
                """INSERT INTO invoice_lines (invoice_id, contract_id, kind, adjustment_kind, description, contract_version,
                       price_point, event_type, quantity, unit, unit_price, amount_exact, amount, corrects_period_key,
                       corrects_invoice_id, corrects_line_id, aggregation_key)
                   VALUES ($1, $2, 'adjustment', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
                   RETURNING id""",
                inv["id"], adj["contract_id"], adj["kind"], domain.adjustment_description(adj), adj["contract_version"],
                adj["price_point"], adj.get("event_type"), billed.line.quantity, adj["unit"], adj["unit_price"],
                billed.line.amount_exact, billed.amount, adj["corrects_period_key"], corrected["invoice_id"] if corrected else None,
                corrected["id"] if corrected else None, key)
        else:
            # one line per aggregation key: the adjustments on it are summed exactly and rounded once
            so_far = replace(delta, quantity=line["quantity"], amount_exact=line["amount_exact"])
            billed = invoice_line(sum_lines([so_far, delta]), cur)
            line_id = line["id"]
            await _set_line_amounts(conn, INVOICE, line_id, billed.line.quantity, billed.line.amount_exact, billed.amount)
        await _adjustment_landed(conn, INVOICE, inv, adj, line_id,
                                 {"adjustment_id": adj["adjustment_id"], "kind": adj["kind"], "line_id": str(line_id),
                                  "source": f"{src.topic}[{src.partition}]@{src.offset}"})
        if adj.get("partner_payout_exact") is not None and adj.get("partner_id"):
            await _apply_statement_adjustment(conn, adj, cur.code)
    return "applied"


async def _apply_statement_adjustment(conn: asyncpg.Connection, adj: Mapping[str, Any], cur_code: str) -> None:
    cur = currency(cur_code)
    st = await draft(conn, STATEMENT, adj["partner_id"], cur_code, adj["applies_to_period_key"], SYSTEM_ACTOR)
    corrected = await _corrected_statement_line(conn, adj)
    key = domain.statement_aggregation_key(adj)
    line = await _aggregated_line(conn, STATEMENT, st["id"], key)
    delta = domain.adjustment_payout(adj)
    if line is None:
        paid = statement_line(delta, cur)
        line_id = await conn.fetchval(
            """INSERT INTO statement_lines (statement_id, contract_id, advertiser_id, kind, adjustment_kind, description,
                   contract_version, event_type, quantity, amount_exact, amount, corrects_period_key,
                   corrects_statement_id, corrects_line_id, aggregation_key)
               VALUES ($1, $2, $3, 'adjustment', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id""",
            st["id"], adj["contract_id"], adj["advertiser_id"], adj["kind"], domain.adjustment_description(adj),
            adj["contract_version"], adj.get("event_type"), paid.payout.quantity, paid.payout.amount_exact, paid.amount,
            adj["corrects_period_key"],
            corrected["statement_id"] if corrected else None, corrected["id"] if corrected else None, key)
    else:
        so_far = replace(delta, quantity=line["quantity"], amount_exact=line["amount_exact"])
        paid = statement_line(sum_payouts([so_far, delta]), cur)
        line_id = line["id"]
        await _set_line_amounts(conn, STATEMENT, line_id, paid.payout.quantity, paid.payout.amount_exact, paid.amount)
    await _adjustment_landed(conn, STATEMENT, st, adj, line_id,
                             {"adjustment_id": adj["adjustment_id"], "line_id": str(line_id)})
