"""Pure invoicing rules: closed periods and adjustments → invoice and statement lines, the
minimum-commitment shortfall, payout carry-forward, document numbers and journal entries.

No I/O here. The lines are the billing library's one model: a record's lines are read as
``tally_billing.totals.Line`` / ``PayoutLine`` and billed with ``tally_billing.invoice_lines``
(each line rounded exactly once with ``tally_billing.money.round_to_minor``, half-even, to the
currency's minor unit; the shortfall against the rounded lines; a document's total is the sum
of its rounded lines). What is invoicing's own is reading the records, the descriptions a
reader sees, and the documents' lifecycle and journals.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tally_billing.cpm import impressions_amount
from tally_billing.invoice_lines import BilledPeriod, Shortfall, bill_period, lines_total
from tally_billing.money import UnknownCurrency, currency, exact, format_decimal
from tally_billing.totals import Line, PayoutLine
from tally_kit.audit import canonical_json

ZERO = Decimal(0)

ADJUSTMENT_KINDS = ("late_event", "reversal_after_close", "ivt_credit", "backdated_amendment")
#: adjustment kinds that can only take money away (their amount is ≤ 0)
CREDIT_KINDS = frozenset({"reversal_after_close", "ivt_credit"})

ACCOUNT_CASH = "1000"
ACCOUNT_RECEIVABLE = "1100"
ACCOUNT_PAYABLE = "2100"
ACCOUNT_REVENUE = "4000"
ACCOUNT_COST_OF_REVENUE = "5000"


def content_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 of a decoded record's canonical JSON: the same id with other content is a conflict."""
    return hashlib.sha256(canonical_json(dict(record)).encode()).hexdigest()


# ------------------------------------------------------------------ validation


def _currency_problems(code: str) -> list[str]:
    """The first problems of a record: its currency, which every amount of it is spelled in."""
    try:
        currency(code)
    except UnknownCurrency as exc:
        return [f"currency: {exc}"]
    return []


def validate_close(rec: Mapping[str, Any]) -> list[str]:
    """Problems that make a closed-period record unusable (empty when it is fine)."""
    problems = _currency_problems(rec["currency"])
    if rec["close_id"] != f"{rec['contract_id']}/{rec['period_key']}":
        problems.append("close_id: must be '<contract_id>/<period_key>'")
    mc = rec.get("minimum_commitment")
    if mc is not None and mc < 0:
        problems.append("minimum_commitment: must be ≥ 0")
    for i, ln in enumerate(rec["lines"]):
        where = f"lines[{i}]"
        if ln["quantity"] < 0:
            problems.append(f"{where}.quantity: must be ≥ 0")
        if ln["line_type"] == "cpm_over_delivery":
            if ln["amount_exact"] != 0:
                problems.append(f"{where}.amount_exact: over-delivery is never billed (must be 0)")
        elif ln["amount_exact"] < 0:
            problems.append(f"{where}.amount_exact: must be ≥ 0")
        if ln["line_type"] == "cpm_impressions":
            expected = impressions_amount(ln["quantity"], ln["unit_price"])
            if ln["unit"] != "per_thousand" or expected != ln["amount_exact"]:
                problems.append(f"{where}.amount_exact: {ln['amount_exact']} ≠ quantity × rate ÷ 1000 = {expected}")
        if ln["line_type"] == "cpa_conversions" and not ln.get("event_type"):
            problems.append(f"{where}.event_type: required for cpa_conversions")
    for i, p in enumerate(rec["payouts"]):
        if not p["partner_id"]:
            problems.append(f"payouts[{i}].partner_id: required")
    return problems


def validate_adjustment(adj: Mapping[str, Any]) -> list[str]:
    """Problems that make an adjustment record unusable (empty when it is fine)."""
    problems = _currency_problems(adj["currency"])
    if adj["kind"] in CREDIT_KINDS:
        if adj["amount_exact"] > 0:
            problems.append(f"amount_exact: a {adj['kind']} only removes money (must be ≤ 0)")
        payout = adj.get("partner_payout_exact")
        if payout is not None and payout > 0:
            problems.append(f"partner_payout_exact: a {adj['kind']} only removes money (must be ≤ 0)")
    if adj.get("partner_payout_exact") is not None and not adj.get("partner_id"):
        problems.append("partner_id: required when partner_payout_exact is set")
    return problems


# ------------------------------------------------------------------ lines from a closed period


def rated_lines(rec: Mapping[str, Any]) -> list[Line]:
    """A ``period_closed`` record's lines, in the billing library's model."""
    return [Line(ln["line_type"], ln["contract_version"], ln["price_point"], ln.get("event_type"), ln["quantity"],
                 ln["unit"], ln["unit_price"], ln["amount_exact"]) for ln in rec["lines"]]


def rated_payouts(rec: Mapping[str, Any]) -> list[PayoutLine]:
    return [PayoutLine(p["partner_id"], p["contract_version"], p["event_type"], p["quantity"], p["amount_exact"])
            for p in rec["payouts"]]


def close_lines(rec: Mapping[str, Any]) -> BilledPeriod:
    """What a closed period puts on documents: one advertiser line per price point, over-delivery
    at zero, a minimum-commitment shortfall when the period's *rounded* lines are below the
    minimum (so the contract's lines add up to exactly the minimum), and the partners' payout
    lines — each rounded once, by ``tally_billing.invoice_lines``."""
    return bill_period(rated_lines(rec), rated_payouts(rec), rec.get("minimum_commitment"), currency(rec["currency"]))


def line_description(line: Line, cur_code: str) -> str:
    version = f"v{line.contract_version}"
    if line.line_type == "cpm_impressions":
        price = format_decimal(line.unit_price, trailing_zeros=False)
        return f"CPM impressions ({version}, {line.price_point}) at {price} {cur_code} per thousand"
    if line.line_type == "cpm_over_delivery":
        return f"Over-delivery past the budget cap ({version}, {line.price_point}): not billed"
    return f"CPA {line.event_type or line.price_point} conversions ({version})"


def shortfall_description(s: Shortfall, cur_code: str) -> str:
    return (f"Minimum commitment shortfall: minimum {format_decimal(s.minimum, trailing_zeros=False)} {cur_code}, "
            f"billed {format_decimal(s.billed, trailing_zeros=False)} {cur_code}")


def payout_description(p: PayoutLine, rec: Mapping[str, Any]) -> str:
    return (f"CPA {p.event_type} payouts ({p.quantity} conversions, v{p.contract_version}, "
            f"contract {rec['contract_id']}, advertiser {rec['advertiser_id']})")


# ------------------------------------------------------------------ adjustments

_ADJ_TITLES = {
    "late_event": "Late events",
    "reversal_after_close": "Clawback (reversal after close)",
    "ivt_credit": "Invalid-traffic credit",
    "backdated_amendment": "Backdated amendment",
}


def adjustment_aggregation_key(adj: Mapping[str, Any]) -> str:
    """Adjustments of one kind for one contract, corrected period and price point share a line
    on the carrying invoice; the line's amount is its summed exact amount, rounded once."""
    return "|".join(str(x) for x in (
        "adj", adj["kind"], adj["contract_id"], adj["corrects_period_key"], adj["line_type"],
        adj["contract_version"], adj["price_point"], adj.get("event_type") or "", adj["unit_price"]))


def statement_aggregation_key(adj: Mapping[str, Any]) -> str:
    return "|".join(str(x) for x in (
        "adj", adj["kind"], adj["contract_id"], adj["corrects_period_key"], adj["contract_version"],
        adj.get("event_type") or adj["price_point"]))


def adjustment_description(adj: Mapping[str, Any]) -> str:
    what = adj.get("event_type") or adj["price_point"]
    return (f"{_ADJ_TITLES[adj['kind']]}: contract {adj['contract_id']} period {adj['corrects_period_key']}, "
            f"{what} (v{adj['contract_version']})")


def adjustment_line(adj: Mapping[str, Any]) -> Line:
    """An ``adjustment`` record's advertiser side: the line difference metering emitted."""
    return Line(adj["line_type"], adj["contract_version"], adj["price_point"], adj.get("event_type"), adj["quantity"],
                adj["unit"], adj["unit_price"], adj["amount_exact"])


def adjustment_payout(adj: Mapping[str, Any]) -> PayoutLine:
    """An ``adjustment`` record's partner side (its ``partner_payout_exact``), keyed like
    :func:`statement_aggregation_key`."""
    return PayoutLine(adj["partner_id"], adj["contract_version"], adj.get("event_type") or adj["price_point"],
                      adj["quantity"], adj["partner_payout_exact"])


# ------------------------------------------------------------------ lifecycle rules

CREDIT_NOTE_SERIES = "CN"


@dataclass(frozen=True)
class Transition:
    """One step of a document's lifecycle, the same for invoices and payout statements."""

    action: str  # as in the API path: /invoices/{id}/{action}
    allowed_from: tuple[str, ...]
    verb: str  # "cannot {verb} a sent invoice"
    audit_action: str
    metric: str  # the ``tally_invoicing_transitions_total`` label


#: THE state-transition table of invoices and payout statements (``void`` is the invoice's only:
#: a statement is corrected by the next period's lines, never voided)
TRANSITIONS: dict[str, Transition] = {t.action: t for t in (
    Transition("finalize", ("draft",), "finalize", "finalized", "finalize"),
    Transition("send", ("finalized",), "send", "sent", "send"),
    Transition("mark-paid", ("finalized", "sent"), "mark paid", "paid", "pay"),
    Transition("void", ("finalized", "sent"), "void", "voided", "void"),
)}


@dataclass(frozen=True)
class DocumentKind:
    """What tells an invoice from a payout statement wherever both go through one code path."""

    name: str  # audit entity type and metric label
    what: str  # in messages
    table: str
    lines_table: str
    line_fk: str  # the lines' column naming their document
    party_type: str  # the tenant type that owns it
    party_col: str
    total_col: str  # the sum of the rounded lines
    series: str  # document number prefix
    actions: tuple[str, ...]  # the TRANSITIONS it takes
    snapshot: tuple[str, ...]  # fields the audit entries show before and after
    money: tuple[str, ...]  # amounts of its JSON, spelled in the currency
    adjustment_line_col: str  # the ``adjustments`` column naming the line an adjustment landed on
    needs_lines: bool  # finalizing needs at least one line
    carries_forward: bool  # a balance under the minimum payout moves to the next document
    tracks_supplementary: bool  # its draft records whether the period already has a finalized one
    due_after_terms: bool  # finalizing sets a due date, payment_terms_days after the issue date

    def transition(self, action: str) -> Transition | None:
        return TRANSITIONS[action] if action in self.actions else None


INVOICE = DocumentKind(
    name="invoice", what="invoice", table="invoices", lines_table="invoice_lines", line_fk="invoice_id",
    party_type="advertiser", party_col="advertiser_id", total_col="total", series="INV",
    actions=("finalize", "send", "mark-paid", "void"),
    snapshot=("status", "number", "total", "prepared_by", "approved_by", "issue_date", "due_date"),
    money=("total",), adjustment_line_col="invoice_line_id", needs_lines=True, carries_forward=False,
    tracks_supplementary=True, due_after_terms=True)
STATEMENT = DocumentKind(
    name="payout_statement", what="payout statement", table="payout_statements", lines_table="statement_lines",
    line_fk="statement_id", party_type="partner", party_col="partner_id", total_col="lines_total", series="PS",
    actions=("finalize", "send", "mark-paid"),
    snapshot=("status", "number", "lines_total", "carried_in", "balance", "amount_payable", "carried_out",
              "prepared_by"),
    money=("lines_total", "carried_in", "balance", "amount_payable", "carried_out", "minimum_payout"),
    adjustment_line_col="statement_line_id", needs_lines=False, carries_forward=True, tracks_supplementary=False,
    due_after_terms=False)



def needs_second_approver(total: Decimal, threshold: Decimal) -> bool:
    """Four-eyes: a document whose absolute total exceeds the threshold needs a second user."""
    return abs(total) > threshold


def document_number(prefix: str, year: int, seq: int) -> str:
    return f"{prefix}-{year}-{seq:06d}"


@dataclass(frozen=True)
class PayoutSettlement:
    carried_in: Decimal
    lines_total: Decimal
    balance: Decimal
    amount_payable: Decimal
    carried_out: Decimal


def settle_payout(carried_in: Decimal, lines_total: Decimal, minimum_payout: Decimal) -> PayoutSettlement:
    """What a finalized statement pays: its balance (carried in + lines) when that reaches the
    minimum payout; otherwise nothing, and the balance — small or negative — is carried
    forward to the partner's next statement in the same currency. A negative balance is never
    paid out."""
    with exact():
        balance = carried_in + lines_total
    if balance > 0 and balance >= minimum_payout:
        return PayoutSettlement(carried_in, lines_total, balance, balance, ZERO)
    return PayoutSettlement(carried_in, lines_total, balance, ZERO, balance)


# ------------------------------------------------------------------ journal entries

JournalLine = tuple[str, Decimal]  # (account code, signed amount: debit > 0, credit < 0)


def _pair(debit_account: str, credit_account: str, amount: Decimal) -> list[JournalLine]:
    if amount == 0:
        return []
    return [(debit_account, amount), (credit_account, -amount)]


def invoice_journal(total: Decimal) -> list[JournalLine]:
    """Finalizing an invoice: debit receivable, credit revenue (reversed for a negative total)."""
    return _pair(ACCOUNT_RECEIVABLE, ACCOUNT_REVENUE, total)


def credit_note_journal(invoice_total: Decimal) -> list[JournalLine]:
    """A full credit note reverses its invoice's entry."""
    return _pair(ACCOUNT_REVENUE, ACCOUNT_RECEIVABLE, invoice_total)


def invoice_payment_journal(total: Decimal) -> list[JournalLine]:
    return _pair(ACCOUNT_CASH, ACCOUNT_RECEIVABLE, total)


def statement_journal(lines_total: Decimal) -> list[JournalLine]:
    """Finalizing a payout statement: the period's payouts are a cost owed to the partner
    (debit cost of revenue, credit payable); clawbacks reverse it."""
    return _pair(ACCOUNT_COST_OF_REVENUE, ACCOUNT_PAYABLE, lines_total)


def payout_payment_journal(amount_payable: Decimal) -> list[JournalLine]:
    return _pair(ACCOUNT_PAYABLE, ACCOUNT_CASH, amount_payable)


def is_balanced(lines: Sequence[JournalLine]) -> bool:
    return lines_total(a for _, a in lines) == 0
