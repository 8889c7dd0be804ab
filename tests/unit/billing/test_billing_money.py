from __future__ import annotations

from decimal import Decimal, FloatOperation, Inexact

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tally_billing.money import (
    UnknownCurrency,
    allocate,
    currency,
    exact,
    from_minor_units,
    parse_amount,
    round_to_minor,
    to_minor_units,
)

USD, JPY, BHD, KWD = currency("USD"), currency("JPY"), currency("BHD"), currency("KWD")


@pytest.mark.parametrize(
    ("code", "minor"),
    [("USD", 2), ("EUR", 2), ("GBP", 2), ("CAD", 2), ("AUD", 2), ("JPY", 0), ("KWD", 3), ("BHD", 3)],
)
def test_currency_minor_units(code: str, minor: int) -> None:
    assert currency(code).minor_unit == minor


@pytest.mark.parametrize("code", ["usd", "XYZ", "", "US"])
def test_unknown_currency_raises(code: str) -> None:
    with pytest.raises(UnknownCurrency):
        currency(code)
    assert issubclass(UnknownCurrency, ValueError)


@pytest.mark.parametrize(
    ("amount", "code", "expected"),
    [
        ("0.125", "USD", "0.12"),  # half to even: down
        ("0.135", "USD", "0.14"),  # half to even: up
        ("0.005", "USD", "0.00"),
        ("-0.005", "USD", "0.00"),
        ("-0.015", "USD", "-0.02"),
        ("2.5", "JPY", "2"),
        ("3.5", "JPY", "4"),
        ("0.0005", "BHD", "0.000"),
        ("0.0015", "BHD", "0.002"),
        ("1.23456", "KWD", "1.235"),
        ("7", "USD", "7.00"),
    ],
)
def test_round_to_minor_half_even(amount: str, code: str, expected: str) -> None:
    got = round_to_minor(Decimal(amount), currency(code))
    assert got == Decimal(expected)
    assert str(got) == expected


def test_round_rejects_float_and_nan() -> None:
    with pytest.raises(TypeError):
        round_to_minor(0.1, USD)  # a float is refused, never converted
    with pytest.raises(ValueError):
        round_to_minor(Decimal("NaN"), USD)


def test_minor_units_round_trip() -> None:
    assert to_minor_units(Decimal("12.34"), USD) == 1234
    assert to_minor_units(Decimal("1.500"), USD) == 150
    assert to_minor_units(Decimal("5"), JPY) == 5
    assert from_minor_units(1234, USD) == Decimal("12.34")
    assert str(from_minor_units(1, BHD)) == "0.001"
    with pytest.raises(ValueError):
        to_minor_units(Decimal("0.125"), USD)


@pytest.mark.parametrize("bad", ["1e3", "NaN", "inf", "1.", ".5", "+1", "01", " 1", "1,00", "0x10", ""])
def test_parse_amount_is_strict(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_amount(bad)


def test_parse_amount_rejects_non_strings() -> None:
    with pytest.raises(TypeError):
        parse_amount(1.5)  # a float is refused, never converted


def test_parse_amount_keeps_scale() -> None:
    assert str(parse_amount("12.50")) == "12.50"
    assert parse_amount("-0.001") == Decimal("-0.001")


def test_money_context_traps_precision_loss_and_floats() -> None:
    with exact(), pytest.raises(Inexact):
        Decimal(1) / Decimal(3)
    with exact(), pytest.raises(FloatOperation):
        Decimal(0.1)  # noqa: RUF032 - proves the context refuses a float


@pytest.mark.parametrize(
    ("total", "weights", "expected"),
    [
        ("100.00", [1, 1, 1], ["33.34", "33.33", "33.33"]),
        ("0.05", [1, 1], ["0.03", "0.02"]),
        ("-100.00", [1, 1, 1], ["-33.34", "-33.33", "-33.33"]),
        ("10.00", [Decimal("0.5"), Decimal("0.25"), Decimal("0.25")], ["5.00", "2.50", "2.50"]),
        ("1.00", [0, 3], ["0.00", "1.00"]),
    ],
)
def test_allocate_examples(total: str, weights: list[int | Decimal], expected: list[str]) -> None:
    assert allocate(Decimal(total), weights, USD) == [Decimal(e) for e in expected]


def test_allocate_rejects_bad_weights() -> None:
    with pytest.raises(ValueError):
        allocate(Decimal("1.00"), [], USD)
    with pytest.raises(ValueError):
        allocate(Decimal("1.00"), [0, 0], USD)
    with pytest.raises(ValueError):
        allocate(Decimal("1.00"), [-1, 2], USD)


@settings(max_examples=200)
@given(
    total_minor=st.integers(-(10**12), 10**12),
    weights=st.lists(st.integers(0, 10**6), min_size=1, max_size=12).filter(any),
    code=st.sampled_from(["USD", "JPY", "BHD"]),
)
def test_allocate_sums_exactly_and_stays_within_one_unit(total_minor: int, weights: list[int], code: str) -> None:
    cur = currency(code)
    total = from_minor_units(total_minor, cur)
    shares = allocate(total, weights, cur)
    assert sum(shares, Decimal(0)) == total
    w_sum = sum(weights)
    for share, w in zip(shares, weights, strict=True):
        ideal_minor = abs(total_minor) * w / w_sum
        assert abs(abs(to_minor_units(share, cur)) - ideal_minor) < 1


@settings(max_examples=200)
@given(st.decimals(min_value=-(10**9), max_value=10**9, places=6, allow_nan=False, allow_infinity=False))
def test_rounding_is_idempotent_and_within_half_unit(amount: Decimal) -> None:
    r = round_to_minor(amount, USD)
    assert round_to_minor(r, USD) == r
    with exact():
        assert abs(r - amount) <= Decimal("0.005")
    assert round_to_minor(-amount, USD) == -r
