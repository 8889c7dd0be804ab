from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tally_billing.examples import cpa_terms_json, cpm_terms_json
from tally_billing.terms import (
    AttributionModel,
    ContractType,
    PriceKind,
    Problem,
    RateCardKind,
    TermsInvalid,
    committed_value,
    escalate,
    parse_terms,
    terms_to_json,
    validate_terms,
)


def test_examples_parse_and_round_trip_exactly() -> None:
    for raw in (cpm_terms_json(), cpa_terms_json()):
        t = parse_terms(raw)
        assert terms_to_json(t) == raw
        assert parse_terms(terms_to_json(t)) == t


def test_cpm_example_typed_values() -> None:
    t = parse_terms(cpm_terms_json())
    assert t.contract_type is ContractType.CPM and t.cpa is None and t.cpm is not None
    assert t.cpm.rate_card.kind is RateCardKind.GRADUATED
    assert t.cpm.rate_card.bands[2].rate_cpm == Decimal("8.125")
    assert t.common.flight_end == date(2026, 12, 31)
    assert t.common.escalator_pct == Decimal("3")


def test_cpa_example_typed_values() -> None:
    t = parse_terms(cpa_terms_json())
    assert t.cpa is not None
    assert t.cpa.attribution.model is AttributionModel.LAST_TOUCH
    assert t.cpa.attribution.lookback_for("purchase") == 3
    assert t.cpa.attribution.lookback_for("signup") == 7
    assert t.cpa.dedupe.household_window_for("signup") == 30
    row = t.cpa.payout_for("purchase")
    assert row is not None and row.advertiser_price.kind is PriceKind.PERCENT


def test_defaults_apply_when_optional_fields_are_missing() -> None:
    raw = {
        "contract_type": "cpa",
        "common": {
            "currency": "GBP",
            "time_zone": "Europe/London",
            "advertiser_id": "a",
            "flight_start": "2026-01-01",
            "campaign_ids": ["c"],
        },
        "cpa": {
            "payouts": [
                {
                    "event_type": "install",
                    "advertiser_price": {"kind": "flat", "amount": "1.00"},
                    "partner_payout": {"kind": "flat", "amount": "0.50"},
                }
            ]
        },
    }
    t = parse_terms(raw)
    assert t.common.billing_period.value == "month"
    assert t.common.payment_terms_days == 30
    assert t.common.measurement.value == "first_party"
    assert t.common.attribution_tail is True
    assert t.cpa is not None and t.cpa.attribution.lookback_days == 7
    assert parse_terms(terms_to_json(t)) == t


def _mutate(raw: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    node: Any = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return raw


@pytest.mark.parametrize(
    ("factory", "path", "value", "problem_path", "message"),
    [
        (cpa_terms_json, ["cpa", "payouts", 1, "partner_payout", "amount"], "-1", "cpa.payouts[1].partner_payout.amount", "must be ≥ 0"),
        (cpm_terms_json, ["common", "currency"], "XXX", "common.currency", "unknown ISO 4217"),
        (cpm_terms_json, ["common", "time_zone"], "Mars/Base", "common.time_zone", "unknown IANA"),
        (cpm_terms_json, ["common", "flight_end"], "2025-01-01", "common.flight_end", "on or after"),
        (cpm_terms_json, ["common", "campaign_ids"], [], "common.campaign_ids", "non-empty"),
        (cpm_terms_json, ["common", "payment_terms_days"], 1.5, "common.payment_terms_days", "integer"),
        (cpm_terms_json, ["cpm", "rate_card", "bands", 0, "rate_cpm"], 12.5, "cpm.rate_card.bands[0].rate_cpm", "decimal string"),
        (cpm_terms_json, ["cpm", "rate_card", "bands", 0, "rate_cpm"], "1e3", "cpm.rate_card.bands[0].rate_cpm", "decimal string"),
        (cpm_terms_json, ["cpm", "rate_card", "bands", 0, "from_impressions"], 5, "cpm.rate_card.bands[0].from_impressions", "start at 0"),
        (cpm_terms_json, ["cpm", "rate_card", "bands", 2, "from_impressions"], 10, "cpm.rate_card.bands[2].from_impressions", "greater"),
        (cpm_terms_json, ["cpm", "rate_card", "kind"], "flat", "cpm.rate_card.bands", "exactly one band"),
        (cpm_terms_json, ["cpm", "budget_caps", "total"], "100.001", "cpm.budget_caps.total", "at most 2 decimals"),
        (cpm_terms_json, ["cpm", "minimum_commitment_per_period"], "NaN", "cpm.minimum_commitment_per_period", "decimal string"),
        (cpa_terms_json, ["cpa", "payouts", 0, "advertiser_price", "percent"], "101", "cpa.payouts[0].advertiser_price.percent", "≤ 100"),
        (cpa_terms_json, ["cpa", "payouts", 1, "event_type"], "purchase", "cpa.payouts[1].event_type", "duplicate"),
        (cpa_terms_json, ["cpa", "payouts", 1, "tiers", 0, "from_conversions"], 0, "cpa.payouts[1].tiers[0].from_conversions", "≥ 1"),
        (cpa_terms_json, ["cpa", "partner_overrides", 1, "event_type"], "install", "cpa.partner_overrides[1].event_type", "no payout row"),
        (cpa_terms_json, ["cpa", "attribution", "min_delay_seconds"], 7 * 86400, "cpa.attribution.min_delay_seconds", "shorter"),
        (
            cpa_terms_json,
            ["cpa", "caps", "contract", "max_conversions_per_period"],
            0,
            "cpa.caps.contract.max_conversions_per_period",
            "≥ 1",
        ),
        (cpa_terms_json, ["cpa", "reversal_lock_days"], -3, "cpa.reversal_lock_days", "≥ 1"),
        (cpa_terms_json, ["contract_type"], "cpx", "contract_type", "must be one of"),
        (cpa_terms_json, ["cpm"], {"rate_card": {}}, "cpm", "a cpa contract has no cpm terms"),
    ],
)
def test_validation_reports_path_and_message(factory: Any, path: list[Any], value: Any, problem_path: str, message: str) -> None:
    problems = validate_terms(_mutate(factory(), path, value))
    assert any(p.path == problem_path and message in p.message for p in problems), problems


def test_validation_reports_every_problem_at_once() -> None:
    raw = cpa_terms_json()
    raw["common"]["currency"] = "ZZZ"
    raw["common"]["typo_field"] = 1
    raw["cpa"]["payouts"][1]["partner_payout"]["amount"] = "-2"
    raw["cpa"]["payouts"].append({"event_type": "install"})
    problems = validate_terms(raw)
    paths = {p.path for p in problems}
    assert {
        "common.currency",
        "common.typo_field",
        "cpa.payouts[1].partner_payout.amount",
        "cpa.payouts[2].advertiser_price",
        "cpa.payouts[2].partner_payout",
    } <= paths
    with pytest.raises(TermsInvalid) as err:
        parse_terms(raw)
    assert err.value.problems == problems
    assert Problem("cpa.payouts[1].partner_payout.amount", "must be ≥ 0") in problems
    assert str(Problem("a.b", "x")) == "a.b: x"


def test_validation_of_non_object() -> None:
    assert validate_terms([]) == [Problem("$", "must be an object")]


def test_override_must_replace_something() -> None:
    raw = cpa_terms_json()
    raw["cpa"]["partner_overrides"][0]["lookback_days"] = None
    assert any(p.path == "cpa.partner_overrides[0]" for p in validate_terms(raw))


def test_duplicate_override_key_is_a_problem() -> None:
    raw = cpa_terms_json()
    raw["cpa"]["partner_overrides"].append(dict(raw["cpa"]["partner_overrides"][0]))
    assert any("same partner" in p.message for p in validate_terms(raw))


def test_committed_value_policy() -> None:
    assert committed_value(parse_terms(cpa_terms_json())) == Decimal("120000.00")
    assert committed_value(parse_terms(cpm_terms_json())) == Decimal("250000.00")
    raw = cpm_terms_json()
    raw["cpm"]["budget_caps"] = {"total": None, "per_period": None}
    # minimum 5,000 × 12 monthly periods in a 2026 flight
    assert committed_value(parse_terms(raw)) == Decimal("60000.00")
    raw["common"]["flight_end"] = None
    assert committed_value(parse_terms(raw)) is None


def test_escalate_raises_rates_and_flat_prices_rounded_to_minor_unit() -> None:
    t = escalate(parse_terms(cpm_terms_json()), Decimal("3"))
    assert t.cpm is not None
    # 12.50 × 1.03 = 12.875 → 12.88 (half-even); 10.00 → 10.30; 8.125 × 1.03 = 8.36875 → 8.37
    assert [b.rate_cpm for b in t.cpm.rate_card.bands] == [Decimal("12.88"), Decimal("10.30"), Decimal("8.37")]
    assert t.cpm.budget_caps.total == Decimal("250000.00")  # caps are not escalated
    c = escalate(parse_terms(cpa_terms_json()), Decimal("3"))
    assert c.cpa is not None
    signup = c.cpa.payout_for("signup")
    purchase = c.cpa.payout_for("purchase")
    assert signup is not None and purchase is not None
    assert signup.advertiser_price.amount == Decimal("4.12")
    assert signup.tiers[0].partner_payout.amount == Decimal("2.06")
    assert purchase.advertiser_price.percent == Decimal("12.5")  # percentages unchanged
    assert c.cpa.partner_overrides[1].partner_payout is not None
    assert c.cpa.partner_overrides[1].partner_payout.amount == Decimal("3.09")
    assert parse_terms(terms_to_json(c)) == c


decimal_strings = st.decimals(min_value=0, max_value=10**6, places=4, allow_nan=False, allow_infinity=False).map(lambda d: format(d, "f"))


@settings(max_examples=60)
@given(rates=st.lists(decimal_strings, min_size=1, max_size=5), caps=st.none() | st.integers(1, 10**9))
def test_json_round_trip_keeps_every_digit(rates: list[str], caps: int | None) -> None:
    raw = cpm_terms_json()
    raw["cpm"]["rate_card"]["bands"] = [{"from_impressions": i * 1000, "rate_cpm": r} for i, r in enumerate(rates)]
    raw["cpm"]["budget_caps"]["total"] = None if caps is None else f"{caps}.00"
    t = parse_terms(raw)
    out = terms_to_json(t)
    assert [b["rate_cpm"] for b in out["cpm"]["rate_card"]["bands"]] == rates
    assert parse_terms(out) == t
