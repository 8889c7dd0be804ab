from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tally_billing.attribution import (
    Attributed,
    Conversion,
    CpaContract,
    DedupeFacts,
    Exposure,
    PriorConversion,
    Rejected,
    RejectReason,
    UsageSnapshot,
    decide,
)
from tally_billing.cpa import CpaUsage
from tally_billing.examples import cpa_terms_json
from tally_billing.terms import parse_terms
from tally_billing.versions import ContractVersion

D = Decimal
T = datetime(2026, 3, 10, 12, tzinfo=UTC)


def contract(cid: str, campaigns: list[str], model: str = "last_touch", end: datetime | None = None,
             tail: bool = True, **cpa: Any) -> CpaContract:  # fmt: skip
    raw = cpa_terms_json()
    raw["common"]["campaign_ids"] = campaigns
    raw["common"]["attribution_tail"] = tail
    raw["cpa"]["attribution"]["model"] = model
    raw["cpa"]["partner_overrides"] = []
    raw["cpa"].update(cpa)
    v = ContractVersion(cid, 1, datetime(2026, 2, 1, tzinfo=UTC), end, parse_terms(raw))
    return CpaContract(cid, (v,))


A = contract("ctr-a", ["cmp-a"])
B = contract("ctr-b", ["cmp-b"])


def conv(event_type: str = "signup", at: datetime = T, **kw: Any) -> Conversion:
    return Conversion(conversion_id="cv-1", advertiser_id="adv-shop", household_id="hh-1", event_type=event_type,
                      occurred_at=at, **kw)  # fmt: skip


def exp(eid: str, campaign: str, partner: str, ago: timedelta) -> Exposure:
    return Exposure(eid, "hh-1", campaign, partner, T - ago)


def test_edge_case_07_two_contracts_or_partners_last_touch_decides() -> None:
    exposures = [
        exp("e1", "cmp-a", "p1", timedelta(days=2)),
        exp("e2", "cmp-b", "p2", timedelta(hours=5)),
        exp("e3", "cmp-a", "p3", timedelta(days=1)),
    ]
    out = decide(conv(), exposures, [A, B])
    assert isinstance(out, Attributed)
    assert (out.contract_id, out.partner_id, out.exposure_id) == ("ctr-b", "p2", "e2")
    assert (out.advertiser_amount, out.partner_amount, out.period_key) == (D("4.00"), D("2.50"), "2026-03")
    # two partners on one contract: the later touch wins
    out = decide(conv(), exposures[::2], [A])
    assert isinstance(out, Attributed) and out.partner_id == "p3"
    # first touch on a contract picks its earliest eligible exposure
    out = decide(conv(), exposures[::2], [contract("ctr-a", ["cmp-a"], "first_touch")])
    assert isinstance(out, Attributed) and out.exposure_id == "e1"


def _reason(out: Attributed | Rejected) -> RejectReason | None:
    return out.reason if isinstance(out, Rejected) else None


def test_rejection_reasons() -> None:
    near = [exp("e1", "cmp-a", "p1", timedelta(hours=1))]
    assert _reason(decide(conv(event_type=""), near, [A])) is RejectReason.INVALID
    assert _reason(decide(conv(order_value=D("-1")), near, [A])) is RejectReason.INVALID
    assert _reason(decide(conv("purchase"), near, [A])) is RejectReason.INVALID  # percent price without order value
    assert _reason(decide(conv(), near, [A], dedupe=DedupeFacts(conversion_id_seen=True))) is RejectReason.DUPLICATE
    assert _reason(decide(conv(), near, [A], dedupe=DedupeFacts(order_id_seen=True))) is RejectReason.DUPLICATE
    assert _reason(decide(conv("install"), near, [A])) is RejectReason.NO_ACTIVE_CONTRACT
    assert _reason(decide(conv(at=datetime(2026, 1, 5, tzinfo=UTC)), near, [A])) is RejectReason.NO_ACTIVE_CONTRACT
    assert _reason(decide(conv(), [exp("e", "cmp-z", "p", timedelta(hours=1))], [A])) is RejectReason.NO_EXPOSURE
    assert _reason(decide(conv(), [exp("e", "cmp-a", "p", -timedelta(hours=1))], [A])) is RejectReason.NO_EXPOSURE
    # signup lookback 7 days; purchase 3 days
    assert _reason(decide(conv(), [exp("e", "cmp-a", "p", timedelta(days=7, seconds=1))], [A])) is RejectReason.OUTSIDE_WINDOW
    assert isinstance(decide(conv(), [exp("e", "cmp-a", "p", timedelta(days=7))], [A]), Attributed)
    # min delay 10 s
    assert _reason(decide(conv(), [exp("e", "cmp-a", "p", timedelta(seconds=9))], [A])) is RejectReason.TOO_FAST
    # household dedupe: one signup per household per 30 days
    prior = DedupeFacts(household_conversions=(PriorConversion("ctr-a", "signup", T - timedelta(days=29)),))
    assert _reason(decide(conv(), near, [A], dedupe=prior)) is RejectReason.DUPLICATE
    old = DedupeFacts(household_conversions=(PriorConversion("ctr-a", "signup", T - timedelta(days=30)),))
    assert isinstance(decide(conv(), near, [A], dedupe=old), Attributed)


def test_capped_is_recorded_with_the_attribution_it_stopped() -> None:
    near = [exp("e1", "cmp-a", "p1", timedelta(hours=1))]
    usage = UsageSnapshot(contract={"ctr-a": CpaUsage(10000, D("0"))})
    out = decide(conv(), near, [A], usage=usage)
    assert isinstance(out, Rejected) and out.reason is RejectReason.CAPPED
    assert out.would_have_been is not None and out.would_have_been.exposure_id == "e1"
    tiered = decide(conv(), near, [A], usage=UsageSnapshot(event_type_count={("ctr-a", "signup"): 1000}))
    assert isinstance(tiered, Attributed) and tiered.advertiser_amount == D("3.50") and tiered.rule.tier_index == 0


def test_window_override_for_partner_and_attribution_tail() -> None:
    override = [{"partner_id": "p1", "effective_from": "2026-02-01", "lookback_days": 14}]
    c = contract("ctr-a", ["cmp-a"], partner_overrides=override)
    ten_days = [exp("e1", "cmp-a", "p1", timedelta(days=10))]
    out = decide(conv(), ten_days, [c])
    assert isinstance(out, Attributed) and out.rule.lookback_days == 14
    # terminated on 9 March: a 10 March conversion still attributes to a 9 March exposure (tail)
    ended = contract("ctr-a", ["cmp-a"], end=datetime(2026, 3, 9, 18, tzinfo=UTC))
    before_end = [exp("e1", "cmp-a", "p1", timedelta(days=1))]
    out = decide(conv(), before_end, [ended])
    assert isinstance(out, Attributed) and out.rule.attribution_tail
    after_end = [exp("e2", "cmp-a", "p1", timedelta(hours=1))]
    assert _reason(decide(conv(), after_end, [ended])) is RejectReason.NO_EXPOSURE
    no_tail = contract("ctr-a", ["cmp-a"], end=datetime(2026, 3, 9, 18, tzinfo=UTC), tail=False)
    assert _reason(decide(conv(), before_end, [no_tail])) is RejectReason.NO_ACTIVE_CONTRACT


exposure_lists = st.lists(
    st.builds(
        lambda i, c, p, mins: exp(f"e{i}", c, p, timedelta(minutes=mins)),
        st.integers(0, 6),  # few ids: forces ties on id as well as on time
        st.sampled_from(["cmp-a", "cmp-b", "cmp-z"]),
        st.sampled_from(["p1", "p2"]),
        st.integers(-60, 60 * 24 * 9),
    ),
    max_size=8,
)


@settings(max_examples=150, deadline=None)
@given(exposures=exposure_lists, data=st.data(), first=st.booleans())
def test_attribution_is_invariant_under_permutation_of_candidates(exposures: list[Exposure], data: st.DataObject, first: bool) -> None:
    contracts = [contract("ctr-a", ["cmp-a"], "first_touch" if first else "last_touch"), B]
    baseline = decide(conv(), exposures, contracts)
    shuffled = data.draw(st.permutations(exposures))
    assert decide(conv(), shuffled, contracts[::-1]) == baseline


def test_reprice_follows_the_final_terms_and_keeps_what_was_decided() -> None:
    """A backdated v2 re-prices a decided conversion at its recorded tier position; what the terms
    cannot price (no version any more, a percentage without an order value, more decimals than the
    wire holds) is None — the caller keeps the decided price."""
    from tally_billing.attribution import DecidedConversion, reprice, reprice_reversal

    raw = cpa_terms_json()
    raw["cpa"]["partner_overrides"] = []
    v1 = ContractVersion("k", 1, datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC), parse_terms(raw))
    raw2 = cpa_terms_json()
    raw2["cpa"]["partner_overrides"] = []
    raw2["cpa"]["payouts"][0]["advertiser_price"] = {"kind": "percent", "percent": "10"}
    raw2["cpa"]["payouts"][1]["tiers"][0]["from_conversions"] = 2
    v2 = ContractVersion("k", 2, datetime(2026, 3, 1, tzinfo=UTC), None, parse_terms(raw2))
    purchase = DecidedConversion(1, "purchase", "p1", D("80.000000000000"), T, 0)
    r = reprice((v1, v2), purchase)
    assert r is not None and (r.version, r.advertiser_amount, r.partner_amount) == (2, D("8.000000000000"), D("6.4"))
    assert reprice_reversal(r.priced, refunded_order_value=D("20"), completes=False) == (D("-2"), D("-1.6"))
    signup = DecidedConversion(1, "signup", "p1", None, T, 5)
    r = reprice((v1, v2), signup)
    assert r is not None and (r.version, r.advertiser_amount, r.partner_amount) == (2, D("3.50"), D("2.00"))  # tier 2+
    assert reprice_reversal(r.priced, refunded_order_value=None, completes=False) == (D("0"), D("0"))
    assert reprice((v1, v2), DecidedConversion(1, "signup", "p1", None, T, 1)).advertiser_amount == D("4.00")
    assert reprice((v1,), signup).version == 1  # v1 ended before it: its attribution tail prices it
    raw["common"]["attribution_tail"] = False
    no_tail = ContractVersion("k", 1, v1.effective_from, v1.effective_to, parse_terms(raw))
    assert reprice((no_tail,), signup) is None  # terminated before it, no tail
    assert reprice((v1, v2), DecidedConversion(1, "purchase", "p1", None, T, 0)) is None  # percentage, no order value
    assert reprice((v1, v2), DecidedConversion(1, "purchase", "p1", D("0.0000000000001"), T, 0)) is None  # 13+ decimals
