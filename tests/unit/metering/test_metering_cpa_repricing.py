"""Stage two re-prices CPA conversions when a backdated amendment changes their prices or
payouts: whatever order conversions, reversals, contract revisions and the clock arrive in, every
closed period's lines and payouts plus the adjustments that correct it equal the final picture —
each conversion priced by the terms as they finally stand, from the facts attribution recorded
(event type, partner, order value, tier position), its reversals following it.

The final picture is computed apart from the engine, per conversion, with the billing library's
pricing functions (``price_conversion`` / ``reversed_amounts``) on the final versions."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tally_billing.cpa import price_conversion, reversed_amounts
from tally_billing.examples import cpa_terms_json
from tally_billing.money import exact
from tally_billing.periods import period_containing
from tally_billing.routing import ContractBook
from tally_billing.terms import parse_terms
from tally_billing.usage import to_micros
from tally_billing.versions import effective_version
from tally_metering.engine import StageTwo
from tally_metering.metrics import WorkerMetrics
from tally_metering.state import TotalsStore

ADV = "adv-cpa"
CID = "K-cpa"
TZ = "Europe/Berlin"
SETTINGS = SimpleNamespace(metering_grace_seconds=7200, metering_rerate_horizon_days=400, metering_totals_interval_ms=1000,
                           metering_topic_impressions="imp", metering_topic_deltas="deltas",
                           metering_topic_terms="terms", metering_delta_partitions=1)
JAN1 = datetime(2025, 12, 31, 23, tzinfo=UTC)  # local midnight, 1 January 2026
AMEND = {"jan20": datetime(2026, 1, 19, 23, tzinfo=UTC), "feb1": datetime(2026, 1, 31, 23, tzinfo=UTC),
         "feb15": datetime(2026, 2, 14, 23, tzinfo=UTC)}


def terms(rng: random.Random) -> dict[str, Any]:
    t = cpa_terms_json()
    t["common"].update(advertiser_id=ADV, time_zone=TZ, flight_start="2026-01-01", flight_end="2026-12-31",
                       campaign_ids=["c1"], auto_renew=False, renewal_term_months=None)
    flat = rng.choice(["4.00", "5.25", "3.333"])
    t["cpa"]["payouts"] = [
        {"event_type": "purchase",
         "advertiser_price": rng.choice([{"kind": "percent", "percent": rng.choice(["12.5", "10"])},
                                         {"kind": "flat", "amount": flat}]),
         "partner_payout": {"kind": "percent", "percent": rng.choice(["8", "6.25"])}, "tiers": []},
        {"event_type": "signup", "advertiser_price": {"kind": "flat", "amount": flat},
         "partner_payout": {"kind": "flat", "amount": rng.choice(["2.50", "1.75"])},
         "tiers": [{"from_conversions": 3, "advertiser_price": {"kind": "flat", "amount": "1.00"},
                    "partner_payout": {"kind": "flat", "amount": rng.choice(["0.50", "0.40"])}}]},
    ]
    t["cpa"]["partner_overrides"] = []
    return t


def record(versions: list[tuple[int, datetime, datetime | None, dict[str, Any]]], revision: int) -> dict[str, Any]:
    return {"contract_id": CID, "advertiser_id": ADV, "contract_type": "cpa", "revision": revision, "terminated_at": None,
            "versions": [{"version": v, "effective_from": ef, "effective_to": et, "terms_json": json.dumps(t)}
                         for v, ef, et, t in versions]}


def history(rng: random.Random) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """v1, then a backdated v2 (and maybe a v3) with other prices and payouts."""
    v1 = terms(rng)
    versions: list[tuple[int, datetime, datetime | None, dict[str, Any]]] = [(1, JAN1, None, v1)]
    out = [record(versions, 1)]
    starts = sorted(rng.sample(sorted(AMEND.values()), k=rng.choice([1, 2])))
    for n, start in enumerate(starts, start=2):
        prev = versions[-1]
        versions = [*versions[:-1], (prev[0], prev[1], start, prev[3]), (n, start, None, terms(rng))]
        out.append(record(versions, n))
    return out, v1


def conversions(rng: random.Random, v1: dict[str, Any]) -> list[dict[str, Any]]:
    """Conversions of January and February as attribution decides them under v1 (the only terms it
    knew), each with its facts; some reversed, fully or in part, after it."""
    cpa = parse_terms(v1).cpa
    assert cpa is not None
    out: list[dict[str, Any]] = []
    tiers: dict[tuple[str, str], int] = defaultdict(int)
    for k in range(rng.randrange(3, 14)):
        at = datetime(2026, 1, 2, tzinfo=UTC) + (datetime(2026, 2, 27, tzinfo=UTC) - datetime(2026, 1, 2, tzinfo=UTC)) * rng.random()
        event_type = rng.choice(["purchase", "signup"])
        partner = rng.choice(["p1", "p2", None])
        order_value = Decimal(rng.choice(["80.00", "19.99", "250.00"])) if event_type == "purchase" else None
        period = period_containing(at, TZ, "month").key
        position = tiers[(period, event_type)]
        tiers[(period, event_type)] += 1
        priced = price_conversion(cpa, event_type=event_type, partner_id=partner or "", order_value=order_value,
                                  local_date=at.date(), prior_event_type_count=position)
        cid = f"conv-{k}"
        out.append(conv_record(cid, "conversion", at, event_type, partner, priced.advertiser_amount, priced.partner_amount,
                               order_value=order_value, tier_position=position))
        if rng.random() < 0.4:
            refunds = [None] if order_value is None or rng.random() < 0.5 else [order_value / 2, None]
            left = order_value
            for j, refund in enumerate(refunds):
                refunded = refund if refund is not None else left
                completes = refund is None
                with exact():
                    left = None if left is None or refunded is None else left - refunded
                adv, pay = reversed_amounts(priced, refunded_order_value=refunded, completes=completes)
                out.append(conv_record(f"{cid}-r{j}", "reversal", at, event_type, partner, adv, pay, original=cid,
                                       order_value=refunded, completes=completes))
    return out


def conv_record(cid: str, kind: str, at: datetime, event_type: str, partner: str | None, adv: Decimal, pay: Decimal, *,
                order_value: Decimal | None, tier_position: int | None = None, original: str | None = None,
                completes: bool | None = None) -> dict[str, Any]:
    """As stage one sends it on the deltas topic (``worker._conversion_json``)."""
    return {"conversion_id": cid, "kind": kind, "original_conversion_id": original, "contract_id": CID,
            "contract_version": 1, "advertiser_id": ADV, "partner_id": partner, "event_type": event_type,
            "event_time_us": to_micros(at), "original_event_time_us": to_micros(at) if original else None,
            "advertiser_amount": str(adv), "partner_payout": str(pay),
            "order_value": None if order_value is None else str(order_value), "tier_position": tier_position,
            "reversal_completes": completes}


Point = tuple[str, int, str, str]  # period, version, event type, partner ("" = the advertiser's line)


def final_picture(book: ContractBook, recs: list[dict[str, Any]]) -> dict[Point, tuple[int, Decimal]]:
    contract = book.get(CID)
    assert contract is not None
    acc: dict[Point, list[Any]] = defaultdict(lambda: [0, Decimal(0)])
    priced_of: dict[str, Any] = {}
    for r in recs:
        at = datetime.fromtimestamp(r["event_time_us"] / 1e6, UTC).replace(microsecond=r["event_time_us"] % 1_000_000)
        if r["kind"] == "conversion":
            v = effective_version(contract.versions, at)
            assert v is not None and v.terms.cpa is not None
            p = price_conversion(v.terms.cpa, event_type=r["event_type"], partner_id=r["partner_id"] or "",
                                 order_value=None if r["order_value"] is None else Decimal(r["order_value"]),
                                 local_date=at.date(), prior_event_type_count=r["tier_position"])
            priced_of[r["conversion_id"]] = (v.version, p)
            version, q, adv, pay = v.version, 1, p.advertiser_amount, p.partner_amount
        else:
            version, p = priced_of[r["original_conversion_id"]]
            refunded = None if r["order_value"] is None else Decimal(r["order_value"])
            adv, pay = reversed_amounts(p, refunded_order_value=refunded, completes=r["reversal_completes"])
            q = -1 if r["reversal_completes"] else 0
        period = period_containing(at, TZ, "month").key
        for partner, amount in (("", adv), (r["partner_id"], pay)):
            if partner is None:
                continue
            a = acc[(period, version, r["event_type"], partner)]
            a[0] += q
            with exact():
                a[1] += amount
    return {k: (q, a) for k, (q, a) in acc.items() if q or a}


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=2**32))
def test_closed_cpa_lines_plus_adjustments_equal_the_final_picture_whatever_the_order(seed: int) -> None:
    rng = random.Random(seed)
    revisions, v1 = history(rng)
    recs = conversions(rng, v1)
    # conversions keep their order (one partition, a reversal after its original); the terms
    # revisions keep theirs; the two interleave at random, with the clock closing periods between
    events: list[tuple[str, Any]] = []
    conv_q, terms_q = list(recs), list(revisions[1:])
    events.append(("terms", revisions[0]))
    while conv_q or terms_q:
        q = conv_q if conv_q and (not terms_q or rng.random() < 0.75) else terms_q
        events.append(("cpa" if q is conv_q else "terms", q.pop(0)))
    clocks = sorted(rng.sample(range(len(events)), k=min(3, len(events))))
    clock_points = [datetime(2026, 2, 2, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 10, tzinfo=UTC)]

    effects: dict[str, list[dict[str, Any]]] = defaultdict(list)
    book = ContractBook()
    two = StageTwo(SETTINGS, book, lambda kind, rec, key: effects[kind].append(rec), WorkerMetrics())
    two.stores[0] = TotalsStore(0)
    now = datetime(2026, 1, 5, tzinfo=UTC)
    for i, (kind, payload) in enumerate(events):
        if i in clocks:
            now = max(now, clock_points[clocks.index(i)])
            two.close_due(now)
        if kind == "terms":
            if book.apply(payload):
                two.terms_changed.add(payload["contract_id"])
            two.rederive_changed_terms(now)
        else:
            two.apply(0, {"kind": "cpa", "src": {"topic": "att", "partition": 0, "offset": i}, "rec": payload}, now)
    now = datetime(2026, 4, 1, tzinfo=UTC)  # January and February have closed
    two.close_due(now)

    got: dict[Point, list[Any]] = defaultdict(lambda: [0, Decimal(0)])
    closes = effects["period_closed"]
    assert len({c["period_key"] for c in closes}) == len(closes), "a period closed twice"
    for c in closes:
        for ln in c["lines"]:
            got[(c["period_key"], ln["contract_version"], ln["event_type"], "")][0] += ln["quantity"]
            got[(c["period_key"], ln["contract_version"], ln["event_type"], "")][1] += ln["amount_exact"]
        for p in c["payouts"]:
            got[(c["period_key"], p["contract_version"], p["event_type"], p["partner_id"])][0] += p["quantity"]
            got[(c["period_key"], p["contract_version"], p["event_type"], p["partner_id"])][1] += p["amount_exact"]
    ids = [a["adjustment_id"] for a in effects["adjustment"]]
    assert len(ids) == len(set(ids)), "an adjustment id twice"
    for a in effects["adjustment"]:
        g = got[(a["corrects_period_key"], a["contract_version"], a["event_type"], "")]
        g[0] += a["quantity"]
        g[1] += a["amount_exact"]
        if a["partner_id"] is not None:
            g = got[(a["corrects_period_key"], a["contract_version"], a["event_type"], a["partner_id"])]
            g[0] += a["quantity"]
            g[1] += a["partner_payout_exact"]
    assert {k: (q, a) for k, (q, a) in got.items() if q or a} == final_picture(book, recs)



def test_a_backdated_payout_change_after_close_credits_the_partner_and_leaves_the_advertiser() -> None:
    """January closed with 3 signups at v1 (price 4.00, payout 2.50); a v2 from 20 January pays the
    partner 1.75 and keeps the price: two of the three move to v2 — the advertiser's amount is
    unchanged, the partner's statement gets −0.75 × 2."""
    v1 = terms(random.Random(1))
    v1["cpa"]["payouts"][1].update(advertiser_price={"kind": "flat", "amount": "4.00"},
                                   partner_payout={"kind": "flat", "amount": "2.50"}, tiers=[])
    v2 = json.loads(json.dumps(v1))
    v2["cpa"]["payouts"][1]["partner_payout"] = {"kind": "flat", "amount": "1.75"}
    effects: dict[str, list[dict[str, Any]]] = defaultdict(list)
    book = ContractBook()
    two = StageTwo(SETTINGS, book, lambda kind, rec, key: effects[kind].append(rec), WorkerMetrics())
    two.stores[0] = TotalsStore(0)
    now = datetime(2026, 1, 5, tzinfo=UTC)
    book.apply(record([(1, JAN1, None, v1)], 1))
    two.terms_changed.add(CID)
    two.rederive_changed_terms(now)
    for k, day in enumerate([10, 21, 25]):
        at = datetime(2026, 1, day, 12, tzinfo=UTC)
        two.apply(0, {"kind": "cpa", "src": {"topic": "att", "partition": 0, "offset": k},
                      "rec": conv_record(f"s{k}", "conversion", at, "signup", "p1", Decimal("4.00"), Decimal("2.50"),
                                         order_value=None, tier_position=k)}, now)
    now = datetime(2026, 2, 2, tzinfo=UTC)
    two.close_due(now)
    assert [ln["amount_exact"] for ln in effects["period_closed"][0]["lines"]] == [Decimal("12.00")]
    book.apply(record([(1, JAN1, AMEND["jan20"], v1), (2, AMEND["jan20"], None, v2)], 2))
    two.terms_changed.add(CID)
    two.rederive_changed_terms(now)
    adj = sorted(effects["adjustment"], key=lambda a: a["contract_version"])
    assert [(a["kind"], a["contract_version"], a["quantity"], a["amount_exact"], a["partner_id"], a["partner_payout_exact"])
            for a in adj] == [("backdated_amendment", 1, -2, Decimal("-8.00"), "p1", Decimal("-5.00")),
                              ("backdated_amendment", 2, 2, Decimal("8.00"), "p1", Decimal("3.50"))]
    # the same revision again (a restart re-reading contracts.terms) corrects nothing more
    two.terms_changed.add(CID)
    two.rederive_changed_terms(now)
    assert len(effects["adjustment"]) == 2
