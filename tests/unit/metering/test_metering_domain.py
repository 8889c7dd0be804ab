"""Metering's pure domain: mergeable totals, rating from counts, adjustments as differences."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tally_billing.examples import cpm_terms_json
from tally_billing.periods import PeriodKind, period_by_key
from tally_billing.routing import contract_from_record, to_micros
from tally_metering import domain as d
from tally_metering.codec import ImpressionDecoder
from tally_metering.state import DedupeStore, PeriodState
from tally_streams.avro import SchemaCatalog

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def contract(card_kind: str = "graduated", per_period: str | None = None, v2_from: datetime | None = None) -> Any:
    t = cpm_terms_json()
    t["cpm"] = {"rate_card": {"kind": card_kind, "tier_basis": "period",
                              "bands": [{"from_impressions": 0, "rate_cpm": "10.00"},
                                        {"from_impressions": 1000, "rate_cpm": "5.00"}]},
                "budget_caps": {"total": None, "per_period": per_period}, "minimum_commitment_per_period": "100.00"}
    versions = [{"version": 1, "effective_from": T0, "effective_to": None, "approved_at": T0, "terms_json": json.dumps(t)}]
    if v2_from is not None:
        t2 = json.loads(json.dumps(t))
        t2["cpm"]["rate_card"]["bands"][0]["rate_cpm"] = "12.00"
        versions.append({"version": 2, "effective_from": v2_from, "effective_to": None, "approved_at": v2_from,
                         "terms_json": json.dumps(t2)})
    return contract_from_record({"contract_id": "K", "advertiser_id": "adv-acme", "contract_type": "cpm", "revision": 1,
                                 "terminated_at": None, "versions": versions})


MARCH = period_by_key("2026-03", "America/New_York", PeriodKind.MONTH)


def totals(**in_scope: int) -> d.PeriodTotals:
    t = d.PeriodTotals()
    for v, n in in_scope.items():
        t.add_in_scope(int(v.removeprefix("v")), n)
    return t


def test_tier_crossed_inside_one_delta_splits_at_the_band() -> None:
    r = d.rate_period(contract(), MARCH, totals(v1=1500))
    assert [(ln.price_point, ln.quantity, ln.amount_exact) for ln in r.lines] == [
        ("band:0", 1000, Decimal("10.00")), ("band:1", 500, Decimal("2.50"))]
    assert r.minimum_commitment == Decimal("100.00")


def test_cap_bills_up_to_the_cap_and_the_rest_is_over_delivery() -> None:
    r = d.rate_period(contract("graduated", per_period="11.00"), MARCH, totals(v1=1500))
    assert [(ln.line_type, ln.price_point, ln.quantity, ln.amount_exact) for ln in r.lines] == [
        ("cpm_impressions", "band:0", 1000, Decimal("10.00")), ("cpm_impressions", "band:1", 200, Decimal("1.00")),
        ("cpm_over_delivery", "over_delivery", 300, Decimal(0))]


def test_segments_classify_by_event_time_and_flight() -> None:
    c = contract(v2_from=datetime(2026, 3, 15, 4, tzinfo=UTC))
    before = c.segment_at(to_micros(datetime(2026, 3, 15, 3, 59, tzinfo=UTC)))
    after = c.segment_at(to_micros(datetime(2026, 3, 15, 4, tzinfo=UTC)))
    assert (before.version, after.version) == (1, 2)
    assert c.segment_at(to_micros(datetime(2027, 1, 1, 5, tzinfo=UTC))).in_flight is False  # flight ended 2026-12-31 NY
    assert c.segment_at(to_micros(datetime(2025, 12, 31, tzinfo=UTC))) is None
    assert c.period_at(to_micros(datetime(2026, 3, 1, 4, 59, tzinfo=UTC))).key == "2026-02"  # still Feb in New York


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=900), min_size=1, max_size=8))
def test_totals_merge_in_any_split_and_adjustments_telescope(chunks: list[int]) -> None:
    """However events are split into deltas, closed lines + diffs equal the rating of all of them."""
    c = contract("graduated", per_period="14.00")
    merged = d.PeriodTotals()
    first = totals(v1=chunks[0])
    merged.merge(first)
    closed = d.rate_period(c, MARCH, merged)
    adjustments: list[d.Line] = []
    for n in chunks[1:]:
        before = d.rate_period(c, MARCH, merged)
        merged.merge(totals(v1=n))
        adjustments += d.diff_lines(before.lines, d.rate_period(c, MARCH, merged).lines)
    everything = d.rate_period(c, MARCH, totals(v1=sum(chunks)))
    sums: dict[tuple[str, int, str], tuple[int, Decimal]] = {}
    for ln in [*closed.lines, *adjustments]:
        q, a = sums.get(ln.key, (0, Decimal(0)))
        sums[ln.key] = (q + ln.quantity, a + ln.amount_exact)
    assert {k: v for k, v in sums.items() if v != (0, Decimal(0))} == {
        ln.key: (ln.quantity, ln.amount_exact) for ln in everything.lines}


def test_cpa_lines_and_payouts_are_exact_sums() -> None:
    t = d.PeriodTotals()
    t.add_cpa(1, "purchase", 1, Decimal("12.50"), "p-1", Decimal("8.00"))
    t.add_cpa(1, "purchase", 1, Decimal("10.01"), "p-1", Decimal("6.4064"))
    t.add_cpa(1, "purchase", 0, Decimal("-4.00"), "p-1", Decimal("-2.56"))
    c = contract()
    r = d.rate_period(c, MARCH, t)
    line = r.lines[0]
    assert (line.quantity, line.amount_exact, line.unit_price) == (2, Decimal("18.51"), Decimal("9.255"))
    assert [(p.partner_id, p.quantity, p.amount_exact) for p in r.payouts] == [("p-1", 2, Decimal("11.8464"))]
    assert d.display_unit_price(Decimal("10"), 3) == Decimal("3.333333333333")
    assert d.display_unit_price(Decimal("-4"), 0) == Decimal(0)


def test_alert_thresholds_and_state_round_trip() -> None:
    assert d.alert_thresholds(Decimal("79.99"), Decimal("100")) == [50]
    assert d.alert_thresholds(Decimal("100"), Decimal("100")) == [50, 80, 100]
    assert d.alert_thresholds(Decimal("1000"), None) == []
    ps = PeriodState("K", "2026-03", totals(v1=5, v2=7), True, 123, {"per_period:50"})
    ps.totals.add_cpa(2, "signup", 1, Decimal("4.00"), None, Decimal("2.50"))
    ps.totals.include_offset("ads.impressions", 3, 99)
    back = PeriodState.from_json(json.loads(json.dumps(ps.to_json())))
    assert back == ps
    assert DedupeStore.decode(DedupeStore.encode(["a", "b"])) == ["a", "b"]
    store = DedupeStore()
    store.add(10, ["a"])
    store.add(12, ["b"])
    store.forget_before(11)
    assert store.seen == {"b"}


def test_period_closed_record_encodes_with_exact_amounts() -> None:
    catalog = SchemaCatalog.load()
    c = contract()
    t = totals(v1=1234)
    t.count(d.RECEIVED, 1300)
    t.count(d.DUPLICATE, 66)
    t.include_offset("ads.impressions", 0, 1301)
    rec = d.period_closed_record(c, MARCH, t, d.rate_period(c, MARCH, t), MARCH.end + timedelta(hours=2))
    back = catalog.codec("period_closed").decode(catalog.codec("period_closed").encode(rec))
    assert back["close_id"] == "K/2026-03"
    assert [ln["amount_exact"] for ln in back["lines"]] == [Decimal("10.00"), Decimal("1.17")]
    assert back["counts"] == {"billable": 1234, "duplicate": 66, "over_delivery": 0, "received": 1300}
    assert back["source_offsets"] == [{"topic": "ads.impressions", "partition": 0, "offset": 1301}]


def test_impression_decoder_reads_raw_micros() -> None:
    catalog = SchemaCatalog.load()
    at = datetime(2026, 3, 1, 12, tzinfo=UTC)
    raw = catalog.codec("impression").encode({
        "impression_id": "i-1", "event_time": at, "advertiser_id": "a", "campaign_id": "c", "partner_id": None,
        "household_id": "h", "device_type": "ctv", "ivt": "sivt", "measurement_source": "first_party"})
    rec = ImpressionDecoder(catalog).decode(raw)
    assert rec["event_time"] == to_micros(at) and rec["ivt"] == "sivt"
