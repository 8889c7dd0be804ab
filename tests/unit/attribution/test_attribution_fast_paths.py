"""The processor's fast paths against the plain computations they replace, on random input:

- the exposure index on flat per-household tuples (``Decider.index_exposure``) keeps exactly
  what the list-based index kept (dedupe, horizons, the per-household bound with uncovered
  exposures evicted first), for random impression streams and books;
- the remembered billing period of ``period_containing`` is the one computed afresh, whatever
  the order of the instants asked about;
- the per-contract version table (``CpaContract.in_force`` / ``rating``) answers what
  ``version_in_force`` computes, at random instants and at every step of it;
- attribution's outputs written by the compiled flat writer are fastavro's bytes (or its refusal);
- decisions through the Decider equal ``tally_billing.attribution.decide`` called on the same
  facts (the exposures read back from the flat index).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tally_attribution.domain import ContractBook, Decider, Source
from tally_attribution.state import AttributionState
from tally_billing import periods
from tally_billing.attribution import (
    Conversion,
    CpaContract,
    DedupeFacts,
    Exposure,
    PriorConversion,
    _plain_rating_version,
    decide,
)
from tally_billing.periods import PeriodKind, period_containing
from tally_billing.usage import to_micros
from tally_billing.versions import InvalidVersions, version_in_force, versions_from_record
from tally_streams.avro import _FLAT_WRITERS, EncodeError, SchemaCatalog
from tests.attribution_builders import EPOCH_2026, conversion, cpa_terms, cpm_terms, impression, terms_record
from tests.unit.streams.avro_samples import sample

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
CAMPAIGNS = ["c1", "c2", "cpm1", "nope"]


def book() -> ContractBook:
    b = ContractBook()
    assert b.apply(terms_record("k1", "adv", [(1, EPOCH_2026, None, cpa_terms("adv", ["c1"], lookback_days=3))])) is None
    assert b.apply(terms_record("k2", "adv", [(1, EPOCH_2026, None, cpa_terms("adv", ["c2"], lookback_days=9))])) is None
    assert b.apply(terms_record("m1", "adv", [(1, EPOCH_2026, None, cpm_terms("adv", ["cpm1"]))], contract_type="cpm")) is None
    return b


def reference_index(d: Decider, held: dict[str, list[list[Any]]], imp: dict[str, Any], arrival: datetime) -> str:
    """The index as it was written before the flat tuples: lists of lists, sorted, trimmed."""
    if imp["event_time"] > arrival + d.max_future:
        return "dead_letter"
    if imp["ivt"] != "none":
        return "invalid_traffic"
    covered = d.book.cpa_campaign
    outcome = "exposure" if covered(imp["campaign_id"]) else "uncovered"
    before = held.get(imp["household_id"], [])
    if any(e[0] == imp["impression_id"] for e in before):
        return "duplicate"
    now_us = to_micros(arrival)
    rows = sorted([*before, [imp["impression_id"], to_micros(imp["event_time"]), imp["advertiser_id"], imp["campaign_id"],
                            imp["partner_id"]]], key=lambda e: (e[1], e[0]))
    horizon = (timedelta(days=d.book.max_lookback_days) + d.late_allowance) // timedelta(microseconds=1)
    pre = d.precontract_window // timedelta(microseconds=1)
    kept = [e for e in rows if e[1] >= now_us - (horizon if covered(e[3]) else pre)]
    excess = len(kept) - d.max_exposures_per_household
    if excess > 0:
        gone = set(sorted(range(len(kept)), key=lambda i: covered(kept[i][3]))[:excess])
        kept = [e for i, e in enumerate(kept) if i not in gone]
    if kept:
        held[imp["household_id"]] = kept
    else:
        held.pop(imp["household_id"], None)
    return outcome


impressions = st.lists(st.tuples(
    st.integers(0, 30),  # impression id
    st.sampled_from(["h1", "h2", "h3"]),
    st.integers(-12 * 24 * 60, 10),  # event time, minutes from NOW
    st.sampled_from(CAMPAIGNS),
    st.sampled_from([None, "p1", "p2"]),
    st.sampled_from(["none", "none", "none", "givt"]),
    st.integers(-2 * 24 * 60, 0),  # arrival, minutes from NOW (the index only looks forward from it)
), max_size=80)


@settings(max_examples=300, deadline=None)
@given(impressions, st.integers(1, 5))
def test_flat_index_keeps_what_the_list_index_kept(stream: list[tuple[Any, ...]], bound: int) -> None:
    state = AttributionState()
    d = Decider(book(), state, max_exposures_per_household=bound)
    held: dict[str, list[list[Any]]] = {}
    for iid, hh, minutes, campaign, partner, ivt, arrived in stream:
        imp = impression(f"i{iid}", hh, NOW + timedelta(minutes=minutes), "adv", campaign, partner, ivt=ivt)
        arrival = NOW + timedelta(minutes=arrived)
        assert d.index_impression(imp, arrival).outcome == reference_index(d, held, imp, arrival)
        assert {k[2:]: state.get(k) for k in state.kv if k.startswith("x:")} == held
    assert state.exposure_count == sum(len(v) for v in held.values()) and state.household_count == len(held)
    copy = AttributionState()
    for key, value in state.drain_changes():
        copy.restore(key, value)
    assert copy.kv == state.kv and copy.exposure_count == state.exposure_count


zones = st.sampled_from(["UTC", "America/New_York", "Europe/London", "Asia/Kolkata", "Australia/Lord_Howe", "Pacific/Apia"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3 * 365 * 24 * 3600), zones, st.sampled_from(list(PeriodKind))), min_size=1,
                max_size=40))
def test_remembered_period_is_the_period_containing(asks: list[tuple[int, str, PeriodKind]]) -> None:
    """``period_containing`` answers from the last period of the (zone, kind) when it holds the
    instant: the same period as computed afresh."""
    for seconds, tz, kind in asks:
        at = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
        assert period_containing(at, tz, kind) == periods._period_containing(at, tz, kind)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["h1", "h2"]), st.integers(-10 * 24 * 60, 0), st.sampled_from(CAMPAIGNS),
                          st.sampled_from([None, "p1"])), max_size=12),
       st.lists(st.tuples(st.sampled_from(["h1", "h2", "h3"]), st.integers(-2 * 24 * 60, 0)), min_size=1, max_size=12))
def test_decider_decides_like_decide(seen: list[tuple[Any, ...]], convs: list[tuple[str, int]]) -> None:
    state = AttributionState()
    b = book()
    d = Decider(b, state)
    for i, (hh, minutes, campaign, partner) in enumerate(seen):
        d.index_impression(impression(f"i{i}", hh, NOW + timedelta(minutes=minutes), "adv", campaign, partner), NOW)
    for j, (hh, minutes) in enumerate(convs):
        at = NOW + timedelta(minutes=minutes)
        exposures = [Exposure(e[0], hh, e[3], e[4] or "", datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=e[1]))
                     for e in state.get("x:" + hh) or () if e[2] == "adv"]
        # the plain call, on the facts the Decider holds before this conversion (no caps or tiers in these terms)
        prior = tuple(state.get("h:" + hh) or ())
        want = decide(Conversion(conversion_id=f"v{j}", advertiser_id="adv", household_id=hh, event_type="purchase",
                                 occurred_at=at), exposures, b.cpa_contracts_of("adv"),
                      dedupe=DedupeFacts(household_conversions=tuple(
                          PriorConversion(p[0], p[1], datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=p[2]))
                          for p in prior)))
        got = d.decide(conversion(f"v{j}", hh, at, "adv"), Source("conv", 0, j), NOW, NOW).outcome
        if hasattr(want, "reason"):
            assert (got["outcome"], got["reason"]) == ("rejected", want.reason.value)
        else:
            assert (got["outcome"], got["contract_id"], got["exposure_id"], got["partner_id"], got["advertiser_amount"],
                    got["partner_payout"], got["period_key"]) == (
                "attributed", want.contract_id, want.exposure_id, want.partner_id or None, want.advertiser_amount,
                want.partner_amount, want.period_key)


# ----------------------------------------------------------------- per-contract version table

def _versions(spec: list[tuple[int, int | None, int, int | None, str, bool]]) -> tuple[Any, ...]:
    """Contract versions from (effective_from day, effective_to days later, flight start day,
    flight length in days, zone, attribution tail); days from 2026-01-01."""
    rows = []
    for n, (start, length, flight_start, flight_days, tz, tail) in enumerate(spec, start=1):
        t = cpa_terms("adv", ["c1"])
        fs = (EPOCH_2026 + timedelta(days=flight_start)).date()
        t["common"].update({"time_zone": tz, "flight_start": fs.isoformat(), "attribution_tail": tail,
                            "flight_end": None if flight_days is None else (fs + timedelta(days=flight_days)).isoformat()})
        begin = EPOCH_2026 + timedelta(days=start, hours=n)
        rows.append((n, begin, None if length is None else begin + timedelta(days=length), t))
    return versions_from_record(terms_record("k", "adv", rows))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-20, 60), st.none() | st.integers(1, 40), st.integers(-20, 60),
                          st.none() | st.integers(0, 30), zones, st.booleans()), min_size=1, max_size=4),
       st.lists(st.integers(-30 * 24 * 3600, 120 * 24 * 3600), min_size=1, max_size=30), st.data())
def test_version_table_is_version_in_force(spec: list[Any], seconds: list[int], data: st.DataObject) -> None:
    """``CpaContract.in_force`` / ``rating`` (a table computed once per contract) answer what
    ``version_in_force`` and ``_plain_rating_version`` compute, at random instants and exactly at
    the instants where the answer changes (and one microsecond either side of them)."""
    try:
        versions = _versions(spec)
    except InvalidVersions:
        return  # overlapping or out-of-order versions: the book refuses them before any decision
    contract = CpaContract("k", versions)
    one_us = timedelta(microseconds=1)
    edges = [e + d for e in contract._versions().starts for d in (-one_us, timedelta(0), one_us)]
    instants = [EPOCH_2026 + timedelta(seconds=s, microseconds=data.draw(st.integers(0, 999_999))) for s in seconds]
    for at in [*instants, *edges]:
        assert contract.in_force(at) == version_in_force(versions, at), at
        assert contract.rating(at) == _plain_rating_version(CpaContract("k", versions), at), at


# ----------------------------------------------------------------- outputs through the compiled writer

def _amounts(rng: random.Random) -> Decimal | Any:
    return rng.choice([
        Decimal(rng.randrange(-10**14, 10**14)).scaleb(-rng.randrange(0, 13)),  # fits decimal(38, 12)
        Decimal("0"), Decimal("-0"), Decimal("0E-12"), Decimal("1E+20"), Decimal("-0.000000000001"),
        Decimal("12345678901234567890123456.123456789012"),  # 38 digits
        Decimal("1E-13"),  # too many decimals: refused
        Decimal("123456789012345678901234567890123456789"),  # 39 digits: refused
        Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity"),
        Decimal("3.14"),
        4, 2.5, "1.00", None, True,
    ])


@pytest.mark.parametrize("name", ["conversion_outcome", "attributed_conversion", "conversion"])
def test_outputs_written_by_the_compiled_writer_are_fastavros(name: str) -> None:
    """Attribution's outputs (nullable decimals, booleans, timestamps) and the conversion: the
    compiled flat writer's bytes are ``encode``'s (fastavro's), and what it cannot write — a
    decimal with too many digits or decimals, NaN, a float, a non-bool — is refused or written
    exactly as ``encode`` refuses or writes it."""
    catalog = SchemaCatalog.load()
    codec = catalog.codec(name)
    assert codec._field_names and _FLAT_WRITERS[codec.schema.fingerprint] is not None, "the schema is compiled"
    rng = random.Random(f"writer-{name}")
    schema = codec.schema.schema
    records = []
    for _ in range(400):
        rec = sample(schema, rng)
        for f in schema["fields"]:
            t = f["type"]
            inner = next(x for x in t if x != "null") if isinstance(t, list) else t
            if isinstance(inner, dict) and inner.get("logicalType") == "decimal" and rng.random() < 0.6:
                rec[f["name"]] = _amounts(rng)
            elif inner == "boolean" and rng.random() < 0.3:
                rec[f["name"]] = rng.choice([True, False, None, 0, 1, "yes"])
        records.append(rec)
    got = codec.encode_many(records)
    fast = 0
    for rec, out in zip(records, got, strict=True):
        try:
            want: bytes | None = codec.encode(rec)
        except (EncodeError, OverflowError):
            want = None
        if want is None:
            assert isinstance(out, EncodeError), rec
        else:
            assert out == want, rec
            fast += 1
    assert fast > 100  # most records are writable: the comparison is not vacuous
