"""The settle gate with an injected clock and stand-in Kafka clients: a conversion is decided
only when every impression partition is complete up to its arrival + settle delay, so the
outcome is the same whatever the arrival order within the delay; and a transaction carrying
decisions is committed soon after them, not at the commit interval."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import TIMESTAMP_CREATE_TIME, TopicPartition

from tally_attribution.processor import Processor
from tally_attribution.settings import SPEC
from tally_kit.clock import FixedClock
from tally_kit.settings import load
from tally_streams.avro import SchemaCatalog
from tally_streams.eos import TableFollower
from tests.attribution_builders import EPOCH_2026, conversion, cpa_terms, impression, terms_record

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SETTLE = timedelta(minutes=5)


class FakeMessage:
    def __init__(self, topic: str, partition: int, offset: int, key: str, value: bytes, at: datetime) -> None:
        self._t, self._p, self._o, self._k, self._v = topic, partition, offset, key.encode(), value
        self._ts = int(at.timestamp() * 1000)

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes:
        return self._k

    def value(self) -> bytes:
        return self._v

    def timestamp(self) -> tuple[int, int]:
        return TIMESTAMP_CREATE_TIME, self._ts

    def error(self) -> None:
        return None


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any, bytes]] = []

    def begin_transaction(self) -> None:
        return None

    def produce(self, topic: str, value: bytes, key: Any = None, partition: int = -1) -> None:
        self.sent.append((topic, key, value))


class FakeConsumer:
    """One impression partition whose log end is ``hi`` and whose read position is ``pos``."""

    def __init__(self) -> None:
        self.hi = 0
        self.pos = 0

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float | None = None) -> tuple[int, int]:
        return 0, self.hi

    def position(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.pos) for tp in tps]


class Rig:
    def __init__(self, catalog: SchemaCatalog) -> None:
        self.clock = FixedClock(T0)
        settings = load(SPEC, {"TALLY_ATTRIBUTION_SETTLE_DELAY_MS": str(int(SETTLE.total_seconds() * 1000))})
        self.proc = Processor(settings, catalog, clock=self.clock)
        self.proc.producer = FakeProducer()  # type: ignore[assignment]
        self.consumer = FakeConsumer()
        self.proc.consumer = self.consumer  # type: ignore[assignment]
        self.proc._in_txn = True
        self.proc._assigned = [TopicPartition(self.proc.t_imp, 0)]
        self.proc.book.apply(terms_record("k1", "adv", [(1, EPOCH_2026, None, cpa_terms("adv", ["c1"]))]))
        self.catalog = catalog
        self.conv_offset = 0

    def impression(self, arrival: datetime) -> None:
        rec = impression("i1", "h", T0 - timedelta(hours=1), "adv", "c1", "p1")
        m = FakeMessage(self.proc.t_imp, 0, self.consumer.hi, "h", self.catalog.codec("impression").encode(rec), arrival)
        self.consumer.hi += 1
        self.proc._on_impression(m)  # type: ignore[arg-type]
        self.consumer.pos = self.consumer.hi

    def conversion(self, arrival: datetime) -> None:
        rec = conversion("v1", "h", T0, "adv")
        m = FakeMessage(self.proc.t_conv, 0, self.conv_offset, "h", self.catalog.codec("conversion").encode(rec), arrival)
        self.conv_offset += 1
        self.proc._on_conversion(m)  # type: ignore[arg-type]

    def tick(self, at: datetime) -> list[dict[str, Any]]:
        self.clock.set(at)
        self.proc._last_catch_up = 0.0
        self.proc._decide_due()
        codec = self.catalog.codec("conversion_outcome")
        assert isinstance(self.proc.producer, FakeProducer)
        return [codec.decode(v) for t, _, v in self.proc.producer.sent if t == self.proc.s.attribution_topic_outcomes]


def test_exposure_arriving_within_the_settle_delay_counts(catalog: SchemaCatalog) -> None:
    rig = Rig(catalog)
    rig.conversion(arrival=T0)
    rig.consumer.hi += 1  # an impression is on the broker but not read yet (consumer lag)
    assert rig.tick(T0 + SETTLE * 2) == []  # wall clock alone never decides: the partition is behind
    rig.consumer.hi -= 1
    rig.impression(arrival=T0 + SETTLE - timedelta(seconds=1))
    assert rig.tick(T0 + SETTLE - timedelta(milliseconds=1)) == []  # not due yet
    [out] = rig.tick(T0 + SETTLE)
    assert (out["outcome"], out["exposure_id"]) == ("attributed", "i1")


def test_outcome_is_the_same_in_either_arrival_order(catalog: SchemaCatalog) -> None:
    first = Rig(catalog)
    first.impression(arrival=T0)
    first.conversion(arrival=T0 + timedelta(seconds=1))
    second = Rig(catalog)
    second.conversion(arrival=T0)
    second.impression(arrival=T0 + timedelta(minutes=4))
    a = first.tick(T0 + timedelta(minutes=10))
    b = second.tick(T0 + timedelta(minutes=10))
    keep = ("outcome", "reason", "contract_id", "exposure_id", "partner_id", "advertiser_amount", "partner_payout")
    assert [{k: o[k] for k in keep} for o in a] == [{k: o[k] for k in keep} for o in b]
    assert a[0]["outcome"] == "attributed"


def test_exposure_after_the_settle_delay_is_too_late(catalog: SchemaCatalog) -> None:
    rig = Rig(catalog)
    rig.conversion(arrival=T0)
    [out] = rig.tick(T0 + SETTLE)  # partition read to its end at the due time: decided
    rig.impression(arrival=T0 + SETTLE + timedelta(seconds=1))
    assert out["reason"] == "no_exposure"
    assert rig.proc.state.pending == {}


class _NoMessages:
    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
        return []


def _cycle_commits(rig: Rig, *, age_s: float) -> int:
    """Run one processor cycle (nothing new consumed) with the open transaction ``age_s`` old;
    how many times it committed."""
    commits: list[None] = []
    rig.proc._commit = lambda: commits.append(None)
    rig.consumer.consume = _NoMessages().consume  # type: ignore[attr-defined]
    rig.proc.terms = TableFollower(_NoMessages(), "terms", lambda m: None)  # type: ignore[arg-type]
    now = time.monotonic()
    rig.proc._last_lag = rig.proc._last_prune = now  # no lag report or prune sweep in this cycle
    rig.proc._txn_started = now - age_s
    rig.proc._cycle()
    return len(commits)


def test_a_transaction_with_decisions_is_committed_without_waiting_for_the_interval(catalog: SchemaCatalog) -> None:
    """Outcomes become visible to read_committed readers only at the commit: a transaction that
    carries decisions is committed at the end of their cycle once 20 ms old, not after the
    200 ms commit interval; one with index changes only still waits for the interval."""
    deciding = Rig(catalog)
    deciding.conversion(arrival=T0)
    deciding.impression(arrival=T0 + SETTLE)  # the partition is complete up to the due time
    deciding.clock.set(T0 + SETTLE)
    assert _cycle_commits(deciding, age_s=0.05) == 1
    assert [o["outcome"] for o in deciding.tick(T0 + SETTLE)] == ["attributed"]  # decided in that cycle

    indexing = Rig(catalog)
    indexing.impression(arrival=T0)
    assert _cycle_commits(indexing, age_s=0.05) == 0  # 50 ms < the 200 ms interval
    assert _cycle_commits(indexing, age_s=0.25) == 1

    young = Rig(catalog)
    young.conversion(arrival=T0)
    young.impression(arrival=T0 + SETTLE)
    young.clock.set(T0 + SETTLE)
    assert _cycle_commits(young, age_s=0.0) == 0  # decided, but the transaction is younger than 20 ms
