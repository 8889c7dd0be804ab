"""Stage two's usage ledger on disk (``DiskLedgerStore``): what it holds and when it writes it
(only after the commit, with the committed deltas offset as its checkpoint), its bounded cache
(evicted days are read back), its prefix scans in (campaign, day) order, expiry, rebuilds from
the changelog, the checkpoint rule on assignment (trusted when it equals the committed offset;
missing or stale: wiped and rebuilt), and stage two giving the same effects on it — through
restarts on a trusted and on a rebuilt store — as on the in-memory ledger."""

from __future__ import annotations

import json
import random
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import OFFSET_INVALID, TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

import tally_metering.worker as worker_module
from tally_billing.routing import ContractBook
from tally_kit.clock import FixedClock
from tally_kit.settings import SettingsError, load
from tally_metering.domain import SEP, UsageDay
from tally_metering.engine import StageTwo
from tally_metering.metrics import WorkerMetrics
from tally_metering.settings import SPEC
from tally_metering.state import DAY_US, LEDGER_PREFIX, MemoryLedger, PeriodState, TotalsStore, encode_usage_day
from tally_metering.store import DiskLedgerStore
from tally_metering.worker import Worker
from tests.unit.metering.test_metering_stage_two import SETTINGS, contract_history, ivt_reports, ledger_of, usage_deltas

NOW = datetime(2026, 3, 10, 12, tzinfo=UTC)
TODAY = int(NOW.timestamp() * 1_000_000) // DAY_US
VALID = "none|first_party"
GIVT = "givt|first_party"
DELTAS = "deltas"


def add(ledger: Any, adv: str, campaign: str, day: int, n: int = 1, cls: str = VALID, bucket: int = 0) -> UsageDay:
    """What stage two does to a ledger day: take it, change it (``TotalsStore.mark``)."""
    u: UsageDay = ledger.day(adv, campaign, day)
    u.add(bucket, cls, n)
    u.include_offset("imp\x1f0", n)
    return u


def commit(store: TotalsStore, checkpoint: int | None) -> dict[str, bytes | None]:
    """The transaction's changelog records (which stage the ledger's writes), then, as after its
    commit, the ledger's write."""
    records = store.take_dirty()
    store.ledger.write_committed(checkpoint)
    return records


def counts(u: UsageDay | None) -> dict[str, list[int]] | None:
    return None if u is None else {c: list(row) for c, row in sorted(u.counts.items())}


def test_committed_days_and_the_checkpoint_survive_a_reopen_and_an_uncommitted_change_never_reaches_disk(
        tmp_path: Path) -> None:
    store = TotalsStore(0, DiskLedgerStore(tmp_path / "l0", 4))
    assert store.ledger.checkpoint is None and store.ledger_cells() == 0
    store.mark(add(store.ledger, "a", "c1", TODAY, 5))
    store.mark(add(store.ledger, "a", "c1", TODAY - 1, 2, GIVT))
    records = commit(store, 42)
    assert set(records) == {f"{LEDGER_PREFIX}a{SEP}c1{SEP}{TODAY}", f"{LEDGER_PREFIX}a{SEP}c1{SEP}{TODAY - 1}"}
    # the next transaction changes a day, then the worker dies before its commit
    store.mark(add(store.ledger, "a", "c1", TODAY, 100))
    store.take_dirty()
    assert store.ledger.get("a", "c1", TODAY).counts[VALID][0] == 105  # type: ignore[union-attr]
    store.close()
    again = DiskLedgerStore(tmp_path / "l0", 4)
    assert again.checkpoint == 42 and again.cells() == 2 and again.days_on_disk() == 2
    assert again.get("a", "c1", TODAY).counts[VALID][0] == 5  # type: ignore[union-attr]
    assert again.get("a", "c1", TODAY - 1).counts == {GIVT: again.get("a", "c1", TODAY - 1).counts[GIVT]}  # type: ignore[union-attr]
    again.close()


def test_a_day_changed_without_being_taken_from_the_ledger_fails_the_transaction(tmp_path: Path) -> None:
    store = TotalsStore(0, DiskLedgerStore(tmp_path / "l0", 4))
    store.mark(UsageDay("a", "c1", TODAY))
    with pytest.raises(RuntimeError, match="without being taken"):
        store.take_dirty()
    store.close()


def test_the_cache_is_bounded_and_evicted_days_are_read_back_from_disk(tmp_path: Path) -> None:
    ledger = DiskLedgerStore(tmp_path / "l0", 2)  # 1 MiB of decoded days, about 660 of them
    store = TotalsStore(0, ledger)
    want: dict[tuple[str, int], int] = {}
    for batch in range(10):
        for i in range(300):
            campaign, day = f"c{i}", TODAY - batch
            store.mark(add(ledger, "a", campaign, day, i + batch, bucket=i % 96))
            want[(campaign, day)] = i + batch
        commit(store, batch)
        assert ledger._lru_bytes <= ledger.cache_bytes_max
    assert len(ledger._lru) < len(want) and ledger.memory()[1] == 2 * 1024 * 1024
    for (campaign, day), n in want.items():  # most of them from disk
        u = ledger.get("a", campaign, day)
        assert u is not None and u.counts[VALID][int(campaign[1:]) % 96] == n
    # an evicted day taken for writing again is the stored one, and is written back whole
    oldest = ("c0", TODAY)  # the first read back: evicted since
    assert ("a", *oldest) not in ledger._lru
    store.mark(add(ledger, "a", oldest[0], oldest[1], 1000))
    commit(store, 10)
    assert ledger.get("a", *oldest).counts[VALID][0] == 1000  # type: ignore[union-attr]
    assert ledger.cells() == len(want)
    ledger.close()


def test_an_advertisers_days_are_one_prefix_scan_in_campaign_then_day_order(tmp_path: Path) -> None:
    disk, memory = DiskLedgerStore(tmp_path / "l0", 4), MemoryLedger()
    store = TotalsStore(0, disk)
    keys = [("a", "c2", TODAY), ("a", "c1", TODAY), ("a", "c10", TODAY - 3), ("a", "c1", TODAY - 400),
            ("a", "c1a", TODAY), ("a", "c1", TODAY + 1), ("ab", "c1", TODAY), ("a-", "c0", TODAY), ("b", "x", TODAY)]
    for adv, campaign, day in keys[:6]:
        store.mark(add(disk, adv, campaign, day))
        add(memory, adv, campaign, day)
    commit(store, 1)
    for adv, campaign, day in keys[6:]:
        store.mark(add(disk, adv, campaign, day))
        add(memory, adv, campaign, day)
    # the open transaction: a day not yet written, one changed, and one forgotten
    store.mark(add(disk, "a", "c1", TODAY - 2, 7))
    add(memory, "a", "c1", TODAY - 2, 7)
    store.mark(add(disk, "a", "c2", TODAY, 3))
    add(memory, "a", "c2", TODAY, 3)
    assert store.forget_usage_before(TODAY - 399) == 1
    memory.forget_before(TODAY - 399)

    def seen(days: Iterable[UsageDay]) -> list[tuple[str, str, int, Any]]:
        return [(u.advertiser_id, u.campaign_id, u.day, counts(u)) for u in days]

    for adv in ("a", "ab", "a-", "b", "nobody"):
        assert seen(disk.of_advertiser(adv)) == seen(memory.of_advertiser(adv)), adv
    assert [u.day for u in disk.of_campaign("a", "c1")] == [TODAY - 2, TODAY, TODAY + 1]
    assert [(u.campaign_id, u.day) for u in store.usage_of("a")] == [
        ("c1", TODAY - 2), ("c1", TODAY), ("c1", TODAY + 1), ("c10", TODAY - 3), ("c1a", TODAY), ("c2", TODAY)]
    assert store.usage[("a", "c2")].get(TODAY).counts[VALID][0] == 4  # type: ignore[union-attr]
    assert store.usage[("a", "c9")].get(TODAY) is None
    commit(store, 2)
    for adv in ("a", "ab", "a-", "b", "nobody"):
        assert seen(disk.of_advertiser(adv)) == seen(memory.of_advertiser(adv)), adv
    disk.close()


def test_forgetting_deletes_from_the_store_after_the_commit_and_tombstones_the_changelog(tmp_path: Path) -> None:
    ledger = DiskLedgerStore(tmp_path / "l0", 4)
    store = TotalsStore(0, ledger)
    for day in (TODAY - 401, TODAY - 400, TODAY - 399, TODAY):
        store.mark(add(ledger, "a", "c1", day, cls=GIVT))
        add(ledger, "a", "c1", day)
    store.mark(add(ledger, "b", "c2", TODAY - 500))
    commit(store, 1)
    assert ledger.cells() == 9
    store.mark(add(ledger, "a", "c3", TODAY - 450))  # a day of this transaction, not on disk yet
    assert store.forget_usage_before(TODAY - 399) == 4
    assert store.forget_usage_before(TODAY - 399) == 0  # the cutoff day did not move: nothing is scanned
    assert ledger.get("a", "c1", TODAY - 400) is None and ledger.cells() == 4
    assert [u.day for u in store.usage_of("a")] == [TODAY - 399, TODAY]
    records = commit(store, 2)
    assert records == {f"{LEDGER_PREFIX}{adv}{SEP}{c}{SEP}{day}": None for adv, c, day in
                       [("a", "c1", TODAY - 401), ("a", "c1", TODAY - 400), ("b", "c2", TODAY - 500),
                        ("a", "c3", TODAY - 450)]}
    ledger.close()
    again = DiskLedgerStore(tmp_path / "l0", 4)
    assert again.days_on_disk() == 2 and again.cells() == 4 and again.checkpoint == 2
    assert [u.day for u in again.of_advertiser("a")] == [TODAY - 399, TODAY] and list(again.of_advertiser("b")) == []
    again.close()


def test_a_forget_of_an_aborted_transaction_leaves_the_store_whole(tmp_path: Path) -> None:
    store = TotalsStore(0, DiskLedgerStore(tmp_path / "l0", 4))
    store.mark(add(store.ledger, "a", "c1", TODAY - 500))
    commit(store, 1)
    assert store.forget_usage_before(TODAY - 399) == 1
    store.close()  # the transaction failed: nothing of it is written
    again = DiskLedgerStore(tmp_path / "l0", 4)
    assert again.checkpoint == 1 and again.get("a", "c1", TODAY - 500) is not None
    again.close()


def test_a_rebuild_from_the_changelog_keeps_the_last_value_of_each_day_and_counts_its_rows(tmp_path: Path) -> None:
    ledger = DiskLedgerStore(tmp_path / "l0", 1)  # a restore buffer of 0.5 MiB: flushed many times
    memory = TotalsStore(0)
    rng = random.Random(7)
    changelog: list[tuple[str, bytes | None]] = []
    latest: dict[tuple[str, int], UsageDay] = {}
    for i in range(3000):
        campaign, day = f"c{rng.randrange(40)}", TODAY - rng.randrange(30)
        u = latest.setdefault((campaign, day), UsageDay("a", campaign, day))
        u.add(rng.randrange(96), rng.choice([VALID, GIVT, "sivt|first_party"]), 1)
        if rng.random() < 0.05:
            changelog.append((u.key, None))
            del latest[(campaign, day)]
        elif i % 500 == 0:  # an earlier worker's JSON
            changelog.append((u.key, json.dumps(u.to_json()).encode()))
        else:
            changelog.append((u.key, encode_usage_day(u)))
    ledger.set_checkpoint(5)  # an earlier rebuild's checkpoint: wiped with it
    ledger.wipe()
    assert ledger.checkpoint is None
    store = TotalsStore(0, ledger)
    for key, value in changelog:
        store.apply_changelog(key, value)
        memory.apply_changelog(key, value)
    ledger.set_checkpoint(3000)
    assert ledger.checkpoint == 3000 and ledger.cells() == memory.ledger_cells()
    assert ledger.days_on_disk() == len(latest)
    got = [(u.campaign_id, u.day, counts(u)) for u in ledger.of_advertiser("a")]
    assert got == [(u.campaign_id, u.day, counts(u)) for u in memory.usage_of("a")]
    ledger.close()


def test_the_ledger_memory_setting_is_its_own_and_bounds_each_ledger(tmp_path: Path) -> None:
    settings_ = load(SPEC, {"TALLY_METERING_LEDGER_MEMORY_MB": "12", "TALLY_METERING_STORE_MEMORY_MB": "48"})
    assert settings_.metering_ledger_memory_mb == 12 and settings_.metering_store_memory_mb == 48
    assert load(SPEC, {}).metering_ledger_memory_mb == 32
    ledger = DiskLedgerStore(tmp_path / "l0", settings_.metering_ledger_memory_mb)
    assert ledger.cache_bytes_max == 6 * 1024 * 1024
    assert int(ledger.db.property_int_value("rocksdb.block-cache-capacity") or 0) == 6 * 1024 * 1024
    used, bound = ledger.memory()
    assert bound == 12 * 1024 * 1024 and 0 <= used <= bound
    ledger.close()
    with pytest.raises(SettingsError):
        load(SPEC, {"TALLY_METERING_LEDGER_MEMORY_MB": "0"})


# ---------------------------------------------------------------- the checkpoint rule on assignment

class _Consumer:
    def __init__(self, committed: int) -> None:
        self.offset = committed

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.offset) for tp in partitions]


class _Record:
    def __init__(self, offset: int, key: str, value: bytes | None) -> None:
        self._offset, self._key, self._value = offset, key.encode(), value

    def topic(self) -> str:
        return "state"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes | None:
        return self._value


def _day(campaign: str, n: int) -> tuple[str, bytes]:
    u = UsageDay("a", campaign, TODAY)
    u.add(0, VALID, n)
    return u.key, encode_usage_day(u)


def _assign(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, committed: int,
            changelog: list[tuple[str, bytes | None]]) -> tuple[Worker, list[int]]:
    """A worker assigned deltas partition 0 with ``committed`` as the group's offset; the state
    changelog restore reads ``changelog``."""
    settings_ = load(SPEC, {"TALLY_METERING_TOPIC_DELTAS": DELTAS, "TALLY_METERING_STORE_DIR": str(tmp_path),
                            "TALLY_METERING_LEDGER_MEMORY_MB": "4", "TALLY_METERING_DELTA_PARTITIONS": "1"})
    worker = Worker(settings_, FixedClock(NOW))
    worker.loop = SimpleNamespace(committed={}, forget=lambda keep: None)  # type: ignore[assignment]
    worker.restorer = None  # type: ignore[assignment]
    restored: list[int] = []

    def fake_restore(consumer: Any, topic: str, partitions: Iterable[int], on_record: Callable[[Any], None]) -> int:
        restored.extend(partitions)
        for offset, (key, value) in enumerate(changelog):
            on_record(_Record(offset, key, value))
        return len(changelog)

    monkeypatch.setattr(worker_module, "restore", fake_restore)
    worker._on_assign(_Consumer(committed), [TopicPartition(DELTAS, 0)])  # type: ignore[arg-type]
    return worker, restored


def _opens(worker: Worker, outcome: str) -> float:
    return worker.metrics.registry.get_sample_value(
        "tally_metering_store_opens_total", {"store": "ledger", "outcome": outcome}) or 0.0


def _period() -> tuple[str, bytes]:
    ps = PeriodState("K1", "2026-03")
    ps.totals.count("billable", 3)
    store = TotalsStore(0)
    store.mark(ps)
    key, value = next(iter(store.take_dirty().items()))
    assert value is not None
    return key, value


def _ledger_of(worker: Worker) -> dict[str, int]:
    return {u.campaign_id: u.counts[VALID][0] for u in worker.stores[0].usage_of("a")}


def test_a_missing_ledger_checkpoint_rebuilds_the_ledger_from_the_changelog(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    (k1, v1), (k2, v2), (k1b, v1b) = _day("c1", 1), _day("c2", 2), _day("c1", 5)
    worker, restored = _assign(tmp_path, monkeypatch, OFFSET_INVALID, [(k1, v1), (k2, v2), (k1b, v1b), (k2, None),
                                                                       _period()])
    assert restored == [0] and _opens(worker, "missing") == 1
    assert _ledger_of(worker) == {"c1": 5}
    assert worker.stores[0].ledger.checkpoint == OFFSET_INVALID
    assert worker.stores[0].periods[("K1", "2026-03")].totals.counts["billable"] == 3
    worker._close_stores()


def test_a_ledger_checkpoint_equal_to_the_committed_offset_is_trusted(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    first, _ = _assign(tmp_path, monkeypatch, OFFSET_INVALID, [_day("c1", 1)])
    store = first.stores[0]
    store.mark(add(store.ledger, "a", "c2", TODAY, 4))  # a batch committed at offset 10, then the worker dies
    commit(store, 10)
    first._close_stores()
    # the changelog's ledger records are skipped (the store has them); the rest is read
    worker, restored = _assign(tmp_path, monkeypatch, 10, [_day("changelog-only", 9), _period()])
    assert restored == [0] and _opens(worker, "trusted") == 1
    assert _ledger_of(worker) == {"c1": 1, "c2": 4}
    assert worker.stores[0].periods[("K1", "2026-03")].totals.counts["billable"] == 3
    worker._close_stores()


def test_a_stale_ledger_checkpoint_wipes_the_store_and_rebuilds_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, _ = _assign(tmp_path, monkeypatch, OFFSET_INVALID, [])
    store = first.stores[0]
    store.mark(add(store.ledger, "a", "never-committed", TODAY, 4))
    commit(store, 10)
    first._close_stores()
    # the group committed 12: another owner (or a commit this store never recorded) went further
    worker, restored = _assign(tmp_path, monkeypatch, 12, [_day("c1", 1), _day("c2", 2)])
    assert restored == [0] and _opens(worker, "stale") == 1
    assert _ledger_of(worker) == {"c1": 1, "c2": 2} and worker.stores[0].ledger.checkpoint == 12
    worker._close_stores()


def test_a_lost_partition_closes_its_ledger_so_it_can_be_opened_again(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    worker, _ = _assign(tmp_path, monkeypatch, OFFSET_INVALID, [_day("c1", 1)])
    worker._on_lost(None, [TopicPartition(DELTAS, 0)])  # type: ignore[arg-type]
    assert 0 not in worker.stores
    again = DiskLedgerStore(tmp_path / f"ledger-{DELTAS}-0", 4)  # RocksDB's lock was released
    assert again.checkpoint == OFFSET_INVALID
    again.close()


# ---------------------------------------------------------------- stage two on the disk ledger

def _run_stage_two(events: list[tuple[str, Any]], ledger_dir: Path | None, restarts: dict[int, str]
                   ) -> dict[str, list[dict[str, Any]]]:
    """Stage two over ``events``, a transaction per event; on disk (a 1 MiB ledger: no day stays
    cached) when ``ledger_dir`` is given. ``restarts``: after event i, a new stage two restored
    as the worker restores it — on the trusted store ("trusted") or on a wiped one ("rebuilt")."""
    effects: dict[str, list[dict[str, Any]]] = defaultdict(list)
    book = ContractBook()
    changelog: dict[str, bytes | None] = {}

    def new_store() -> TotalsStore:
        return TotalsStore(0, None if ledger_dir is None else DiskLedgerStore(ledger_dir, 1))

    def new_two() -> StageTwo:
        return StageTwo(SETTINGS, book, lambda kind, rec, key: effects[kind].append(rec), WorkerMetrics())

    two = new_two()
    two.stores[0] = new_store()
    clock_points = [datetime(2026, 1, 10, tzinfo=UTC), datetime(2026, 2, 3, tzinfo=UTC), datetime(2026, 2, 25, tzinfo=UTC),
                    datetime(2026, 3, 5, tzinfo=UTC), datetime(2027, 3, 1, tzinfo=UTC)]
    now = datetime(2026, 1, 2, tzinfo=UTC)
    for i, (kind, payload) in enumerate(events):
        if kind == "tick":
            now = max(now, clock_points[payload])
            two.close_due(now)
        elif kind == "terms":
            if book.apply(payload):
                two.terms_changed.add(payload["contract_id"])
        else:
            two.apply(0, payload, now)
        if two.terms_changed:
            two.rederive_changed_terms(now)
        two.forget_old_usage(now, [0])
        changelog.update(two.stores[0].take_dirty())
        two.stores[0].ledger.write_committed(i)
        how = restarts.get(i)
        if how is not None:
            two.stores[0].close()
            two = new_two()
            store = two.stores[0] = new_store()
            trusted = how == "trusted"
            if not trusted:
                store.ledger.wipe()
            else:
                assert store.ledger.checkpoint == i
            for key, value in changelog.items():
                if not (trusted and key.startswith(LEDGER_PREFIX)):
                    store.apply_changelog(key, value)
            store.ledger.set_checkpoint(i)
            two.terms_changed.update(book.contracts)
    two.close_due(datetime(2026, 12, 1, tzinfo=UTC))
    two.stores[0].close()
    return effects


def _billed(effects: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return {"closed": sorted(json.dumps(r, sort_keys=True, default=str) for r in effects["period_closed"]),
            "adjustments": sorted(json.dumps(r, sort_keys=True, default=str) for r in effects["adjustment"]),
            "ivt": sorted(json.dumps(r, sort_keys=True, default=str) for r in effects["ivt_report_outcome"])}


@settings(max_examples=12, deadline=None)
@given(st.integers(min_value=0, max_value=2**32))
def test_stage_two_on_the_disk_ledger_bills_exactly_as_in_memory_through_restarts(seed: int) -> None:
    rng = random.Random(seed)
    terms_records = contract_history(rng, "K1", ["c1", "c2"]) + contract_history(rng, "K2", ["c3"])
    deltas = usage_deltas(rng)
    reports = ivt_reports(rng, ledger_of(deltas))
    events: list[tuple[str, Any]] = [("terms", r) for r in terms_records] + [("usage", u) for u in deltas]
    rng.shuffle(events)
    events += [("ivt", r) for r in reports]
    for k, at in enumerate(sorted(rng.sample(range(len(events) + 1), k=4))):
        events.insert(at + k, ("tick", k))
    events.append(("tick", 4))  # a year on: the oldest days pass the re-rating horizon and are forgotten
    restarts = {rng.randrange(len(events)): "trusted", rng.randrange(len(events)): "rebuilt"}
    want = _billed(_run_stage_two(events, None, {}))
    with tempfile.TemporaryDirectory() as tmp:
        got = _billed(_run_stage_two(events, Path(tmp) / "ledger", restarts))
    assert got == want


def test_a_ledger_changed_without_an_offset_of_its_partition_loses_its_checkpoint_before_the_commit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    worker, _ = _assign(tmp_path, monkeypatch, OFFSET_INVALID, [_day("c1", 1)])
    store = worker.stores[0]
    store.mark(add(store.ledger, "a", "c2", TODAY, 4))  # as if something else than its deltas changed it
    worker._deltas_in_batch = set()
    records = list(worker._changelog())  # what the transaction carries, before its commit
    assert [key for _, _, key, _ in records] == [f"{LEDGER_PREFIX}a{SEP}c2{SEP}{TODAY}"]
    assert store.ledger.checkpoint is None  # a kill from here on: "missing", rebuilt
    worker._close_stores()
    again = DiskLedgerStore(tmp_path / f"ledger-{DELTAS}-0", 4)
    assert again.checkpoint is None
    again.close()
