"""Bounded work per request (issue 16): the worst request the bounds still allow — the longest
flight, weekly periods, a minimum commitment, every list at its maximum — costs milliseconds of
CPU, and the 9999 flight that once cost seconds is refused at once. Also: the bounds table is
the one the READMEs show."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tally_billing import bounds
from tally_billing.examples import cpa_terms_json, cpm_terms_json
from tally_billing.terms import committed_value, parse_terms, read_terms, validate_terms
from tally_contracts import domain

ROOT = Path(__file__).resolve().parents[3]
#: CPU seconds one request may spend in terms handling. A guard against unbounded work (the 9999
#: flight once cost seconds), not a performance goal: those live in `make bench`. The worst
#: request costs ~5-26 ms here depending on the day (26 ms on 2026-12-03, when this shared machine
#: ran 40-65 % slower), so the bound sits well above that and well below the seconds it guards.
BUDGET_S = 0.1


def _cpu(fn: Any, *args: Any) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(3):  # best of three: the budget is about the work, not about a noisy neighbour
        started = time.process_time()
        out = fn(*args)
        best = min(best, time.process_time() - started)
    return best, out


def worst_cpm() -> dict[str, Any]:
    t = cpm_terms_json()
    c = t["common"]
    c.update(flight_start="2000-01-03", flight_end="2010-01-05", billing_period="week", auto_renew=True,
             renewal_term_months=120, notice_period_days=365, escalator_pct="100",
             campaign_ids=[f"campaign-{i:04d}-" + "x" * 200 for i in range(1000)], committed_value=None)
    t["cpm"]["rate_card"] = {"kind": "graduated", "tier_basis": "lifetime",
                             "bands": [{"from_impressions": i * 10**6, "rate_cpm": "12.123456789012"} for i in range(20)]}
    t["cpm"]["budget_caps"] = {"total": None, "per_period": None}
    t["cpm"]["minimum_commitment_per_period"] = "999999999.99"
    return t


def worst_cpa() -> dict[str, Any]:
    t = cpa_terms_json()
    t["common"].update(flight_start="2000-01-03", flight_end="2010-01-05", committed_value=None,
                       campaign_ids=[f"c-{i}" for i in range(1000)])
    row = t["cpa"]["payouts"][0]
    t["cpa"]["payouts"] = [{**row, "event_type": f"event-{i}",
                            "tiers": [{"from_conversions": j + 1, "advertiser_price": row["advertiser_price"],
                                       "partner_payout": row["partner_payout"]} for j in range(10)]} for i in range(20)]
    t["cpa"]["partner_overrides"] = [{"partner_id": f"partner-{i}", "event_type": None, "effective_from": "2000-01-03",
                                      "partner_payout": None, "lookback_days": 30, "caps": None} for i in range(200)]
    t["cpa"]["caps"] = {"contract": {"max_conversions_per_period": None, "max_amount_per_period": "1000.00"},
                        "per_partner": {"max_conversions_per_period": None, "max_amount_per_period": None}}
    return t


def handle(raw: dict[str, Any]) -> Any:
    """What the contracts API does with a terms body on its event loop."""
    terms, problems = read_terms(raw)
    assert problems == [] and terms is not None
    committed_value(terms)
    stored = domain.terms_json(terms)
    domain.term_end(terms)
    return terms, stored


def test_the_worst_valid_requests_cost_milliseconds_of_cpu() -> None:
    for raw in (worst_cpm(), worst_cpa()):
        spent, (terms, _) = _cpu(handle, raw)
        assert spent < BUDGET_S, f"{spent * 1000:.1f} ms"
        assert committed_value(terms) is not None
    terms = parse_terms(worst_cpm())
    assert committed_value(terms) == parse_terms(worst_cpm()).cpm.minimum_commitment_per_period * 523  # type: ignore[union-attr]


def test_a_renewal_of_the_worst_contract_is_bounded_too() -> None:
    terms = parse_terms(worst_cpm())
    spent, renewed = _cpu(domain.renewal_terms, terms)
    assert spent < BUDGET_S and renewed.common.flight_start.isoformat() == "2010-01-06"


def test_the_9999_flight_is_refused_at_once() -> None:
    raw = worst_cpm()
    raw["common"]["flight_end"] = "9999-01-01"
    spent, problems = _cpu(validate_terms, raw)
    assert spent < BUDGET_S
    assert [p.path for p in problems] == ["common.flight_end"]


def test_committed_value_counts_periods_by_calendar_arithmetic() -> None:
    raw = cpm_terms_json()
    raw["common"].update(flight_start="2026-01-31", flight_end="2026-03-01", committed_value=None)
    raw["cpm"]["budget_caps"] = {"total": None, "per_period": None}
    raw["cpm"]["minimum_commitment_per_period"] = "10.00"
    assert committed_value(parse_terms(raw)) == 30  # January, February, March
    raw["common"]["billing_period"] = "week"
    # 2026-01-31 is a Saturday (week of Jan 26), 2026-03-01 a Sunday (week of Feb 23): 5 ISO weeks
    assert committed_value(parse_terms(raw)) == 50


def test_the_readmes_show_the_bounds_table() -> None:
    for readme, where in ((ROOT / "services/contracts/README.md", "contracts"),
                          (ROOT / "libs/tally_billing/README.md", None),
                          (ROOT / "services/attribution/README.md", "ingest"),
                          (ROOT / "services/invoicing/README.md", "invoicing"),
                          (ROOT / "services/metering/README.md", "spend")):
        assert bounds.markdown_table(where) in readme.read_text(), f"{readme}: render bounds.markdown_table({where!r})"


def test_stored_terms_from_before_the_bounds_still_parse_but_new_ones_are_refused() -> None:
    raw = cpm_terms_json()
    raw["common"].update(notice_period_days=1_000_000, campaign_ids=["Acme Q3 #1"], po_reference="x" * 500)
    assert {p.path for p in validate_terms(raw)} == {"common.notice_period_days", "common.campaign_ids[0]",
                                                     "common.po_reference"}
    assert parse_terms(raw).common.notice_period_days == 1_000_000  # history is not re-judged
    assert domain.notice_deadline(datetime(2026, 1, 1, tzinfo=UTC), 1_000_000).year == 1  # saturates
    assert domain.earliest_termination(datetime(2026, 1, 1, tzinfo=UTC), 10**9).year == 9999
