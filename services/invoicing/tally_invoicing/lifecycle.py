"""Document lifecycle: finalize (gap-free number, four-eyes, journal entry), send, mark paid,
void through a full credit note; payout statements with carry-forward; manual credits.

Invoices and payout statements take ONE code path: :func:`transition` checks the step against
``domain.TRANSITIONS`` and the document's ``DocumentKind`` says what differs (table, journal,
carry-forward). Every transition runs in one transaction with its audit entry and its journal
entry, and locks the document row first (``FOR UPDATE``), so two concurrent requests on one
document serialise and the second sees the first's result. The SQL is in ``repo``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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

from . import domain, repo
from .apply import draft, refresh_total
from .domain import CREDIT_NOTE_SERIES, INVOICE, STATEMENT, DocumentKind, Transition
from .metrics import METRICS


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


async def post_journal(conn: asyncpg.Connection, *, currency_code: str, description: str, source_type: str,
                       source_id: str, posted_by: str, lines: Sequence[domain.JournalLine],
                       party_type: str, party_id: str) -> UUID | None:
    """One balanced journal entry (the database re-checks the balance at commit)."""
    if not lines:
        return None
    entry_id = await repo.add_journal_entry(conn, currency_code=currency_code, description=description,
                                            source_type=source_type, source_id=source_id, posted_by=posted_by,
                                            lines=lines, party_type=party_type, party_id=party_id)
    await audit.append(conn, entity_type="journal_entry", entity_id=str(entry_id), action="posted", actor=posted_by,
                       after={"source_type": source_type, "source_id": source_id, "currency": currency_code,
                              "lines": [{"account": a, "amount": amt} for a, amt in lines]})
    METRICS.journal_entries.labels(source_type).inc()
    return entry_id


@dataclass(frozen=True)
class Journal:
    """The journal entry a transition of a kind posts: its description (``{number}`` filled
    in), source type, lines from an amount, and the column holding that amount."""

    description: str
    source_type: str
    lines: Callable[[Decimal], list[domain.JournalLine]]
    amount_col: str


#: (kind, action) → the journal entry it posts; a transition not named here posts none
JOURNALS: dict[tuple[str, str], Journal] = {
    (INVOICE.name, "finalize"): Journal("Invoice {number}", "invoice", domain.invoice_journal, "total"),
    (INVOICE.name, "mark-paid"): Journal("Payment of invoice {number}", "invoice_payment",
                                         domain.invoice_payment_journal, "total"),
    (STATEMENT.name, "finalize"): Journal("Payout statement {number}", "payout_statement", domain.statement_journal,
                                          "lines_total"),
    (STATEMENT.name, "mark-paid"): Journal("Payout of statement {number}", "payout_payment",
                                           domain.payout_payment_journal, "amount_payable"),
}


def _snapshot(row: asyncpg.Record, fields: Sequence[str]) -> dict[str, Any]:
    return {f: (str(row[f]) if isinstance(row[f], UUID) else row[f]) for f in fields}


def _require_status(row: asyncpg.Record, t: Transition, what: str) -> None:
    if row["status"] not in t.allowed_from:
        raise ApiError(409, f"cannot {t.verb} a {row['status']} {what} (allowed from: {', '.join(t.allowed_from)})",
                       type_="https://tally.dev/problems/invalid-transition", status_now=row["status"])


def _step(kind: DocumentKind, action: str) -> Transition:
    t = kind.transition(action)
    if t is None:
        raise ApiError(404, f"unknown action {action!r}")
    return t


async def _begin(conn: asyncpg.Connection, kind: DocumentKind, doc_id: UUID, action: str) -> asyncpg.Record:
    """The document locked, after checking that ``action`` may leave its current status."""
    t = _step(kind, action)
    row = await repo.locked(conn, kind, doc_id)
    if row is None:
        raise ApiError(404, f"{kind.what} not found")
    _require_status(row, t, kind.what)
    return row


async def _audit(conn: asyncpg.Connection, kind: DocumentKind, action: str, row: asyncpg.Record,
                 updated: asyncpg.Record, who: Principal, *, tenant: bool = False, audit_action: str | None = None,
                 **after: Any) -> None:
    owner = {"tenant_type": kind.party_type, "tenant_id": row[kind.party_col]} if tenant else {}
    await audit.append(conn, entity_type=kind.name, entity_id=str(row["id"]),
                       action=audit_action or domain.TRANSITIONS[action].audit_action, actor=who.subject, **owner,
                       before=_snapshot(row, kind.snapshot), after={**_snapshot(updated, kind.snapshot), **after})


def _count(kind: DocumentKind, action: str, *, prepared: bool = False) -> None:
    """Count the transition (``prepare`` for a finalization that only prepared)."""
    METRICS.transitions.labels(kind.name, "prepare" if prepared else domain.TRANSITIONS[action].metric).inc()


async def _journal(conn: asyncpg.Connection, kind: DocumentKind, action: str, row: asyncpg.Record, number: str,
                   who: Principal) -> None:
    j = JOURNALS.get((kind.name, action))
    if j is not None:
        await post_journal(conn, currency_code=row["currency"], description=j.description.format(number=number),
                           source_type=j.source_type, source_id=str(row["id"]), posted_by=who.subject,
                           lines=j.lines(row[j.amount_col]), party_type=kind.party_type, party_id=row[kind.party_col])


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


# ------------------------------------------------------------------ the transitions, one path for both kinds


async def transition(conn: asyncpg.Connection, kind: DocumentKind, doc_id: UUID, action: str, who: Principal,
                     policy: Policy, *, reference: str | None = None) -> tuple[asyncpg.Record, bool]:
    """Take ``action`` (finalize, send, mark-paid) on the document; returns (row, done?) — not
    done when a finalization above the four-eyes threshold was only prepared."""
    if action == "finalize":
        return await finalize(conn, kind, doc_id, who, policy)
    if action == "send":
        return await send(conn, kind, doc_id, who), True
    if action == "mark-paid":
        return await mark_paid(conn, kind, doc_id, who, reference), True
    _step(kind, action)  # 404 for an action the kind does not take
    raise ValueError(f"{action!r} is not a transition that returns the document (void returns its credit note)")


async def finalize(conn: asyncpg.Connection, kind: DocumentKind, doc_id: UUID, who: Principal, policy: Policy
                   ) -> tuple[asyncpg.Record, bool]:
    """Finalize (or, above the four-eyes threshold, prepare). Returns (row, finalized?)."""
    async with conn.transaction():
        row = await _begin(conn, kind, doc_id, "finalize")
        if kind.needs_lines and await repo.line_count(conn, kind, doc_id) == 0:
            raise ApiError(409, f"an {kind.what} without lines cannot be finalized")
        extra: dict[str, Any] = {}
        if kind.carries_forward:
            carry = await repo.carry_forward_source(conn, row[kind.party_col], row["currency"])
            settlement = domain.settle_payout(carry["carried_out"] if carry else domain.ZERO, row[kind.total_col],
                                              policy.min_payout(row["currency"]))
            extra = {"carried_in": settlement.carried_in, "carried_in_from": carry["id"] if carry else None,
                     "balance": settlement.balance, "minimum_payout": policy.min_payout(row["currency"]),
                     "amount_payable": settlement.amount_payable, "carried_out": settlement.carried_out}
        now_final, approver = _four_eyes(row, row[kind.total_col], who, policy, kind.what)
        if not now_final:
            updated = await repo.prepare(conn, kind, doc_id, who.subject)
            await _audit(conn, kind, "finalize", row, updated, who, audit_action="prepared")
        else:
            issue = today()
            seq = await repo.next_number(conn, kind.series, issue.year)
            number = domain.document_number(kind.series, issue.year, seq)
            if kind.due_after_terms:
                extra["due_date"] = issue + timedelta(days=row["payment_terms_days"] or 0)
            updated = await repo.finalize(conn, kind, doc_id, number=number, year=issue.year, seq=seq,
                                          issue_date=issue, by=who.subject, approver=approver, extra=extra)
            await _journal(conn, kind, "finalize", row, number, who)
            await _audit(conn, kind, "finalize", row, updated, who, tenant=True)
    _count(kind, "finalize", prepared=not now_final)
    return updated, now_final


async def send(conn: asyncpg.Connection, kind: DocumentKind, doc_id: UUID, who: Principal) -> asyncpg.Record:
    async with conn.transaction():
        row = await _begin(conn, kind, doc_id, "send")
        updated = await repo.mark(conn, kind, doc_id, "sent", who.subject)
        await _audit(conn, kind, "send", row, updated, who)
    _count(kind, "send")
    return updated


async def mark_paid(conn: asyncpg.Connection, kind: DocumentKind, doc_id: UUID, who: Principal, reference: str | None
                    ) -> asyncpg.Record:
    async with conn.transaction():
        row = await _begin(conn, kind, doc_id, "mark-paid")
        if kind.carries_forward and row["amount_payable"] == 0:
            raise ApiError(409, "nothing is payable on this statement: its balance was carried forward")
        updated = await repo.mark(conn, kind, doc_id, "paid", who.subject, payment_reference=reference)
        await _journal(conn, kind, "mark-paid", row, row["number"], who)
        await _audit(conn, kind, "mark-paid", row, updated, who, payment_reference=reference)
    _count(kind, "mark-paid")
    return updated


async def void_invoice(conn: asyncpg.Connection, invoice_id: UUID, who: Principal, reason: str) -> asyncpg.Record:
    """Void a finalized (or sent) invoice by issuing a credit note for its full amount; returns the note."""
    async with conn.transaction():
        row = await _begin(conn, INVOICE, invoice_id, "void")
        issue = today()
        seq = await repo.next_number(conn, CREDIT_NOTE_SERIES, issue.year)
        number = domain.document_number(CREDIT_NOTE_SERIES, issue.year, seq)
        note = await repo.add_credit_note(conn, row, number=number, year=issue.year, seq=seq, reason=reason,
                                          issue_date=issue, by=who.subject)
        await repo.add_credit_note_lines(conn, note["id"], await repo.lines(conn, INVOICE, invoice_id))
        updated = await repo.mark(conn, INVOICE, invoice_id, "void", who.subject)
        await post_journal(conn, currency_code=row["currency"], description=f"Credit note {number} for invoice {row['number']}",
                           source_type="credit_note", source_id=str(note["id"]), posted_by=who.subject,
                           lines=domain.credit_note_journal(row["total"]), party_type="advertiser",
                           party_id=row["advertiser_id"])
        await audit.append(conn, entity_type="credit_note", entity_id=str(note["id"]), action="issued", actor=who.subject,
                           tenant_type="advertiser", tenant_id=row["advertiser_id"],
                           after={"number": number, "invoice_id": str(invoice_id), "total": note["total"], "reason": reason})
        await _audit(conn, INVOICE, "void", row, updated, who, credit_note=number)
    _count(INVOICE, "void")
    return note


async def add_manual_credit(conn: asyncpg.Connection, who: Principal, *, corrects_line_id: UUID, amount: Decimal,
                            period_key: str, reason: str) -> asyncpg.Record:
    """A credit granted by finance: a negative adjustment line on the advertiser's open draft
    for ``period_key``, pointing at the finalized line it corrects."""
    async with conn.transaction():
        await audit.lock_head(conn)  # before the draft's lock, as in repo.locked
        original = await repo.invoiced_line(conn, corrects_line_id)
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
        inv = await draft(conn, INVOICE, original["advertiser_id"], cur.code, period_key, who.subject)
        line = await repo.add_manual_credit_line(conn, inv["id"], original, credit=credit, reason=reason,
                                                 by=who.subject)
        total = await refresh_total(conn, INVOICE, inv["id"])
        await audit.append(conn, entity_type="invoice", entity_id=str(inv["id"]), action="manual_credit_added",
                           actor=who.subject, tenant_type="advertiser", tenant_id=original["advertiser_id"],
                           before={"total": inv["total"]},
                           after={"total": total, "line_id": str(line["id"]), "amount": -credit,
                                  "corrects_line_id": str(corrects_line_id), "reason": reason})
    METRICS.transitions.labels("invoice", "manual_credit").inc()
    return line
