"""Advertiser shards decide exactly what one processor decides: the same records (impressions,
conversions, reversals, undecodable ones) go to one processor and to every shard of two and of
three; the shards' outcomes together equal the one processor's, record for record, and each
conversion and each dead letter comes from exactly one shard. Caps, order ids and a conversion
id reused across advertisers (counted once: DOMAIN) are in the mix."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from tally_attribution.processor import SHARD_KEY, Processor, ProcessorFailed
from tally_attribution.settings import SPEC, shard_of
from tally_kit.clock import FixedClock
from tally_kit.settings import SettingsError, load
from tally_streams.avro import SchemaCatalog
from tests.attribution_builders import EPOCH_2026, conversion, cpa_terms, impression, terms_record
from tests.unit.attribution.test_attribution_settle import FakeConsumer, FakeMessage, FakeProducer

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
ADVERTISERS = [f"adv-{i}" for i in range(6)]


def test_shard_of_is_a_stable_well_mixed_hash_mod_the_count() -> None:
    assert shard_of("adv-0", 1) == 0
    assert shard_of("adv-0", 7) == 0x11FF5B8BED24A093 % 7  # blake2b(b"adv-0", digest_size=8): the same on every machine
    # ids differing in their last digit spread (CRC-32's low bits would put adv-0..adv-3 together)
    assert [shard_of(a, 2) for a in ADVERTISERS] == [1, 0, 1, 1, 1, 0]
    assert sorted({shard_of(a, 3) for a in ADVERTISERS}) == [0, 1, 2]
    spread = [shard_of(f"adv-{i}", 4) for i in range(4000)]
    assert all(900 < spread.count(k) < 1100 for k in range(4)), [spread.count(k) for k in range(4)]


@pytest.mark.parametrize("raw", ["0", "65", "two"])
def test_shard_count_is_bounded(raw: str) -> None:
    with pytest.raises(SettingsError, match="TALLY_ATTRIBUTION_SHARDS"):
        load(SPEC, {"TALLY_ATTRIBUTION_SHARDS": raw})


def _records(catalog: SchemaCatalog) -> list[tuple[str, int, bytes, datetime]]:
    """(topic kind, partition, value, arrival): exposures and conversions of six advertisers."""
    rnd = random.Random(7)
    imp, conv = catalog.codec("impression"), catalog.codec("conversion")
    out: list[tuple[str, int, bytes, datetime]] = []
    for n in range(240):
        adv = rnd.choice(ADVERTISERS)
        hh = f"h{rnd.randrange(12)}"
        at = T0 + timedelta(seconds=n)
        if rnd.random() < 0.5:
            out.append(("imp", rnd.randrange(2), imp.encode(impression(f"i{n}", hh, at, adv, f"{adv}-c", "p1")), at))
            continue
        # conversion ids collide across advertisers now and then (v0..v59), order ids too
        cid = f"v{rnd.randrange(60)}"
        rec = conversion(cid, hh, at, adv, order_id=rnd.choice([None, "o1", "o2"]), value=Decimal("20.00"), currency="USD")
        if rnd.random() < 0.15:
            rec = conversion(f"r{n}", hh, at, adv, kind="reversal", reverses=f"v{rnd.randrange(60)}")
        out.append(("conv", rnd.randrange(2), conv.encode(rec), at))
    out.insert(50, ("imp", 0, b"\x00not avro", T0 + timedelta(seconds=50)))
    out.insert(90, ("conv", 1, b"\x00not avro", T0 + timedelta(seconds=90)))
    return out


Coords = tuple[str, int, int]


def _run(catalog: SchemaCatalog, shards: int, shard: int) -> tuple[dict[Coords, dict[str, Any]], list[Coords]]:
    """One processor (shard ``shard`` of ``shards``) fed every record: its outcomes by their
    conversion's (topic, partition, offset), and the (topic, partition, offset) of its dead letters."""
    settings = load(SPEC, {"TALLY_ATTRIBUTION_SETTLE_DELAY_MS": "60000", "TALLY_ATTRIBUTION_SHARDS": str(shards)})
    clock = FixedClock(T0)
    proc = Processor(settings, catalog, clock=clock, shard=shard)
    proc.producer = FakeProducer()  # type: ignore[assignment]
    proc.consumer = FakeConsumer()  # type: ignore[assignment]
    proc._in_txn = True
    proc._assigned = [TopicPartition(proc.t_imp, 0), TopicPartition(proc.t_imp, 1)]
    for i, adv in enumerate(ADVERTISERS):
        caps = {"contract": {"max_conversions_per_period": 2}} if i % 2 else None
        proc.book.apply(terms_record(f"k{i}", adv, [(1, EPOCH_2026, None, cpa_terms(adv, [f"{adv}-c"], caps=caps))]))
    offsets: dict[tuple[str, int], int] = {}
    for kind, p, value, at in _records(catalog):
        topic = proc.t_imp if kind == "imp" else proc.t_conv
        o = offsets.get((topic, p), 0)
        offsets[(topic, p)] = o + 1
        m = FakeMessage(topic, p, o, "h", value, at)
        if kind == "imp":
            proc._on_impressions([m])  # type: ignore[list-item]
        else:
            proc._on_conversion(m)  # type: ignore[arg-type]
    # both impression partitions read to their end: every conversion is due once the delay passed
    clock.set(T0 + timedelta(hours=1))
    proc._imp_caught_up_ms = {0: proc._now_ms(), 1: proc._now_ms()}
    proc._decide_due()
    assert not proc.state.pending
    assert isinstance(proc.producer, FakeProducer)
    codec, dl = catalog.codec("conversion_outcome"), catalog.codec("dead_letter")
    outcomes: dict[Coords, dict[str, Any]] = {}
    dead: list[Coords] = []
    for topic, _, value in proc.producer.sent:
        if topic == settings.attribution_topic_outcomes:
            o = codec.decode(value)
            outcomes[(o["source_topic"], o["source_partition"], o["source_offset"])] = o
        elif topic in (settings.attribution_topic_dlq_impressions, settings.attribution_topic_dlq_conversions):
            d = dl.decode(value)
            dead.append((d["source"], d["partition"], d["offset"]))
    return outcomes, dead


def _comparable(o: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in o.items() if k not in {"decided_at"}}


@pytest.mark.parametrize("shards", [2, 3])
def test_shards_decide_what_one_processor_decides(catalog: SchemaCatalog, shards: int) -> None:
    one, one_dead = _run(catalog, 1, 0)
    reasons = {o["reason"] for o in one.values()}
    assert {"duplicate", "capped", None} <= reasons, reasons  # the scenario exercises the per-advertiser state
    merged: dict[Coords, dict[str, Any]] = {}
    dead: list[Coords] = []
    for k in range(shards):
        outcomes, dl = _run(catalog, shards, k)
        assert not merged.keys() & outcomes.keys(), "a conversion decided by two shards"
        assert {o["advertiser_id"] for o in outcomes.values()} <= {a for a in ADVERTISERS if shard_of(a, shards) == k}
        merged.update(outcomes)
        dead += dl
    assert merged.keys() == one.keys()
    assert {s: _comparable(o) for s, o in merged.items()} == {s: _comparable(o) for s, o in one.items()}
    assert sorted(dead) == sorted(one_dead) and len(one_dead) >= 2  # the two undecodable records, once each


def test_state_of_another_shard_count_is_refused(catalog: SchemaCatalog) -> None:
    settings = load(SPEC, {"TALLY_ATTRIBUTION_SHARDS": "2"})
    proc = Processor(settings, catalog, shard=1)
    proc._check_shard_key()  # empty state: this shard's from now on
    assert proc.state.kv[SHARD_KEY] == [1, 2]
    proc.state.kv[SHARD_KEY] = [0, 2]
    with pytest.raises(ProcessorFailed, match="shard 0 of 2, not 1 of 2"):
        proc._check_shard_key()
    del proc.state.kv[SHARD_KEY]
    proc.state.kv["c:v1"] = {"s": "rejected", "t": 0}  # state without a shard key: one shard's, from before shards
    with pytest.raises(ProcessorFailed, match="another shard count"):
        proc._check_shard_key()
    single = Processor(load(SPEC, {}), catalog)
    single.state.kv["c:v1"] = {"s": "rejected", "t": 0}
    single._check_shard_key()  # one shard adopts it
    assert single.state.kv[SHARD_KEY] == [0, 1]


def test_a_shard_names_its_own_group_transactional_id_and_store(catalog: SchemaCatalog) -> None:
    one = Processor(load(SPEC, {}), catalog)
    assert (one.group, one.transactional_id) == ("tally-attribution", "tally-attribution")
    settings = load(SPEC, {"TALLY_ATTRIBUTION_SHARDS": "4", "TALLY_ATTRIBUTION_STORE_DIR": "/var/lib/tally/attribution"})
    third = Processor(settings, catalog, shard=2)
    assert (third.group, third.transactional_id) == ("tally-attribution-shard-2", "tally-attribution-shard-2")
    assert str(settings.shard_store_dir(2)) == "/var/lib/tally/attribution/shard-2"
    assert third._state_partitions(4) == [2] and third._state_partitions(8) == [2, 6]
    with pytest.raises(ProcessorFailed, match="fewer than the 4 shards"):
        third._state_partitions(3)
    with pytest.raises(ValueError, match="shard 4"):
        Processor(settings, catalog, shard=4)
