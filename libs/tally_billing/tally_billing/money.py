"""Money: ISO 4217 currencies, exact decimal arithmetic, the one rounding function, allocation.

Amounts are ``decimal.Decimal`` evaluated in :data:`MONEY_CONTEXT`, which traps ``Inexact``:
any arithmetic that would silently lose a digit raises instead.  The only function that is
allowed to discard digits is :func:`round_to_minor` (half-even, to the currency's minor unit).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    FloatOperation,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from fractions import Fraction

__all__ = [
    "AMOUNT_SCALE",
    "MONEY_CONTEXT",
    "Currency",
    "UnknownCurrency",
    "allocate",
    "currency",
    "exact",
    "exact_amount",
    "format_decimal",
    "from_minor_units",
    "is_rounded",
    "parse_amount",
    "round_to_minor",
    "to_minor_units",
]

#: 38 significant digits hold 10^18 impressions × a rate with 12 decimals and more; every
#: lossy or float-mixing operation is trapped so precision loss is an error, never a drift.
MONEY_CONTEXT = Context(
    prec=38,
    rounding=ROUND_HALF_EVEN,
    Emin=-999_999,
    Emax=999_999,
    traps=[InvalidOperation, DivisionByZero, Overflow, Inexact, FloatOperation],
)

# The rounding context is the money context minus the Inexact trap: rounding is its purpose.
_ROUNDING_CONTEXT = Context(
    prec=38,
    rounding=ROUND_HALF_EVEN,
    Emin=-999_999,
    Emax=999_999,
    traps=[InvalidOperation, DivisionByZero, Overflow, FloatOperation],
)


#: decimal places of every exact (unrounded) amount on the wire (Avro decimal(38, 12))
AMOUNT_SCALE = 12


@contextmanager
def exact() -> Iterator[Context]:
    """Evaluate the enclosed Decimal arithmetic in :data:`MONEY_CONTEXT`."""
    with localcontext(MONEY_CONTEXT) as ctx:
        yield ctx


class UnknownCurrency(ValueError):
    """The code is not an ISO 4217 currency this library knows."""


@dataclass(frozen=True)
class Currency:
    code: str
    minor_unit: int

    @property
    def quantum(self) -> Decimal:
        """The smallest amount of the currency, e.g. ``0.01`` for USD, ``1`` for JPY."""
        return Decimal(1).scaleb(-self.minor_unit)


_MINOR_UNITS: dict[str, int] = {
    "AED": 2, "AUD": 2, "BHD": 3, "BRL": 2, "CAD": 2, "CHF": 2, "CLP": 0, "CNY": 2,
    "CZK": 2, "DKK": 2, "EUR": 2, "GBP": 2, "HKD": 2, "HUF": 2, "IDR": 2, "ILS": 2,
    "INR": 2, "ISK": 0, "JOD": 3, "JPY": 0, "KRW": 0, "KWD": 3, "MXN": 2, "NOK": 2,
    "NZD": 2, "OMR": 3, "PLN": 2, "SAR": 2, "SEK": 2, "SGD": 2, "TND": 3, "TRY": 2,
    "TWD": 2, "USD": 2, "ZAR": 2,
}  # fmt: skip

CURRENCIES: dict[str, Currency] = {c: Currency(c, m) for c, m in _MINOR_UNITS.items()}


def currency(code: str) -> Currency:
    """The currency with ISO 4217 ``code`` (upper case, exactly three letters)."""
    try:
        return CURRENCIES[code]
    except (KeyError, TypeError):
        raise UnknownCurrency(f"unknown currency {code!r}") from None


def round_to_minor(amount: Decimal, cur: Currency) -> Decimal:
    """THE rounding function: half-even to ``cur``'s minor unit. Nothing else rounds money."""
    if not isinstance(amount, Decimal):
        raise TypeError(f"amount must be a Decimal, not {type(amount).__name__}")
    if not amount.is_finite():
        raise ValueError(f"amount must be finite, got {amount}")
    rounded = amount.quantize(cur.quantum, rounding=ROUND_HALF_EVEN, context=_ROUNDING_CONTEXT)
    # -0.00 and 0.00 are the same money; keep one spelling so equality and JSON are stable.
    return rounded.copy_abs() if rounded.is_zero() else rounded


def is_rounded(amount: Decimal, cur: Currency) -> bool:
    """True when ``amount`` has no digits below ``cur``'s minor unit."""
    if not amount.is_finite():
        return False
    return amount.quantize(cur.quantum, context=_ROUNDING_CONTEXT) == amount


def to_minor_units(amount: Decimal, cur: Currency) -> int:
    """``amount`` in minor units (cents). The amount must already be rounded."""
    if not is_rounded(amount, cur):
        raise ValueError(f"{amount} has more than {cur.minor_unit} decimals for {cur.code}")
    with exact():
        return int(amount.scaleb(cur.minor_unit))


def from_minor_units(n: int, cur: Currency) -> Decimal:
    """The amount of ``n`` minor units, with exactly ``cur.minor_unit`` decimals."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError("minor units must be an int")
    with exact():
        return Decimal(n).scaleb(-cur.minor_unit)


def allocate(total: Decimal, weights: Sequence[int | Decimal], cur: Currency) -> list[Decimal]:
    """Split ``total`` (already rounded) by ``weights`` with the largest-remainder method.

    Every share is a whole number of minor units and the shares sum exactly to ``total``.
    Leftover minor units go to the largest fractional remainders; ties go to the earlier
    weight, so the result is deterministic.
    """
    if not weights:
        raise ValueError("allocate needs at least one weight")
    fractions_: list[Fraction] = []
    for w in weights:
        if isinstance(w, (float, bool)):
            raise TypeError("weights must be int or Decimal")
        if w < 0:
            raise ValueError("weights must be ≥ 0")
        fractions_.append(Fraction(w))
    weight_sum = sum(fractions_, Fraction(0))
    if weight_sum == 0:
        raise ValueError("weights must not all be zero")
    total_minor = to_minor_units(total, cur)
    sign = -1 if total_minor < 0 else 1
    magnitude = abs(total_minor)
    exact_shares = [magnitude * f / weight_sum for f in fractions_]
    floors = [int(s) for s in exact_shares]  # shares are ≥ 0, so int() is floor
    leftover = magnitude - sum(floors)
    order = sorted(range(len(weights)), key=lambda i: (-(exact_shares[i] - floors[i]), i))
    for i in order[:leftover]:
        floors[i] += 1
    return [from_minor_units(sign * f, cur) for f in floors]


_AMOUNT_RE = re.compile(r"-?(0|[1-9][0-9]{0,29})(\.[0-9]{1,18})?")


def parse_amount(s: str) -> Decimal:
    """Parse a decimal string strictly: ``-?digits[.digits]``; no exponent, NaN, inf or float."""
    if not isinstance(s, str):
        raise TypeError(f"amount must be a decimal string, not {type(s).__name__}")
    if _AMOUNT_RE.fullmatch(s) is None:
        raise ValueError(f"not a decimal amount: {s!r}")
    return Decimal(s)


def format_decimal(d: Decimal, *, trailing_zeros: bool = True) -> str:
    """The one decimal formatter: exponent-free and exact, so :func:`parse_amount` reads it back to an
    equal value. ``trailing_zeros=False`` drops the zeros after the point (12.345, not 12.345000000000;
    a zero of either sign is 0) by cutting the text, not with ``Decimal.normalize``, which rounds to the
    context's 28 digits where a decimal(38, 12) amount has up to 38."""
    text = format(d, "f")
    if trailing_zeros:
        return text
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def exact_amount(amount: Decimal) -> Decimal | None:
    """``amount`` at the wire's scale (``AMOUNT_SCALE`` places) when that loses nothing — trailing
    zeros of a product such as order value × percentage are dropped — else ``None``: an amount
    that needs more places is refused by its caller, never rounded (rounding belongs to the
    invoice line)."""
    with localcontext(_ROUNDING_CONTEXT):
        q = amount.quantize(Decimal(1).scaleb(-AMOUNT_SCALE))
    return q if q == amount and len(q.as_tuple().digits) <= MONEY_CONTEXT.prec else None
