"""The usage ledger: derivation from (usage, contracts) is the per-impression classification,
whatever the split; IVT credit plans take the latest buckets first and refuse a report whole."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tally_billing.examples import cpm_terms_json
from tally_billing.routing import ContractBook, contract_from_record
from tally_billing.usage import BUCKET_US, BUCKETS_PER_DAY, DAY_US, to_micros
from tally_metering import domain as d

T0 = datetime(2026, 1, 1, 5, tzinfo=UTC)
V2 = datetime(2026, 2, 15, 5, tzinfo=UTC)  # a New York midnight: a bucket boundary
ADV = "adv-l"


def _book() -> ContractBook:
    t1 = cpm_terms_json()
    t1["common"].update(time_zone="America/New_York", campaign_ids=["c1", "c2"], advertiser_id=ADV,
                        flight_start="2026-01-01", flight_end="2026-03-20")
    t2 = json.loads(json.dumps(t1))
    t2["common"].update(campaign_ids=["c1"], measurement="third_party")
    versions = [{"version": 1, "effective_from": T0, "effective_to": None, "approved_at": T0, "terms_json": json.dumps(t1)},
                {"version": 2, "effective_from": V2, "effective_to": None, "approved_at": V2, "terms_json": json.dumps(t2)}]
    book = ContractBook()
    book.load([contract_from_record({"contract_id": "K", "advertiser_id": ADV, "contract_type": "cpm", "revision": 1,
                                     "terminated_at": None, "versions": versions})])
    return book


BOOK = _book()
START = to_micros(datetime(2026, 1, 25, tzinfo=UTC))
SPAN = 60 * DAY_US  # across the version change, a period end and the flight end

impressions = st.lists(st.tuples(st.integers(0, SPAN - 1), st.sampled_from(["c1", "c2", "c3"]),
                                 st.sampled_from([*sorted(d.LEDGER_CLASSES.values()), d.LEDGER_DUPLICATE])),
                       max_size=300)


def _ledger(rows: list[tuple[int, str, str]]) -> dict[tuple[str, int], d.UsageDay]:
    days: dict[tuple[str, int], d.UsageDay] = {}
    for t, campaign, cls in rows:
        t_us = START + t
        day = t_us // DAY_US
        u = days.setdefault((campaign, day), d.UsageDay(ADV, campaign, day))
        u.add((t_us // BUCKET_US) % BUCKETS_PER_DAY, cls, 1)
        u.max_event_us = max(u.max_event_us, t_us)
    return days


def _per_impression(rows: list[tuple[int, str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
    out: dict[tuple[str, str], d.PeriodTotals] = {}
    for t, campaign, cls in rows:
        route = BOOK.route(ADV, campaign, START + t)  # at the impression's own instant
        if route is not None:
            d.classify(out.setdefault(route.key, d.PeriodTotals()), cls, 1, route)
    return {k: {"c": v.counts, "s": v.in_scope_by_version} for k, v in out.items()}


def _view(totals: dict[tuple[str, str], d.PeriodTotals]) -> dict[tuple[str, str], dict[str, Any]]:
    return {k: {"c": v.counts, "s": v.in_scope_by_version} for k, v in totals.items()}


@settings(max_examples=60, deadline=None)
@given(impressions, st.randoms(use_true_random=False))
def test_derivation_from_buckets_equals_classifying_each_impression(rows: list[tuple[int, str, str]],
                                                                    rng: random.Random) -> None:
    whole = d.derive(BOOK, _ledger(rows).values())
    assert _view(whole) == _per_impression(rows)
    # linear: any split of the usage derives to the same totals once merged
    rng.shuffle(rows)
    cut = len(rows) // 2
    merged: dict[tuple[str, str], d.PeriodTotals] = {}
    for part in (rows[:cut], rows[cut:]):
        for k, v in d.derive(BOOK, _ledger(part).values()).items():
            merged.setdefault(k, d.PeriodTotals()).merge(v)
    assert _view(merged) == _view(whole)


def test_usage_day_round_trips_through_its_changelog_form() -> None:
    u = d.UsageDay(ADV, "c1", 20_500, offsets={"imp\x1f3": 17}, max_event_us=5)
    u.add(0, "none|first_party", 3)
    u.add(95, "givt|third_party", 2)
    back = d.UsageDay.from_json(json.loads(json.dumps(u.to_json())))
    assert back == u and back.total() == 5


def _usage(counts: dict[int, int]) -> dict[tuple[str, str], dict[int, d.UsageDay]]:
    days: dict[int, d.UsageDay] = {}
    for bucket, n in counts.items():
        u = days.setdefault(bucket // BUCKETS_PER_DAY, d.UsageDay(ADV, "c1", bucket // BUCKETS_PER_DAY))
        u.add(bucket % BUCKETS_PER_DAY, "none|first_party", n)
    return {(ADV, "c1"): days}


B = to_micros(datetime(2026, 2, 10, 15, tzinfo=UTC)) // BUCKET_US


def test_an_ivt_credit_takes_the_latest_buckets_first() -> None:
    usage = _usage({B: 5, B + 1: 3, B + 2: 4})
    plan, refusal = d.plan_ivt_credit(usage, ADV, [("c1", B * BUCKET_US, (B + 3) * BUCKET_US, "givt", "first_party", 6)],
                                      not_before_us=0)
    assert refusal is None
    assert [(b - B, n) for _, b, _, _, n in plan] == [(2, 4), (1, 2)]
    assert {(v, i) for _, _, v, i, _ in plan} == {("none|first_party", "givt|first_party")}


def test_a_report_whose_entries_together_claim_too_much_is_refused_whole() -> None:
    usage = _usage({B: 5})
    window = ("c1", B * BUCKET_US, (B + 1) * BUCKET_US)
    plan, refusal = d.plan_ivt_credit(usage, ADV, [(*window, "givt", "first_party", 4), (*window, "sivt", "first_party", 2)],
                                      not_before_us=0)
    assert plan == [] and refusal is not None
    assert refusal[0] == 1 and "holds 1 valid first_party impression(s); the report flags 2" in refusal[1]
    plan, refusal = d.plan_ivt_credit(usage, ADV, [(*window, "givt", "third_party", 1)], not_before_us=0)
    assert refusal is not None and "holds 0 valid third_party" in refusal[1]


def test_a_window_past_the_horizon_is_locked() -> None:
    usage = _usage({B: 5})
    plan, refusal = d.plan_ivt_credit(usage, ADV, [("c1", B * BUCKET_US, (B + 1) * BUCKET_US, "givt", "first_party", 1)],
                                      not_before_us=(B + 1) * BUCKET_US)
    assert plan == [] and refusal is not None and "locked" in refusal[1]


def test_negative_classification_undoes_a_positive_one() -> None:
    route = BOOK.route(ADV, "c1", B * BUCKET_US)
    assert route is not None
    tot = d.PeriodTotals()
    d.classify(tot, "none|first_party", 7, route)
    d.classify(tot, "none|first_party", -3, route)
    d.classify(tot, "givt|first_party", 3, route)
    assert tot.in_scope_by_version == {1: 4} and tot.counts == {d.RECEIVED: 7, d.IVT_GIVT: 3}
    assert timedelta(microseconds=BUCKET_US) == timedelta(minutes=15)
