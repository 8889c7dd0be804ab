"""Fast decoding of the hot-path records.

``tally_streams.avro.AvroCodec`` turns every ``timestamp-micros`` into a ``datetime``; the hot
path only needs the integer microseconds, so this decoder reads with copies of the catalog's
schemas stripped of logical types (the binary encoding is identical). The writer schema is
still resolved by fingerprint for every record, so old writer versions keep decoding.

Impressions come from ad servers' own producers too, so every field is held to its limit
(``tally_billing.bounds``): the compiled reader checks lengths, control characters and the event
time's range as it reads, and falls back on anything beyond; the fallback decodes the whole
record and ``bounds.record_problem`` names the field, as attribution does for the same bytes.
"""

from __future__ import annotations

import importlib
import io
import sys
import time
from array import array
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

import fastavro

from tally_billing import bounds
from tally_billing.usage import BUCKETS_PER_DAY, from_micros
from tally_streams.avro import HEADER_LEN, MAGIC, DecodeError, SchemaCatalog
from tally_streams.kafka import out_of_bounds
from tally_streams.records import ImpressionRecord, IvtFlag, MeasurementSource


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


# Field programs for the compiled batch reader (``_fastavro_fields.c``): one (want, op, arg) per field.
_OP_NULL, _OP_LONG, _OP_STRING, _OP_ENUM, _OP_UNION = 0, 1, 2, 3, 4
_SIMPLE_OPS = {"null": _OP_NULL, "long": _OP_LONG, "string": _OP_STRING}

_fastavro_fields: Any
try:  # built from the project's own C file by `pip install` (setup.py); optional
    _fastavro_fields = importlib.import_module("tally_metering._fastavro_fields")
except ImportError:  # pragma: no cover - depends on the build
    _fastavro_fields = None


def _simple_op(t: Any) -> int | None:
    if isinstance(t, dict) and set(t) <= {"type"}:
        t = t.get("type")
    return _SIMPLE_OPS.get(t) if isinstance(t, str) else None


Limit = tuple[int, int] | None
Program = tuple[tuple[bool, int, Any, Limit], ...]


def field_program(schema: Any, wanted: tuple[str, ...], limits: Mapping[str, tuple[int, int]] | None = None) -> Program | None:
    """The compiled reader's program for a flat record schema (logical types stripped), or None when
    a field has a type it does not read (then only fastavro is used). ``limits``: per field name, the
    (lo, hi) a long must lie in, or the number of characters of a string (which must then hold no
    control character); the reader falls back on a record beyond one."""
    if not isinstance(schema, dict) or schema.get("type") != "record":
        return None
    names = [f["name"] for f in schema["fields"]]
    if any(w not in names for w in wanted):
        return None
    limits = limits or {}
    program: list[tuple[bool, int, Any, Limit]] = []
    for f in schema["fields"]:
        t = f["type"]
        want = f["name"] in wanted
        limit = limits.get(f["name"])
        op = _simple_op(t)
        if op is not None:
            program.append((want, op, None, limit))
        elif isinstance(t, dict) and t.get("type") == "enum":
            program.append((want, _OP_ENUM, tuple(t["symbols"]), None))
        elif isinstance(t, list):
            branches = [_simple_op(b) for b in t]
            if not branches or len(branches) > 8 or any(b is None for b in branches):
                return None
            program.append((want, _OP_UNION, tuple(branches), limit))
        else:
            return None
    return tuple(program)


def reader_limits(name: str, schema: Any) -> dict[str, tuple[int, int]] | None:
    """The compiled reader's limits for the fields of catalog schema ``name`` (``tally_billing.bounds``):
    ids by characters, instants as µs, integers as they are. None when a field has a limit the reader
    cannot check (then only the fallback, which checks everything, is used)."""
    out: dict[str, tuple[int, int]] = {}
    for f in schema["fields"]:
        lim = bounds.avro_limit(name, f["name"])
        if lim is None:
            continue
        if lim.kind == "id":
            out[f["name"]] = (int(lim.minimum), int(lim.maximum))
        elif lim.kind == "instant":
            out[f["name"]] = (bounds.INSTANT_US_MIN, bounds.INSTANT_US_MAX)
        elif lim.kind == "integer":
            out[f["name"]] = (int(lim.minimum), int(lim.maximum))
        else:
            return None
    return out


#: what ``ImpressionDecoder.decode_fields`` gives per record (``ImpressionDecoder.FIELDS``; event time in µs)
ImpressionFields = tuple[str, int, str, str, IvtFlag, MeasurementSource]


class ImpressionDecoder(RawDecoder):
    #: the only fields metering reads from an impression, in the order ``decode_fields`` returns them
    FIELDS = ("impression_id", "event_time", "advertiser_id", "campaign_id", "ivt", "measurement_source")

    def __init__(self, catalog: SchemaCatalog, *, compiled: bool = True) -> None:
        super().__init__(catalog, "impression")
        latest = catalog.latest("impression")
        self._header = latest.header
        schema = strip_logical_types(_unparsed(latest.schema))
        limits = reader_limits("impression", schema)
        program = None if limits is None else field_program(schema, self.FIELDS, limits)
        # The C reader returns wanted fields in schema order; map them to FIELDS order.
        order = [f["name"] for f in schema["fields"] if f["name"] in self.FIELDS]
        self._perm = tuple(order.index(name) for name in self.FIELDS)
        self._identity = self._perm == tuple(range(len(self.FIELDS)))
        self._program = program if compiled and _fastavro_fields is not None else None

    @property
    def compiled(self) -> bool:
        return self._program is not None

    def decode_fields(self, values: list[bytes | None], now_us: int | None = None) -> list[ImpressionFields | DecodeError]:
        """Per record: (impression_id, event_time µs, advertiser_id, campaign_id, ivt, measurement_source), or the
        DecodeError of a record that cannot be read (exactly what :meth:`decode` raises for it), or of
        one with a value beyond its limit (``tally_streams.kafka.out_of_bounds``; ``now_us``, the
        consumer's clock, only decides between a future and a stale event time)."""
        fast: list[ImpressionFields | None]
        if self._program is not None:
            fast = _fastavro_fields.decode_batch(values, self._header, self._program)
            if not self._identity:
                fast = cast("list[ImpressionFields | None]", [None if r is None else tuple(r[i] for i in self._perm)
                                                              for r in fast])
            if None not in fast:
                return cast("list[ImpressionFields | DecodeError]", fast)  # every record read by the C reader
        else:
            fast = [None] * len(values)
        out: list[ImpressionFields | DecodeError] = []
        for value, r in zip(values, fast, strict=True):
            out.append(r if r is not None else self._slow(value, now_us))
        return out

    def _slow(self, value: bytes | None, now_us: int | None) -> ImpressionFields | DecodeError:
        try:
            rec = self.decode(value)
        except DecodeError as exc:
            return exc
        # the limits are those of the decoded record as attribution sees it (datetimes, not µs)
        typed = cast(ImpressionRecord, {**rec, "event_time": _instant(rec["event_time"])})
        problem = bounds.record_problem("impression", typed)
        if problem is not None:
            now = _instant(time.time_ns() // 1000 if now_us is None else now_us)
            return out_of_bounds(problem, typed, now)
        return (rec["impression_id"], rec["event_time"], rec["advertiser_id"], rec["campaign_id"], rec["ivt"],
                rec["measurement_source"])


def _instant(us: int) -> datetime:
    """µs since the epoch as a datetime; beyond datetime's range, its first or last instant
    (outside the bounds either way, so the record is refused as ahead of or behind any clock)."""
    try:
        return from_micros(us)
    except OverflowError:
        return (datetime.max if us > 0 else datetime.min).replace(tzinfo=UTC)


# --------------------------------------------------------------------------- metering.deltas


class DeltaCodec:
    """The values of ``metering.deltas`` (``schemas/metering_delta``), and the payload stage two
    (``engine.StageTwo.apply``) receives for each.

    Usage is packed: per group six int64 (campaign and class as indexes into two short lists,
    day, number of cells, newest event time, next offset), per cell a bucket byte and an int64
    count — a few array copies in C where one object per cell cost a Python call each (JSON
    before: 25 µs to encode a delta of 20 groups, against 5 µs). Conversions and IVT reports
    travel as the bytes stage one consumed and are decoded (any catalog version) where they are
    applied.
    """

    def __init__(self, catalog: SchemaCatalog) -> None:
        self.codec = catalog.codec("metering_delta")
        self._schema = self.codec.schema.schema
        self._header = self.codec.schema.header
        namespace = self.codec.schema.full_name.rsplit(".", 1)[0]
        self._usage_branch = f"{namespace}.UsageDelta"
        self._forwarded_branch = f"{namespace}.ForwardedRecord"

    def usage(self, topic: str, partition: int, first: int, last: int, advertiser_id: str, first_id: str,
              campaigns: list[str], classes: list[str], groups: array[int], buckets: bytes | bytearray,
              counts: array[int]) -> bytes:
        """``groups``: 6 int64 per group (see the schema); ``buckets``/``counts``: the cells in group order."""
        if sys.byteorder != "little":  # pragma: no cover - every machine Tally runs on is little-endian
            groups, counts = array("q", groups), array("q", counts)
            groups.byteswap()
            counts.byteswap()
        return self._write({
            "source_topic": topic, "source_partition": partition, "first_offset": first, "last_offset": last,
            "body": (self._usage_branch, {
                "advertiser_id": advertiser_id, "first_impression_id": first_id, "campaigns": campaigns,
                "ledger_classes": classes, "groups": groups.tobytes(), "buckets": bytes(buckets),
                "counts": counts.tobytes(),
            }),
        })

    def forwarded(self, kind: str, topic: str, partition: int, offset: int, value: bytes) -> bytes:
        """``kind``: ``attributed_conversion`` or ``ivt_report``."""
        return self._write({
            "source_topic": topic, "source_partition": partition, "first_offset": offset, "last_offset": offset,
            "body": (self._forwarded_branch, {"kind": kind, "value": value}),
        })

    def _write(self, record: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        buf.write(self._header)
        fastavro.schemaless_writer(buf, self._schema, record)
        return buf.getvalue()

    def _read(self, data: bytes | None) -> dict[str, Any]:
        """The record; one of the current version is read without schema resolution (the hot path)."""
        if data is None or data[:HEADER_LEN] != self._header:
            return self.codec.decode(data)
        buf = io.BytesIO(data)
        buf.seek(HEADER_LEN)
        try:
            record = fastavro.schemaless_reader(buf, self._schema, None)
        except Exception as exc:  # fastavro raises several types for garbage input
            raise DecodeError("corrupt", f"cannot read body as metering_delta: {exc}") from exc
        if buf.tell() != len(data) or not isinstance(record, dict):
            raise DecodeError("corrupt", "metering_delta: trailing bytes after the record")
        return record

    def decode(self, data: bytes | None) -> tuple[dict[str, Any], str | None, bytes | None]:
        """``(payload, kind, value)``: for usage the whole payload stage two applies (``kind``
        None); for a forwarded record its ``src`` only, with the kind and the record's bytes,
        which the caller decodes into ``payload["rec"]``. Raises DecodeError for a record that is
        not a delta, or whose packed parts do not add up."""
        d = self._read(data)
        body = d["body"]
        if "groups" not in body:
            kind = "cpa" if body["kind"] == "attributed_conversion" else "ivt"
            return ({"kind": kind, "src": {"topic": d["source_topic"], "partition": d["source_partition"],
                                           "offset": d["first_offset"]}}, body["kind"], body["value"])
        g, c = array("q"), array("q")
        try:
            g.frombytes(body["groups"])
            c.frombytes(body["counts"])
        except ValueError as exc:
            raise DecodeError("corrupt", f"metering_delta: packed groups or counts: {exc}") from exc
        if sys.byteorder != "little":  # pragma: no cover
            g.byteswap()
            c.byteswap()
        fields, counts, buckets = g.tolist(), c.tolist(), body["buckets"]
        campaigns, classes = body["campaigns"], body["ledger_classes"]
        if (len(fields) % 6 or len(buckets) != len(counts) or sum(fields[3::6]) != len(counts)
                or (fields and min(min(fields[0::6]), min(fields[1::6]), min(fields[3::6])) < 0)
                or (buckets and max(buckets) >= BUCKETS_PER_DAY)):
            raise DecodeError("corrupt", "metering_delta: groups, buckets and counts do not add up")
        cells = list(zip(buckets, counts, strict=True))
        groups = []
        k = 0
        try:
            for ci, li, day, n, newest, next_offset in zip(fields[0::6], fields[1::6], fields[2::6], fields[3::6],
                                                           fields[4::6], fields[5::6], strict=True):
                groups.append((campaigns[ci], day, classes[li], cells[k:k + n], newest, next_offset))
                k += n
        except IndexError as exc:
            raise DecodeError("corrupt", "metering_delta: a group names a campaign or class it does not list") from exc
        return {
            "kind": "usage", "advertiser_id": body["advertiser_id"],
            "src": {"topic": d["source_topic"], "partition": d["source_partition"], "first": d["first_offset"],
                    "last": d["last_offset"], "first_id": body["first_impression_id"]},
            "groups": groups,
        }, None, None
