"""CSV and PDF renderings of invoices, payout statements and credit notes.

Both are built from the same document dict the JSON API returns, so the three formats can
never disagree. Amounts are printed exactly as stored (decimal strings at the currency's
minor unit); the PDF is rendered with ReportLab.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from tally_billing.money import currency


def money(amount: Any, currency_code: str) -> str:
    """An amount at the currency's minor unit, as text (amounts here are already rounded)."""
    if amount is None:
        return ""
    d = amount if isinstance(amount, Decimal) else Decimal(str(amount))
    return str(d.quantize(currency(currency_code).quantum))


_LINE_COLUMNS = ("line", "kind", "description", "contract_id", "contract_version", "quantity", "unit_price", "amount",
                 "corrects")


def _line_rows(doc: Mapping[str, Any]) -> list[list[str]]:
    cur = doc["currency"]
    rows = []
    for i, ln in enumerate(doc["lines"], start=1):
        kind = ln.get("adjustment_kind") or ln["kind"]
        corrects = ln.get("corrects_line_id") or ln.get("invoice_line_id") or ""
        rows.append([str(i), kind, ln["description"], ln.get("contract_id") or "",
                     "" if ln.get("contract_version") is None else str(ln["contract_version"]),
                     "" if ln.get("quantity") is None else str(ln["quantity"]),
                     "" if ln.get("unit_price") is None else str(ln["unit_price"]),
                     money(ln["amount"], cur), str(corrects or "")])
    return rows


def _header(doc: Mapping[str, Any], kind: str) -> list[tuple[str, str]]:
    cur = doc["currency"]
    if kind == "invoice":
        return [("Invoice", doc.get("number") or "DRAFT"), ("Status", doc["status"]),
                ("Advertiser", doc["advertiser_id"]), ("Period", doc["period_key"]), ("Currency", cur),
                ("Issue date", str(doc.get("issue_date") or "")), ("Due date", str(doc.get("due_date") or "")),
                ("PO", ", ".join(doc.get("po_references") or [])), ("Total", money(doc["total"], cur))]
    if kind == "statement":
        return [("Payout statement", doc.get("number") or "DRAFT"), ("Status", doc["status"]),
                ("Partner", doc["partner_id"]), ("Period", doc["period_key"]), ("Currency", cur),
                ("Issue date", str(doc.get("issue_date") or "")), ("Lines total", money(doc["lines_total"], cur)),
                ("Carried in", money(doc.get("carried_in"), cur)), ("Balance", money(doc.get("balance"), cur)),
                ("Payable", money(doc.get("amount_payable"), cur)), ("Carried forward", money(doc.get("carried_out"), cur))]
    return [("Credit note", doc["number"]), ("For invoice", doc.get("invoice_number") or str(doc["invoice_id"])),
            ("Advertiser", doc["advertiser_id"]), ("Currency", cur), ("Issue date", str(doc["issue_date"])),
            ("Reason", doc["reason"]), ("Total", money(doc["total"], cur))]


def to_csv(doc: Mapping[str, Any], kind: str) -> str:
    """Header fields as ``# name,value`` rows, then one row per line."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for name, value in _header(doc, kind):
        w.writerow([f"# {name}", value])
    w.writerow(_LINE_COLUMNS)
    w.writerows(_line_rows(doc))
    return buf.getvalue()


def to_pdf(doc: Mapping[str, Any], kind: str) -> bytes:
    buf = io.BytesIO()
    title = {"invoice": "Invoice", "statement": "Payout statement", "credit_note": "Credit note"}[kind]
    pdf = SimpleDocTemplate(buf, pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm, topMargin=15 * mm,
                            bottomMargin=15 * mm, title=f"{title} {doc.get('number') or 'DRAFT'}", author="Tally")
    styles = getSampleStyleSheet()
    small = styles["BodyText"].clone("small", fontSize=8, leading=10)
    story: list[Any] = [Paragraph(f"Tally — {title} {doc.get('number') or 'DRAFT'}", styles["Title"])]
    header = Table([[k, v] for k, v in _header(doc, kind)], colWidths=[40 * mm, 120 * mm])
    header.setStyle(TableStyle([("FONTNAME", (0, 0), (0, -1), "Helvetica-Bold"), ("FONTSIZE", (0, 0), (-1, -1), 9)]))
    story += [header, Spacer(1, 6 * mm)]
    data: list[Sequence[Any]] = [["#", "Kind", "Description", "Qty", "Unit price", "Amount"]]
    for r in _line_rows(doc):
        data.append([r[0], Paragraph(r[1], small), Paragraph(r[2], small), r[5], r[6], r[7]])
    total_label = "Lines total" if kind == "statement" else "Total"
    total_value = doc["lines_total"] if kind == "statement" else doc["total"]
    data.append(["", "", total_label, "", "", money(total_value, doc["currency"])])
    table = Table(data, colWidths=[8 * mm, 28 * mm, 82 * mm, 18 * mm, 22 * mm, 22 * mm], repeatRows=1)
    table.setStyle(TableStyle([
        ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"), ("FONTNAME", (0, -1), (-1, -1), "Helvetica-Bold"),
        ("FONTSIZE", (0, 0), (-1, -1), 8), ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
        ("ALIGN", (3, 1), (-1, -1), "RIGHT"), ("VALIGN", (0, 0), (-1, -1), "TOP"),
    ]))
    story.append(table)
    pdf.build(story)
    return buf.getvalue()
