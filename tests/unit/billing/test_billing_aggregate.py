from __future__ import annotations

import itertools
import json
from datetime import date
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from tally_billing.aggregate import AggregateState, merge_all
from tally_billing.cpa import price_conversion
from tally_billing.examples import cpa_terms_json
from tally_billing.terms import parse_terms

CPA = parse_terms(cpa_terms_json()).cpa
assert CPA is not None

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


def apply(state: AggregateState, event: tuple[str, int, str, int, int]) -> AggregateState:
    kind, version, partner, cents, offset = event
    state = state.with_offset("ads", version % 2, offset)
    if kind == "imp":
        return state.with_impressions(version, 1 + cents % 5)
    priced = price_conversion(CPA, event_type=kind, partner_id=partner, order_value=Decimal(cents).scaleb(-2),
                              local_date=date(2026, 3, 3), prior_event_type_count=0)  # fmt: skip
    return state.with_conversion(version, partner, priced)


def fold(evs: list[tuple[str, int, str, int, int]]) -> AggregateState:
    s = AggregateState.empty("c", "2026-03")
    for e in evs:
        s = apply(s, e)
    return s


@settings(max_examples=100, deadline=None)
@given(evs=events, data=st.data())
def test_totals_independent_of_batching_and_merge_order(evs: list[tuple[str, int, str, int, int]], data: st.DataObject) -> None:
    one_by_one = fold(evs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(evs)), max_size=5)))
    bounds = [0, *cuts, len(evs)]
    batches = [fold(evs[a:b]) for a, b in itertools.pairwise(bounds)]
    shuffled = data.draw(st.permutations(batches))
    assert merge_all(shuffled, "c", "2026-03") == one_by_one
    # associativity and commutativity directly, on three batches
    x, y, z = (fold(evs[i::3]) for i in range(3))
    assert x.merge(y).merge(z) == x.merge(y.merge(z)) == z.merge(x).merge(y)
    # identity, and the serialised form survives JSON exactly
    assert one_by_one.merge(AggregateState.empty("c", "2026-03")) == one_by_one
    assert AggregateState.from_dict(json.loads(json.dumps(one_by_one.to_dict()))) == one_by_one
    assert merge_all(shuffled, "c", "2026-03").to_dict() == one_by_one.to_dict()


def test_offsets_let_replays_be_skipped() -> None:
    s = AggregateState.empty("c", "2026-03").with_offset("ads", 0, 41)
    assert s.includes("ads", 0, 41) and not s.includes("ads", 0, 42) and not s.includes("ads", 1, 0)


def test_states_of_other_periods_do_not_merge() -> None:
    import pytest

    with pytest.raises(ValueError):
        AggregateState.empty("c", "2026-03").merge(AggregateState.empty("c", "2026-04"))
