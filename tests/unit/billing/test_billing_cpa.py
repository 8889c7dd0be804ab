from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tally_billing.cpa import (
    CapCheck,
    CpaUsage,
    Reversal,
    ReversalOutcome,
    ReversalRefused,
    check_caps,
    override_for,
    partner_limits,
    price_conversion,
    reverse,
)
from tally_billing.examples import cpa_terms_json
from tally_billing.invoice_lines import bill, invoice_line, sum_lines
from tally_billing.money import currency, exact
from tally_billing.periods import PeriodKind, period_by_key
from tally_billing.routing import Contract, build_segments
from tally_billing.terms import CapLimits, CpaTerms, parse_terms
from tally_billing.totals import Line, PeriodTotals, Rating, diff_lines, display_unit_price, rate_period
from tally_billing.versions import ContractVersion

D = Decimal
EUR = currency("EUR")
_CPA = parse_terms(cpa_terms_json()).cpa
assert _CPA is not None
CPA: CpaTerms = _CPA


MARCH = period_by_key("2026-03", "Europe/Berlin", PeriodKind.MONTH)
_V1 = ContractVersion("c", 1, datetime(2026, 1, 1, tzinfo=UTC), None, parse_terms(cpa_terms_json()))
CONTRACT = Contract("c", _V1.terms.common.advertiser_id, "cpa", 1, (_V1,), build_segments((_V1,)))


def rated(t: PeriodTotals) -> Rating:
    return rate_period(CONTRACT, MARCH, t)


def cpa_with(**changes: Any) -> CpaTerms:
    raw = cpa_terms_json()
    raw["cpa"].update(changes)
    t = parse_terms(raw).cpa
    assert t is not None
    return t


# Worked examples by hand.
@pytest.mark.parametrize(
    ("event_type", "partner", "order_value", "on", "prior", "adv", "pay", "tier"),
    [
        # purchase: 12.5 % and 8 % of 80.00 → 10.00 and 6.40
        ("purchase", "p-x", "80.00", date(2026, 3, 5), 0, "10.0000", "6.4000", None),
        # signup base prices below 1000 conversions
        ("signup", "p-x", None, date(2026, 3, 5), 999, "4.00", "2.50", None),
        # the 1001st signup (1000 already counted) is in the tier: 3.50 / 2.00
        ("signup", "p-x", None, date(2026, 3, 5), 1000, "3.50", "2.00", 0),
        # partner-tv1 has an event-type payout override from 1 March: payout 3.00
        ("signup", "partner-tv1", None, date(2026, 3, 1), 0, "4.00", "3.00", None),
        # ...but not before it is effective
        ("signup", "partner-tv1", None, date(2026, 2, 28), 0, "4.00", "2.50", None),
    ],
)
def test_cpa_worked_examples(
    event_type: str, partner: str, order_value: str | None, on: date, prior: int, adv: str, pay: str, tier: int | None
) -> None:
    p = price_conversion(
        CPA,
        event_type=event_type,
        partner_id=partner,
        order_value=None if order_value is None else D(order_value),
        local_date=on,
        prior_event_type_count=prior,
    )
    assert (p.advertiser_amount, p.partner_amount, p.tier_index) == (D(adv), D(pay), tier)


def test_percent_price_needs_order_value() -> None:
    with pytest.raises(ValueError):
        price_conversion(CPA, event_type="purchase", partner_id="p", order_value=None, local_date=date(2026, 3, 1),
                         prior_event_type_count=0)  # fmt: skip


def test_edge_case_11_two_partner_overrides_precedence() -> None:
    overrides = [
        {"partner_id": "p1", "effective_from": "2026-01-01", "partner_payout": {"kind": "flat", "amount": "1.00"}},
        {"partner_id": "p1", "effective_from": "2026-02-01", "partner_payout": {"kind": "flat", "amount": "2.00"}},
        {"partner_id": "p1", "event_type": "signup", "effective_from": "2026-01-15",
         "partner_payout": {"kind": "flat", "amount": "3.00"}},
        {"partner_id": "p1", "event_type": "signup", "effective_from": "2026-03-01", "lookback_days": 30},
    ]  # fmt: skip
    cpa = cpa_with(partner_overrides=overrides)

    def payout(event_type: str, on: date) -> Decimal:
        return price_conversion(cpa, event_type=event_type, partner_id="p1", order_value=D("100"), local_date=on,
                                prior_event_type_count=0).partner_amount  # fmt: skip

    # signup: the event-type override beats the later partner-wide one (most specific first)
    assert payout("signup", date(2026, 3, 10)) == D("3.00")
    # before the specific one is effective, the latest effective partner-wide one wins
    assert payout("signup", date(2026, 1, 10)) == D("1.00")
    # purchase: only partner-wide overrides match; the latest effective_from wins
    assert payout("purchase", date(2026, 3, 10)) == D("2.00")
    # aspects are independent: the window comes from the newest specific window override
    o = override_for(cpa, "p1", "signup", date(2026, 3, 10), "lookback_days")
    assert o is not None and o.lookback_days == 30
    assert override_for(cpa, "p2", "signup", date(2026, 3, 10), "partner_payout") is None


def test_edge_case_10_partner_cap_and_contract_cap_whichever_first() -> None:
    contract = CapLimits(max_conversions_per_period=5, max_amount_per_period=D("100.00"))
    partner = CapLimits(max_conversions_per_period=3)
    amount = D("10.00")
    # partner reaches its 3 first
    assert check_caps(contract, partner, CpaUsage(2, D("20")), CpaUsage(2, D("20")), amount) == CapCheck(False)
    assert check_caps(contract, partner, CpaUsage(3, D("30")), CpaUsage(3, D("30")), amount) == CapCheck(True, "partner")
    # another partner keeps going until the contract's 5
    assert check_caps(contract, partner, CpaUsage(4, D("40")), CpaUsage(0, D("0")), amount) == CapCheck(False)
    assert check_caps(contract, partner, CpaUsage(5, D("50")), CpaUsage(0, D("0")), amount) == CapCheck(True, "contract")
    # amount cap: 95 + 10 > 100 → capped even though conversions remain
    assert check_caps(contract, partner, CpaUsage(1, D("95")), CpaUsage(0), amount) == CapCheck(True, "contract")
    assert check_caps(contract, partner, CpaUsage(1, D("90")), CpaUsage(0), amount) == CapCheck(False)
    # override caps replace the partner caps for partner-tv1 signups from 1 March
    assert partner_limits(CPA, "partner-tv1", "signup", date(2026, 3, 2)).max_conversions_per_period == 500
    assert partner_limits(CPA, "partner-tv1", "purchase", date(2026, 3, 2)).max_conversions_per_period == 2000


@settings(max_examples=100)
@given(
    amounts=st.lists(st.integers(1, 5000).map(lambda c: D(c).scaleb(-2)), max_size=40),
    partners=st.lists(st.sampled_from(["a", "b", "c"]), min_size=40, max_size=40),
    max_conv=st.none() | st.integers(1, 30),
    max_amount=st.none() | st.integers(1, 50000).map(lambda c: D(c).scaleb(-2)),
    partner_max=st.none() | st.integers(1, 15),
)
def test_caps_never_exceeded(
    amounts: list[Decimal], partners: list[str], max_conv: int | None, max_amount: Decimal | None, partner_max: int | None
) -> None:
    contract = CapLimits(max_conv, max_amount)
    partner = CapLimits(partner_max)
    c_use = CpaUsage()
    p_use: dict[str, CpaUsage] = {}
    for amount, p in zip(amounts, partners, strict=False):
        if not check_caps(contract, partner, c_use, p_use.get(p, CpaUsage()), amount).capped:
            c_use = c_use.plus(amount)
            p_use[p] = p_use.get(p, CpaUsage()).plus(amount)
    assert max_conv is None or c_use.conversions <= max_conv
    assert max_amount is None or c_use.amount <= max_amount
    assert partner_max is None or all(u.conversions <= partner_max for u in p_use.values())


T0 = datetime(2026, 3, 10, 12, tzinfo=UTC)


def _purchase(order_value: str = "80.00") -> Any:
    return price_conversion(CPA, event_type="purchase", partner_id="p", order_value=D(order_value),
                            local_date=T0.date(), prior_event_type_count=0)  # fmt: skip


def _rev(priced: Any, earlier: tuple[ReversalOutcome, ...], rid: str, refund: str | None, days: int = 1,
         order_value: str = "80.00", lock: int | None = 90) -> ReversalOutcome:  # fmt: skip
    return reverse(
        priced,
        conversion_id="cv-1",
        conversion_at=T0,
        order_value=D(order_value),
        earlier=earlier,
        reversal=Reversal(rid, "cv-1", T0 + timedelta(days=days), None if refund is None else D(refund)),
        lock_days=lock,
    )


def test_edge_case_09_partial_and_full_reversal_before_and_after_close() -> None:
    priced = _purchase()  # advertiser 10.00, partner 6.40
    partial = _rev(priced, (), "r1", "20.00")
    assert partial.refused is None and not partial.completes
    assert (partial.advertiser_amount, partial.partner_amount) == (D("2.5000"), D("1.6000"))
    full = _rev(priced, (partial,), "r2", None)
    assert full.completes
    with exact():
        assert partial.advertiser_amount + full.advertiser_amount == priced.advertiser_amount
        assert partial.partner_amount + full.partner_amount == priced.partner_amount
    # reversal of an already-reversed conversion is refused and changes nothing
    again = _rev(priced, (partial, full), "r3", None)
    assert again.refused is ReversalRefused.ALREADY_REVERSED and again.advertiser_amount == 0
    # refunds beyond the order value and after the lock are refused
    assert _rev(priced, (partial,), "r4", "70.00").refused is ReversalRefused.EXCEEDS_ORIGINAL
    assert _rev(priced, (), "r5", None, days=91).refused is ReversalRefused.LOCKED
    # before close: the open period's totals simply lose the amounts (a reversal counts -1
    # conversion when it completes, 0 otherwise; its amounts are negative)
    converted = PeriodTotals()
    converted.add_cpa(1, "purchase", 1, priced.advertiser_amount, "p", priced.partner_amount)
    billed = rated(converted)
    reversed_ = PeriodTotals()
    reversed_.merge(converted)
    for r in (partial, full):
        reversed_.add_cpa(1, "purchase", -1 if r.completes else 0, -r.advertiser_amount, "p", -r.partner_amount)
    after = rated(reversed_)
    assert all((ln.quantity, ln.amount_exact) == (0, 0) for ln in after.lines)
    assert all((p.quantity, p.amount_exact) == (0, 0) for p in after.payouts)
    # after close: each reversal is an adjustment line at the conversion's price point with the
    # amount it gives back, negated; the invoice carries both on one line, rounded once, and that
    # line repeats the billed line exactly
    claw = [Line("cpa_conversions", 1, "event:purchase", "purchase", -1 if r.completes else 0, "per_unit",
                 display_unit_price(-r.advertiser_amount, -1 if r.completes else 0), -r.advertiser_amount)
            for r in (partial, full)]  # fmt: skip
    carried = invoice_line(sum_lines(claw), EUR)
    [billed_line] = bill(billed, EUR).lines
    assert carried.amount == -billed_line.amount == D("-10.00")
    assert carried.line.quantity == -billed_line.line.quantity == -1
    # telescoping: the clawback is exactly the difference between the closed rating and the final one
    [diff] = diff_lines(billed.lines, after.lines)
    assert (diff.quantity, diff.amount_exact) == (carried.line.quantity, carried.line.amount_exact)


def test_flat_legs_reverse_only_when_complete() -> None:
    priced = price_conversion(CPA, event_type="signup", partner_id="p", order_value=D("50.00"),
                              local_date=T0.date(), prior_event_type_count=0)  # fmt: skip
    r1 = _rev(priced, (), "r1", "10.00", order_value="50.00")
    assert r1.advertiser_amount == 0 and not r1.completes
    r2 = _rev(priced, (r1,), "r2", "40.00", order_value="50.00")
    assert r2.completes and (r2.advertiser_amount, r2.partner_amount) == (D("4.00"), D("2.50"))


@settings(max_examples=100)
@given(
    order_cents=st.integers(1, 10**7),
    refunds=st.lists(st.integers(1, 10**6), max_size=5),
    end_full=st.booleans(),
    event_type=st.sampled_from(["purchase", "signup"]),
)
def test_reversals_return_exactly_what_was_billed(order_cents: int, refunds: list[int], end_full: bool, event_type: str) -> None:
    order_value = D(order_cents).scaleb(-2)
    priced = price_conversion(CPA, event_type=event_type, partner_id="p", order_value=order_value,
                              local_date=T0.date(), prior_event_type_count=0)  # fmt: skip
    done: tuple[ReversalOutcome, ...] = ()
    for i, cents in enumerate([*refunds, None] if end_full else refunds):
        refund = None if cents is None else format(D(cents).scaleb(-2), "f")
        out = _rev(priced, done, f"r{i}", refund, order_value=format(order_value, "f"))
        if out.refused is None:
            done = (*done, out)
    with exact():
        adv = sum((o.advertiser_amount for o in done), D(0))
        pay = sum((o.partner_amount for o in done), D(0))
        assert adv <= priced.advertiser_amount and pay <= priced.partner_amount
        if any(o.completes for o in done):
            assert (adv, pay) == (priced.advertiser_amount, priced.partner_amount)


def test_cpa_and_payout_lines() -> None:
    t = PeriodTotals()
    for partner, value in (("p1", "80.00"), ("p2", "0.04"), ("p1", "0.04")):
        priced = price_conversion(CPA, event_type="purchase", partner_id=partner, order_value=D(value),
                                  local_date=T0.date(), prior_event_type_count=0)  # fmt: skip
        t.add_cpa(1, "purchase", 1, priced.advertiser_amount, partner, priced.partner_amount)
    b = bill(rated(t), EUR)
    # advertiser: order value 80.08 × 0.125 = 10.01 — one line, rounded once (rounding each
    # conversion would bill 10.00 + 0.00 + 0.00, since 0.005 → 0.00 half-even)
    assert [(ln.line.quantity, ln.line.amount_exact, ln.amount) for ln in b.lines] == [(3, D("10.01"), D("10.01"))]
    # partner p1: 80.04 × 0.08 = 6.4032 → 6.40 ; p2: 0.04 × 0.08 = 0.0032 → 0.00
    by_partner = b.payouts_by_partner()
    assert [ln.amount for ln in by_partner["p1"]] == [D("6.40")]
    assert [ln.amount for ln in by_partner["p2"]] == [D("0.00")]
    assert b.shortfall is None and b.total == D("10.01")
