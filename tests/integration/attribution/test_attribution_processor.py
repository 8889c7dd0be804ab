"""The attribution processor against the real broker: every rule, end to end through Kafka."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from tally_attribution.processor import Processor
from tests import clock
from tests.attribution_builders import EPOCH_2026, conversion, cpa_terms, impression, terms_record

from .conftest import Harness

pytestmark = pytest.mark.integration

# Event times follow the test clock (tests/clock.py); a record "in the future" is judged by the
# processor's wall clock, so those cases stay on it.
AT = clock.now().replace(microsecond=0) - timedelta(hours=1)


def uid(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}"


def contract(h: Harness, proc: Processor, adv: str, campaigns: list[str], **kw: Any) -> str:
    cid = uid("k")
    h.terms(terms_record(cid, adv, [(1, EPOCH_2026, None, cpa_terms(adv, campaigns, **kw))]))
    deadline = time.monotonic() + 20
    while cid not in proc.book.entries:
        assert time.monotonic() < deadline, "terms never reached the processor"
        time.sleep(0.02)
    return cid


@pytest.fixture
def adv(processor: Processor) -> str:
    return uid("adv")


def test_every_rejection_reason(harness: Harness, processor: Processor, adv: str) -> None:
    h = harness
    contract(h, processor, adv, [f"{adv}-c"], min_delay_seconds=60, caps={"contract": {"max_conversions_per_period": 1}})
    hh = {name: uid(name) for name in ("ok", "none", "old", "fast", "cap", "inv")}
    h.impression(impression(uid("i"), hh["ok"], AT - timedelta(hours=1), adv, f"{adv}-c", "p1"))
    h.impression(impression(uid("i"), hh["old"], AT - timedelta(days=7, seconds=1), adv, f"{adv}-c", "p1"))
    h.impression(impression(uid("i"), hh["fast"], AT - timedelta(seconds=10), adv, f"{adv}-c", "p1"))
    h.impression(impression(uid("i"), hh["cap"], AT - timedelta(hours=1), adv, f"{adv}-c", "p1"))
    ok = uid("v")
    h.conversion(conversion(ok, hh["ok"], AT, adv))
    assert h.outcome(ok)["outcome"] == "attributed"
    cases = {
        "no_exposure": conversion(uid("v"), hh["none"], AT, adv),
        "outside_window": conversion(uid("v"), hh["old"], AT, adv),
        "too_fast": conversion(uid("v"), hh["fast"], AT, adv),
        "capped": conversion(uid("v"), hh["cap"], AT, adv),
        "no_active_contract": conversion(uid("v"), hh["ok"], AT, uid("adv-without-contract")),
        "invalid": conversion(uid("v"), hh["inv"], datetime.now(UTC) + timedelta(days=1), adv),
    }
    dup = conversion(ok, hh["ok"], AT, adv)
    for c in [*cases.values(), dup]:
        h.conversion(c)
    for expected, c in cases.items():
        got = h.outcome(c["conversion_id"])
        assert (got["outcome"], got["reason"]) == ("rejected", expected), got
    dups = h.collector.wait_for(h.names["outcomes"], lambda r: r["conversion_id"] == ok, count=2)
    assert [r["reason"] for r in dups] == [None, "duplicate"]
    assert len({r["outcome_id"] for r in dups}) == 2
    assert len(h.attributed(ok)) == 1
    dl = h.collector.wait_for(h.names["dlq_conversions"], lambda r: r["field"] == "event_time")
    assert dl[0]["error_kind"] == "future_event_time"  # tally_streams.kafka.classify_rejection, as every consumer
    assert dl[0]["consumer_group"] == processor.s.attribution_group


def test_edge_7_last_touch_across_two_contracts_and_two_partners(harness: Harness, processor: Processor, adv: str) -> None:
    h = harness
    k1 = contract(h, processor, adv, [f"{adv}-c1"], price="10.00", payout="4.00")
    k2 = contract(h, processor, adv, [f"{adv}-c2"], price="20.00", payout="9.00")
    hh = uid("hh")
    h.impression(impression(uid("i"), hh, AT - timedelta(hours=5), adv, f"{adv}-c1", "partner-a"))
    last = uid("i")
    h.impression(impression(last, hh, AT - timedelta(hours=2), adv, f"{adv}-c2", "partner-b"))
    h.impression(impression(uid("i"), hh, AT + timedelta(hours=1), adv, f"{adv}-c1", "partner-a"))  # after: never counts
    v = uid("v")
    h.conversion(conversion(v, hh, AT, adv))
    out = h.outcome(v)
    assert (out["contract_id"], out["partner_id"], out["exposure_id"]) == (k2, "partner-b", last)
    [a] = h.attributed(v)
    assert (a["contract_id"], a["advertiser_amount"], a["partner_payout"]) == (k2, Decimal("20.00"), Decimal("9.00"))
    assert k1 != k2


def test_edge_11_partner_override_precedence(harness: Harness, processor: Processor, adv: str) -> None:
    h = harness
    overrides = [
        {"partner_id": "p1", "effective_from": "2026-01-01", "partner_payout": {"kind": "flat", "amount": "5.00"}},
        {"partner_id": "p1", "effective_from": "2026-02-01", "partner_payout": {"kind": "flat", "amount": "6.00"}},
        {"partner_id": "p1", "event_type": "purchase", "effective_from": "2026-01-15",
         "partner_payout": {"kind": "flat", "amount": "7.00"}},
        {"partner_id": "p2", "effective_from": "2026-01-01", "partner_payout": {"kind": "flat", "amount": "5.00"}},
        {"partner_id": "p2", "effective_from": "2026-02-01", "partner_payout": {"kind": "flat", "amount": "6.00"}},
    ]
    contract(h, processor, adv, [f"{adv}-c"], overrides=overrides)
    got = {}
    for partner in ("p1", "p2", "p3"):
        hh, v = uid("hh"), uid("v")
        h.impression(impression(uid("i"), hh, AT - timedelta(hours=1), adv, f"{adv}-c", partner))
        h.conversion(conversion(v, hh, AT, adv))
        got[partner] = h.outcome(v)["partner_payout"]
    # most specific (event type) wins for p1; latest effective_from for p2; none → base payout
    assert got == {"p1": Decimal("7.00"), "p2": Decimal("6.00"), "p3": Decimal("4.00")}


def test_window_edge_in_and_out_by_one_microsecond(harness: Harness, processor: Processor, adv: str) -> None:
    h = harness
    contract(h, processor, adv, [f"{adv}-c"], lookback_days=7)
    h_in, h_out, v_in, v_out = uid("hh"), uid("hh"), uid("v"), uid("v")
    h.impression(impression(uid("i"), h_in, AT - timedelta(days=7), adv, f"{adv}-c"))
    h.impression(impression(uid("i"), h_out, AT - timedelta(days=7, microseconds=1), adv, f"{adv}-c"))
    h.conversion(conversion(v_in, h_in, AT, adv))
    h.conversion(conversion(v_out, h_out, AT, adv))
    assert h.outcome(v_in)["outcome"] == "attributed"
    assert h.outcome(v_out)["reason"] == "outside_window"


def test_minimum_delay(harness: Harness, processor: Processor, adv: str) -> None:
    h = harness
    contract(h, processor, adv, [f"{adv}-c"], min_delay_seconds=30)
    fast, enough, v_fast, v_ok = uid("hh"), uid("hh"), uid("v"), uid("v")
    h.impression(impression(uid("i"), fast, AT - timedelta(seconds=29, microseconds=999_999), adv, f"{adv}-c"))
    h.impression(impression(uid("i"), enough, AT - timedelta(seconds=30), adv, f"{adv}-c"))
    h.conversion(conversion(v_fast, fast, AT, adv))
    h.conversion(conversion(v_ok, enough, AT, adv))
    assert h.outcome(v_fast)["reason"] == "too_fast"
    assert h.outcome(v_ok)["outcome"] == "attributed"


def test_edge_6_conversion_before_its_impression_arrives(harness: Harness, processor: Processor, adv: str) -> None:
    """Out-of-order topics: the exposure arrives after the conversion, within the settle delay."""
    h = harness
    contract(h, processor, adv, [f"{adv}-c"])
    hh, v, i = uid("hh"), uid("v"), uid("i")
    h.conversion(conversion(v, hh, AT, adv))
    h.impression(impression(i, hh, AT - timedelta(hours=3), adv, f"{adv}-c", "p1"))
    out = h.outcome(v)
    assert (out["outcome"], out["exposure_id"]) == ("attributed", i)
    # decided only after the settle delay (1 s in this harness) from the conversion's arrival
    assert out["decided_at"] - out["event_time"] >= timedelta(0)


def test_edge_9_full_and_partial_reversals(harness: Harness, processor: Processor, adv: str) -> None:
    h = harness
    k = contract(h, processor, adv, [f"{adv}-c"], percent=True, price="10", payout="5", reversal_lock_days=30)
    hh, v1, v2 = uid("hh"), uid("v"), uid("v")
    h.impression(impression(uid("i"), hh, AT - timedelta(days=2), adv, f"{adv}-c", "p1"))
    h.conversion(conversion(v1, hh, AT - timedelta(days=1), adv, value=Decimal("200.00"), currency="USD", order_id=uid("o")))
    h.conversion(conversion(v2, hh, AT - timedelta(days=1), adv, value=Decimal("80.00"), currency="USD", order_id=uid("o")))
    assert h.outcome(v1)["advertiser_amount"] == Decimal("20.00")
    assert h.outcome(v2)["advertiser_amount"] == Decimal("8.00")
    r_part, r_rest, r_full, r_again = uid("r"), uid("r"), uid("r"), uid("r")
    h.conversion(conversion(r_part, hh, AT, adv, kind="reversal", reverses=v1, reversal_amount=Decimal("50.00")))
    h.conversion(conversion(r_rest, hh, AT, adv, kind="reversal", reverses=v1))
    h.conversion(conversion(r_full, hh, AT, adv, kind="reversal", reverses=v2))
    h.conversion(conversion(r_again, hh, AT, adv, kind="reversal", reverses=v2))
    [part] = h.collector.wait_for(h.names["attributed"], lambda r: r["conversion_id"] == r_part)
    assert (part["kind"], part["original_conversion_id"], part["contract_id"]) == ("reversal", v1, k)
    assert (part["advertiser_amount"], part["partner_payout"]) == (Decimal("-5.00"), Decimal("-2.50"))
    assert part["original_event_time"] == AT - timedelta(days=1)
    [rest] = h.collector.wait_for(h.names["attributed"], lambda r: r["conversion_id"] == r_rest)
    assert (rest["advertiser_amount"], rest["partner_payout"]) == (Decimal("-15.00"), Decimal("-7.50"))
    [full] = h.collector.wait_for(h.names["attributed"], lambda r: r["conversion_id"] == r_full)
    assert (full["advertiser_amount"], full["partner_payout"]) == (Decimal("-8.00"), Decimal("-4.00"))
    assert h.outcome(r_full)["reversal_completes"] is True
    again = h.outcome(r_again)
    assert (again["outcome"], again["reason"]) == ("rejected", "duplicate")
    assert h.attributed(r_again) == []


def test_every_dedupe_rule(harness: Harness, processor: Processor, adv: str) -> None:
    h = harness
    contract(h, processor, adv, [f"{adv}-c"], household_window_days={"purchase": 2})
    hh, hh2 = uid("hh"), uid("hh")
    for household in (hh, hh2):
        h.impression(impression(uid("i"), household, AT - timedelta(days=3), adv, f"{adv}-c"))
    first, order = uid("v"), uid("o")
    h.conversion(conversion(first, hh, AT - timedelta(days=2), adv, order_id=order))
    assert h.outcome(first)["outcome"] == "attributed"
    same_id = conversion(first, hh, AT - timedelta(days=2), adv, order_id=order)
    same_order, same_household, later = uid("v"), uid("v"), uid("v")
    h.conversion(same_id)
    h.conversion(conversion(same_order, hh2, AT, adv, order_id=order))
    h.conversion(conversion(same_household, hh, AT - timedelta(days=1), adv))
    h.conversion(conversion(later, hh, AT, adv))
    assert [r["reason"] for r in h.collector.wait_for(h.names["outcomes"], lambda r: r["conversion_id"] == first, 2)] == [
        None, "duplicate"]
    assert h.outcome(same_order)["reason"] == "duplicate"
    assert h.outcome(same_household)["reason"] == "duplicate"
    assert h.outcome(later)["outcome"] == "attributed"


def test_edge_10_partner_cap_and_contract_cap_whichever_first(harness: Harness, processor: Processor, adv: str) -> None:
    h = harness
    contract(h, processor, adv, [f"{adv}-c"], caps={"contract": {"max_amount_per_period": "30.00"},
                                                    "per_partner": {"max_conversions_per_period": 1}})
    got = []
    for partner in ("p1", "p1", "p2", "p3", "p4"):
        hh, v = uid("hh"), uid("v")
        h.impression(impression(uid("i"), hh, AT - timedelta(hours=1), adv, f"{adv}-c", partner))
        h.conversion(conversion(v, hh, AT, adv))
        got.append(h.outcome(v)["reason"])
    # p1's second: partner cap; p2, p3 fill the contract's 30.00; p4: contract cap
    assert got == [None, "capped", None, None, "capped"]


def test_edge_5_duplicate_impressions_are_one_exposure(harness: Harness, processor: Processor, adv: str) -> None:
    h = harness
    contract(h, processor, adv, [f"{adv}-c"], model="first_touch")
    hh, i1, v = uid("hh"), uid("i"), uid("v")
    for _ in range(3):  # ad server retries and several beacons repeat the id
        h.impression(impression(i1, hh, AT - timedelta(hours=2), adv, f"{adv}-c", "p1"))
    h.impression(impression(uid("i"), hh, AT - timedelta(hours=1), adv, f"{adv}-c", "p2"))
    h.conversion(conversion(v, hh, AT, adv))
    out = h.outcome(v)
    assert (out["exposure_id"], out["rule"]) == (i1, "first_touch/7d")
    assert len(processor.state.get("x:" + hh)) == 2


def test_edge_19_bad_events_dead_lettered_nothing_else_affected(harness: Harness, processor: Processor, adv: str) -> None:
    h = harness
    contract(h, processor, adv, [f"{adv}-c"])
    hh, v = uid("hh"), uid("v")
    unknown, future = uid("i"), uid("i")
    uncovered = {"outcome": "uncovered"}
    uncovered_before = processor.registry.get_sample_value("tally_attribution_impressions_total", uncovered) or 0
    h.raw("impressions", b"\xc3\x01garbage-bytes", hh)  # undecodable
    h.raw("conversions", b'{"conversion_id": "json-not-avro"}', hh)  # no Avro marker
    h.send("impressions", "conversion", conversion(uid("v"), hh, AT, adv), hh)  # a schema it cannot be read with
    h.impression(impression(unknown, hh, AT - timedelta(hours=1), adv, "campaign-nobody-has"))
    h.impression(impression(future, hh, datetime.now(UTC) + timedelta(hours=2), adv, f"{adv}-c"))
    good = uid("i")
    h.impression(impression(good, hh, AT - timedelta(hours=1), adv, f"{adv}-c"))
    h.conversion(conversion(v, hh, AT, adv))
    assert h.outcome(v)["exposure_id"] == good
    dlq_imp = h.collector.wait_for(h.names["dlq_impressions"], lambda r: r["key"] == hh.encode(), count=3)
    kinds = sorted(r["error_kind"] for r in dlq_imp)
    # a valid impression of a campaign no contract covers is no dead letter: counted, and kept
    # for the pre-contract window
    assert kinds == ["future_event_time", "incompatible", "unknown_schema"]
    assert processor.registry.get_sample_value("tally_attribution_impressions_total", uncovered) == uncovered_before + 1
    assert unknown in [e[0] for e in processor.state.get("x:" + hh)]
    assert all(r["reason"] and r["value"] and r["offset"] is not None for r in dlq_imp)
    [dl_conv] = h.collector.wait_for(h.names["dlq_conversions"], lambda r: r["key"] == hh.encode())
    assert dl_conv["error_kind"] == "not_single_object" and dl_conv["value"].startswith(b'{"conversion_id"')


def test_metrics_report_outcomes_index_and_latency(harness: Harness, processor: Processor, adv: str) -> None:
    h = harness
    contract(h, processor, adv, [f"{adv}-c"])
    hh, v = uid("hh"), uid("v")
    h.impression(impression(uid("i"), hh, AT - timedelta(hours=1), adv, f"{adv}-c"))
    h.conversion(conversion(v, hh, AT, adv))
    h.outcome(v)
    reg = processor.registry
    assert (reg.get_sample_value("tally_attribution_outcomes_total",
                                 {"kind": "conversion", "outcome": "attributed", "reason": "-"}) or 0) >= 1
    assert (reg.get_sample_value("tally_attribution_impressions_total", {"outcome": "exposure"}) or 0) >= 1
    assert (reg.get_sample_value("tally_attribution_exposures") or 0) >= 1
    assert (reg.get_sample_value("tally_attribution_exposure_households") or 0) >= 1
    assert (reg.get_sample_value("tally_attribution_decision_latency_seconds_count") or 0) >= 1
    assert (reg.get_sample_value("tally_attribution_transactions_total") or 0) >= 1
