"""Pure invoicing rules: lines from a closed period, shortfall, carry-forward, journals."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tally_billing.invoice_lines import invoice_line, sum_lines
from tally_billing.money import currency as currency_of
from tally_invoicing import domain
from tally_invoicing.settings import amount_map

USD = currency_of("USD")


def close(lines: list[dict[str, Any]], minimum: str | None = None, currency: str = "USD") -> dict[str, Any]:
    return {"close_id": "c/2026-03", "contract_id": "c", "advertiser_id": "a", "period_key": "2026-03",
            "currency": currency, "minimum_commitment": None if minimum is None else Decimal(minimum),
            "lines": lines, "payouts": []}


def cpm(q: int, rate: str, line_type: str = "cpm_impressions") -> dict[str, Any]:
    amount = Decimal(0) if line_type == "cpm_over_delivery" else Decimal(q) * Decimal(rate) / 1000
    return {"line_type": line_type, "contract_version": 1, "price_point": "band:0", "event_type": None, "quantity": q,
            "unit": "per_thousand", "unit_price": Decimal(rate), "amount_exact": amount}


@pytest.mark.parametrize(("currency", "q", "rate", "expected"), [
    ("USD", 1, "5", "0.00"),          # 0.005 → 0.00 (half-even)
    ("USD", 3, "5", "0.02"),          # 0.015 → 0.02
    ("JPY", 5000, "0.5", "2"),        # 2.5 → 2
    ("JPY", 3000, "0.5", "2"),        # 1.5 → 2
    ("BHD", 1, "2.5", "0.002"),       # 0.0025 → 0.002
    ("BHD", 3, "2.5", "0.008"),       # 0.0075 → 0.008
])
def test_each_line_rounded_once_half_even(currency: str, q: int, rate: str, expected: str) -> None:
    [line] = domain.close_lines(close([cpm(q, rate)], currency=currency)).lines
    assert line.amount == Decimal(expected)
    assert line.line.amount_exact == Decimal(q) * Decimal(rate) / 1000


def test_over_delivery_is_zero_priced() -> None:
    billed = domain.close_lines(close([cpm(1000, "5"), cpm(50, "5", "cpm_over_delivery")]))
    assert [(ln.line.line_type, ln.amount) for ln in billed.lines] == [
        ("cpm_impressions", Decimal("5.00")), ("cpm_over_delivery", Decimal("0.00"))]


def test_shortfall_brings_the_contract_exactly_to_the_minimum() -> None:
    billed = domain.close_lines(close([cpm(1001, "5")], minimum="100.00"))  # 5.005 → 5.00
    assert billed.shortfall is not None and billed.shortfall.amount == Decimal("95.00")
    assert domain.shortfall_description(billed.shortfall, "USD") == (
        "Minimum commitment shortfall: minimum 100 USD, billed 5 USD")
    assert billed.total == Decimal("100.00")
    assert domain.close_lines(close([cpm(30000, "5")], minimum="100.00")).shortfall is None  # 150 ≥ 100


def test_records_read_as_the_billing_librarys_lines_and_keep_their_descriptions() -> None:
    rec = close([cpm(1000, "12.50"), cpm(5, "12.50", "cpm_over_delivery"),
                 {"line_type": "cpa_conversions", "contract_version": 2, "price_point": "event:signup", "event_type": "signup",
                  "quantity": 3, "unit": "per_unit", "unit_price": Decimal("4"), "amount_exact": Decimal("12.00")}])
    rec["payouts"] = [{"partner_id": "p-2", "contract_version": 2, "event_type": "signup", "quantity": 3,
                       "amount_exact": Decimal("7.505")},
                      {"partner_id": "p-1", "contract_version": 2, "event_type": "signup", "quantity": 1,
                       "amount_exact": Decimal("2.50")}]
    billed = domain.close_lines(rec)
    assert [domain.line_description(ln.line, "USD") for ln in billed.lines] == [
        "CPM impressions (v1, band:0) at 12.5 USD per thousand",
        "Over-delivery past the budget cap (v1, band:0): not billed",
        "CPA signup conversions (v2)"]
    assert [(ln.line.key, ln.line.quantity, ln.amount) for ln in billed.lines] == [
        (("cpm_impressions", 1, "band:0"), 1000, Decimal("12.50")),
        (("cpm_over_delivery", 1, "band:0"), 5, Decimal("0.00")),
        (("cpa_conversions", 2, "event:signup"), 3, Decimal("12.00"))]
    by_partner = billed.payouts_by_partner()
    assert sorted(by_partner) == ["p-1", "p-2"]
    [p2] = by_partner["p-2"]
    assert p2.amount == Decimal("7.50")  # 7.505 → 7.50, half-even
    assert domain.payout_description(p2.payout, rec) == "CPA signup payouts (3 conversions, v2, contract c, advertiser a)"


def test_adjustments_of_one_price_point_share_a_line_rounded_once() -> None:
    """Three one-impression late events at 5 CPM: each is 0.005 (0.00 alone, half-even); their
    shared line is 0.015 → 0.02."""
    adj = {"line_type": "cpm_impressions", "contract_version": 1, "price_point": "band:0", "event_type": None,
           "quantity": 1, "unit": "per_thousand", "unit_price": Decimal(5), "amount_exact": Decimal("0.005"),
           "partner_id": None, "partner_payout_exact": None}
    delta = domain.adjustment_line(adj)
    assert invoice_line(delta, USD).amount == Decimal("0.00")
    assert invoice_line(sum_lines([delta, delta, delta]), USD).amount == Decimal("0.02")
    payout = domain.adjustment_payout({**adj, "line_type": "cpa_conversions", "event_type": "signup", "partner_id": "p",
                                       "quantity": -1, "partner_payout_exact": Decimal("-2.505")})
    assert (payout.partner_id, payout.event_type, payout.quantity, payout.amount_exact) == ("p", "signup", -1, Decimal("-2.505"))


@given(st.integers(min_value=0, max_value=10**9), st.decimals(min_value=0, max_value=100, places=3),
       st.decimals(min_value=0, max_value=10**6, places=2))
def test_total_is_the_sum_of_rounded_lines_and_meets_the_minimum(q: int, rate: Decimal, minimum: Decimal) -> None:
    billed = domain.close_lines(close([cpm(q, str(rate))], minimum=str(minimum)))
    amounts = [ln.amount for ln in billed.lines] + ([billed.shortfall.amount] if billed.shortfall else [])
    assert billed.total == sum(amounts, Decimal(0))
    assert billed.total >= minimum
    assert all(a == a.quantize(Decimal("0.01")) for a in amounts)


def test_validation_names_the_field() -> None:
    bad = cpm(1000, "5")
    bad["amount_exact"] = Decimal("4.99")
    assert any(p.startswith("lines[0].amount_exact") for p in domain.validate_close(close([bad])))
    assert domain.validate_close(close([cpm(1000, "5")], currency="ZZZ"))[0].startswith("currency")
    adj = {"kind": "reversal_after_close", "currency": "USD", "amount_exact": Decimal(1), "partner_payout_exact": None,
           "partner_id": None}
    assert domain.validate_adjustment(adj) == ["amount_exact: a reversal_after_close only removes money (must be ≤ 0)"]


@pytest.mark.parametrize(("carried", "lines", "minimum", "payable", "carried_out"), [
    ("0", "30.00", "50", "0", "30.00"),       # under the minimum: carried
    ("30.00", "25.00", "50", "55.00", "0"),   # reaches it with the carry: paid
    ("30.00", "-45.00", "50", "0", "-15.00"),  # negative: carried, never paid
    ("-15.00", "100.00", "50", "85.00", "0"),
    ("0", "0", "0", "0", "0"),
])
def test_payout_settlement(carried: str, lines: str, minimum: str, payable: str, carried_out: str) -> None:
    s = domain.settle_payout(Decimal(carried), Decimal(lines), Decimal(minimum))
    assert (s.amount_payable, s.carried_out) == (Decimal(payable), Decimal(carried_out))
    assert s.amount_payable + s.carried_out == s.balance


@pytest.mark.parametrize("total", [Decimal("10.00"), Decimal("-3.50")])
def test_journals_balance_and_credit_note_reverses(total: Decimal) -> None:
    inv, note = domain.invoice_journal(total), domain.credit_note_journal(total)
    assert domain.is_balanced(inv) and domain.is_balanced(note)
    net: dict[str, Decimal] = {}
    for account, amount in [*inv, *note]:
        net[account] = net.get(account, Decimal(0)) + amount
    assert set(net.values()) == {Decimal(0)}
    assert domain.invoice_journal(Decimal(0)) == []


def test_four_eyes_and_numbers_and_settings() -> None:
    assert domain.needs_second_approver(Decimal("10000.01"), Decimal("10000"))
    assert not domain.needs_second_approver(Decimal("-10000"), Decimal("10000"))
    assert domain.document_number("INV", 2026, 7) == "INV-2026-000007"
    assert amount_map("JPY=5000, *=50") == {"JPY": Decimal(5000), "*": Decimal(50)}
    with pytest.raises(ValueError, match=r"\*"):
        amount_map("USD=5")
    with pytest.raises(ValueError):
        amount_map("USD=1.5e3,*=1")
