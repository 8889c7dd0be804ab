"""The invoicing document types every document answer (issue 16 item 6): invoices, payout
statements and credit notes are their tables' rows, so rows built from the migrations'
columns (every column, once with values and once with every nullable column null) are
rendered by the API's own view code and must be valid for the closed schemas — a column a
migration adds, and the document does not name, fails here."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from tally_invoicing import api
from tally_invoicing.domain import INVOICE, STATEMENT
from tally_invoicing.openapi_spec import build_spec
from tests.apidoc_check import schema_errors

MIGRATIONS = Path(__file__).resolve().parents[3] / "services" / "invoicing" / "migrations"
T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def columns() -> dict[str, list[tuple[str, str, bool]]]:
    """(name, SQL type, nullable) of every column of every table the migrations create."""
    tables: dict[str, list[tuple[str, str, bool]]] = {}
    for f in sorted(MIGRATIONS.glob("*.sql")):
        sql = f.read_text()
        assert "ADD COLUMN" not in sql.upper(), f"{f.name}: teach columns() about ALTER TABLE … ADD COLUMN"
        for name, body in re.findall(r"CREATE TABLE (\w+) \((.*?)\n\);", sql, re.S):
            cols = tables.setdefault(name, [])
            for line in body.splitlines():
                m = re.match(r"    (\w+)\s+(\w+(?:\[\])?(?:\(\d+, \d+\))?)(.*)", line)
                if m and m.group(1) not in ("PRIMARY", "UNIQUE", "FOREIGN", "CHECK", "CONSTRAINT"):
                    rest = m.group(3)
                    cols.append((m.group(1), m.group(2), "NOT NULL" not in rest and "PRIMARY KEY" not in rest))
    return tables


def sample(sql_type: str) -> Any:
    if sql_type == "uuid":
        return uuid4()
    if sql_type.startswith("numeric"):
        return Decimal("1234.500000000000")
    if sql_type in ("integer", "bigint", "bigserial"):
        return 3
    if sql_type == "timestamptz":
        return T0
    if sql_type == "date":
        return date(2026, 3, 31)
    if sql_type == "text[]":
        return ["PO-77"]
    return "text"


def row(table: str, *, nulls: bool, **over: Any) -> dict[str, Any]:
    out = {name: None if nulls and nullable else sample(t) for name, t, nullable in columns()[table]}
    assert set(over) <= set(out), set(over) - set(out)
    return {**out, **over}


class FakeConn:
    """Answers the repository's reads of one document from built rows."""

    def __init__(self, lines: list[dict[str, Any]], note: dict[str, Any] | None = None) -> None:
        self.lines, self.note = lines, note

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return self.lines

    async def fetchrow(self, sql: str, *args: Any) -> dict[str, Any] | None:
        assert "credit_notes" in sql
        return None if self.note is None else {"id": self.note["id"], "number": self.note["number"]}

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return "INV-2026-000001"


def errors(name: str, view: Any) -> list[str]:
    return schema_errors(build_spec(), name, view)


def invoice_line(nulls: bool) -> dict[str, Any]:
    return row("invoice_lines", nulls=nulls, kind="cpm_impressions", aggregation_key="k",
               **({} if nulls else {"adjustment_kind": "late_event"}))


@pytest.mark.parametrize("nulls", [False, True])
@pytest.mark.parametrize("noted", [False, True])
async def test_an_invoice_and_its_summary_match_the_document(nulls: bool, noted: bool) -> None:
    inv = row("invoices", nulls=nulls, status="draft", currency="EUR")
    note = row("credit_notes", nulls=nulls, currency="EUR") if noted else None
    doc = await api.document_doc(FakeConn([invoice_line(nulls), invoice_line(not nulls)], note), INVOICE, inv)  # type: ignore[arg-type]
    assert "aggregation_key" not in doc["lines"][0]
    assert errors("Invoice", doc) == []
    assert errors("Invoice", {**doc, "awaiting": api.AWAITING[INVOICE.name]}) == []
    summary = api._row(inv)
    api._money_fields(summary, "EUR", *(n for n in api._LIST_MONEY if n in summary))
    assert errors("InvoiceSummary", summary) == []


@pytest.mark.parametrize("nulls", [False, True])
async def test_a_statement_and_its_summary_match_the_document(nulls: bool) -> None:
    st = row("payout_statements", nulls=nulls, status="finalized", currency="USD")
    line = row("statement_lines", nulls=nulls, kind="cpa_payout", aggregation_key=None,
               **({} if nulls else {"adjustment_kind": "ivt_credit"}))
    doc = await api.document_doc(FakeConn([line]), STATEMENT, st)  # type: ignore[arg-type]
    assert errors("Statement", doc) == []
    summary = api._row(st)
    api._money_fields(summary, "USD", *(n for n in api._LIST_MONEY if n in summary))
    assert errors("StatementSummary", summary) == []


async def test_a_credit_note_and_its_summary_match_the_document() -> None:
    note = row("credit_notes", nulls=False, currency="EUR")
    lines = [row("credit_note_lines", nulls=nulls) for nulls in (False, True)]
    doc = await api.credit_note_doc(FakeConn(lines), note)  # type: ignore[arg-type]
    assert errors("CreditNote", doc) == []
    assert errors("CreditNoteSummary", api._row(note)) == []


async def test_the_document_schemas_are_closed_and_name_every_column() -> None:
    inv = row("invoices", nulls=False, status="paid", currency="EUR")
    doc = await api.document_doc(FakeConn([invoice_line(False)]), INVOICE, inv)  # type: ignore[arg-type]
    assert errors("Invoice", {**doc, "surprise": 1}) != []
    for key in ("approved_by", "voided_by", "lines"):
        assert errors("Invoice", {k: v for k, v in doc.items() if k != key}) != [], key
    assert errors("Line", {**doc["lines"][0], "surprise": 1}) != []
    # an amount is a decimal string, never a JSON number
    assert errors("Invoice", {**doc, "total": 12.5}) != []
    assert isinstance(UUID(doc["id"]), UUID)
