"""RocksDB (through ``rocksdict``) options shared by the services' on-disk state stores."""

from __future__ import annotations

from rocksdict import BlockBasedOptions, Cache, DBCompressionType, Options, WriteBufferManager


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
