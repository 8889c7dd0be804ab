"""HTTP API: invoices, payout statements, credit notes, ledger, lineage, exports.

Tenancy: an advertiser sees only its invoices and credit notes, a partner only its payout
statements; any other id answers 404 (never 403, so ids leak nothing). Internal roles
(admin, finance, ops, approver) read everything; every money-moving write needs ``finance``.
The ledger and rejected records are for ``finance`` and ``admin`` only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
from aiohttp import web

from tally_billing import bounds
from tally_billing.money import format_decimal, parse_amount
from tally_kit import audit
from tally_kit.auth import INTERNAL_ROLES, Principal
from tally_kit.db import POOL_KEY
from tally_kit.inputs import check_lengths, read_json_body
from tally_kit.openapi import page, page_params
from tally_kit.problems import ApiError, validation_error
from tally_kit.web import json_ok, principal

from . import exports, lifecycle, repo
from .domain import INVOICE, STATEMENT, DocumentKind
from .lifecycle import Policy

POLICY_KEY: web.AppKey[Policy] = web.AppKey("tally_invoicing_policy", Policy)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
READERS = (*INTERNAL_ROLES, "advertiser", "partner")
LEDGER_READERS = ("finance", "admin")
#: ``2026-03`` (month) or ``2026-W10`` (ISO week)
PERIOD_KEY = re.compile(r"\d{4}-(?:\d{2}|W\d{2})")
MAX_REASON_LEN = 2000
#: the ``number`` list filter: a whole document number (``INV-2026-000042``), or its start followed
#: by one ``*`` (``INV-2026-*``); letters are compared in upper case, as numbers are issued
NUMBER_QUERY_LEN_MAX = 32
NUMBER_QUERY = re.compile(r"[A-Za-z0-9-]+\*?")


# ------------------------------------------------------------------ helpers


def _plain(v: Any) -> Any:
    if isinstance(v, UUID):
        return str(v)
    if isinstance(v, Decimal):
        return format_decimal(v, trailing_zeros=False)  # 12.500000000000 → 12.5
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _row(r: asyncpg.Record | Mapping[str, Any]) -> dict[str, Any]:
    return {k: _plain(v) for k, v in dict(r).items()}


def _money_fields(d: dict[str, Any], cur: str, *names: str) -> None:
    for n in names:
        if d.get(n) is not None:
            d[n] = exports.money(Decimal(d[n]), cur)


def _uuid(raw: str, what: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError:
        raise ApiError(404, f"{what} not found") from None


def _pool(request: web.Request) -> asyncpg.Pool:
    return request.app[POOL_KEY]


async def _body(request: web.Request) -> dict[str, Any]:
    """The JSON object body ({} when empty): 415 unless JSON, 400 unparsable, 422 too deep,
    duplicate keys, NUL or lone surrogate (``tally_kit.inputs``)."""
    data = await read_json_body(request)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise validation_error([("body", "must be a JSON object")])
    for k, v in data.items():
        if isinstance(v, Decimal):
            raise validation_error([(k, "amounts are decimal strings, never JSON numbers")])
    return data


def _optional_text(body: Mapping[str, Any], name: str, max_len: int = 500) -> str | None:
    v = body.get(name)
    if v is None:
        return None
    if not isinstance(v, str) or not v.strip() or len(v) > max_len:
        raise validation_error([(name, f"must be a non-empty string of at most {max_len} characters")])
    return v


# ------------------------------------------------------------------ documents as JSON


async def document_doc(conn: asyncpg.Connection, kind: DocumentKind, row: asyncpg.Record) -> dict[str, Any]:
    """An invoice or payout statement with its lines (and an invoice with its credit note)."""
    doc = _row(row)
    cur = row["currency"]
    _money_fields(doc, cur, *kind.money)
    doc["lines"] = []
    for ln in await repo.lines(conn, kind, row["id"]):
        d = _row(ln)
        _money_fields(d, cur, "amount")
        d.pop("aggregation_key", None)
        doc["lines"].append(d)
    if kind.transition("void") is not None:
        note = await repo.credit_note_of(conn, row["id"])
        doc["credit_note"] = _row(note) if note else None
    return doc


async def credit_note_doc(conn: asyncpg.Connection, row: asyncpg.Record) -> dict[str, Any]:
    doc = _row(row)
    cur = row["currency"]
    _money_fields(doc, cur, "total")
    doc["invoice_number"] = await repo.invoice_number(conn, row["invoice_id"])
    doc["lines"] = []
    for ln in await repo.credit_note_lines(conn, row["id"]):
        d = _row(ln)
        _money_fields(d, cur, "amount")
        d["kind"] = "credit"
        doc["lines"].append(d)
    return doc


# ------------------------------------------------------------------ tenancy-checked loaders


def _sees(who: Principal, party_type: str, party_id: str | None) -> bool:
    return who.sees_advertiser(party_id or "") if party_type == "advertiser" else who.sees_partner(party_id)


async def _document(conn: asyncpg.Connection, kind: DocumentKind, who: Principal, raw_id: str) -> asyncpg.Record:
    row = await repo.document(conn, kind, _uuid(raw_id, kind.what))
    if row is None or not _sees(who, kind.party_type, row[kind.party_col]):
        raise ApiError(404, f"{kind.what} not found")
    return row


async def _credit_note(conn: asyncpg.Connection, who: Principal, raw_id: str) -> asyncpg.Record:
    row = await repo.credit_note(conn, _uuid(raw_id, "credit note"))
    if row is None or not who.sees_advertiser(row["advertiser_id"]):
        raise ApiError(404, "credit note not found")
    return row


def _reader(request: web.Request) -> Principal:
    who = principal(request)
    who.require(*READERS)
    return who


def _finance(request: web.Request) -> Principal:
    who = principal(request)
    if who.is_tenant:
        raise ApiError(403, "requires the finance role")
    who.require("finance")
    return who


# ------------------------------------------------------------------ lists


#: list filters on UUID columns: a value that is not a UUID is a 422 naming the parameter
_UUID_COLUMNS = frozenset({"invoice_id"})
#: amounts a list item may carry, spelled in its currency
_LIST_MONEY = ("total", "lines_total", "amount_payable", "carried_out", "carried_in", "balance", "minimum_payout")


def _number_filter(raw: str) -> tuple[str, bool]:
    """``(number, is_prefix)`` from the ``number`` query value: the whole number, or with one
    trailing ``*`` its start; anything else is a 422 naming ``query.number``."""
    if len(raw) > NUMBER_QUERY_LEN_MAX or NUMBER_QUERY.fullmatch(raw) is None:
        raise validation_error([("query.number", f"must be a document number such as INV-2026-000042, or its start "
                                                 f"followed by * (INV-2026-*): letters, digits and -, at most "
                                                 f"{NUMBER_QUERY_LEN_MAX} characters")], "invalid query parameters")
    return raw.removesuffix("*").upper(), raw.endswith("*")


async def _list(request: web.Request, table: str, tenant_col: str, tenant_type: str,
                filters: Mapping[str, str]) -> dict[str, Any]:
    """One page of ``table``, only the caller's own rows when it is a tenant. ``filters`` maps
    query parameters to columns compared for equality; every list also takes ``number``
    (``_number_filter``). Every parameter is checked before the tenant scope is applied, so a bad
    value is a 422 for every caller."""
    who = _reader(request)
    limit, after = page_params(request)
    equal: list[tuple[str, Any]] = []
    prefix: list[tuple[str, str]] = []
    too_long = check_lengths({q: request.query.get(q) for q in filters}, bounds.ID_LEN_MAX)
    if too_long:
        raise validation_error(too_long, "invalid query parameters")
    for q, col in filters.items():
        if request.query.get(q):
            value: str | UUID = request.query[q]
            if col in _UUID_COLUMNS:
                try:
                    value = UUID(request.query[q])
                except ValueError:
                    raise validation_error([(f"query.{q}", "is not a UUID")]) from None
            equal.append((col, value))
    if request.query.get("number"):
        number, is_prefix = _number_filter(request.query["number"])
        (prefix if is_prefix else equal).append(("number", number))
    start = after or [EPOCH.isoformat(), "00000000-0000-0000-0000-000000000000"]
    try:
        cursor = (datetime.fromisoformat(str(start[0])), UUID(str(start[1])))
    except (ValueError, IndexError):
        raise validation_error([("query.cursor", "is not a cursor returned by this API")]) from None
    if who.is_tenant:
        if who.tenant_type != tenant_type:
            return {"items": [], "next_cursor": None}
        # the tenant's own column, whatever else was asked: another tenant's number finds nothing
        equal.append((tenant_col, who.tenant_id))
    async with _pool(request).acquire() as conn:
        rows = await repo.list_page(conn, table, equal, cursor, limit, prefix=prefix)
    out = page(list(rows), limit, key=lambda r: [r["created_at"], str(r["id"])])
    items = []
    for r in out["items"]:
        d = _row(r)
        _money_fields(d, r["currency"], *(n for n in _LIST_MONEY if n in d))
        items.append(d)
    out["items"] = items
    return out


async def list_invoices(request: web.Request) -> web.Response:
    return json_ok(await _list(request, "invoices", "advertiser_id", "advertiser",
                               {"status": "status", "advertiser_id": "advertiser_id", "period_key": "period_key",
                                "currency": "currency"}))


async def list_statements(request: web.Request) -> web.Response:
    return json_ok(await _list(request, "payout_statements", "partner_id", "partner",
                               {"status": "status", "partner_id": "partner_id", "period_key": "period_key",
                                "currency": "currency"}))


async def list_credit_notes(request: web.Request) -> web.Response:
    return json_ok(await _list(request, "credit_notes", "advertiser_id", "advertiser",
                               {"advertiser_id": "advertiser_id", "invoice_id": "invoice_id"}))


# ------------------------------------------------------------------ single documents and exports


def _export(doc: Mapping[str, Any], kind: str, fmt: str) -> web.Response:
    name = f"{doc.get('number') or 'draft-' + str(doc['id'])}"
    if fmt == "csv":
        return web.Response(text=exports.to_csv(doc, kind), content_type="text/csv",
                            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})
    return web.Response(body=exports.to_pdf(doc, kind), content_type="application/pdf",
                        headers={"Content-Disposition": f'attachment; filename="{name}.pdf"'})


def _document_view(export_kind: str, load: Any, render: Any) -> Any:
    """GET one document (scoped to the caller by ``load``) as JSON, or as CSV/PDF with ``.{fmt}``."""

    async def view(request: web.Request) -> web.Response:
        who = _reader(request)
        async with _pool(request).acquire() as conn:
            doc = await render(conn, await load(conn, who, request.match_info["id"]))
        fmt = request.match_info.get("fmt")
        return _export(doc, export_kind, fmt) if fmt else json_ok(doc)

    return view


get_invoice = _document_view("invoice", lambda c, w, i: _document(c, INVOICE, w, i),
                             lambda c, r: document_doc(c, INVOICE, r))
get_statement = _document_view("statement", lambda c, w, i: _document(c, STATEMENT, w, i),
                               lambda c, r: document_doc(c, STATEMENT, r))
get_credit_note = _document_view("credit_note", lambda c, w, i: _credit_note(c, w, i), lambda c, r: credit_note_doc(c, r))


def _line_lineage(kind: DocumentKind) -> Any:
    """GET where one line of a document came from: its close and the adjustments on it."""

    async def view(request: web.Request) -> web.Response:
        who = _reader(request)
        async with _pool(request).acquire() as conn:
            doc = await _document(conn, kind, who, request.match_info["id"])
            line = await repo.line_of(conn, kind, doc["id"], _uuid(request.match_info["line_id"], "line"))
            if line is None:
                raise ApiError(404, "line not found")
            out: dict[str, Any] = {"line_id": str(line["id"]), "close": None, "adjustments": [],
                                   "corrects_line_id": _plain(line["corrects_line_id"]),
                                   "corrects_period_key": line["corrects_period_key"]}
            if line["close_id"]:
                c = await repo.close_of(conn, line["close_id"])
                out["close"] = _row(c) if c else None
            out["adjustments"] = [_row(a) for a in await repo.adjustments_on(conn, kind, line["id"])]
        return json_ok(out)

    return view


def _history(kind: DocumentKind) -> Any:
    """GET a document's audit entries."""

    async def view(request: web.Request) -> web.Response:
        who = _reader(request)
        async with _pool(request).acquire() as conn:
            doc = await _document(conn, kind, who, request.match_info["id"])
            entries = await repo.history(conn, kind, doc["id"])
        return json_ok({"items": [e.as_json() for e in entries]})

    return view


invoice_line_lineage, statement_line_lineage = _line_lineage(INVOICE), _line_lineage(STATEMENT)
invoice_history, statement_history = _history(INVOICE), _history(STATEMENT)


# ------------------------------------------------------------------ transitions


#: what a 202 (prepared, not yet finalized) answer adds, by kind
AWAITING = {INVOICE.name: "a second finance user (not the preparer) must finalize this invoice"}


def _transition(kind: DocumentKind) -> Any:
    """POST one lifecycle step (``domain.TRANSITIONS``) of an invoice or payout statement."""

    async def view(request: web.Request) -> web.Response:
        who = _finance(request)
        action = request.match_info["action"]
        body = await _body(request)
        policy = request.app[POLICY_KEY]
        async with _pool(request).acquire() as conn:
            row = await _document(conn, kind, who, request.match_info["id"])
            if action == "void":
                reason = _optional_text(body, "reason")
                if reason is None:
                    raise validation_error([("reason", f"required: why the {kind.what} is voided")])
                note = await lifecycle.void_invoice(conn, row["id"], who, reason)
                return json_ok(await credit_note_doc(conn, note), status=201,
                               headers={"Location": f"/credit-notes/{note['id']}"})
            reference = _optional_text(body, "payment_reference") if action == "mark-paid" else None
            updated, done = await lifecycle.transition(conn, kind, row["id"], action, who, policy, reference=reference)
            doc = await document_doc(conn, kind, updated)
        if not done and kind.name in AWAITING:
            doc["awaiting"] = AWAITING[kind.name]
        return json_ok(doc, status=200 if done else 202)

    return view


invoice_transition, statement_transition = _transition(INVOICE), _transition(STATEMENT)


async def create_manual_credit(request: web.Request) -> web.Response:
    who = _finance(request)
    body = await _body(request)
    problems: list[tuple[str, str]] = []
    line_id = None
    try:
        line_id = UUID(str(body.get("corrects_line_id")))
    except ValueError:
        problems.append(("corrects_line_id", "required: the id of the finalized invoice line this credit corrects"))
    amount = None
    try:
        raw_amount: Any = body.get("amount")  # not a string: TypeError, answered below
        amount = parse_amount(raw_amount)
        if not 0 < amount <= bounds.AMOUNT_MAX or -int(amount.as_tuple().exponent) > bounds.DECIMAL_PLACES_MAX:
            problems.append(("amount", f"must be > 0 and at most {bounds.AMOUNT_MAX}, "
                                       f"with at most {bounds.DECIMAL_PLACES_MAX} decimals"))
            amount = None
    except (TypeError, ValueError):
        problems.append(("amount", "required: a positive decimal string"))
    period_key = body.get("period_key")
    if not isinstance(period_key, str) or not period_key:
        problems.append(("period_key", "required: the open period whose invoice carries the credit"))
    elif PERIOD_KEY.fullmatch(period_key) is None:
        problems.append(("period_key", "must be a period key such as 2026-03 or 2026-W10"))
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        problems.append(("reason", "required"))
    elif len(reason) > MAX_REASON_LEN:
        problems.append(("reason", f"must be at most {MAX_REASON_LEN} characters"))

    if problems:
        raise validation_error(problems)
    assert line_id is not None and amount is not None and isinstance(period_key, str) and isinstance(reason, str)
    async with _pool(request).acquire() as conn:
        line = await lifecycle.add_manual_credit(conn, who, corrects_line_id=line_id, amount=amount,
                                                 period_key=period_key, reason=reason)
        inv = await repo.document(conn, INVOICE, line["invoice_id"])
        assert inv is not None
        doc = await document_doc(conn, INVOICE, inv)
    return json_ok(doc, status=201, headers={"Location": f"/invoices/{inv['id']}"})


# ------------------------------------------------------------------ ledger


def _ledger_reader(request: web.Request) -> Principal:
    who = principal(request)
    if who.is_tenant:
        raise ApiError(403, "the ledger is for finance")
    who.require(*LEDGER_READERS)
    return who


async def account_balances(request: web.Request) -> web.Response:
    _ledger_reader(request)
    filters = {q: request.query[q] for q, _ in repo.BALANCE_FILTERS if request.query.get(q)}
    async with _pool(request).acquire() as conn:
        rows = await repo.account_balances(conn, filters, by_party=request.query.get("by") == "party")
    return json_ok({"items": [_row(r) for r in rows],
                    "sign": "balance = debits - credits (assets and expenses are positive, liabilities and revenue negative)"})


async def trial_balance(request: web.Request) -> web.Response:
    _ledger_reader(request)
    async with _pool(request).acquire() as conn:
        rows = await repo.trial_balance(conn)
    by_currency: dict[str, dict[str, Any]] = {}
    for r in rows:
        c = by_currency.setdefault(r["currency"], {"currency": r["currency"], "accounts": [], "total_debits": Decimal(0),
                                                   "total_credits": Decimal(0)})
        c["accounts"].append(_row(r))
        c["total_debits"] += r["debits"]
        c["total_credits"] += r["credits"]
    out = []
    for c in by_currency.values():
        c["balanced"] = c["total_debits"] == c["total_credits"]
        for k in ("total_debits", "total_credits"):
            c[k] = format_decimal(c[k], trailing_zeros=False)
        out.append(c)
    return json_ok({"currencies": out, "balanced": all(c["balanced"] for c in out)})


async def journal_entries(request: web.Request) -> web.Response:
    _ledger_reader(request)
    limit, after = page_params(request)
    start = int(after[0]) if after else 0
    async with _pool(request).acquire() as conn:
        rows = await repo.journal_entries(conn, start, request.query.get("source_id"), limit)
        out = page(list(rows), limit, key=lambda r: [r["entry_no"]])
        items = []
        for e in out["items"]:
            d = _row(e)
            d["lines"] = [_row(x) for x in await repo.journal_lines(conn, e["id"])]
            items.append(d)
    out["items"] = items
    return json_ok(out)


async def rejected_records(request: web.Request) -> web.Response:
    _ledger_reader(request)
    async with _pool(request).acquire() as conn:
        rows = await repo.rejected_records(conn)
    return json_ok({"items": [_row(r) for r in rows]})


async def audit_verify(request: web.Request) -> web.Response:
    _ledger_reader(request)
    async with _pool(request).acquire() as conn:
        result = await audit.verify_report(conn)
    return json_ok({"checked": result.checked, "ok": result.broken is None,
                    "broken": None if result.broken is None else {"seq": result.broken.seq, "reason": result.broken.reason}})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/invoices", list_invoices)
    r.add_get("/invoices/{id}", get_invoice)
    r.add_get("/invoices/{id}/export.{fmt:csv|pdf}", get_invoice)
    r.add_get("/invoices/{id}/history", invoice_history)
    r.add_get("/invoices/{id}/lines/{line_id}/lineage", invoice_line_lineage)
    r.add_post("/invoices/{id}/{action:finalize|send|mark-paid|void}", invoice_transition)
    r.add_post("/manual-credits", create_manual_credit)
    r.add_get("/credit-notes", list_credit_notes)
    r.add_get("/credit-notes/{id}", get_credit_note)
    r.add_get("/credit-notes/{id}/export.{fmt:csv|pdf}", get_credit_note)
    r.add_get("/statements", list_statements)
    r.add_get("/statements/{id}", get_statement)
    r.add_get("/statements/{id}/export.{fmt:csv|pdf}", get_statement)
    r.add_get("/statements/{id}/history", statement_history)
    r.add_get("/statements/{id}/lines/{line_id}/lineage", statement_line_lineage)
    r.add_post("/statements/{id}/{action:finalize|send|mark-paid}", statement_transition)
    r.add_get("/ledger/accounts", account_balances)
    r.add_get("/ledger/trial-balance", trial_balance)
    r.add_get("/ledger/entries", journal_entries)
    r.add_get("/rejected-records", rejected_records)
    r.add_get("/audit/verify", audit_verify)
