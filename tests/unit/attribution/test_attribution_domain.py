"""The decider around tally_billing.attribution: index, dedupe memory, caps, reversals, state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from tally_attribution.domain import ContractBook, Decider, Decision, Indexed, Source
from tally_attribution.state import AttributionState
from tests.attribution_builders import EPOCH_2026, conversion, cpa_terms, cpm_terms, impression, terms_record

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
T = NOW - timedelta(days=1)


class World:
    def __init__(self) -> None:
        self.book = ContractBook()
        self.state = AttributionState()
        self.decider = Decider(self.book, self.state)
        self.offset = 0

    def contract(self, cid: str, adv: str, campaigns: list[str], versions: list[tuple[datetime, dict[str, Any]]] | None = None,
                 **kw: Any) -> None:
        vs = versions or [(EPOCH_2026, cpa_terms(adv, campaigns, **kw))]
        assert self.book.apply(terms_record(cid, adv, [(i + 1, f, None, t) for i, (f, t) in enumerate(vs)])) is None

    def see(self, iid: str, hh: str, at: datetime, adv: str, campaign: str, partner: str | None = None, **kw: Any) -> Any:
        return self.decider.index_impression(impression(iid, hh, at, adv, campaign, partner, **kw), NOW)

    def convert(self, cid: str, hh: str, at: datetime, adv: str, **kw: Any) -> Decision:
        self.offset += 1
        return self.decider.decide(conversion(cid, hh, at, adv, **kw), Source("conv", 0, self.offset), NOW, NOW)


def reason(d: Decision) -> str | None:
    return d.reason


@pytest.fixture
def w() -> World:
    world = World()
    world.contract("k1", "adv", ["c1"])
    return world


def test_attributed_last_touch_with_exact_amounts(w: World) -> None:
    w.see("i1", "h", T - timedelta(days=2), "adv", "c1", "p1")
    w.see("i2", "h", T - timedelta(days=1), "adv", "c1", "p2")
    d = w.convert("v1", "h", T, "adv")
    assert d.outcome["outcome"] == "attributed"
    assert d.attributed is not None
    assert (d.attributed["exposure_id"], d.attributed["partner_id"]) == ("i2", "p2")
    assert d.attributed["advertiser_amount"] == Decimal("10.00")
    assert d.attributed["partner_payout"] == Decimal("4.00")
    assert d.attributed["rule"] == "last_touch/7d"


def test_duplicate_impression_is_one_exposure(w: World) -> None:
    w.see("i1", "h", T - timedelta(hours=1), "adv", "c1")
    w.see("i1", "h", T - timedelta(hours=1), "adv", "c1")
    assert w.state.exposure_count == 1
    assert w.state.household_count == 1


def test_invalid_traffic_is_no_exposure_and_cpm_only_campaigns_wait_uncovered(w: World) -> None:
    w.book.apply(terms_record("m1", "adv", [(1, EPOCH_2026, None, cpm_terms("adv", ["cpm1"]))], contract_type="cpm"))
    assert w.see("i1", "h", T, "adv", "c1", ivt="sivt") == Indexed("invalid_traffic")
    assert w.state.exposure_count == 0
    # no CPA contract covers cpm1 (yet): kept for the pre-contract window, like an unknown campaign
    assert w.see("i2", "h", T, "adv", "cpm1") == Indexed("uncovered")
    assert w.state.exposure_count == 1


def test_future_impression_is_a_dead_letter_unknown_campaign_is_not(w: World) -> None:
    assert w.see("i1", "h", T, "adv", "nope") == Indexed("uncovered")
    got = w.see("i2", "h", NOW + timedelta(minutes=6), "adv", "c1")
    assert got.outcome == "dead_letter" and got.dead_letter is not None and got.dead_letter.field == "event_time"


def test_window_edge_in_and_out_by_one_microsecond(w: World) -> None:
    at = NOW - timedelta(hours=1)
    w.see("in", "h-in", at - timedelta(days=7), "adv", "c1")
    w.see("out", "h-out", at - timedelta(days=7, microseconds=1), "adv", "c1")
    assert w.convert("v-in", "h-in", at, "adv").outcome["outcome"] == "attributed"
    assert reason(w.convert("v-out", "h-out", at, "adv")) == "outside_window"


def test_min_delay_too_fast_and_exactly_enough() -> None:
    w = World()
    w.contract("k1", "adv", ["c1"], min_delay_seconds=30)
    w.see("i1", "h1", T - timedelta(seconds=29, microseconds=999_999), "adv", "c1")
    w.see("i2", "h2", T - timedelta(seconds=30), "adv", "c1")
    assert reason(w.convert("v1", "h1", T, "adv")) == "too_fast"
    assert w.convert("v2", "h2", T, "adv").outcome["outcome"] == "attributed"


def test_rejection_reasons(w: World) -> None:
    assert reason(w.convert("v1", "h", T, "adv")) == "no_exposure"
    assert reason(w.convert("v2", "h", T, "other-adv")) == "no_active_contract"
    assert reason(w.convert("v3", "h", T, "adv", event_type="signup")) == "no_active_contract"
    w.see("i1", "h", T - timedelta(hours=1), "adv", "c1")
    assert w.convert("v4", "h", T, "adv").outcome["outcome"] == "attributed"
    assert reason(w.convert("v4", "h", T, "adv")) == "duplicate"
    bad = w.convert("v5", "h", NOW + timedelta(hours=1), "adv")
    assert reason(bad) == "invalid" and bad.dead_letter is not None and bad.dead_letter.field == "event_time"


def test_order_id_counted_once_per_advertiser() -> None:
    w = World()
    w.contract("k1", "adv", ["c1"])
    w.contract("k2", "adv2", ["c2"])
    w.see("i1", "h", T - timedelta(hours=1), "adv", "c1")
    w.see("i2", "h", T - timedelta(hours=1), "adv2", "c2")
    assert w.convert("v1", "h", T, "adv", order_id="o1").outcome["outcome"] == "attributed"
    assert reason(w.convert("v2", "h", T, "adv", order_id="o1")) == "duplicate"
    assert w.convert("v3", "h", T, "adv2", order_id="o1").outcome["outcome"] == "attributed"


def test_household_rule_one_per_event_type_per_n_days() -> None:
    w = World()
    w.contract("k1", "adv", ["c1"], household_window_days={"purchase": 2})
    w.see("i1", "h", T - timedelta(days=3), "adv", "c1")
    assert w.convert("v1", "h", T - timedelta(days=2), "adv").outcome["outcome"] == "attributed"
    assert reason(w.convert("v2", "h", T - timedelta(days=1), "adv")) == "duplicate"
    assert w.convert("v3", "h", T, "adv").outcome["outcome"] == "attributed"


def test_contract_cap_and_partner_cap_whichever_first() -> None:
    w = World()
    w.contract("k1", "adv", ["c1"], caps={"contract": {"max_conversions_per_period": 3},
                                          "per_partner": {"max_conversions_per_period": 1}})
    for hh, partner in (("h1", "p1"), ("h2", "p1"), ("h3", "p2"), ("h4", "p3"), ("h5", "p4")):
        w.see(f"i-{hh}", hh, T - timedelta(hours=1), "adv", "c1", partner)
    got = [reason(w.convert(f"v-{hh}", hh, T, "adv")) for hh in ("h1", "h2", "h3", "h4", "h5")]
    assert got == [None, "capped", None, None, "capped"]


def test_partner_override_precedence_most_specific_then_latest() -> None:
    w = World()
    overrides = [
        {"partner_id": "p1", "effective_from": "2026-01-01", "partner_payout": {"kind": "flat", "amount": "5.00"}},
        {"partner_id": "p1", "effective_from": "2026-03-01", "partner_payout": {"kind": "flat", "amount": "6.00"}},
        {"partner_id": "p1", "event_type": "purchase", "effective_from": "2026-02-01",
         "partner_payout": {"kind": "flat", "amount": "7.00"}},
    ]
    w.contract("k1", "adv", ["c1"], overrides=overrides)
    w.see("i1", "h", T - timedelta(hours=1), "adv", "c1", "p1")
    d = w.convert("v1", "h", T, "adv")
    assert d.attributed is not None and d.attributed["partner_payout"] == Decimal("7.00")
    assert "payout_override=p1@2026-02-01" in d.attributed["rule"]


def test_last_touch_across_two_contracts_and_partners() -> None:
    w = World()
    w.contract("k1", "adv", ["c1"], price="10.00")
    w.contract("k2", "adv", ["c2"], price="20.00")
    w.see("i1", "h", T - timedelta(hours=3), "adv", "c1", "p1")
    w.see("i2", "h", T - timedelta(hours=2), "adv", "c2", "p2")
    d = w.convert("v1", "h", T, "adv")
    assert d.attributed is not None
    assert (d.attributed["contract_id"], d.attributed["partner_id"], d.attributed["advertiser_amount"]) == ("k2", "p2", Decimal("20.00"))


def test_window_change_applies_from_its_effective_date_only() -> None:
    w = World()
    mar = datetime(2026, 3, 1, tzinfo=UTC)
    w.contract("k1", "adv", ["c1"], versions=[(EPOCH_2026, cpa_terms("adv", ["c1"], lookback_days=7)),
                                             (mar, cpa_terms("adv", ["c1"], lookback_days=3))])
    w.decider.late_allowance = timedelta(days=400)  # old exposures stay indexed for this test
    w.decider.index_impression(impression("i1", "h1", mar - timedelta(days=6), "adv", "c1"), mar)
    w.decider.index_impression(impression("i2", "h2", mar - timedelta(days=4), "adv", "c1"), mar)
    before = w.decider.decide(conversion("v1", "h1", mar - timedelta(microseconds=1), "adv"), Source("c", 0, 1), mar, mar)
    after = w.decider.decide(conversion("v2", "h2", mar + timedelta(hours=1), "adv"), Source("c", 0, 2), mar + timedelta(hours=1), mar)
    assert before.outcome["outcome"] == "attributed" and before.outcome["contract_version"] == 1
    assert after.reason == "outside_window"


def test_percentage_price_needs_value_in_contract_currency() -> None:
    w = World()
    w.contract("k1", "adv", ["c1"], percent=True, price="12.5", payout="8")
    w.see("i1", "h", T - timedelta(hours=1), "adv", "c1")
    assert reason(w.convert("v1", "h", T, "adv")) == "invalid"
    assert reason(w.convert("v2", "h", T, "adv", value=Decimal("100"), currency="EUR")) == "invalid"
    d = w.convert("v3", "h", T, "adv", value=Decimal("80.00"), currency="USD")
    assert d.attributed is not None
    assert d.attributed["advertiser_amount"] == Decimal("10.000") and d.attributed["partner_payout"] == Decimal("6.4")


def _reverse(w: World, rid: str, of: str, amount: str | None = None, at: datetime = T) -> Decision:
    return w.convert(rid, "h", at, "adv", kind="reversal", reverses=of,
                     reversal_amount=None if amount is None else Decimal(amount))


def test_full_partial_and_repeated_reversals() -> None:
    w = World()
    w.contract("k1", "adv", ["c1"], percent=True, price="10", payout="5", reversal_lock_days=30)
    w.see("i1", "h", T - timedelta(days=2), "adv", "c1", "p1")
    w.convert("v1", "h", T - timedelta(days=1), "adv", value=Decimal("200.00"), currency="USD")
    part = _reverse(w, "r1", "v1", "50.00")
    assert part.attributed is not None and part.attributed["kind"] == "reversal"
    assert part.attributed["advertiser_amount"] == Decimal("-5.00") and part.attributed["partner_payout"] == Decimal("-2.50")
    assert part.attributed["original_event_time"] == T - timedelta(days=1)
    assert part.outcome["reversal_completes"] is False
    rest = _reverse(w, "r2", "v1")
    assert rest.attributed is not None and rest.attributed["advertiser_amount"] == Decimal("-15.00")
    assert rest.outcome["reversal_completes"] is True
    assert reason(_reverse(w, "r3", "v1")) == "duplicate"
    assert reason(_reverse(w, "r2", "v1")) == "duplicate"


def test_reversal_refused_after_lock_and_of_unknown_or_rejected() -> None:
    w = World()
    w.contract("k1", "adv", ["c1"], reversal_lock_days=1)
    w.see("i1", "h", T - timedelta(days=3), "adv", "c1")
    w.convert("v1", "h", T - timedelta(days=2), "adv")
    assert reason(_reverse(w, "r1", "v1")) == "outside_window"
    assert reason(_reverse(w, "r2", "nope")) == "invalid"
    w.convert("v2", "h-none", T, "adv")
    assert reason(_reverse(w, "r3", "v2")) == "invalid"


def test_flat_fee_partial_reversal_returns_nothing_until_complete() -> None:
    w = World()
    w.contract("k1", "adv", ["c1"])
    w.see("i1", "h", T - timedelta(days=2), "adv", "c1")
    w.convert("v1", "h", T - timedelta(days=1), "adv", value=Decimal("90.00"), currency="USD")
    first = _reverse(w, "r1", "v1", "30.00")
    second = _reverse(w, "r2", "v1", "60.00")
    assert first.attributed is not None and first.attributed["advertiser_amount"] == 0
    assert second.attributed is not None and second.attributed["advertiser_amount"] == Decimal("-10.00")
    assert second.outcome["reversal_completes"] is True


def test_state_changelog_round_trip_restores_the_same_decisions(w: World) -> None:
    w.see("i1", "h", T - timedelta(hours=1), "adv", "c1")
    w.convert("v1", "h", T, "adv", order_id="o1")
    copy = AttributionState()
    for key, value in w.state.drain_changes():
        copy.restore(key, value)
    assert copy.kv == w.state.kv and copy.exposure_count == 1 and copy.household_count == 1
    again = Decider(w.book, copy)
    d = again.decide(conversion("v2", "h", T, "adv", order_id="o1"), Source("c", 0, 99), NOW, NOW)
    assert d.reason == "duplicate"


def test_prune_drops_exposures_beyond_the_longest_lookback(w: World) -> None:
    w.see("old", "h1", NOW - timedelta(days=7, hours=12), "adv", "c1")
    w.see("new", "h2", NOW - timedelta(days=1), "adv", "c1")
    assert w.state.exposure_count == 2
    w.decider.prune(NOW + timedelta(days=1))
    assert w.state.exposure_count == 1 and w.state.get("x:h1") is None


def test_stale_terms_revision_is_ignored(w: World) -> None:
    rec = terms_record("k1", "adv", [(1, EPOCH_2026, None, cpa_terms("adv", ["c9"]))], revision=0)
    assert w.book.apply(rec) is not None
    assert w.book.knows_campaign("c1") and not w.book.knows_campaign("c9")


def test_amount_beyond_the_output_scale_is_refused_not_rounded() -> None:
    w = World()
    w.contract("k1", "adv", ["c1"], percent=True, price="12.3456789", payout="1")
    w.see("i1", "h", T - timedelta(hours=1), "adv", "c1")
    d = w.convert("v1", "h", T, "adv", value=Decimal("10.123457"), currency="USD")
    assert d.reason == "invalid" and d.attributed is None and "decimals" in str(d.outcome["detail"])
