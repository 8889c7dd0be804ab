"""Invoice and payout-statement lines: the rated lines of a period as a document bills them.

The lines are the one model's — :class:`~tally_billing.totals.Line` and
:class:`~tally_billing.totals.PayoutLine`, as :func:`~tally_billing.totals.rate_period` rates a
period and :func:`~tally_billing.totals.diff_lines` makes adjustments. A document adds only its
money rule: each line's exact amount is rounded once with
:func:`~tally_billing.money.round_to_minor` (half-even, to the currency's minor unit); the
minimum-commitment shortfall is measured against the *rounded* lines, so the contract's lines add
up to exactly the minimum; adjustments of one price point carried on one document line are summed
exactly and rounded once; a total is the exact sum of rounded lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import TypeVar

from .money import Currency, exact, round_to_minor
from .totals import Line, PayoutLine, Rating

__all__ = [
    "PAYOUT",
    "SHORTFALL",
    "BilledPeriod",
    "InvoiceLine",
    "Shortfall",
    "StatementLine",
    "bill",
    "bill_period",
    "invoice_line",
    "line_amount",
    "lines_total",
    "shortfall",
    "statement_line",
    "sum_lines",
    "sum_payouts",
]

ZERO = Decimal(0)

#: the kind of the minimum-commitment line (a rated line's kind is its ``line_type``)
SHORTFALL = "minimum_commitment_shortfall"
#: the kind of a payout-statement line
PAYOUT = "cpa_payout"


def line_amount(amount_exact: Decimal, cur: Currency) -> Decimal:
    """What a document bills for a line: its exact amount, rounded once."""
    return round_to_minor(amount_exact, cur)


def lines_total(amounts: Iterable[Decimal]) -> Decimal:
    """The exact sum of already rounded line amounts (a total is never rounded again)."""
    with exact():
        return sum(amounts, ZERO)


@dataclass(frozen=True)
class InvoiceLine:
    """A rated line as an invoice bills it: ``amount`` is ``line.amount_exact`` rounded once."""

    line: Line
    amount: Decimal


@dataclass(frozen=True)
class StatementLine:
    """A partner's payout line as a statement pays it: ``amount`` is ``payout.amount_exact`` rounded once."""

    payout: PayoutLine
    amount: Decimal


@dataclass(frozen=True)
class Shortfall:
    """The minimum-commitment line of a period: the minimum less what its rounded lines bill."""

    minimum: Decimal
    #: the sum of the period's rounded lines
    billed: Decimal
    amount_exact: Decimal
    amount: Decimal


def invoice_line(line: Line, cur: Currency) -> InvoiceLine:
    return InvoiceLine(line, line_amount(line.amount_exact, cur))


def statement_line(payout: PayoutLine, cur: Currency) -> StatementLine:
    return StatementLine(payout, line_amount(payout.amount_exact, cur))


def shortfall(minimum: Decimal | None, billed: Decimal, cur: Currency) -> Shortfall | None:
    """The shortfall line when ``billed`` (the sum of rounded lines) is below ``minimum``.

    None without a minimum, when the minimum is reached, or when the gap rounds to nothing.
    Over-delivery lines bill zero, so they never count towards the minimum.
    """
    if minimum is None:
        return None
    with exact():
        gap = minimum - billed
    if gap <= 0:
        return None
    amount = line_amount(gap, cur)
    return Shortfall(minimum, billed, gap, amount) if amount > 0 else None


@dataclass(frozen=True)
class BilledPeriod:
    """What one contract's closed period puts on documents: the advertiser's invoice lines (one
    per price point, over-delivery at zero), the shortfall line if any, and the partners'
    statement lines."""

    lines: tuple[InvoiceLine, ...]
    shortfall: Shortfall | None
    payouts: tuple[StatementLine, ...]

    @property
    def total(self) -> Decimal:
        """The advertiser's total for the period: its rounded lines and the shortfall."""
        amounts = [ln.amount for ln in self.lines]
        if self.shortfall is not None:
            amounts.append(self.shortfall.amount)
        return lines_total(amounts)

    def payouts_by_partner(self) -> dict[str, list[StatementLine]]:
        """Statement lines grouped by partner, in rated order within each partner."""
        out: dict[str, list[StatementLine]] = {}
        for p in self.payouts:
            out.setdefault(p.payout.partner_id, []).append(p)
        return out


def bill_period(lines: Iterable[Line], payouts: Iterable[PayoutLine], minimum_commitment: Decimal | None,
                cur: Currency) -> BilledPeriod:
    """The documents' lines of a closed period from its rated lines, payouts and minimum."""
    billed = tuple(invoice_line(ln, cur) for ln in lines)
    gap = shortfall(minimum_commitment, lines_total(b.amount for b in billed), cur)
    return BilledPeriod(billed, gap, tuple(statement_line(p, cur) for p in payouts))


def bill(rating: Rating, cur: Currency) -> BilledPeriod:
    """:func:`bill_period` of a :class:`~tally_billing.totals.Rating`."""
    return bill_period(rating.lines, rating.payouts, rating.minimum_commitment, cur)


_Summed = TypeVar("_Summed", Line, PayoutLine)


def _summed(items: Sequence[_Summed], what: str) -> _Summed:
    if not items:
        raise ValueError(f"nothing to add up: no {what}")
    first = items[0]
    if any(i.key != first.key for i in items):
        raise ValueError(f"only {what} add up; got {sorted({i.key for i in items})}")
    with exact():
        amount = sum((i.amount_exact for i in items), ZERO)
    return replace(first, quantity=sum(i.quantity for i in items), amount_exact=amount)


def sum_lines(lines: Sequence[Line]) -> Line:
    """Several lines of one price point (e.g. the adjustments one document line carries) as one:
    quantities and exact amounts summed, so the document rounds the sum once — rounding each
    one-impression adjustment separately would lose money. The unit price is informational
    (amounts come from ``amount_exact``); the first line's is kept."""
    return _summed(lines, "lines of one price point")


def sum_payouts(payouts: Sequence[PayoutLine]) -> PayoutLine:
    """Several payout lines of one (partner, version, event type) as one, with exact sums."""
    return _summed(payouts, "payout lines of one partner, version and event type")
