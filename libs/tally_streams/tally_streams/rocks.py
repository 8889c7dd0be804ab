"""RocksDB (through ``rocksdict``): the options and the life cycle the services' on-disk state
stores share (metering's dedupe set, attribution's exposure index)."""

from __future__ import annotations

import shutil
from pathlib import Path

from rocksdict import BlockBasedOptions, Cache, DBCompressionType, Options, Rdict, WriteBufferManager, WriteOptions


def store_options(memory_mb: int) -> Options:
    """RocksDB options bounded to ``memory_mb``: block cache, with the write buffers charged to it
    (``WriteBufferManager`` with the cache), so write buffers + cached blocks + index and filter
    blocks stay within that bound. Raw byte keys and values; bloom filters answer most misses."""
    total = memory_mb * 1024 * 1024
    cache = Cache(total)
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.set_write_buffer_size(max(total // 4, 1 << 20))
    opts.set_max_write_buffer_number(2)
    opts.set_write_buffer_manager(WriteBufferManager.new_write_buffer_manager_with_cache(total // 2, False, cache))
    opts.set_compression_type(DBCompressionType.lz4())
    opts.set_max_open_files(256)
    table = BlockBasedOptions()
    table.set_block_cache(cache)
    table.set_bloom_filter(10, False)
    table.set_cache_index_and_filter_blocks(True)
    table.set_pin_l0_filter_and_index_blocks_in_cache(True)
    opts.set_block_based_table_factory(table)
    return opts


class RocksStore:
    """One RocksDB under ``path`` bounded to ``memory_mb`` (``store_options``): opened at
    construction, ``wipe``d to start empty, ``close``d once. A subclass keeps its own metadata
    (checkpoint, counts) and reads it back in ``_load_meta``, which runs after every open."""

    #: what the store is, for the error of a use after ``close``
    what = "state store"

    def __init__(self, path: Path, memory_mb: int) -> None:
        self.path = path
        self.memory_mb = memory_mb
        self._write = WriteOptions()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db: Rdict | None = Rdict(str(path), store_options(memory_mb))
        self._load_meta()

    def _load_meta(self) -> None:
        """Read the subclass's metadata from the (just opened) store."""

    @property
    def db(self) -> Rdict:
        if self._db is None:
            raise RuntimeError(f"{self.what} {self.path} is closed")
        return self._db

    def wipe(self) -> None:
        """Delete everything (checkpoint included) and start empty."""
        self.close()
        Rdict.destroy(str(self.path), store_options(self.memory_mb))
        shutil.rmtree(self.path, ignore_errors=True)
        self._db = Rdict(str(self.path), store_options(self.memory_mb))
        self._load_meta()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
