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
from tally_billing.money import parse_amount
from tally_kit import audit
from tally_kit.auth import INTERNAL_ROLES, Principal
from tally_kit.db import POOL_KEY
from tally_kit.inputs import check_lengths, read_json_body
from tally_kit.openapi import page, page_params
from tally_kit.problems import ApiError, validation_error
from tally_kit.web import json_ok, principal

from . import exports, lifecycle
from .lifecycle import Policy

POLICY_KEY: web.AppKey[Policy] = web.AppKey("tally_invoicing_policy", Policy)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
READERS = (*INTERNAL_ROLES, "advertiser", "partner")
LEDGER_READERS = ("finance", "admin")
#: ``2026-03`` (month) or ``2026-W10`` (ISO week)
PERIOD_KEY = re.compile(r"\d{4}-(?:\d{2}|W\d{2})")
MAX_REASON_LEN = 2000


# ------------------------------------------------------------------ helpers


def _plain(v: Any) -> Any:
    if isinstance(v, UUID):
        return str(v)
    if isinstance(v, Decimal):
        return _dec(v)
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _dec(d: Decimal) -> str:
    """An exact amount without trailing zeros past the point (``12.500000000000`` → ``12.5``)."""
    s = format(d, "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


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


async def invoice_doc(conn: asyncpg.Connection, row: asyncpg.Record) -> dict[str, Any]:
    doc = _row(row)
    cur = row["currency"]
    _money_fields(doc, cur, "total")
    lines = await conn.fetch("SELECT * FROM invoice_lines WHERE invoice_id = $1 ORDER BY line_no", row["id"])
    doc["lines"] = []
    for ln in lines:
        d = _row(ln)
        _money_fields(d, cur, "amount")
        d.pop("aggregation_key", None)
        doc["lines"].append(d)
    note = await conn.fetchrow("SELECT id, number FROM credit_notes WHERE invoice_id = $1", row["id"])
    doc["credit_note"] = _row(note) if note else None
    return doc


async def statement_doc(conn: asyncpg.Connection, row: asyncpg.Record) -> dict[str, Any]:
    doc = _row(row)
    cur = row["currency"]
    _money_fields(doc, cur, "lines_total", "carried_in", "balance", "amount_payable", "carried_out", "minimum_payout")
    lines = await conn.fetch("SELECT * FROM statement_lines WHERE statement_id = $1 ORDER BY line_no", row["id"])
    doc["lines"] = []
    for ln in lines:
        d = _row(ln)
        _money_fields(d, cur, "amount")
        d.pop("aggregation_key", None)
        doc["lines"].append(d)
    return doc


async def credit_note_doc(conn: asyncpg.Connection, row: asyncpg.Record) -> dict[str, Any]:
    doc = _row(row)
    cur = row["currency"]
    _money_fields(doc, cur, "total")
    doc["invoice_number"] = await conn.fetchval("SELECT number FROM invoices WHERE id = $1", row["invoice_id"])
    lines = await conn.fetch("SELECT * FROM credit_note_lines WHERE credit_note_id = $1 ORDER BY position", row["id"])
    doc["lines"] = []
    for ln in lines:
        d = _row(ln)
        _money_fields(d, cur, "amount")
        d["kind"] = "credit"
        doc["lines"].append(d)
    return doc


# ------------------------------------------------------------------ tenancy-checked loaders


async def _invoice(conn: asyncpg.Connection, who: Principal, raw_id: str) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM invoices WHERE id = $1", _uuid(raw_id, "invoice"))
    if row is None or not who.sees_advertiser(row["advertiser_id"]):
        raise ApiError(404, "invoice not found")
    return row


async def _statement(conn: asyncpg.Connection, who: Principal, raw_id: str) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM payout_statements WHERE id = $1", _uuid(raw_id, "payout statement"))
    if row is None or not who.sees_partner(row["partner_id"]):
        raise ApiError(404, "payout statement not found")
    return row


async def _credit_note(conn: asyncpg.Connection, who: Principal, raw_id: str) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM credit_notes WHERE id = $1", _uuid(raw_id, "credit note"))
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


async def _list(request: web.Request, table: str, tenant_col: str, tenant_type: str,
                filters: Mapping[str, str]) -> dict[str, Any]:
    who = _reader(request)
    limit, after = page_params(request)
    where, args = [], []
    if who.is_tenant:
        if who.tenant_type != tenant_type:
            return {"items": [], "next_cursor": None}
        args.append(who.tenant_id)
        where.append(f"{tenant_col} = ${len(args)}")
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
            args.append(value)
            where.append(f"{col} = ${len(args)}")
    start = after or [EPOCH.isoformat(), "00000000-0000-0000-0000-000000000000"]
    try:
        args += [datetime.fromisoformat(str(start[0])), UUID(str(start[1]))]
    except (ValueError, IndexError):
        raise validation_error([("query.cursor", "is not a cursor returned by this API")]) from None
    where.append(f"(created_at, id) > (${len(args) - 1}, ${len(args)})")
    args.append(limit + 1)
    sql = f"SELECT * FROM {table} WHERE {' AND '.join(where)} ORDER BY created_at, id LIMIT ${len(args)}"
    async with _pool(request).acquire() as conn:
        rows = await conn.fetch(sql, *args)
    out = page(list(rows), limit, key=lambda r: [r["created_at"], str(r["id"])])
    items = []
    for r in out["items"]:
        d = _row(r)
        for n in ("total", "lines_total", "amount_payable", "carried_out", "carried_in", "balance", "minimum_payout"):
            if n in d:
                _money_fields(d, r["currency"], n)
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


def _document_view(kind: str, load: Any, render: Any) -> Any:
    """GET one document (scoped to the caller by ``load``) as JSON, or as CSV/PDF with ``.{fmt}``."""

    async def view(request: web.Request) -> web.Response:
        who = _reader(request)
        async with _pool(request).acquire() as conn:
            doc = await render(conn, await load(conn, who, request.match_info["id"]))
        fmt = request.match_info.get("fmt")
        return _export(doc, kind, fmt) if fmt else json_ok(doc)

    return view


get_invoice = _document_view("invoice", lambda c, w, i: _invoice(c, w, i), lambda c, r: invoice_doc(c, r))
get_statement = _document_view("statement", lambda c, w, i: _statement(c, w, i), lambda c, r: statement_doc(c, r))
get_credit_note = _document_view("credit_note", lambda c, w, i: _credit_note(c, w, i), lambda c, r: credit_note_doc(c, r))


async def _lineage(conn: asyncpg.Connection, line: asyncpg.Record, adjustment_col: str) -> dict[str, Any]:
    out: dict[str, Any] = {"line_id": str(line["id"]), "close": None, "adjustments": [],
                           "corrects_line_id": _plain(line["corrects_line_id"]),
                           "corrects_period_key": line["corrects_period_key"]}
    if line["close_id"]:
        c = await conn.fetchrow(
            """SELECT close_id, contract_id, period_key, closed_at, source_offsets, kafka_topic, kafka_partition,
                      kafka_offset FROM period_closes WHERE close_id = $1""", line["close_id"])
        out["close"] = _row(c) if c else None
    adjs = await conn.fetch(
        f"""SELECT adjustment_id, kind, corrects_period_key, amount_exact, partner_payout_exact, kafka_topic,
                   kafka_partition, kafka_offset, record->>'source_event_id' AS source_event_id,
                   record->>'source_topic' AS source_topic, record->'source_partition' AS source_partition,
                   record->'source_offset' AS source_offset
            FROM adjustments WHERE {adjustment_col} = $1 ORDER BY applied_at, adjustment_id""", line["id"])
    out["adjustments"] = [_row(a) for a in adjs]
    return out


async def invoice_line_lineage(request: web.Request) -> web.Response:
    who = _reader(request)
    async with _pool(request).acquire() as conn:
        inv = await _invoice(conn, who, request.match_info["id"])
        line = await conn.fetchrow("SELECT * FROM invoice_lines WHERE id = $1 AND invoice_id = $2",
                                   _uuid(request.match_info["line_id"], "line"), inv["id"])
        if line is None:
            raise ApiError(404, "line not found")
        return json_ok(await _lineage(conn, line, "invoice_line_id"))


async def statement_line_lineage(request: web.Request) -> web.Response:
    who = _reader(request)
    async with _pool(request).acquire() as conn:
        st = await _statement(conn, who, request.match_info["id"])
        line = await conn.fetchrow("SELECT * FROM statement_lines WHERE id = $1 AND statement_id = $2",
                                   _uuid(request.match_info["line_id"], "line"), st["id"])
        if line is None:
            raise ApiError(404, "line not found")
        return json_ok(await _lineage(conn, line, "statement_line_id"))


async def _history(request: web.Request, entity_type: str, row: asyncpg.Record, conn: asyncpg.Connection) -> web.Response:
    entries = await audit.entries_for(conn, entity_type, str(row["id"]), limit=200)
    return json_ok({"items": [e.as_json() for e in entries]})


async def invoice_history(request: web.Request) -> web.Response:
    who = _reader(request)
    async with _pool(request).acquire() as conn:
        return await _history(request, "invoice", await _invoice(conn, who, request.match_info["id"]), conn)


async def statement_history(request: web.Request) -> web.Response:
    who = _reader(request)
    async with _pool(request).acquire() as conn:
        return await _history(request, "payout_statement", await _statement(conn, who, request.match_info["id"]), conn)


# ------------------------------------------------------------------ transitions


async def invoice_transition(request: web.Request) -> web.Response:
    who = _finance(request)
    action = request.match_info["action"]
    body = await _body(request)
    policy = request.app[POLICY_KEY]
    async with _pool(request).acquire() as conn:
        inv = await _invoice(conn, who, request.match_info["id"])
        if action == "finalize":
            row, final = await lifecycle.finalize_invoice(conn, inv["id"], who, policy)
            status = 200 if final else 202
        elif action == "send":
            row, status = await lifecycle.send_invoice(conn, inv["id"], who), 200
        elif action == "mark-paid":
            row, status = await lifecycle.mark_invoice_paid(conn, inv["id"], who, _optional_text(body, "payment_reference")), 200
        elif action == "void":
            reason = _optional_text(body, "reason")
            if reason is None:
                raise validation_error([("reason", "required: why the invoice is voided")])
            note = await lifecycle.void_invoice(conn, inv["id"], who, reason)
            return json_ok(await credit_note_doc(conn, note), status=201,
                           headers={"Location": f"/credit-notes/{note['id']}"})
        else:
            raise ApiError(404, f"unknown action {action!r}")
        doc = await invoice_doc(conn, row)
    if status == 202:
        doc["awaiting"] = "a second finance user (not the preparer) must finalize this invoice"
    return json_ok(doc, status=status)


async def statement_transition(request: web.Request) -> web.Response:
    who = _finance(request)
    action = request.match_info["action"]
    body = await _body(request)
    policy = request.app[POLICY_KEY]
    async with _pool(request).acquire() as conn:
        st = await _statement(conn, who, request.match_info["id"])
        if action == "finalize":
            row, final = await lifecycle.finalize_statement(conn, st["id"], who, policy)
            status = 200 if final else 202
        elif action == "send":
            row, status = await lifecycle.send_statement(conn, st["id"], who), 200
        elif action == "mark-paid":
            row, status = await lifecycle.mark_statement_paid(conn, st["id"], who, _optional_text(body, "payment_reference")), 200
        else:
            raise ApiError(404, f"unknown action {action!r}")
        doc = await statement_doc(conn, row)
    return json_ok(doc, status=status)


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
        amount = parse_amount(body.get("amount"))
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
        inv = await conn.fetchrow("SELECT * FROM invoices WHERE id = $1", line["invoice_id"])
        doc = await invoice_doc(conn, inv)
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
    args: list[Any] = []
    where = ["true"]
    for q, col in (("currency", "e.currency"), ("party_id", "l.party_id"), ("account", "l.account_code")):
        if request.query.get(q):
            args.append(request.query[q])
            where.append(f"{col} = ${len(args)}")
    group_party = request.query.get("by") == "party"
    party_cols = ", l.party_type, l.party_id" if group_party else ""
    async with _pool(request).acquire() as conn:
        rows = await conn.fetch(
            f"""SELECT a.code, a.name, a.kind, e.currency{party_cols},
                       SUM(CASE WHEN l.amount > 0 THEN l.amount ELSE 0 END) AS debits,
                       SUM(CASE WHEN l.amount < 0 THEN -l.amount ELSE 0 END) AS credits,
                       SUM(l.amount) AS balance
                FROM journal_lines l JOIN journal_entries e ON e.id = l.entry_id
                JOIN ledger_accounts a ON a.code = l.account_code
                WHERE {' AND '.join(where)}
                GROUP BY a.code, a.name, a.kind, e.currency{party_cols} ORDER BY a.code, e.currency{party_cols}""", *args)
    return json_ok({"items": [_row(r) for r in rows],
                    "sign": "balance = debits - credits (assets and expenses are positive, liabilities and revenue negative)"})


async def trial_balance(request: web.Request) -> web.Response:
    _ledger_reader(request)
    async with _pool(request).acquire() as conn:
        rows = await conn.fetch(
            """SELECT e.currency, a.code, a.name, a.kind,
                      SUM(CASE WHEN l.amount > 0 THEN l.amount ELSE 0 END) AS debits,
                      SUM(CASE WHEN l.amount < 0 THEN -l.amount ELSE 0 END) AS credits
               FROM journal_lines l JOIN journal_entries e ON e.id = l.entry_id
               JOIN ledger_accounts a ON a.code = l.account_code
               GROUP BY e.currency, a.code, a.name, a.kind ORDER BY e.currency, a.code""")
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
        c["total_debits"], c["total_credits"] = _dec(c["total_debits"]), _dec(c["total_credits"])
        out.append(c)
    return json_ok({"currencies": out, "balanced": all(c["balanced"] for c in out)})


async def journal_entries(request: web.Request) -> web.Response:
    _ledger_reader(request)
    limit, after = page_params(request)
    start = int(after[0]) if after else 0
    args: list[Any] = [start]
    extra = ""
    if request.query.get("source_id"):
        args.append(request.query["source_id"])
        extra = f" AND source_id = ${len(args)}"
    args.append(limit + 1)
    async with _pool(request).acquire() as conn:
        rows = await conn.fetch(
            f"SELECT * FROM journal_entries WHERE entry_no > $1{extra} ORDER BY entry_no LIMIT ${len(args)}", *args)
        out = page(list(rows), limit, key=lambda r: [r["entry_no"]])
        items = []
        for e in out["items"]:
            d = _row(e)
            d["lines"] = [_row(x) for x in await conn.fetch(
                "SELECT account_code, party_type, party_id, amount FROM journal_lines WHERE entry_id = $1 ORDER BY id", e["id"])]
            items.append(d)
    out["items"] = items
    return json_ok(out)


async def rejected_records(request: web.Request) -> web.Response:
    _ledger_reader(request)
    async with _pool(request).acquire() as conn:
        rows = await conn.fetch(
            """SELECT kafka_topic, kafka_partition, kafka_offset, natural_key, error_kind, reason, rejected_at
               FROM rejected_records ORDER BY rejected_at DESC LIMIT 500""")
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
