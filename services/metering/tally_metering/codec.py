"""Fast decoding of the hot-path records.

``tally_streams.avro.AvroCodec`` turns every ``timestamp-micros`` into a ``datetime``; the hot
path only needs the integer microseconds, so this decoder reads with copies of the catalog's
schemas stripped of logical types (the binary encoding is identical). The writer schema is
still resolved by fingerprint for every record, so old writer versions keep decoding.
"""

from __future__ import annotations

import io
from typing import Any

import fastavro

from tally_streams.avro import HEADER_LEN, MAGIC, DecodeError, SchemaCatalog


def strip_logical_types(schema: Any) -> Any:
    """The schema with every ``logicalType`` removed (the underlying Avro types remain)."""
    if isinstance(schema, dict):
        return {k: strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [strip_logical_types(s) for s in schema]
    return schema


class RawDecoder:
    """Decode single-object records of one catalog name into dicts with raw longs for times."""

    def __init__(self, catalog: SchemaCatalog, name: str) -> None:
        self.name = name
        latest = catalog.latest(name)
        self._latest_fp = latest.fingerprint
        self._reader = fastavro.parse_schema(strip_logical_types(_unparsed(latest.schema)))
        self._writers: dict[int, Any] = {}
        for v in catalog.versions(name):
            self._writers[v.fingerprint] = fastavro.parse_schema(strip_logical_types(_unparsed(v.schema)))
        self._catalog = catalog

    def decode(self, data: bytes | None) -> dict[str, Any]:
        if data is None or len(data) < HEADER_LEN:
            raise DecodeError("truncated", "record shorter than the 10-byte single-object header")
        if data[:2] != MAGIC:
            raise DecodeError("not_single_object", f"first bytes {data[:2].hex()} are not the Avro single-object marker c301")
        fp = int.from_bytes(data[2:HEADER_LEN], "little")
        writer = self._writers.get(fp)
        if writer is None:
            known = self._catalog.by_fingerprint(fp)
            if known is None:
                raise DecodeError("unknown_schema", f"writer schema fingerprint {fp:016x} is not in the catalog")
            raise DecodeError("incompatible", f"record was written as {known.name}, expected {self.name}")
        buf = io.BytesIO(data)
        buf.seek(HEADER_LEN)
        try:
            if fp == self._latest_fp:
                record = fastavro.schemaless_reader(buf, writer, None)
            else:
                record = fastavro.schemaless_reader(buf, writer, self._reader)
        except Exception as exc:  # fastavro raises several types for garbage input
            raise DecodeError("corrupt", f"cannot read body as {self.name}: {exc}") from exc
        if buf.tell() != len(data):
            raise DecodeError("corrupt", f"{len(data) - buf.tell()} trailing bytes after the record")
        if not isinstance(record, dict):
            raise DecodeError("corrupt", "body is not a record")
        return record


def _unparsed(parsed: Any) -> Any:
    """fastavro's parsed schema still holds plain dicts/lists; drop its private ``__``-keys."""
    if isinstance(parsed, dict):
        return {k: _unparsed(v) for k, v in parsed.items() if not str(k).startswith("__")}
    if isinstance(parsed, list):
        return [_unparsed(s) for s in parsed]
    return parsed


class ImpressionDecoder(RawDecoder):
    def __init__(self, catalog: SchemaCatalog) -> None:
        super().__init__(catalog, "impression")
