"""The pre-contract window: valid exposures of campaigns no CPA contract covers yet are kept
(bounded in time and per household) so a contract published later attributes to them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tally_attribution.domain import ContractBook, Decider, Decision, Indexed, Source
from tally_attribution.state import AttributionState
from tests.attribution_builders import conversion, cpa_terms, impression, terms_record

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
T = NOW - timedelta(hours=1)


class World:
    def __init__(self, **kw: Any) -> None:
        self.book = ContractBook()
        self.state = AttributionState()
        self.decider = Decider(self.book, self.state, **kw)
        self.offset = 0

    def contract(self, cid: str, adv: str, campaigns: list[str], effective_from: datetime) -> None:
        rec = terms_record(cid, adv, [(1, effective_from, None, cpa_terms(adv, campaigns))])
        rec["versions"][0]["approved_at"] = NOW  # approved after the traffic it covers
        assert self.book.apply(rec) is None

    def see(self, iid: str, hh: str, at: datetime, campaign: str, partner: str | None = None,
            arrival: datetime = NOW) -> Indexed:
        return self.decider.index_impression(impression(iid, hh, at, "adv", campaign, partner), arrival)

    def convert(self, cid: str, hh: str, at: datetime) -> Decision:
        self.offset += 1
        return self.decider.decide(conversion(cid, hh, at, "adv"), Source("conv", 0, self.offset), NOW, NOW)

    def ids(self, hh: str) -> list[str]:
        return [e[0] for e in self.state.get("x:" + hh) or ()]


def test_contract_published_later_attributes_to_the_earlier_exposure() -> None:
    w = World()
    assert w.see("i1", "h", T - timedelta(days=2), "c1", "p1") == Indexed("uncovered")
    assert w.ids("h") == ["i1"]
    w.contract("k1", "adv", ["c1"], effective_from=T - timedelta(days=3))  # in force at the impression
    d = w.convert("v1", "h", T)
    assert d.attributed is not None
    assert (d.attributed["contract_id"], d.attributed["exposure_id"], d.attributed["partner_id"]) == ("k1", "i1", "p1")
    assert w.see("i2", "h", T - timedelta(days=1), "c1") == Indexed("exposure")  # covered from now on


def test_version_effective_after_the_impression_does_not_cover_it() -> None:
    w = World()
    w.see("i1", "h", T - timedelta(days=2), "c1")
    w.contract("k1", "adv", ["c1"], effective_from=T - timedelta(days=1))
    assert w.convert("v1", "h", T).reason == "no_exposure"


def test_window_edge_on_insert_and_by_the_sweep() -> None:
    w = World(precontract_window=timedelta(days=2))
    w.see("in", "h-in", NOW - timedelta(days=2), "c1")
    w.see("out", "h-out", NOW - timedelta(days=2, microseconds=1), "c1")
    assert (w.ids("h-in"), w.ids("h-out")) == (["in"], [])
    assert w.state.get("x:h-out") is None and "x:h-out" not in w.state.dirty  # nothing to write
    w.decider.prune(NOW + timedelta(microseconds=1))
    assert w.ids("h-in") == [] and w.state.exposure_count == 0


def test_a_published_contract_gives_its_exposures_the_lookback_horizon() -> None:
    w = World(precontract_window=timedelta(days=2), late_allowance=timedelta(0))
    w.see("i1", "h1", NOW - timedelta(days=1), "c1")
    w.see("i2", "h2", NOW - timedelta(days=1), "c2")
    w.contract("k1", "adv", ["c1"], effective_from=NOW - timedelta(days=30))
    w.decider.prune(NOW + timedelta(days=3))  # past the pre-contract window, within the 7-day lookback
    assert (w.ids("h1"), w.ids("h2")) == (["i1"], [])


def test_bound_per_household_drops_uncovered_exposures_first() -> None:
    w = World(max_exposures_per_household=3)
    w.contract("k1", "adv", ["c1"], effective_from=NOW - timedelta(days=30))
    w.see("covered-old", "h", T - timedelta(hours=9), "c1")
    w.see("u1", "h", T - timedelta(hours=8), "c9")
    w.see("u2", "h", T - timedelta(hours=7), "c9")
    w.see("u3", "h", T - timedelta(hours=6), "c9")
    assert w.ids("h") == ["covered-old", "u2", "u3"]  # the oldest uncovered went, not the covered one
    w.see("covered-new", "h", T - timedelta(hours=5), "c1")
    assert w.ids("h") == ["covered-old", "u3", "covered-new"]
    w.see("covered-newer", "h", T - timedelta(hours=4), "c1")
    assert w.ids("h") == ["covered-old", "covered-new", "covered-newer"]
    w.see("covered-newest", "h", T - timedelta(hours=3), "c1")
    assert w.ids("h") == ["covered-new", "covered-newer", "covered-newest"]  # then the oldest, as before
    assert w.state.exposure_count == 3 and w.state.household_count == 1


def test_uncovered_exposures_go_through_the_changelog() -> None:
    w = World()
    w.see("i1", "h", T - timedelta(days=2), "c1", "p1")
    copy = AttributionState()
    for key, value in w.state.drain_changes():
        copy.restore(key, value)
    assert copy.kv == w.state.kv and copy.exposure_count == 1
    w.contract("k1", "adv", ["c1"], effective_from=T - timedelta(days=3))
    d = Decider(w.book, copy).decide(conversion("v1", "h", T, "adv"), Source("conv", 0, 1), NOW, NOW)
    assert d.attributed is not None and d.attributed["exposure_id"] == "i1"
