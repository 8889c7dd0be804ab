"""Stage one's on-disk dedupe store: what it holds, its expiry, its memory bound, and the
checkpoint rule on assignment (trusted when it equals the committed offset; missing or stale:
wiped and rebuilt from the changelog)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import OFFSET_INVALID, TopicPartition

import tally_metering.worker as worker_module
from tally_kit.clock import FixedClock
from tally_kit.settings import SettingsError, load
from tally_metering.settings import SPEC
from tally_metering.state import DAY_US, DedupeStore
from tally_metering.store import DiskDedupeStore
from tally_metering.worker import Worker

NOW = datetime(2026, 3, 10, 12, tzinfo=UTC)
TODAY = int(NOW.timestamp() * 1_000_000) // DAY_US
TOPIC = "imp"


def test_ids_and_checkpoint_survive_a_reopen(tmp_path: Path) -> None:
    store = DiskDedupeStore(tmp_path / "p0", 8)
    assert store.checkpoint is None and len(store) == 0
    store.add_committed({TODAY: ["a", "b"], TODAY - 1: ["c"]}, 42)
    assert store.seen_among(["a", "c", "z"]) == {"a", "c"}
    store.close()
    again = DiskDedupeStore(tmp_path / "p0", 8)
    assert again.checkpoint == 42 and len(again) == 3
    assert sorted(again.ids()) == ["a", "b", "c"]
    again.close()


def test_expiry_forgets_whole_days_before_the_cutoff_and_nothing_newer(tmp_path: Path) -> None:
    store = DiskDedupeStore(tmp_path / "p0", 8)
    store.add_committed({TODAY - 70: ["old-1", "old-2"], TODAY - 62: ["edge"]}, 1)
    store.add_restored(TODAY - 63, ["old-3"], 7)
    store.add_committed({TODAY: ["new"]}, 2)
    assert store.forget_before(TODAY - 62) == 3
    assert sorted(store.ids()) == ["edge", "new"] and len(store) == 2
    assert store.forget_before(TODAY - 62) == 0  # the index of those days went with them
    assert store.checkpoint == 2
    store.close()


def test_wipe_drops_ids_and_checkpoint(tmp_path: Path) -> None:
    store = DiskDedupeStore(tmp_path / "p0", 8)
    store.add_committed({TODAY: ["a"]}, 5)
    store.wipe()
    assert store.checkpoint is None and len(store) == 0 and list(store.ids()) == []
    store.close()
    assert DiskDedupeStore(tmp_path / "p0", 8).checkpoint is None


def test_the_memory_setting_bounds_each_stores_cache(tmp_path: Path) -> None:
    settings = load(SPEC, {"TALLY_METERING_STORE_MEMORY_MB": "24", "TALLY_METERING_STORE_DIR": str(tmp_path),
                           "TALLY_METERING_WORKER_ID": "w9"})
    assert settings.metering_store_memory_mb == 24 and settings.store_dir == tmp_path
    assert load(SPEC, {"TALLY_METERING_WORKER_ID": "w9"}).store_dir == Path(".state/metering/w9")
    store = DiskDedupeStore(tmp_path / "p0", settings.metering_store_memory_mb)
    store.add_committed({TODAY: [f"id-{i}" for i in range(5000)]}, 1)
    used, capacity = store.memory()
    assert capacity == 24 * 1024 * 1024 and 0 < used <= capacity
    store.close()
    with pytest.raises(SettingsError):
        load(SPEC, {"TALLY_METERING_STORE_MEMORY_MB": "0"})


# ---------------------------------------------------------------- the checkpoint rule on assignment

class _Consumer:
    def __init__(self, committed: int) -> None:
        self.offset = committed

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.offset) for tp in partitions]


class _Record:
    def __init__(self, offset: int, day: int, ids: list[str]) -> None:
        self._offset, self._key, self._value = offset, str(day).encode(), DedupeStore.encode(ids)

    def topic(self) -> str:
        return "dedupe"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value


def _assign(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, committed: int,
            changelog: list[tuple[int, list[str]]]) -> tuple[Worker, list[int]]:
    """A worker assigned impressions partition 0 with ``committed`` as the group's offset; the
    changelog restore (when the store is not trusted) reads ``changelog``."""
    settings = load(SPEC, {"TALLY_METERING_TOPIC_IMPRESSIONS": TOPIC, "TALLY_METERING_STORE_DIR": str(tmp_path),
                           "TALLY_METERING_STORE_MEMORY_MB": "8"})
    worker = Worker(settings, FixedClock(NOW))
    worker.loop = SimpleNamespace(committed={}, forget=lambda keep: None)  # type: ignore[assignment]
    worker.restorer = None  # type: ignore[assignment]
    restored: list[int] = []

    def fake_restore(consumer: Any, topic: str, partitions: Iterable[int], on_record: Callable[[Any], None]) -> int:
        restored.extend(partitions)
        for offset, (day, ids) in enumerate(changelog):
            on_record(_Record(offset, day, ids))
        return len(changelog)

    monkeypatch.setattr(worker_module, "restore", fake_restore)
    worker._on_assign(_Consumer(committed), [TopicPartition(TOPIC, 0)])  # type: ignore[arg-type]
    return worker, restored


def _opens(worker: Worker, outcome: str) -> float:
    return worker.metrics.registry.get_sample_value(
        "tally_metering_store_opens_total", {"store": "dedupe", "outcome": outcome}) or 0.0


def test_a_missing_checkpoint_rebuilds_from_the_changelog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    worker, restored = _assign(tmp_path, monkeypatch, OFFSET_INVALID, [(TODAY, ["a", "b"]), (TODAY - 90, ["gone"])])
    store = worker.dedupe[0]
    assert restored == [0] and _opens(worker, "missing") == 1
    assert store.seen_among(["a", "b", "gone"]) == {"a", "b"}  # beyond the horizon: not restored
    assert store.checkpoint == OFFSET_INVALID
    worker._close_dedupe()


def test_a_checkpoint_equal_to_the_committed_offset_is_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, _ = _assign(tmp_path, monkeypatch, OFFSET_INVALID, [(TODAY, ["a"])])
    first.dedupe[0].add_committed({TODAY: ["b"]}, 10)  # a batch committed at offset 10, then the worker dies
    first._close_dedupe()
    worker, restored = _assign(tmp_path, monkeypatch, 10, [(TODAY, ["changelog-only"])])
    assert restored == [] and _opens(worker, "trusted") == 1
    assert worker.dedupe[0].seen_among(["a", "b", "changelog-only"]) == {"a", "b"}
    worker._close_dedupe()


def test_a_stale_checkpoint_wipes_the_store_and_rebuilds_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, _ = _assign(tmp_path, monkeypatch, OFFSET_INVALID, [])
    first.dedupe[0].add_committed({TODAY: ["uncommitted-elsewhere"]}, 10)
    first._close_dedupe()
    # the group committed 12: another owner (or a commit this store never recorded) went further
    worker, restored = _assign(tmp_path, monkeypatch, 12, [(TODAY, ["a"]), (TODAY, ["b"])])
    store = worker.dedupe[0]
    assert restored == [0] and _opens(worker, "stale") == 1
    assert sorted(store.ids()) == ["a", "b"] and store.checkpoint == 12  # type: ignore[union-attr]
    worker._close_dedupe()
