"""The exposure index on disk (``tally_attribution.store``) against the in-memory index it replaces:

- random impression streams (with commits between them, and prunes) leave the same households,
  counts, changelog records and decisions in a state backed by an ``ExposureStore`` as in the
  plain in-memory state;
- a transaction's changes reach the store only at ``committed``, together with its checkpoint
  (a reopened store holds exactly the last committed transaction);
- a store rebuilt from the changelog holds what the store written commit by commit holds, with
  the same counts; a trusted store skips the changelog's ``x:`` records.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tally_attribution.domain import ContractBook, Decider, Source
from tally_attribution.state import AttributionState
from tally_attribution.store import ExposureStore, encode_checkpoint
from tally_billing.usage import to_micros
from tests.attribution_builders import EPOCH_2026, conversion, cpa_terms, impression, terms_record

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
CAMPAIGNS = ["c1", "c2", "nope"]


def book() -> ContractBook:
    b = ContractBook()
    assert b.apply(terms_record("k1", "adv", [(1, EPOCH_2026, None, cpa_terms("adv", ["c1"], lookback_days=3))])) is None
    assert b.apply(terms_record("k2", "adv", [(1, EPOCH_2026, None, cpa_terms("adv", ["c2"], lookback_days=9))])) is None
    return b


def households(state: AttributionState, names: list[str]) -> dict[str, Any]:
    return {h: state.get("x:" + h) for h in names if state.get("x:" + h) is not None}


def cp(n: int) -> bytes:
    return encode_checkpoint({("imp", 0): (n, f"t:{n}"), ("conv", 1): (7, f"t:{n}")})


HOUSEHOLDS = ["h1", "h2", "h3", "h~4", "hé5"]
stream = st.lists(st.tuples(
    st.integers(0, 30),  # impression id
    st.sampled_from(HOUSEHOLDS),
    st.integers(-12 * 24 * 60, 10),  # event time, minutes from NOW
    st.sampled_from(CAMPAIGNS),
    st.sampled_from([None, "p1", "p2"]),
    st.integers(-2 * 24 * 60, 0),  # arrival, minutes from NOW
    st.sampled_from(["index", "index", "index", "commit", "prune", "drain"]),  # what happens after it
), max_size=60)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stream, st.integers(1, 4))
def test_the_store_backed_index_is_the_in_memory_index(tmp_path: Path, ops: list[tuple[Any, ...]], bound: int) -> None:
    path = tmp_path / f"s-{abs(hash((tuple(ops), bound)))}"
    store = ExposureStore(path, 8)
    try:
        plain, disk = AttributionState(), AttributionState()
        disk.use_store(store)
        disk.begin_restore(trusted=False)
        disk.end_restore(cp(0))
        b = book()
        dp, dd = Decider(b, plain, max_exposures_per_household=bound), Decider(b, disk, max_exposures_per_household=bound)
        changelog: list[tuple[bytes, bytes | None]] = []  # the disk state's committed changelog, in order
        n = 0
        for iid, hh, minutes, campaign, partner, arrived, then in ops:
            imp = impression(f"i{iid}", hh, NOW + timedelta(minutes=minutes), "adv", campaign, partner)
            arrival = NOW + timedelta(minutes=arrived)
            disk.prefetch(["x:" + hh])
            assert dd.index_impression(imp, arrival) == dp.index_impression(imp, arrival)
            if then == "prune":
                dp.prune(arrival)
                dd.prune(arrival)
                now_us = to_micros(arrival)
                assert disk.prune_exposures(lambda rows, d=dd, t=now_us: d._kept(rows, t)) >= 0
            if then in ("commit", "prune"):
                n += 1
                drained_plain = dict(plain.drain_changes())
                drained = list(disk.drain_changes())
                assert dict(drained) == {k: v for k, v in drained_plain.items() if k.startswith(b"x:")}
                changelog += drained
                disk.committed(cp(n))
                assert store.checkpoint == cp(n)
            elif then == "drain":  # drained for a transaction that then failed: never in the store
                list(disk.drain_changes())
                list(plain.drain_changes())
                disk._drained.clear()
                disk._x = {}
                plain, disk = AttributionState(), AttributionState()  # the restart rebuilds memory from the store
                disk.use_store(store)
                disk.begin_restore(trusted=True)
                disk.end_restore(cp(n))
                for key, value in changelog:
                    plain.restore(key, value)
                dp, dd = Decider(b, plain, max_exposures_per_household=bound), Decider(b, disk, max_exposures_per_household=bound)
            assert households(disk, HOUSEHOLDS) == households(plain, HOUSEHOLDS)
            assert (disk.household_count, disk.exposure_count) == (plain.household_count, plain.exposure_count)
        # decisions read the same exposures
        for i, hh in enumerate(HOUSEHOLDS):
            conv = conversion(f"v{i}", hh, NOW, "adv")
            a = dp.decide(conv, Source("conv", 0, i), NOW, NOW)
            c = dd.decide(conv, Source("conv", 0, i), NOW, NOW)
            assert (a.outcome["outcome"], a.outcome.get("reason"), a.attributed) == (c.outcome["outcome"], c.outcome.get("reason"),
                                                                                     c.attributed)
        # the last transaction commits; the store reopened holds it, and a rebuild from the changelog holds the same
        n += 1
        list(plain.drain_changes())
        changelog += list(disk.drain_changes())
        disk.committed(cp(n))
        want = households(plain, HOUSEHOLDS)
        store.close()
        for trusted in (True, False):
            reopened = ExposureStore(path, 8)
            try:
                again = AttributionState()
                again.use_store(reopened)
                again.begin_restore(trusted=trusted)
                assert reopened.checkpoint == (cp(n) if trusted else None)
                for key, value in changelog:
                    again.restore(key, value)
                again.end_restore(cp(n))
                assert households(again, HOUSEHOLDS) == want
                assert (again.household_count, again.exposure_count) == (plain.household_count, plain.exposure_count)
                assert (reopened.checkpoint, reopened.households) == (cp(n), plain.household_count)
            finally:
                reopened.close()
    finally:
        store.close()


def test_nothing_reaches_the_store_before_its_transaction_committed(tmp_path: Path) -> None:
    store = ExposureStore(tmp_path / "s", 8)
    state = AttributionState()
    state.use_store(store)
    state.begin_restore(trusted=False)
    state.end_restore(cp(0))
    d = Decider(book(), state)
    d.index_impression(impression("i1", "h1", NOW - timedelta(hours=1), "adv", "c1", "p1"), NOW)
    assert store.get(b"x:h1") is None and state.get("x:h1") is not None  # held in memory, not on disk
    records = dict(state.drain_changes())
    assert store.get(b"x:h1") is None and store.checkpoint == cp(0)
    state.committed(cp(1))
    assert store.get(b"x:h1") == records[b"x:h1"]  # the changelog's bytes, encoded once
    assert (store.checkpoint, store.households, store.exposures) == (cp(1), 1, 1)
    d.index_impression(impression("i2", "h1", NOW - timedelta(minutes=30), "adv", "c1", "p2"), NOW)
    list(state.drain_changes())  # its transaction fails: never committed
    store.close()
    store = ExposureStore(tmp_path / "s", 8)
    try:
        assert (store.checkpoint, store.households, store.exposures) == (cp(1), 1, 1)
        assert store.get(b"x:h1") == records[b"x:h1"]
    finally:
        store.close()


def test_a_trusted_store_skips_the_changelogs_exposures_and_a_rebuild_replaces_them(tmp_path: Path) -> None:
    store = ExposureStore(tmp_path / "s", 8)
    try:
        store.write_committed([(b"x:h1", b'[["i9",1,"adv","c1",null]]')], cp(3), 1, 1)
        changelog = [(b"x:h1", b'[["i1",1,"adv","c1",null]]'), (b"x:h2", b'[["i2",1,"adv","c1",null],["i3",2,"adv","c1",null]]'),
                     (b"x:h2", None), (b"x:h3", b'[["i4",1,"adv","c1","p"]]'), (b"c:v1", b'{"s":"rejected","t":1}')]
        trusted = AttributionState()
        trusted.use_store(store)
        trusted.begin_restore(trusted=True)
        for k, v in changelog:
            trusted.restore(k, v)
        trusted.end_restore(cp(3))
        assert trusted.get("x:h1") == [["i9", 1, "adv", "c1", None]] and trusted.get("x:h3") is None
        assert trusted.get("c:v1") == {"s": "rejected", "t": 1} and trusted.household_count == 1
        rebuilt = AttributionState()
        rebuilt.use_store(store)
        rebuilt.begin_restore(trusted=False)
        assert store.checkpoint is None  # wiped: a rebuild cut short is never trusted
        for k, v in changelog:
            rebuilt.restore(k, v)
        rebuilt.end_restore(cp(4))
        assert rebuilt.get("x:h1") == [["i1", 1, "adv", "c1", None]] and rebuilt.get("x:h2") is None
        assert rebuilt.get("x:h3") == [["i4", 1, "adv", "c1", "p"]]
        assert (store.checkpoint, rebuilt.household_count, rebuilt.exposure_count) == (cp(4), 2, 2)
        assert sorted(k for k, _ in store.items()) == ["x:h1", "x:h3"]
    finally:
        store.close()


def test_the_checkpoint_is_deterministic() -> None:
    a = {("imp", 1): (5, "t:2"), ("conv", 0): (3, "t:2"), ("imp", 0): (9, "t:2")}
    assert encode_checkpoint(a) == encode_checkpoint(dict(reversed(list(a.items()))))
    assert encode_checkpoint(a) == b'[["conv",0,3,"t:2"],["imp",0,9,"t:2"],["imp",1,5,"t:2"]]'
    assert encode_checkpoint(a) != encode_checkpoint({**a, ("imp", 1): (5, "t:3")})  # a transaction that consumed nothing


def test_a_trusted_store_is_the_whole_state_without_the_changelog(tmp_path: Path) -> None:
    """Decisions leave ``h:``/``c:``/``o:``/``u:``/``e:`` keys and a pending ``q:`` key: a state
    loaded from the trusted store alone equals the one rebuilt from the changelog, and the
    store rebuilt from the changelog holds the same records as the one written commit by commit."""
    store = ExposureStore(tmp_path / "s", 8)
    state = AttributionState()
    state.use_store(store)
    state.begin_restore(trusted=False)
    state.end_restore(cp(0))
    d = Decider(book(), state)
    changelog: list[tuple[bytes, bytes | None]] = []
    for i in range(6):
        d.index_impression(impression(f"i{i}", f"h{i}", NOW - timedelta(hours=2), "adv", "c1", "p1"), NOW)
    changelog += list(state.drain_changes())
    state.committed(cp(1))
    for i in range(4):
        conv = conversion(f"v{i}", f"h{i}", NOW - timedelta(hours=1), "adv")
        conv["order_id"] = f"o{i}"
        d.decide(conv, Source("conv", 0, i), NOW, NOW)
    state.put_pending("q:conv/0/9", {"raw": b"\x00\x01", "arr": 5, "topic": "conv", "p": 0, "o": 9, "key": None})
    changelog += list(state.drain_changes())
    state.committed(cp(2))
    assert {k[:2] for k in state.kv} >= {"h:", "c:", "o:", "u:", "e:"}
    want_kv, want_pending = dict(state.kv), dict(state.pending)
    want_x = households(state, [f"h{i}" for i in range(6)])
    store.close()
    store = ExposureStore(tmp_path / "s", 8)
    rebuilt_store = ExposureStore(tmp_path / "r", 8)
    try:
        trusted = AttributionState()
        trusted.use_store(store)
        trusted.begin_restore(trusted=True)  # no changelog read at all
        trusted.end_restore(cp(2))
        rebuilt = AttributionState()
        rebuilt.use_store(rebuilt_store)
        rebuilt.begin_restore(trusted=False)
        for key, value in changelog:
            rebuilt.restore(key, value)
        rebuilt.end_restore(cp(2))
        for s in (trusted, rebuilt):
            assert s.kv == want_kv and s.pending == want_pending
            assert households(s, [f"h{i}" for i in range(6)]) == want_x
            assert (s.household_count, s.exposure_count) == (6, 6)
        assert list(store.state_items()) == list(rebuilt_store.state_items())
        assert list(store.items()) == list(rebuilt_store.items())
    finally:
        store.close()
        rebuilt_store.close()
