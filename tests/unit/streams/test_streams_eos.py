"""The exactly-once loop without a broker: grouping, the transaction's order of calls, abort and
rewind on error, fencing, retries (a fake producer and consumer that record every call, and
confluent-kafka's own ``Message`` objects; the real broker is in tests/integration/streams)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Message

from tally_streams.eos import Consumed, ExactlyOnceLoop, TransactionFailed


def msg(topic: str, partition: int, offset: int, error: KafkaError | None = None) -> Message:
    """A consumed record, built by confluent-kafka's own test constructor; its value says where it is from."""
    return Message(topic=topic, partition=partition, offset=offset, value=f"{topic}/{partition}/{offset}".encode(),
                   error=error)


@dataclass
class FakeProducer:
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    #: method name -> exceptions to raise on the next calls, in order
    fail: dict[str, list[BaseException]] = field(default_factory=dict)
    full_once: bool = False

    def _maybe_fail(self, name: str) -> None:
        queue = self.fail.get(name)
        if queue:
            raise queue.pop(0)

    def begin_transaction(self) -> None:
        self._maybe_fail("begin")
        self.calls.append(("begin",))

    def produce(self, topic: str, value: bytes | None = None, key: Any = None, partition: int | None = None) -> None:
        if self.full_once:
            self.full_once = False
            raise BufferError("queue full")
        self.calls.append(("produce", topic, value, key, partition))

    def poll(self, timeout: float) -> int:
        self.calls.append(("poll",))
        return 0

    def send_offsets_to_transaction(self, offsets: list[Any], metadata: Any, timeout: float) -> None:
        self._maybe_fail("send_offsets")
        self.calls.append(("offsets", [(tp.topic, tp.partition, tp.offset) for tp in offsets]))

    def commit_transaction(self, timeout: float) -> None:
        self._maybe_fail("commit")
        self.calls.append(("commit",))

    def abort_transaction(self, timeout: float) -> None:
        self._maybe_fail("abort")
        self.calls.append(("abort",))


@dataclass
class FakeConsumer:
    seeks: list[tuple[str, int, int]] = field(default_factory=list)

    def consumer_group_metadata(self) -> str:
        return "group-metadata"

    def seek(self, tp: Any) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))


def kafka_error(code: int, *, fatal: bool = False, retriable: bool = False, txn_requires_abort: bool = False) -> KafkaException:
    return KafkaException(KafkaError(code, "test", fatal=fatal, retriable=retriable, txn_requires_abort=txn_requires_abort))


def loop() -> tuple[ExactlyOnceLoop, FakeProducer, FakeConsumer]:
    p, c = FakeProducer(), FakeConsumer()
    return ExactlyOnceLoop(p, c, timeout_s=1.0), p, c  # type: ignore[arg-type]


MSGS = [msg("a", 0, 5), msg("a", 0, 6), msg("b", 1, 9), msg("a", 0, 8),
        msg("a", 1, 2)]


def test_consumed_records_are_grouped_per_partition_in_offset_order_with_their_commit_and_rewind_points() -> None:
    eof = msg("a", 3, 0, KafkaError(KafkaError._PARTITION_EOF))
    consumed = Consumed.of([*MSGS, eof])
    assert {k: [m.offset() for m in g] for k, g in consumed.by_partition.items()} == {
        ("a", 0): [5, 6, 8], ("b", 1): [9], ("a", 1): [2]}
    assert consumed.next_offsets() == {("a", 0): 9, ("b", 1): 10, ("a", 1): 3}
    assert consumed.first_offsets() == {("a", 0): 5, ("b", 1): 9, ("a", 1): 2}
    assert [p for p, _ in consumed.of_topic("a")] == [0, 1]
    assert len(consumed) == 5


def test_a_record_error_other_than_end_of_partition_is_raised() -> None:
    with pytest.raises(KafkaException):
        Consumed.of([msg("a", 0, 1, KafkaError(KafkaError._MSG_TIMED_OUT))])


def test_a_step_produces_effects_then_changelog_then_offsets_then_commits() -> None:
    eos, p, _ = loop()

    def compute(consumed: Consumed) -> None:
        for (_, partition), group in consumed.by_partition.items():
            for m in group:
                eos.produce("out", m.value(), b"k", partition)

    eos.step(MSGS, compute, lambda: [("changelog", 0, "key", b"state"), ("changelog", 0, "gone", None)])
    kinds = [c[0] for c in p.calls]
    assert kinds == ["begin", *["produce"] * 7, "offsets", "commit"]
    assert p.calls[6][1:] == ("changelog", b"state", "key", 0) and p.calls[7][1:] == ("changelog", None, "gone", 0)
    assert p.calls[8] == ("offsets", [("a", 0, 9), ("a", 1, 3), ("b", 1, 10)])
    assert eos.committed == {("a", 0): 9, ("b", 1): 10, ("a", 1): 3}
    assert not eos.in_transaction


def test_a_step_that_produced_nothing_still_commits_its_offsets_and_an_empty_one_does_nothing() -> None:
    eos, p, _ = loop()
    eos.step(MSGS[:1], lambda consumed: None)
    assert [c[0] for c in p.calls] == ["begin", "offsets", "commit"]
    p.calls.clear()
    eos.step([], lambda consumed: None)
    assert p.calls == []


def test_a_full_producer_queue_waits_instead_of_failing() -> None:
    eos, p, _ = loop()
    p.full_once = True
    eos.produce("out", b"v", b"k")
    assert [c[0] for c in p.calls] == ["begin", "poll", "produce"]


def test_an_error_in_the_stage_aborts_rewinds_and_is_raised_as_it_was() -> None:
    eos, p, c = loop()

    def compute(consumed: Consumed) -> None:
        eos.produce("out", b"half", b"k")
        raise ValueError("a bug in the stage")

    with pytest.raises(ValueError, match="a bug"):
        eos.step(MSGS, compute)
    assert [x[0] for x in p.calls] == ["begin", "produce", "abort"]
    assert sorted(c.seeks) == [("a", 0, 5), ("a", 1, 2), ("b", 1, 9)]
    assert eos.committed == {} and not eos.in_transaction


def test_a_failed_commit_aborts_rewinds_and_tells_the_owner_to_rebuild() -> None:
    eos, p, c = loop()
    p.fail["commit"] = [kafka_error(KafkaError._STATE, txn_requires_abort=True)]
    with pytest.raises(TransactionFailed) as failed:
        eos.step(MSGS, lambda consumed: eos.produce("out", b"v"))
    assert not failed.value.fenced
    assert [x[0] for x in p.calls] == ["begin", "produce", "offsets", "abort"]
    assert c.seeks and eos.committed == {}
    eos.step(MSGS, lambda consumed: None)  # the loop is usable again
    assert p.calls[-1] == ("commit",)


def test_a_fenced_producer_is_not_aborted_and_never_used_again() -> None:
    eos, p, _ = loop()
    p.fail["send_offsets"] = [kafka_error(KafkaError._FENCED, fatal=True)]
    with pytest.raises(TransactionFailed) as failed:
        eos.step(MSGS, lambda consumed: eos.produce("out", b"v"))
    assert failed.value.fenced
    assert "abort" not in [x[0] for x in p.calls]
    with pytest.raises(TransactionFailed):
        eos.produce("out", b"again")


def test_a_retriable_commit_error_is_retried() -> None:
    eos, p, _ = loop()
    p.fail["commit"] = [kafka_error(KafkaError.COORDINATOR_LOAD_IN_PROGRESS, retriable=True)]
    eos.step(MSGS[:1], lambda consumed: None)
    assert [x[0] for x in p.calls] == ["begin", "offsets", "commit"]
    assert eos.committed == {("a", 0): 6}


def test_forget_drops_what_is_known_of_revoked_partitions() -> None:
    eos, _, _ = loop()
    eos.step(MSGS, lambda consumed: None)
    eos.forget(lambda k: k[0] == "a")
    assert set(eos.committed) == {("a", 0), ("a", 1)}
