"""Stage one's dedupe set on disk: one RocksDB (through ``rocksdict``) per impressions partition.

Layout (raw bytes, one default column family):

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
from collections.abc import Iterable
from typing import cast

from rocksdict import WriteBatch

from tally_streams.rocks import RocksStore

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
