"""Period totals, the one model: a commutative monoid of counts and exact sums, keyed outside by
(contract, period); the same totals always rate to the same lines."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, date, datetime
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from tally_billing.cpa import price_conversion
from tally_billing.examples import cpa_terms_json, cpm_terms_json
from tally_billing.ledger import LEDGER_CLASSES, UsageDay, derive
from tally_billing.periods import PeriodKind, period_by_key
from tally_billing.routing import Contract, ContractBook, build_segments
from tally_billing.terms import parse_terms
from tally_billing.totals import CONVERSIONS_ATTRIBUTED, RECEIVED, SEP, PeriodTotals, rate_period
from tally_billing.usage import BUCKETS_PER_DAY, DAY_US, to_micros
from tally_billing.versions import ContractVersion

CPA = parse_terms(cpa_terms_json()).cpa
assert CPA is not None
CPM = parse_terms(cpm_terms_json())
MARCH = period_by_key("2026-03", "America/New_York", PeriodKind.MONTH)


def contract_of(*versions: ContractVersion) -> Contract:
    ordered = tuple(sorted(versions, key=lambda v: (v.effective_from, v.version)))
    return Contract("c", "adv-acme", "cpm", 1, ordered, build_segments(ordered))


# three versions, so every version an event names has terms to rate it
CONTRACT = contract_of(*(ContractVersion("c", n, datetime(2026, 1, n, 5, tzinfo=UTC), None, CPM) for n in (1, 2, 3)))

# One event: (kind, version, partner, order value cents, offset)
events = st.lists(
    st.tuples(
        st.sampled_from(["imp", "purchase", "signup"]),
        st.integers(1, 3),
        st.sampled_from(["p1", "p2"]),
        st.integers(0, 10**6),
        st.integers(0, 10**6),
    ),
    max_size=30,
)


def apply(t: PeriodTotals, event: tuple[str, int, str, int, int]) -> None:
    kind, version, partner, cents, offset = event
    t.include_offset("ads", version % 2, offset + 1)
    t.max_event_us = max(t.max_event_us, cents)
    if kind == "imp":
        t.count(RECEIVED, 1 + cents % 5)
        t.add_in_scope(version, 1 + cents % 5)
        return
    priced = price_conversion(CPA, event_type=kind, partner_id=partner, order_value=Decimal(cents).scaleb(-2),
                              local_date=date(2026, 3, 3), prior_event_type_count=0)  # fmt: skip
    t.count(CONVERSIONS_ATTRIBUTED)
    t.add_cpa(version, kind, 1, priced.advertiser_amount, partner, priced.partner_amount)


def fold(evs: list[tuple[str, int, str, int, int]]) -> PeriodTotals:
    t = PeriodTotals()
    for e in evs:
        apply(t, e)
    return t


def merged(*parts: PeriodTotals) -> PeriodTotals:
    """The merge of ``parts`` into a fresh value (``merge`` adds into its receiver)."""
    out = PeriodTotals()
    for p in parts:
        out.merge(p)
    return out


@settings(max_examples=100, deadline=None)
@given(evs=events, data=st.data())
def test_totals_independent_of_batching_and_merge_order(evs: list[tuple[str, int, str, int, int]], data: st.DataObject) -> None:
    one_by_one = fold(evs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(evs)), max_size=5)))
    bounds = [0, *cuts, len(evs)]
    batches = [fold(evs[a:b]) for a, b in itertools.pairwise(bounds)]
    shuffled = data.draw(st.permutations(batches))
    assert merged(*shuffled) == one_by_one
    # associativity and commutativity directly, on three batches
    x, y, z = (fold(evs[i::3]) for i in range(3))
    assert merged(merged(x, y), z) == merged(x, merged(y, z)) == merged(merged(z, x), y)
    # identity, and the serialised form survives JSON exactly
    assert merged(one_by_one, PeriodTotals()) == merged(PeriodTotals(), one_by_one) == one_by_one
    assert PeriodTotals.from_json(json.loads(json.dumps(one_by_one.to_json()))) == one_by_one
    # the same totals rate to the same lines, however they were batched
    assert rate_period(CONTRACT, MARCH, merged(*shuffled)) == rate_period(CONTRACT, MARCH, one_by_one)


def test_source_offsets_keep_the_highest_per_partition_so_a_replay_changes_nothing() -> None:
    t = PeriodTotals()
    t.include_offset("ads", 0, 42)  # the record at offset 41 is included
    snapshot = json.dumps(t.to_json(), sort_keys=True)
    t.include_offset("ads", 0, 42)  # replayed
    t.include_offset("ads", 0, 7)  # an older record, replayed out of order
    assert json.dumps(t.to_json(), sort_keys=True) == snapshot
    t.include_offset("ads", 1, 3)  # partitions are apart
    assert t.offsets == {f"ads{SEP}0": 42, f"ads{SEP}1": 3}
    other = PeriodTotals(offsets={f"ads{SEP}0": 40, f"ads{SEP}2": 5})
    assert merged(t, other).offsets == merged(other, t).offsets == {f"ads{SEP}0": 42, f"ads{SEP}1": 3, f"ads{SEP}2": 5}


def test_usage_of_two_periods_never_lands_in_one_periods_totals() -> None:
    """Totals carry no (contract, period) of their own: derivation keys them, and splits a UTC day
    at the contract's local midnight (New York: 04:00 UTC on 1 April)."""
    book = ContractBook()
    book.load([CONTRACT])
    day = to_micros(datetime(2026, 4, 1, tzinfo=UTC)) // DAY_US
    u = UsageDay("adv-acme", "cmp-100", day, max_event_us=(day + 1) * DAY_US - 1)
    valid = LEDGER_CLASSES[("none", "first_party")]
    u.add(15, valid, 7)  # 03:45-04:00 UTC: 31 March in New York
    u.add(16, valid, 11)  # 04:00-04:15 UTC: 1 April
    u.add(BUCKETS_PER_DAY - 1, valid, 2)
    u.include_offset(f"ads{SEP}0", 99)
    derived = derive(book, [u])
    assert {k: (t.counts, t.in_scope_by_version) for k, t in derived.items()} == {
        ("c", "2026-03"): ({RECEIVED: 7}, {3: 7}),
        ("c", "2026-04"): ({RECEIVED: 13}, {3: 13}),
    }
    assert derived[("c", "2026-03")].max_event_us == to_micros(datetime(2026, 4, 1, 4, tzinfo=UTC)) - 1
