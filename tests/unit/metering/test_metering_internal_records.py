"""Metering's internal topics in Avro: usage deltas, dedupe ids, period/contract state and IVT
decisions round-trip exactly, old JSON changelog values still restore, and a malformed delta is a
typed decode error."""

from __future__ import annotations

import dataclasses
import json
from array import array
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tally_billing.totals import Line, PeriodTotals
from tally_metering.codec import DeltaCodec
from tally_metering.domain import SEP
from tally_metering.state import ContractState, DedupeStore, PeriodState, TotalsStore
from tally_streams.avro import MAGIC, DecodeError, SchemaCatalog

CATALOG = SchemaCatalog.load()
CODEC = DeltaCodec(CATALOG)

cells = st.dictionaries(st.integers(0, 95), st.integers(-(2**40), 2**40), min_size=1, max_size=96)
groups = st.lists(st.tuples(st.sampled_from(["cmp-1", "cmp-2", "cmp-é"]), st.integers(0, 30_000),
                            st.sampled_from(["none|first_party", "givt|third_party", "duplicate"]), cells,
                            st.integers(0, 2**62), st.integers(0, 2**62)), max_size=20)


def encode_usage(gs: list[tuple[str, int, str, dict[int, int], int, int]]) -> bytes:
    campaigns: dict[str, int] = {}
    classes: dict[str, int] = {}
    packed, counts, buckets = array("q"), array("q"), bytearray()
    for c, day, cls, cs, newest, nxt in gs:
        ks = sorted(cs)
        packed.extend((campaigns.setdefault(c, len(campaigns)), classes.setdefault(cls, len(classes)), day, len(ks),
                       newest, nxt))
        buckets += bytes(ks)
        counts.extend(cs[k] for k in ks)
    return CODEC.usage("ads.impressions", 3, 10, 99, "adv-1", "imp-10", list(campaigns), list(classes), packed,
                       buckets, counts)


@given(groups)
def test_a_usage_delta_reaches_stage_two_as_the_groups_stage_one_counted(gs: list) -> None:
    payload, kind, raw = CODEC.decode(encode_usage(gs))
    assert kind is None and raw is None
    assert payload["kind"] == "usage" and payload["advertiser_id"] == "adv-1"
    assert payload["src"] == {"topic": "ads.impressions", "partition": 3, "first": 10, "last": 99, "first_id": "imp-10"}
    assert payload["groups"] == [(c, day, cls, sorted(cs.items()), newest, nxt) for c, day, cls, cs, newest, nxt in gs]


def test_a_usage_delta_is_single_object_avro_of_its_catalog_schema() -> None:
    data = encode_usage([("cmp-1", 20_000, "none|first_party", {3: 2, 1: 1}, 5, 6)])
    assert data[:10] == CATALOG.latest("metering_delta").header
    body = CATALOG.codec("metering_delta").decode(data)["body"]
    assert body["buckets"] == bytes([1, 3]) and body["campaigns"] == ["cmp-1"]


def test_a_forwarded_record_keeps_the_bytes_consumed() -> None:
    payload, kind, raw = CODEC.decode(CODEC.forwarded("ivt_report", "ads.ivt_reports", 0, 42, b"\xc3\x01raw"))
    assert (kind, raw) == ("ivt_report", b"\xc3\x01raw")
    assert payload == {"kind": "ivt", "src": {"topic": "ads.ivt_reports", "partition": 0, "offset": 42}}
    payload, kind, _ = CODEC.decode(CODEC.forwarded("attributed_conversion", "t", 1, 2, b""))
    assert payload["kind"] == "cpa" and kind == "attributed_conversion"


@pytest.mark.parametrize("broken", ["groups", "counts", "index", "bucket"])
def test_packed_parts_that_do_not_add_up_are_a_decode_error(broken: str) -> None:
    packed = array("q", [0, 0, 20_000, 2, 5, 6])
    buckets, counts = bytearray([1, 3]), array("q", [1, 1])
    if broken == "groups":
        packed = array("q", [0, 0, 20_000, 2, 5])
    elif broken == "counts":
        counts = array("q", [1])
    elif broken == "index":
        packed[0] = 1
    else:
        buckets[1] = 96
    data = CODEC.usage("t", 0, 0, 0, "a", "i", ["cmp-1"], ["duplicate"], packed, buckets, counts)
    with pytest.raises(DecodeError) as err:
        CODEC.decode(data)
    assert err.value.kind == "corrupt"


def test_dedupe_ids_are_avro_and_the_newline_format_still_restores() -> None:
    ids = ["imp-1", "imp-é", "imp\nodd"]
    value = DedupeStore.encode(ids)
    assert value[:2] == MAGIC and DedupeStore.decode(value) == ids
    assert DedupeStore.decode(b"a\nb") == ["a", "b"] and DedupeStore.decode(b"") == []


def full_period() -> PeriodState:
    totals = PeriodTotals(counts={"received": 10, "in_scope": 7}, in_scope_by_version={1: 4, 2: 3},
                          cpa={f"1{SEP}purchase": (2, Decimal("12.345678901234"))},
                          payouts={f"p-1{SEP}1{SEP}purchase": (2, Decimal("-1.5"))},
                          offsets={f"ads.impressions{SEP}3": 101}, max_event_us=1_790_000_000_000_000)
    billed = [Line("cpm_impressions", 2, "band:0", None, 7, "per_thousand", Decimal("2.50"), Decimal("0.0175"))]
    return PeriodState("ctr-1", "2026-03", totals, True, 1_790_000_000_000_001, {"per_period:50", "per_period:80"}, billed)


def restored(store_key: str, value: bytes | None) -> TotalsStore:
    store = TotalsStore(0)
    store.apply_changelog(store_key, value)
    return store


def test_period_state_round_trips_through_its_schema_exactly() -> None:
    ps = full_period()
    store = TotalsStore(0)
    store.mark(ps)
    [(key, value)] = store.take_dirty().items()
    assert value is not None and value[:10] == CATALOG.latest("metering_period_state").header
    assert restored(key, value).periods[("ctr-1", "2026-03")] == ps
    open_ps = PeriodState("ctr-2", "2026-W10")
    assert PeriodState.from_record(CATALOG.codec("metering_period_state").decode(
        CATALOG.codec("metering_period_state").encode(open_ps.to_record()))) == open_ps


def test_the_period_state_schema_covers_every_field_of_the_totals() -> None:
    """A field added to PeriodTotals or PeriodState must be added to schemas/metering_period_state
    (a new version), or it would be lost at the next restore."""
    assert {f.name for f in dataclasses.fields(PeriodTotals)} == set(full_period().to_record()["totals"])
    assert {f.name for f in dataclasses.fields(PeriodState)} == set(full_period().to_record())


def test_contract_state_and_ivt_decisions_round_trip_and_old_json_still_restores() -> None:
    cs = ContractState("ctr-1", {50, 80}, 7)
    store = TotalsStore(0)
    store.mark(cs)
    store.decide_ivt_report("rep-1", "refused")
    dirty = store.take_dirty()
    assert all(v is not None and v[:2] == MAGIC for v in dirty.values())
    back = TotalsStore(0)
    for k, v in dirty.items():
        back.apply_changelog(k, v)
    assert back.contracts["ctr-1"] == cs and back.ivt_reports == {"rep-1": "refused"}
    legacy = TotalsStore(0)
    legacy.apply_changelog(f"ct{SEP}ctr-1", json.dumps(cs.to_json()).encode())
    legacy.apply_changelog(f"ir{SEP}rep-1", json.dumps({"id": "rep-1", "status": "applied"}).encode())
    legacy.apply_changelog(f"cp{SEP}ctr-1{SEP}2026-03", json.dumps(full_period().to_json()).encode())
    assert legacy.contracts["ctr-1"] == cs and legacy.ivt_reports == {"rep-1": "applied"}
    assert legacy.periods[("ctr-1", "2026-03")] == full_period()


def test_stage_two_receives_a_forwarded_record_as_stage_one_validated_it_and_old_json_deltas_still_apply() -> None:
    import random

    from tally_kit.clock import WallClock
    from tally_kit.settings import load
    from tally_metering.settings import SPEC
    from tally_metering.worker import Worker, _conversion_json, _ivt_json

    from ..streams.avro_samples import sample

    worker = Worker(load(SPEC, {}), WallClock(), catalog=CATALOG)
    rng = random.Random(3)
    for name, kind in (("attributed_conversion", "cpa"), ("ivt_report", "ivt")):
        rec = sample(json.loads(json.dumps(CATALOG.latest(name).schema)), rng)
        raw = CATALOG.codec(name).encode(rec)
        payload = worker._decode_delta(CODEC.forwarded(name, "in", 2, 7, raw))
        decoded = CATALOG.codec(name).decode(raw)
        assert payload == {"kind": kind, "src": {"topic": "in", "partition": 2, "offset": 7},
                           "rec": _conversion_json(decoded) if kind == "cpa" else _ivt_json(decoded)}
    old = {"kind": "usage", "advertiser_id": "a", "src": {"topic": "t", "partition": 0, "first": 1, "last": 2,
                                                          "first_id": "i"},
           "groups": [["cmp-1", 20_000, "none|first_party", [[3, 1]], 5, 3]]}
    assert worker._decode_delta(json.dumps(old).encode()) == old


def test_conversion_state_round_trips_through_its_schema_and_old_json_still_restores() -> None:
    from decimal import Decimal

    from tally_metering.state import ConversionState

    conv = ConversionState("ctr-1", "cv-1", "conversion", "2026-03", 2, "purchase", "p-1", Decimal("8.000000000001"),
                           Decimal("6.4"), Decimal("-4"), Decimal("-3.2"), False, quantity=1, decided_version=1,
                           decided_amount=Decimal("10"), decided_payout=Decimal("6.4"), event_us=1_772_000_000_000_001,
                           order_value=Decimal("80.00"), tier=3)
    rev = ConversionState("ctr-1", "cv-1-r", "reversal", "2026-03", 2, "purchase", None, Decimal("-4"), Decimal("0"),
                          quantity=0, decided_version=1, decided_amount=Decimal("-5"), decided_payout=Decimal("0"),
                          event_us=1, order_value=Decimal("40"), original_id="cv-1", completes=False)
    assert {f.name for f in dataclasses.fields(ConversionState)} == {
        {"tier_position": "tier", "original_conversion_id": "original_id", "reversed_payout": "reversed_payout",
         "partner_payout": "partner_payout"}.get(k, k) for k in conv.to_record()}
    store = TotalsStore(0)
    store.mark(conv)
    store.mark(rev)
    dirty = store.take_dirty()
    assert all(v is not None and v[:10] == CATALOG.latest("metering_conversion_state").header for v in dirty.values())
    back = TotalsStore(0)
    for k, v in dirty.items():
        back.apply_changelog(k, v)
    assert back.conversions == {("ctr-1", "cv-1"): conv, ("ctr-1", "cv-1-r"): rev}
    legacy = TotalsStore(0)
    legacy.apply_changelog(conv.key, json.dumps(conv.to_json()).encode())
    assert legacy.conversions[("ctr-1", "cv-1")] == conv
