"""The processor's state on disk: one RocksDB (through ``rocksdict``) per processor, holding the
exposure index (only here) and a copy of the other keys (kept in memory too).

Layout (raw bytes, one default column family):

* ``x:<household id>`` (the state key itself) → the household's exposures, exactly the bytes of its changelog record
  (orjson of ``[[impression_id, event_time_us, advertiser_id, campaign_id, partner_id], ...]``):
  a committed transaction's values are encoded once, for the changelog and the store, and a
  rebuild copies the changelog's bytes without re-encoding them.
* ``s<state key>`` → every other state key's changelog value (``h:``, ``c:``, ``o:``, ``u:``,
  ``p:``, ``e:``, ``q:``): the processor keeps those in memory too, and loads them from here when
  the store is trusted, so a trusted start reads nothing from the changelog.
* ``~checkpoint`` → the input offsets the store reflects: the group, the changelog topic, then
  orjson of the sorted ``[[topic, partition, next offset, commit metadata], ...]`` the group had
  committed (every input partition with a committed offset). Written in the same atomic write
  batch as the values of the transaction that committed those offsets, and only after that
  transaction committed. The metadata names the transaction (``<incarnation>:<sequence>``), so
  the checkpoint moves with every transaction, even one that consumed nothing (a prune).
* ``~count`` → (households, exposures) the store holds, two big-endian int64.

The processor trusts the store only when its checkpoint equals the group's committed offsets
(Kafka Streams' ``.checkpoint`` under exactly-once); otherwise it is wiped and rebuilt from the
state changelog. Memory: ``tally_streams.rocks.store_options`` (one LRU block cache of
``memory_mb``, the memtables charged to it).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, cast

import orjson
from rocksdict import WriteBatch

from tally_streams.rocks import RocksStore

HOUSEHOLD = b"x:"
STATE = b"s"
CHECKPOINT = b"~checkpoint"
COUNT = b"~count"
_COUNTS = struct.Struct(">qq")


def encode_checkpoint(offsets: dict[tuple[str, int], tuple[int, str]]) -> bytes:
    """Committed input offsets and their commit metadata, deterministically: sorted by (topic, partition)."""
    return orjson.dumps([[t, p, o, meta] for (t, p), (o, meta) in sorted(offsets.items()) if o >= 0])


class ExposureStore(RocksStore):
    """Household → exposures rows, with the committed input offsets they reflect."""

    what = "exposure store"
    checkpoint: bytes | None
    households: int
    exposures: int

    def _load_meta(self) -> None:
        cp = self.db.get(CHECKPOINT)
        self.checkpoint = None if cp is None else bytes(cp)
        counts = self.db.get(COUNT)
        self.households, self.exposures = (0, 0) if counts is None else _COUNTS.unpack(counts)

    # ------------------------------------------------------------------ reads

    def get(self, household_key: bytes) -> bytes | None:
        """The rows (encoded) of one household (``household_key`` = its state key ``x:<id>``)."""
        v = self.db.get(household_key)
        return None if v is None else bytes(v)

    def get_many(self, household_keys: Sequence[bytes]) -> list[bytes | None]:
        """``get`` of each key, in one multi-get."""
        if not household_keys:
            return []
        return cast(list[bytes | None], self.db.get(list(household_keys)))

    def items(self) -> Iterator[tuple[str, bytes]]:
        """Every (state key ``x:<id>``, encoded rows) held, in key order."""
        it = self.db.iter()
        try:
            it.seek(HOUSEHOLD)
            while it.valid():
                key = bytes(it.key())
                if not key.startswith(HOUSEHOLD):
                    break
                yield key.decode("utf-8"), bytes(it.value())
                it.next()
        finally:
            del it

    def state_items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every other state key held (key, changelog value)."""
        it = self.db.iter()
        try:
            it.seek(STATE)
            while it.valid():
                key = bytes(it.key())
                if not key.startswith(STATE):
                    break
                yield key[1:], bytes(it.value())
                it.next()
        finally:
            del it

    # ------------------------------------------------------------------ writes

    def write_committed(self, changes: Iterable[tuple[bytes, bytes | None]], checkpoint: bytes,
                        households: int, exposures: int) -> None:
        """A committed transaction's changelog records (state key, value; None = tombstone), the
        counts after it, and its checkpoint — in one atomic write batch."""
        wb = WriteBatch(raw_mode=True)
        for key, value in changes:
            k = key if key[:2] == HOUSEHOLD else STATE + key
            if value is None:
                wb.delete(k)
            else:
                wb.put(k, value)
        wb.put(COUNT, _COUNTS.pack(households, exposures))
        wb.put(CHECKPOINT, checkpoint)
        self.db.write(wb, self._write)
        self.checkpoint = checkpoint
        self.households, self.exposures = households, exposures

    def add_restored(self, records: list[tuple[bytes, bytes | None]]) -> None:
        """Changelog records, in changelog order, while rebuilding (the checkpoint is written at the
        end, by ``set_checkpoint``): the counts follow each household's old value."""
        last: dict[bytes, bytes | None] = {}
        wb = WriteBatch(raw_mode=True)
        for key, value in records:
            if key[:2] == b"x:":
                last[key] = value
            elif value is None:
                wb.delete(STATE + key)
            else:
                wb.put(STATE + key, value)
        keys = list(last)
        households, exposures = self.households, self.exposures
        for key, old in zip(keys, self.get_many(keys), strict=True):
            value = last[key]
            if old is not None:
                households -= 1
                exposures -= len(orjson.loads(old))
            if value is None:
                wb.delete(key)
            else:
                households += 1
                exposures += len(orjson.loads(value))
                wb.put(key, value)
        wb.put(COUNT, _COUNTS.pack(households, exposures))
        self.db.write(wb, self._write)
        self.households, self.exposures = households, exposures

    def set_checkpoint(self, checkpoint: bytes) -> None:
        self.db.put(CHECKPOINT, checkpoint, self._write)
        self.checkpoint = checkpoint

    def memory(self) -> tuple[int, int]:
        """(bytes in use, capacity) of the block cache, which the write buffers are charged to."""
        return (int(self.db.property_int_value("rocksdb.block-cache-usage") or 0),
                int(self.db.property_int_value("rocksdb.block-cache-capacity") or 0))


def decode_rows(value: bytes | memoryview) -> Any:
    """Encoded rows → lists (``state.flat_exposures`` makes them the in-memory form)."""
    return orjson.loads(value)
