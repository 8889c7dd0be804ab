"""Metering's state on disk, one RocksDB (through ``rocksdict``) each: stage one's dedupe set per
impressions partition (``DiskDedupeStore``), and stage two's usage ledger per deltas partition
(``DiskLedgerStore``, below).

The dedupe store's layout (raw bytes, one default column family):

* ``i<impression id>`` → empty: the id was seen (multi-get per batch; a bloom filter answers
  most misses without reading a block).
* ``x<event day, 8 bytes big-endian><r|c><offset, 8 bytes>`` → the newline-joined ids first seen
  for that day in one committed batch (``c``: offset of the impressions partition it committed,
  ``r``: offset of the changelog record it was restored from). Expiry walks the index of the
  days past the horizon, deletes their ids, and ``delete_range``s the index.
* ``~checkpoint`` → the next offset of the impressions partition that the store reflects,
  written in the same atomic write batch as the ids of that batch, and only after the Kafka
  transaction that committed that offset (and the batch's dedupe-changelog records) committed.
* ``~count`` → how many ids the store holds.

On assignment the worker trusts the store only when its checkpoint equals the group's
committed offset (Kafka Streams' ``.checkpoint`` under exactly-once: a missing or different
checkpoint means the store may hold ids of an uncommitted batch, or miss a later owner's);
otherwise it is wiped and rebuilt from the dedupe changelog (``Worker._restore_dedupe``).

Memory: one LRU block cache of ``memory_mb`` per store, and the memtables are charged to it
(``WriteBufferManager`` with the cache), so write buffers + cached blocks + index and filter
blocks stay within that bound.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import cast

from rocksdict import WriteBatch

from tally_billing.ledger import UsageDay
from tally_streams.rocks import RocksStore

from .domain import SEP
from .state import LEDGER_PREFIX, decode_usage_day, encode_usage_day, ledger_key

ID = b"i"
INDEX = b"x"
CHECKPOINT = b"~checkpoint"
COUNT = b"~count"
_Q = struct.Struct(">q")
_DAY = struct.Struct(">Q")


def _index_key(day: int, origin: bytes, offset: int) -> bytes:
    return INDEX + _DAY.pack(max(day, 0)) + origin + _Q.pack(offset)


class DiskDedupeStore(RocksStore):
    """The impression ids seen in one impressions partition, with the offset they reflect."""

    what = "dedupe store"
    checkpoint: int | None
    count: int

    def _load_meta(self) -> None:
        self.checkpoint = self._read_int(CHECKPOINT)
        self.count = self._read_int(COUNT) or 0

    def __len__(self) -> int:
        return self.count

    def _read_int(self, key: bytes) -> int | None:
        v = self.db.get(key)
        return None if v is None else int(_Q.unpack(v)[0])

    def seen_among(self, ids: list[str]) -> set[str]:
        """Those of ``ids`` the store holds (one multi-get)."""
        if not ids:
            return set()
        found = cast(list[bytes | None], self.db.get([ID + i.encode() for i in ids]))
        return {i for i, v in zip(ids, found, strict=True) if v is not None}

    def add_committed(self, days: dict[int, list[str]], checkpoint: int) -> None:
        """The ids first seen in a committed batch, per event day, and the next offset of the
        partition that batch committed — in one atomic write batch."""
        self._write_batch(days, b"c", checkpoint, checkpoint)

    def add_restored(self, day: int, ids: list[str], changelog_offset: int) -> None:
        """One dedupe changelog record, while rebuilding (no checkpoint until the end)."""
        self._write_batch({day: ids}, b"r", changelog_offset, None)

    def set_checkpoint(self, checkpoint: int) -> None:
        self.db.put(CHECKPOINT, _Q.pack(checkpoint), self._write)
        self.checkpoint = checkpoint

    def _write_batch(self, days: dict[int, list[str]], origin: bytes, offset: int, checkpoint: int | None) -> None:
        wb = WriteBatch(raw_mode=True)
        n = 0
        for day, ids in days.items():
            if not ids:
                continue
            for i in ids:
                wb.put(ID + i.encode(), b"")
            wb.put(_index_key(day, origin, offset), "\n".join(ids).encode())
            n += len(ids)
        wb.put(COUNT, _Q.pack(self.count + n))
        if checkpoint is not None:
            wb.put(CHECKPOINT, _Q.pack(checkpoint))
        self.db.write(wb, self._write)
        self.count += n
        if checkpoint is not None:
            self.checkpoint = checkpoint

    def forget_before(self, day: int) -> int:
        """Forget the ids whose event day is before ``day`` (past the dedupe horizon); how many."""
        end = _index_key(day, b"\x00", 0)[:1 + _DAY.size]
        wb = WriteBatch(raw_mode=True)
        n = 0
        it = self.db.iter()
        try:
            it.seek(INDEX)
            while it.valid():
                key = it.key()
                if not key.startswith(INDEX) or key >= end:
                    break
                for i in bytes(it.value()).split(b"\n"):
                    wb.delete(ID + i)
                    n += 1
                it.next()
        finally:
            del it
        if n:
            wb.delete_range(INDEX, end)
            self.count = max(0, self.count - n)
            wb.put(COUNT, _Q.pack(self.count))
            self.db.write(wb, self._write)
        return n

    def memory(self) -> tuple[int, int]:
        """(bytes in use, capacity) of the store's block cache, which its write buffers are charged to."""
        return (int(self.db.property_int_value("rocksdb.block-cache-usage") or 0),
                int(self.db.property_int_value("rocksdb.block-cache-capacity") or 0))

    def ids(self) -> Iterable[str]:
        """Every id held (tests)."""
        it = self.db.iter()
        try:
            it.seek(ID)
            while it.valid() and bytes(it.key()).startswith(ID):
                yield bytes(it.key())[1:].decode()
                it.next()
        finally:
            del it


# ---------------------------------------------------------------------------------- the ledger

LEDGER_DAY = b"u"
LEDGER_INDEX = b"d"
LEDGER_CELLS = b"~cells"
_SEP = SEP.encode()
_DAY_BIAS = 1 << 63  # days as unsigned big-endian, so they sort as numbers (a negative one too)
_MiB = 1024 * 1024

LedgerKey = tuple[str, str, int]


def _day_bytes(day: int) -> bytes:
    return _DAY.pack(day + _DAY_BIAS)


def _day_key(k: LedgerKey) -> bytes:
    return LEDGER_DAY + k[0].encode() + _SEP + k[1].encode() + _SEP + _day_bytes(k[2])


def _day_index_key(k: LedgerKey) -> bytes:
    return LEDGER_INDEX + _day_bytes(k[2]) + k[0].encode() + _SEP + k[1].encode()


def _changelog_key(k: LedgerKey) -> str:
    return f"{LEDGER_PREFIX}{k[0]}{SEP}{k[1]}{SEP}{k[2]}"


def _entry_bytes(u: UsageDay) -> int:
    """What one decoded day costs in the cache (measured with tracemalloc: about 1.5 KiB with
    one ledger class and one source, 0.9 KiB per further class: 96 int64 and their array)."""
    return 700 + 850 * len(u.counts) + 120 * len(u.offsets)


class DiskLedgerStore(RocksStore):
    """Stage two's usage ledger of one deltas partition, with the offset it reflects.

    Layout (raw bytes, one default column family):

    * ``u<advertiser><SEP><campaign><SEP><day, 8 bytes big-endian>`` → the day's changelog value
      (``schemas/metering_ledger_day``), so one advertiser's days are one prefix scan, in
      (campaign, day) order (``SEP`` sorts below every character an id may hold).
    * ``d<day><advertiser><SEP><campaign>`` → the day's ledger classes (one byte, the cell count):
      the index expiry walks (days past the re-rating horizon), and the running count's source.
    * ``~checkpoint`` → the next offset of the deltas partition that the store reflects, written
      in the same atomic write batch as the ledger days of the transaction that committed it,
      and only after that commit; ``~cells`` → the (day, class) rows held (the metric).

    In memory: the days handed out for writing since the last commit (``day``: pinned until
    ``write_committed`` writes them, so an aborted transaction never reaches the disk), and an
    LRU of clean decoded days bounded by half of ``memory_mb``; RocksDB (block cache, write
    buffers charged to it) gets the other half. A miss reads the store; a re-rating scans it and
    leaves the LRU alone. The pinned days are bounded by the batch (``BATCH_MAX``), not by the
    setting: a batch touches at most one day per (campaign, day) of its deltas.
    """

    what = "ledger store"
    checkpoint: int | None
    _cells: int

    def __init__(self, path: Path, memory_mb: int) -> None:
        self.cache_bytes_max = memory_mb * _MiB // 2
        self.total_memory_mb = memory_mb
        super().__init__(path, max(1, memory_mb - memory_mb // 2))

    def _load_meta(self) -> None:
        self.checkpoint = self._read_int(CHECKPOINT)
        self._cells = self._read_int(LEDGER_CELLS) or 0
        #: days handed out for writing since the last write_committed
        self._open: dict[LedgerKey, UsageDay] = {}
        #: ... and days forgotten since; both with their ledger classes on disk (None: not on disk)
        self._deleted: set[LedgerKey] = set()
        self._on_disk: dict[LedgerKey, int | None] = {}
        #: changelog values of the open transaction's changed days (what write_committed writes)
        self._staged: dict[LedgerKey, bytes] = {}
        #: clean days: equal to the store; key -> (day, its cost in bytes)
        self._lru: OrderedDict[LedgerKey, tuple[UsageDay, int]] = OrderedDict()
        self._lru_bytes = 0
        self._forgot_before: int | None = None
        self._restoring: dict[LedgerKey, bytes | None] = {}
        self._restoring_bytes = 0

    def _read_int(self, key: bytes) -> int | None:
        v = self.db.get(key)
        return None if v is None else int(_Q.unpack(v)[0])

    # ------------------------------------------------------------------ reads

    def day(self, advertiser_id: str, campaign_id: str, day: int) -> UsageDay:
        k = (advertiser_id, campaign_id, day)
        u = self._open.get(k)
        if u is not None:
            return u
        if k in self._deleted:  # forgotten in this transaction, and used again
            self._deleted.discard(k)
            u = UsageDay(advertiser_id, campaign_id, day)
        else:
            cached = self._lru.pop(k, None)
            if cached is not None:
                u = cached[0]
                self._lru_bytes -= cached[1]
                self._on_disk[k] = len(u.counts)
            else:
                value = self.db.get(_day_key(k))
                if value is None:
                    u = UsageDay(advertiser_id, campaign_id, day)
                    self._on_disk[k] = None
                else:
                    u = decode_usage_day(bytes(value))
                    self._on_disk[k] = len(u.counts)
        self._open[k] = u
        return u

    def get(self, advertiser_id: str, campaign_id: str, day: int) -> UsageDay | None:
        k = (advertiser_id, campaign_id, day)
        u = self._open.get(k)
        if u is not None:
            return u
        if k in self._deleted:
            return None
        cached = self._lru.get(k)
        if cached is not None:
            self._lru.move_to_end(k)
            return cached[0]
        value = self.db.get(_day_key(k))
        if value is None:
            return None
        u = decode_usage_day(bytes(value))
        self._cache(k, u)
        return u

    def _cache(self, k: LedgerKey, u: UsageDay) -> None:
        cost = _entry_bytes(u)
        self._lru[k] = (u, cost)
        self._lru_bytes += cost
        while self._lru_bytes > self.cache_bytes_max and self._lru:
            _, (_, evicted) = self._lru.popitem(last=False)
            self._lru_bytes -= evicted

    def of_advertiser(self, advertiser_id: str) -> Iterator[UsageDay]:
        return self._scan(advertiser_id, LEDGER_DAY + advertiser_id.encode() + _SEP,
                          lambda k: k[0] == advertiser_id)

    def of_campaign(self, advertiser_id: str, campaign_id: str) -> Iterator[UsageDay]:
        return self._scan(advertiser_id, LEDGER_DAY + advertiser_id.encode() + _SEP + campaign_id.encode() + _SEP,
                          lambda k: k[0] == advertiser_id and k[1] == campaign_id)

    def _scan(self, advertiser_id: str, prefix: bytes, mine: Callable[[LedgerKey], bool]) -> Iterator[UsageDay]:
        """The days under ``prefix`` in key order, as the open transaction sees them (its days
        not yet written merged in, its forgotten ones left out); one decoded day at a time."""
        extra = sorted((k for k in self._open if mine(k)), key=lambda k: (k[1], k[2]))
        skip = len(LEDGER_DAY) + len(advertiser_id.encode()) + len(_SEP)
        i = 0
        it = self.db.iter()
        try:
            it.seek(prefix)
            while it.valid():
                key = bytes(it.key())
                if not key.startswith(prefix):
                    break
                rest = key[skip:]
                k = (advertiser_id, rest[:-9].decode(), _DAY.unpack(rest[-8:])[0] - _DAY_BIAS)
                while i < len(extra) and (extra[i][1], extra[i][2]) < (k[1], k[2]):
                    yield self._open[extra[i]]
                    i += 1
                if i < len(extra) and extra[i] == k:
                    i += 1
                if k not in self._deleted:
                    u = self._open.get(k)
                    if u is None:
                        cached = self._lru.get(k)
                        u = cached[0] if cached is not None else decode_usage_day(bytes(it.value()))
                    yield u
                it.next()
        finally:
            del it
        for k in extra[i:]:
            yield self._open[k]

    def cells(self) -> int:
        """(day, ledger class) rows held, the open transaction's included (a running count)."""
        n = self._cells
        for k, u in self._open.items():
            n += len(u.counts) - (self._on_disk.get(k) or 0)
        for k in self._deleted:
            n -= self._on_disk.get(k) or 0
        return n

    def days_on_disk(self) -> int:
        """Days held on disk (tests: a scan of the index)."""
        n = 0
        it = self.db.iter()
        try:
            it.seek(LEDGER_INDEX)
            while it.valid() and bytes(it.key()).startswith(LEDGER_INDEX):
                n += 1
                it.next()
        finally:
            del it
        return n

    def memory(self) -> tuple[int, int]:
        """(bytes in use, bound): the decoded-day cache plus RocksDB's block cache."""
        used = int(self.db.property_int_value("rocksdb.block-cache-usage") or 0) + self._lru_bytes
        return used, self.total_memory_mb * _MiB

    # ------------------------------------------------------------------ writes

    def forget_before(self, day: int) -> list[str]:
        """Forget the days before ``day`` (past the re-rating horizon) in the open transaction;
        their changelog keys (to tombstone). They leave the disk with the transaction's write."""
        if self._forgot_before is not None and day <= self._forgot_before:
            return []  # nothing older than the last cutoff is ever added (the dedupe horizon is shorter)
        self._forgot_before = day
        forgotten: list[LedgerKey] = []
        end = LEDGER_INDEX + _day_bytes(day)
        it = self.db.iter()
        try:
            it.seek(LEDGER_INDEX)
            while it.valid():
                key = bytes(it.key())
                if not key.startswith(LEDGER_INDEX) or key >= end:
                    break
                adv, campaign = key[len(LEDGER_INDEX) + _DAY.size:].decode().split(SEP)
                k = (adv, campaign, _DAY.unpack(key[1:1 + _DAY.size])[0] - _DAY_BIAS)
                if k not in self._deleted:  # (an earlier cutoff of this transaction took it already)
                    self._on_disk.setdefault(k, bytes(it.value())[0])
                    forgotten.append(k)
                it.next()
        finally:
            del it
        forgotten += [k for k in self._open if k[2] < day and self._on_disk.get(k) is None]
        for k in forgotten:
            self._open.pop(k, None)
            self._staged.pop(k, None)
            cached = self._lru.pop(k, None)
            if cached is not None:
                self._lru_bytes -= cached[1]
            self._deleted.add(k)
        return [_changelog_key(k) for k in forgotten]

    def stage(self, u: UsageDay, value: bytes) -> None:
        k = (u.advertiser_id, u.campaign_id, u.day)
        if self._open.get(k) is not u:
            raise RuntimeError(f"ledger day {u.key!r} changed without being taken from the ledger")
        self._staged[k] = value

    def pending(self) -> bool:
        return bool(self._open or self._deleted)

    def write_committed(self, checkpoint: int | None) -> None:
        """The committed transaction's changed and forgotten days and its offset, in one atomic
        write batch; its days become clean (cached). ``checkpoint`` None removes the checkpoint."""
        wb = WriteBatch(raw_mode=True)
        cells = self._cells
        for k, value in self._staged.items():
            n, was = len(self._open[k].counts), self._on_disk.get(k)
            wb.put(_day_key(k), value)
            if n != was:
                wb.put(_day_index_key(k), bytes((n,)))
                cells += n - (was or 0)
        for k in self._deleted:
            was = self._on_disk.get(k)
            if was is not None:
                wb.delete(_day_key(k))
                wb.delete(_day_index_key(k))
                cells -= was
        wb.put(LEDGER_CELLS, _Q.pack(cells))
        if checkpoint is None:
            wb.delete(CHECKPOINT)
        else:
            wb.put(CHECKPOINT, _Q.pack(checkpoint))
        self.db.write(wb, self._write)
        self._cells = cells
        self.checkpoint = checkpoint
        for k in self._staged:  # what was taken but not changed is read again from the store
            self._cache(k, self._open[k])
        self._open, self._staged, self._deleted, self._on_disk = {}, {}, set(), {}

    # ------------------------------------------------------------------ rebuild

    def restored(self, key: str, value: bytes | None) -> None:
        """One ledger record of the changelog (None: a tombstone), buffered so a day rewritten
        by many transactions is decoded and written once per flush."""
        k = ledger_key(key)
        self._restoring[k] = value
        self._restoring_bytes += len(key) + (len(value) if value else 0)
        if self._restoring_bytes >= self.cache_bytes_max:
            self._flush_restored()

    def _flush_restored(self) -> None:
        if not self._restoring:
            return
        keys = list(self._restoring)
        before = cast(list[bytes | None], self.db.get([_day_index_key(k) for k in keys]))
        wb = WriteBatch(raw_mode=True)
        cells = self._cells
        for k, old in zip(keys, before, strict=True):
            value = self._restoring[k]
            was = None if old is None else bytes(old)[0]
            if value is None:
                if was is not None:
                    wb.delete(_day_key(k))
                    wb.delete(_day_index_key(k))
                    cells -= was
                continue
            u = decode_usage_day(value)
            if value[:1] == b"{":  # JSON of an earlier worker: kept as Avro
                value = encode_usage_day(u)
            wb.put(_day_key(k), value)
            wb.put(_day_index_key(k), bytes((len(u.counts),)))
            cells += len(u.counts) - (was or 0)
        wb.put(LEDGER_CELLS, _Q.pack(cells))
        self.db.write(wb, self._write)
        self._cells = cells
        self._restoring, self._restoring_bytes = {}, 0

    def set_checkpoint(self, checkpoint: int) -> None:
        """The end of a rebuild: the rest of what was restored, then the checkpoint."""
        self._flush_restored()
        self.db.put(CHECKPOINT, _Q.pack(checkpoint), self._write)
        self.checkpoint = checkpoint
