"""tally_streams.eos on the real broker: a step's effects, changelog records and offsets commit
together; an aborted step leaves nothing visible and is consumed again; a fenced incarnation
commits nothing; changelogs restore to their end; a compacted table is read whole, then followed.
Throwaway ``test-<uuid>`` topics."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from tally_streams.eos import Consumed, ExactlyOnceLoop, TableFollower, TransactionFailed, restore
from tally_streams.kafka import consumer_config, producer_config, read_to_end

RECORDS = 300


def fill(bootstrap: str, topic: str, n: int, partitions: int) -> None:
    p = Producer(producer_config(bootstrap, "test-fill"))
    for i in range(n):
        p.produce(topic, value=f"v{i}".encode(), key=f"k{i}", partition=i % partitions)
    assert p.flush(30) == 0


def transactional(bootstrap: str, txn_id: str) -> Producer:
    p = Producer(producer_config(bootstrap, "test-eos", **{"transactional.id": txn_id, "transaction.timeout.ms": 10_000,
                                                           "message.timeout.ms": 10_000}))
    p.init_transactions(30)
    return p


def committed_values(bootstrap: str, topic: str) -> list[bytes]:
    return [m.value() or b"" for m in read_to_end(bootstrap, topic, timeout_s=60)]


def test_each_record_is_processed_once_though_a_step_fails_midway(kafka_bootstrap: str,
                                                                  make_topic: Callable[..., str]) -> None:
    src, out, changelog = make_topic(partitions=2), make_topic(), make_topic(partitions=2, compacted=True)
    fill(kafka_bootstrap, src, RECORDS, 2)
    group = f"test-eos-{uuid.uuid4().hex[:8]}"
    consumer = Consumer(consumer_config(kafka_bootstrap, group))
    consumer.assign([TopicPartition(src, p, 0) for p in (0, 1)])
    eos = ExactlyOnceLoop(transactional(kafka_bootstrap, f"test-eos-{uuid.uuid4().hex}"), consumer)
    counts: Counter[int] = Counter()  # the state: records counted per input partition
    pending: Counter[int] = Counter()
    steps = failures = 0

    def compute(consumed: Consumed) -> None:
        nonlocal failures
        pending.clear()
        for (_, partition), group_msgs in consumed.by_partition.items():
            for m in group_msgs:
                eos.produce(out, m.value(), m.key())
                pending[partition] += 1
        if steps == 2 and failures == 0:
            failures += 1
            raise ValueError("the stage fails after producing half its effects")

    def changes() -> list[tuple[str, int, str, bytes]]:
        return [(changelog, p, f"count-{p}", str(counts[p] + n).encode()) for p, n in pending.items()]

    while sum(counts.values()) < RECORDS:
        steps += 1
        assert steps < 200, "the input was not consumed"
        msgs = consumer.consume(40, 1.0)
        try:
            eos.step(msgs, compute, changes)
        except ValueError:
            continue  # aborted and rewound; the in-memory state never took the step
        counts.update(pending)
    consumer.close()

    values = committed_values(kafka_bootstrap, out)
    assert failures == 1
    assert sorted(values) == sorted(f"v{i}".encode() for i in range(RECORDS)), "each record exactly once"
    latest: dict[bytes, bytes] = {}

    def keep(m: object) -> None:
        latest[m.key()] = m.value()  # type: ignore[attr-defined]

    restorer = Consumer(consumer_config(kafka_bootstrap, f"{group}-restore", **{"enable.partition.eof": True}))
    restore(restorer, changelog, [0, 1], keep)
    restorer.close()
    assert latest == {b"count-0": str(RECORDS // 2).encode(), b"count-1": str(RECORDS // 2).encode()}
    check = Consumer(consumer_config(kafka_bootstrap, group))
    assert [tp.offset for tp in check.committed([TopicPartition(src, 0), TopicPartition(src, 1)], timeout=30)] == \
        [RECORDS // 2, RECORDS // 2]
    check.close()


def test_a_fenced_incarnation_commits_nothing(kafka_bootstrap: str, make_topic: Callable[..., str]) -> None:
    src, out = make_topic(), make_topic()
    fill(kafka_bootstrap, src, 10, 1)
    txn_id = f"test-eos-{uuid.uuid4().hex}"
    consumer = Consumer(consumer_config(kafka_bootstrap, f"test-eos-{uuid.uuid4().hex[:8]}"))
    consumer.assign([TopicPartition(src, 0, 0)])
    old = ExactlyOnceLoop(transactional(kafka_bootstrap, txn_id), consumer)
    msgs: list = []
    while len(msgs) < 10:
        msgs.extend(consumer.consume(10, 1.0))

    def compute(consumed: Consumed) -> None:
        for m in consumed.by_partition[(src, 0)]:
            old.produce(out, b"old:" + (m.value() or b""))
        transactional(kafka_bootstrap, txn_id)  # a new incarnation starts: the old one is fenced

    with pytest.raises(TransactionFailed) as failed:
        old.step(msgs, compute)
    assert failed.value.fenced
    with pytest.raises(TransactionFailed):
        old.produce(out, b"never")
    consumer.close()
    assert committed_values(kafka_bootstrap, out) == []


def test_a_changelog_whose_tail_is_transaction_markers_restores_to_its_end(kafka_bootstrap: str,
                                                                          make_topic: Callable[..., str]) -> None:
    changelog = make_topic(compacted=True)
    p = transactional(kafka_bootstrap, f"test-eos-{uuid.uuid4().hex}")
    for batch in range(3):
        p.begin_transaction()
        for i in range(5):
            p.produce(changelog, value=f"{batch}".encode(), key=f"k{i}")
        if batch == 2:
            p.abort_transaction(30)  # the last records are aborted: never delivered to read_committed
        else:
            p.commit_transaction(30)
    latest: dict[bytes, bytes] = {}
    restorer = Consumer(consumer_config(kafka_bootstrap, f"test-restore-{uuid.uuid4().hex[:8]}",
                                        **{"enable.partition.eof": True}))
    n = restore(restorer, changelog, [0], lambda m: latest.__setitem__(m.key(), m.value()), timeout_s=30)
    restorer.close()
    assert n == 10 and latest == {f"k{i}".encode(): b"1" for i in range(5)}


def test_a_compacted_table_is_read_whole_then_followed(kafka_bootstrap: str, make_topic: Callable[..., str]) -> None:
    table = make_topic(partitions=3, compacted=True)
    p = Producer(producer_config(kafka_bootstrap, "test-table"))
    for i in range(30):
        p.produce(table, value=f"r1-{i}".encode(), key=f"c{i}")
    assert p.flush(30) == 0
    seen: dict[bytes, bytes] = {}
    c = Consumer(consumer_config(kafka_bootstrap, f"test-table-{uuid.uuid4().hex[:8]}", **{"enable.partition.eof": True}))
    follower = TableFollower(c, table, lambda m: seen.__setitem__(m.key(), m.value()))
    assert follower.catch_up(timeout_s=30) == 30
    assert len(seen) == 30
    p.produce(table, value=b"r2-0", key="c0")
    assert p.flush(30) == 0
    got = 0
    for _ in range(50):
        got += follower.poll(0.2)
        if got:
            break
    c.close()
    assert got == 1 and seen[b"c0"] == b"r2-0"


class _ProducesAfterTheWatermarks:
    """A consumer that, once asked for a partition's watermarks, has five more records produced:
    they arrive while the follower catches up, past the end it read (a contract approved while
    metering starts)."""

    def __init__(self, consumer: Consumer, producer: Producer, table: str) -> None:
        self._consumer, self._producer, self._table, self._done = consumer, producer, table, False

    def get_watermark_offsets(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        marks = self._consumer.get_watermark_offsets(*args, **kwargs)
        if not self._done:
            self._done = True
            for i in range(5):
                self._producer.produce(self._table, value=f"late-{i}".encode(), key=f"late{i}")
            assert self._producer.flush(30) == 0
        return marks

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._consumer, name)


def test_a_record_arriving_while_the_table_is_read_is_not_lost(kafka_bootstrap: str,
                                                               make_topic: Callable[..., str]) -> None:
    table = make_topic(partitions=1, compacted=True)
    p = Producer(producer_config(kafka_bootstrap, "test-table-late"))
    for i in range(10):
        p.produce(table, value=b"early", key=f"c{i}")
    assert p.flush(30) == 0
    seen: dict[bytes, bytes] = {}
    c = Consumer(consumer_config(kafka_bootstrap, f"test-table-{uuid.uuid4().hex[:8]}", **{"enable.partition.eof": True}))
    follower = TableFollower(_ProducesAfterTheWatermarks(c, p, table), table,  # type: ignore[arg-type]
                             lambda m: seen.__setitem__(m.key(), m.value()))
    try:
        read = follower.catch_up(timeout_s=30)
        assert read >= 10
        for _ in range(25):  # the late records: handed on while catching up, or by the polls after
            if len(seen) == 15:
                break
            follower.poll(0.2)
    finally:
        c.close()
    assert len(seen) == 15 and all(seen[f"late{i}".encode()] == f"late-{i}".encode() for i in range(5))
