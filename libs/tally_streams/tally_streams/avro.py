"""Avro single-object encoding over a schema catalog kept in ``schemas/``.

Wire format (Avro spec, "Single object encoding"): ``C3 01`` + the writer schema's
CRC-64-AVRO fingerprint (8 bytes, little-endian) + the Avro binary body. A consumer finds
the writer schema by fingerprint in the catalog (every version of every schema is kept) and
reads into its own reader version, so no registry server is needed.

Layout of the catalog: ``schemas/<name>/v<N>.avsc``; ``<name>`` is the catalog name used in
code (``impression``), ``N`` counts up from 1 and the highest is the current version.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Generic, TypeVar, cast, overload

import fastavro
from fastavro.schema import fingerprint as schema_fingerprint
from fastavro.schema import to_parsing_canonical_form

MAGIC = b"\xc3\x01"
HEADER_LEN = 10
_VERSION_FILE = re.compile(r"^v(\d+)\.avsc$")


class DecodeError(Exception):
    """A record that cannot be decoded. Carries where it came from, for a dead-letter topic.

    ``kind`` is one of ``not_single_object`` (no magic), ``truncated``, ``unknown_schema``
    (fingerprint not in the catalog), ``corrupt`` (body does not parse under the writer
    schema) or ``incompatible`` (writer data cannot be read into the reader version); a record
    that decodes but has a value beyond its limit (``tally_streams.kafka.out_of_bounds``) carries
    the kind ``classify_rejection`` gives it and the ``field``.
    """

    def __init__(
        self,
        kind: str,
        reason: str,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
        field: str | None = None,
    ) -> None:
        self.kind = kind
        self.reason = reason
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.field = field
        super().__init__(self._describe())

    def _describe(self) -> str:
        where = ""
        if self.topic is not None:
            where = f" at {self.topic}[{self.partition}]@{self.offset}"
        return f"{self.kind}: {self.reason}{where}"

    def located(self, topic: str, partition: int, offset: int) -> DecodeError:
        """The same error, placed at a topic/partition/offset."""
        return DecodeError(self.kind, self.reason, topic=topic, partition=partition, offset=offset, field=self.field)

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes
        return (_rebuild_decode_error, (self.kind, self.reason, self.topic, self.partition, self.offset, self.field))


def _rebuild_decode_error(kind: str, reason: str, topic: str | None, partition: int | None, offset: int | None,
                          field: str | None = None) -> DecodeError:
    return DecodeError(kind, reason, topic=topic, partition=partition, offset=offset, field=field)


class EncodeError(ValueError):
    """A value that does not fit its schema (names the field when fastavro says which)."""


def rabin_fingerprint(canonical_form: str) -> int:
    """CRC-64-AVRO (Rabin) fingerprint of a schema's parsing canonical form, computed by fastavro.
    fastavro gives the 8 bytes as hex in the order the header carries them (little-endian)."""
    return int.from_bytes(bytes.fromhex(schema_fingerprint(canonical_form, "CRC-64-AVRO")), "little")


R = TypeVar("R", bound=Mapping[str, Any])  # the record type a codec is typed with (``tally_streams.records``)


@dataclass(frozen=True)
class SchemaVersion:
    name: str
    version: int
    schema: Any  # fastavro-parsed schema
    fingerprint: int
    header: bytes  # MAGIC + fingerprint, the first 10 bytes of every record written with it

    @property
    def full_name(self) -> str:
        return str(self.schema["name"])


class SchemaCatalog:
    """Every version of every schema, by catalog name and by fingerprint."""

    def __init__(self, versions: list[SchemaVersion]) -> None:
        self._by_name: dict[str, dict[int, SchemaVersion]] = {}
        self._by_fingerprint: dict[int, SchemaVersion] = {}
        for v in versions:
            self._by_name.setdefault(v.name, {})[v.version] = v
            self._by_fingerprint[v.fingerprint] = v

    @classmethod
    def load(cls, root: str | os.PathLike[str] | None = None) -> SchemaCatalog:
        """Load ``schemas/`` (``TALLY_SCHEMAS_DIR`` or the repository's folder by default)."""
        folder = Path(root) if root is not None else default_schemas_dir()
        versions = []
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            for f in sorted(sub.iterdir()):
                m = _VERSION_FILE.match(f.name)
                if not m:
                    continue
                versions.append(make_version(sub.name, int(m.group(1)), json.loads(f.read_text("utf-8"))))
        return cls(versions)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def versions(self, name: str) -> list[SchemaVersion]:
        return [self._by_name[name][k] for k in sorted(self._by_name[name])]

    def latest(self, name: str) -> SchemaVersion:
        try:
            by_version = self._by_name[name]
        except KeyError:
            raise KeyError(f"no schema named {name!r} in the catalog") from None
        return by_version[max(by_version)]

    def get(self, name: str, version: int) -> SchemaVersion:
        return self._by_name[name][version]

    def by_fingerprint(self, fingerprint: int) -> SchemaVersion | None:
        return self._by_fingerprint.get(fingerprint)

    @overload
    def codec(self, name: str, version: int | None = None) -> AvroCodec[dict[str, Any]]: ...
    @overload
    def codec(self, name: str, version: int | None = None, *, record: type[R]) -> AvroCodec[R]: ...

    def codec(self, name: str, version: int | None = None, *, record: type[Any] | None = None) -> AvroCodec[Any]:
        """A codec that writes ``name`` (latest version unless given) and reads into it.

        With ``record`` (a TypedDict of ``tally_streams.records``), ``decode`` is typed as
        returning it and ``encode`` as taking it; the values are the same plain dicts. A record
        type of another schema is refused here (``TypeError``), where the type checker cannot see it.
        """
        sv = self.latest(name) if version is None else self.get(name, version)
        if record is not None and getattr(record, "__name__", None) != f"{sv.full_name.rsplit('.', 1)[-1]}Record":
            raise TypeError(f"{getattr(record, '__name__', record)!r} is not the typed record of {name}")
        return AvroCodec(self, sv)


def make_version(name: str, version: int, schema_json: Mapping[str, Any]) -> SchemaVersion:
    parsed = fastavro.parse_schema(dict(schema_json))
    fp = rabin_fingerprint(to_parsing_canonical_form(parsed))
    return SchemaVersion(name, version, parsed, fp, MAGIC + fp.to_bytes(8, "little"))


def default_schemas_dir() -> Path:
    env = os.environ.get("TALLY_SCHEMAS_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "schemas"
        if candidate.is_dir() and (parent / "libs").is_dir():
            return candidate
    raise FileNotFoundError("schemas/ folder not found; set TALLY_SCHEMAS_DIR")


class AvroCodec(Generic[R]):
    """Encode with one writer version; decode anything in the catalog into one reader version.

    ``R`` is only for the type checker (``SchemaCatalog.codec(name, record=...)``); an
    untyped codec is ``AvroCodec[dict[str, Any]]``.
    """

    def __init__(self, catalog: SchemaCatalog, schema: SchemaVersion) -> None:
        self.catalog = catalog
        self.schema = schema
        self._fields: frozenset[str] | None = None
        self._fast_writer: Callable[[Mapping[str, Any]], bytes] | None = None

    def encode(self, record: R) -> bytes:
        buf = io.BytesIO()
        buf.write(self.schema.header)
        try:
            fastavro.schemaless_writer(buf, self.schema.schema, dict(record), strict_allow_default=True)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise EncodeError(f"{self.schema.name} v{self.schema.version}: {exc}") from exc
        return buf.getvalue()

    def encode_many(self, records: Sequence[Mapping[str, Any]]) -> list[bytes | EncodeError]:
        """``encode`` for a batch: each record's bytes (identical to ``encode``'s) or its error.

        One difference: a number too large for its Avro type is an ``EncodeError`` here, where
        ``encode`` lets fastavro's ``OverflowError`` through, so it cannot fail the whole batch.

        A flat record (strings, ints/longs, booleans, timestamp-micros, enums, decimals and
        nullable ones: the impression, the conversion, attribution's outputs)
        whose keys are exactly the schema's fields is written by a writer compiled
        from the schema, about twice as fast as fastavro; a value that writer does not handle,
        and every other schema, goes to fastavro, into one buffer that is sliced at the end.
        A record with exactly the schema's keys skips fastavro's strict field check (it could
        not fail); any other takes the strict path, so a missing or unknown field is refused as
        by ``encode``.
        """
        fields = self._field_names
        schema = self.schema.schema
        header = self.schema.header
        write = fastavro.schemaless_writer
        fast = self._fast_writer
        buf = io.BytesIO()
        spans: list[tuple[int, int] | bytes | EncodeError] = []
        for record in records:
            if fast is not None and type(record) is dict and record.keys() == fields:
                try:
                    spans.append(fast(record))
                    continue
                except _NotFast:
                    pass  # fastavro decides: the same bytes, or the error encode would raise
            start = buf.tell()
            buf.write(header)
            try:
                if type(record) is dict and record.keys() == fields:
                    write(buf, schema, record)
                else:
                    write(buf, schema, dict(record), strict_allow_default=True)
            except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
                buf.seek(start)
                buf.truncate()
                spans.append(EncodeError(f"{self.schema.name} v{self.schema.version}: {exc}"))
                continue
            spans.append((start, buf.tell()))
        view = buf.getbuffer()
        try:
            return [s if isinstance(s, (bytes, EncodeError)) else bytes(view[s[0]:s[1]]) for s in spans]
        finally:
            view.release()

    @property
    def _field_names(self) -> frozenset[str]:
        """The record's field names; also looks up its compiled writer (once per schema version)."""
        names = self._fields
        if names is None:
            names = self._fields = frozenset(f["name"] for f in self.schema.schema["fields"])
            fp = self.schema.fingerprint
            if fp not in _FLAT_WRITERS:
                _FLAT_WRITERS[fp] = _compile_flat_record(self.schema)
            self._fast_writer = _FLAT_WRITERS[fp]
        return names

    def decode(self, data: bytes | None) -> R:
        return cast(R, self._read(data, plain=False))

    def decode_plain(self, data: bytes | None) -> dict[str, Any]:
        """``decode`` with the logical types left as their Avro base values: a timestamp-micros
        is its ``int`` of microseconds, a decimal the unscaled big-endian two's-complement
        ``bytes`` (:func:`plain_decimal` reads it). The same checks and ``DecodeError``s as
        ``decode``; about half its cost on a running total, and nothing is built for a field the
        caller does not read (a hot reader converts only the fields it uses)."""
        return self._read(data, plain=True)

    def _read(self, data: bytes | None, *, plain: bool) -> dict[str, Any]:
        if data is None:
            raise DecodeError("truncated", "no value (null record)")
        if len(data) < HEADER_LEN:
            raise DecodeError("truncated", f"{len(data)} bytes is shorter than the 10-byte header")
        if data[:2] != MAGIC:
            raise DecodeError("not_single_object", f"first bytes {data[:2].hex()} are not the Avro single-object marker c301")
        fp = int.from_bytes(data[2:HEADER_LEN], "little")
        writer = self.catalog.by_fingerprint(fp)
        if writer is None:
            raise DecodeError("unknown_schema", f"writer schema fingerprint {fp:016x} is not in the catalog")
        if writer.name != self.schema.name:
            raise DecodeError(
                "incompatible", f"record was written as {writer.name} v{writer.version}, expected {self.schema.name}"
            )
        buf = io.BytesIO(data)
        buf.seek(HEADER_LEN)
        writer_schema, reader_schema = writer.schema, self.schema.schema
        if plain:
            writer_schema, reader_schema = _plain_schema(writer), _plain_schema(self.schema)
        try:
            record = fastavro.schemaless_reader(buf, writer_schema, reader_schema)
        except EOFError as exc:
            raise DecodeError("truncated", f"body ends early under {writer.name} v{writer.version}: {exc}") from exc
        except Exception as exc:  # fastavro raises several types for garbage input
            kind = "incompatible" if "Schema mismatch" in str(exc) or type(exc).__name__ == "SchemaResolutionError" else "corrupt"
            raise DecodeError(kind, f"cannot read body under {writer.name} v{writer.version}: {exc}") from exc
        if buf.tell() != len(data):
            raise DecodeError("corrupt", f"{len(data) - buf.tell()} trailing bytes after the record")
        if not isinstance(record, dict):
            raise DecodeError("corrupt", "body is not a record")
        return record


_PLAIN_SCHEMAS: dict[int, Any] = {}  # by fingerprint: the parsed schema without its logical types


def _plain_schema(version: SchemaVersion) -> Any:
    plain = _PLAIN_SCHEMAS.get(version.fingerprint)
    if plain is None:
        def strip(node: Any) -> Any:
            if isinstance(node, dict):
                return {k: strip(v) for k, v in node.items() if k != "logicalType"}
            if isinstance(node, list):
                return [strip(v) for v in node]
            return node

        # the same binary encoding (a logical type only annotates its base type), read as the base type
        plain = _PLAIN_SCHEMAS[version.fingerprint] = fastavro.parse_schema(strip(version.schema))
    return plain


def plain_decimal(raw: bytes, scale: int) -> Decimal:
    """A decimal of ``decode_plain``: its unscaled two's-complement big-endian bytes, exact (the
    string constructor never rounds; ``scaleb`` would, to the context's 28 digits)."""
    return Decimal(f"{int.from_bytes(raw, 'big', signed=True)}E-{scale}")


# --------------------------------------------------------------------------- flat-record fast path


_FLAT_WRITERS: dict[int, Callable[[Mapping[str, Any]], bytes] | None] = {}  # by schema fingerprint


class _NotFast(Exception):
    """A value the fast path does not handle; fastavro writes (or refuses) the record instead."""


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_BYTE = [bytes((i,)) for i in range(128)]
_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1


def _varint_long(n: int) -> bytes:
    """Avro ``long``: zig-zag, then base-128 varint, low groups first."""
    z = (n << 1) ^ (n >> 63)
    if z < 0x80:
        return _ONE_BYTE[z]
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_Part = Callable[[Any, list[bytes]], None]


def _long_part(lo: int, hi: int) -> _Part:
    def part(v: Any, out: list[bytes]) -> None:
        if type(v) is not int or not lo <= v <= hi:
            raise _NotFast
        out.append(_varint_long(v))
    return part


def _timestamp_micros_part(v: Any, out: list[bytes]) -> None:
    if type(v) is datetime and v.tzinfo is not None:
        d = v - _EPOCH
        v = (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds
    if type(v) is not int or not _LONG_MIN <= v <= _LONG_MAX:
        raise _NotFast
    out.append(_varint_long(v))


def _enum_part(symbols: list[str]) -> _Part:
    index = {sym: _varint_long(i) for i, sym in enumerate(symbols)}

    def part(v: Any, out: list[bytes]) -> None:
        if type(v) is not str:
            raise _NotFast
        try:
            out.append(index[v])
        except KeyError:
            raise _NotFast from None
    return part


_TRUE, _FALSE = b"\x01", b"\x00"


def _boolean_part(v: Any, out: list[bytes]) -> None:
    if v is True:
        out.append(_TRUE)
    elif v is False:
        out.append(_FALSE)
    else:
        raise _NotFast


def _decimal_part(precision: int, scale: int) -> _Part:
    """``bytes`` with logical type ``decimal``: the unscaled value as big-endian two's
    complement, as fastavro writes it. Only a finite ``Decimal`` whose digits fit the precision
    and whose exponent is not finer than the scale is written here; anything else (an int, a
    float, NaN, too many decimals) goes to fastavro, which writes it or refuses it as always."""
    shift = 10 ** scale

    def part(v: Any, out: list[bytes]) -> None:
        if type(v) is not Decimal:
            raise _NotFast
        _sign, digits, exp = v.as_tuple()
        if type(exp) is not int or len(digits) > precision or exp + scale < 0:
            raise _NotFast
        n, d = v.as_integer_ratio()
        unscaled = n * shift // d  # exact: the exponent is not finer than the scale
        b = unscaled.to_bytes((abs(unscaled).bit_length() + 8) // 8, "big", signed=True)
        z = len(b) << 1
        out.append(_ONE_BYTE[z] if z < 0x80 else _varint_long(len(b)))
        out.append(b)
    return part


def _simple_part(t: Any) -> _Part | None:
    """The writer of one non-string value type (strings are written inline by the generated
    writer), or None when the fast path does not take it."""
    if t == "long":
        return _long_part(_LONG_MIN, _LONG_MAX)
    if t == "int":
        return _long_part(_INT_MIN, _INT_MAX)
    if t == "boolean":
        return _boolean_part
    if isinstance(t, dict):
        if t.get("type") == "long" and t.get("logicalType") == "timestamp-micros":
            return _timestamp_micros_part
        if t.get("type") == "enum":
            return _enum_part(list(t["symbols"]))
        if (t.get("type") == "bytes" and t.get("logicalType") == "decimal" and isinstance(t.get("precision"), int)
                and isinstance(t.get("scale", 0), int)):
            return _decimal_part(t["precision"], t.get("scale", 0))
    return None


def _compile_flat_record(sv: SchemaVersion) -> Callable[[Mapping[str, Any]], bytes] | None:
    """A writer for a record made only of strings, ints/longs, booleans, timestamp-micros,
    enums, decimals (``bytes``) and ``[null, one of those]`` (the impression, the conversion,
    attribution's outputs): the single-object bytes fastavro would write,
    built from precomputed pieces. None for any other schema. Raises ``_NotFast`` on a value
    it does not handle (a wrong type, a number out of range, an unknown symbol, a naive
    datetime): the caller then lets fastavro write it, or raise the error it always raised.
    """
    schema = sv.schema
    if not isinstance(schema, dict) or schema.get("type") != "record":
        return None
    # The writer is generated as one function: a string (the most common field) is written
    # inline and a nullable field's branch tag too, so a record costs one call, not two or
    # three per field; every other value goes through its part function.
    env: dict[str, Any] = {"_NotFast": _NotFast, "_ONE_BYTE": _ONE_BYTE, "_varint_long": _varint_long,
                           "header": sv.header}
    lines = ["def write(record):", "    out = [header]", "    put = out.append"]
    for i, f in enumerate(schema["fields"]):
        t = f["type"]
        lines.append(f"    v = record[{f['name']!r}]")
        indent = "    "
        if isinstance(t, list):
            if len(t) != 2 or "null" not in t:
                return None
            null_index = t.index("null")
            t = t[1 - null_index]
            env[f"null{i}"], env[f"tag{i}"] = _varint_long(null_index), _varint_long(1 - null_index)
            lines += ["    if v is None:", f"        put(null{i})", "    else:", f"        put(tag{i})"]
            indent = "        "
        if t == "string":
            lines += [f"{indent}if type(v) is not str:", f"{indent}    raise _NotFast",
                      f"{indent}try:", f"{indent}    b = v.encode('utf-8')",
                      f"{indent}except UnicodeEncodeError:", f"{indent}    raise _NotFast from None",
                      f"{indent}z = len(b) << 1",  # the zig-zag of a length (never negative)
                      f"{indent}put(_ONE_BYTE[z] if z < 0x80 else _varint_long(len(b)))", f"{indent}put(b)"]
            continue
        part = _simple_part(t)
        if part is None:
            return None
        env[f"part{i}"] = part
        lines.append(f"{indent}part{i}(v, out)")
    lines.append("    return b''.join(out)")
    exec("\n".join(lines), env)  # noqa: S102 - source built above from the schema's field names only
    write: Callable[[Mapping[str, Any]], bytes] = env["write"]
    return write
