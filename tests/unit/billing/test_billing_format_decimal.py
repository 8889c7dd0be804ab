"""The one decimal formatter (``tally_billing.money.format_decimal``): exponent-free, exact, read back equal."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tally_billing.money import format_decimal, parse_amount


@pytest.mark.parametrize(("value", "kept", "plain"), [
    ("12.345000000000", "12.345000000000", "12.345"),
    ("100.00", "100.00", "100"),
    ("1E+2", "100", "100"),
    ("0.000", "0.000", "0"),
    ("-0.50", "-0.50", "-0.5"),
    ("-0.000", "-0.000", "0"),
    ("1E-12", "0.000000000001", "0.000000000001"),
    ("250", "250", "250"),
])
def test_the_text_keeps_or_drops_the_zeros_after_the_point(value: str, kept: str, plain: str) -> None:
    assert format_decimal(Decimal(value)) == kept
    assert format_decimal(Decimal(value), trailing_zeros=False) == plain


def test_a_decimal_38_12_amount_keeps_every_digit() -> None:
    # Decimal.normalize() would round this to the context's 28 digits (…456.12)
    amount = Decimal("12345678901234567890123456.123456789012")
    assert format_decimal(amount, trailing_zeros=False) == "12345678901234567890123456.123456789012"


@given(st.decimals(allow_nan=False, allow_infinity=False, places=12, min_value=-10**25, max_value=10**25))
def test_both_forms_read_back_to_an_equal_amount(d: Decimal) -> None:
    for text in (format_decimal(d), format_decimal(d, trailing_zeros=False)):
        assert parse_amount(text) == d
