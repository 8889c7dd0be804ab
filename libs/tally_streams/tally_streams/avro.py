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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import to_parsing_canonical_form

MAGIC = b"\xc3\x01"
HEADER_LEN = 10
_VERSION_FILE = re.compile(r"^v(\d+)\.avsc$")


class DecodeError(Exception):
    """A record that cannot be decoded. Carries where it came from, for a dead-letter topic.

    ``kind`` is one of ``not_single_object`` (no magic), ``truncated``, ``unknown_schema``
    (fingerprint not in the catalog), ``corrupt`` (body does not parse under the writer
    schema) or ``incompatible`` (writer data cannot be read into the reader version).
    """

    def __init__(
        self,
        kind: str,
        reason: str,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        self.kind = kind
        self.reason = reason
        self.topic = topic
        self.partition = partition
        self.offset = offset
        super().__init__(self._describe())

    def _describe(self) -> str:
        where = ""
        if self.topic is not None:
            where = f" at {self.topic}[{self.partition}]@{self.offset}"
        return f"{self.kind}: {self.reason}{where}"

    def located(self, topic: str, partition: int, offset: int) -> DecodeError:
        """The same error, placed at a topic/partition/offset."""
        return DecodeError(self.kind, self.reason, topic=topic, partition=partition, offset=offset)

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes
        return (_rebuild_decode_error, (self.kind, self.reason, self.topic, self.partition, self.offset))


def _rebuild_decode_error(kind: str, reason: str, topic: str | None, partition: int | None, offset: int | None) -> DecodeError:
    return DecodeError(kind, reason, topic=topic, partition=partition, offset=offset)


class EncodeError(ValueError):
    """A value that does not fit its schema (names the field when fastavro says which)."""


def rabin_fingerprint(canonical_form: str) -> int:
    """CRC-64-AVRO (Rabin) fingerprint of a schema's parsing canonical form."""
    fp = _EMPTY_64
    for byte in canonical_form.encode("utf-8"):
        fp = (fp >> 8) ^ _FP_TABLE[(fp ^ byte) & 0xFF]
    return fp


_EMPTY_64 = 0xC15D213AA4D7A795


def _make_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY_64 & -(fp & 1))
        table.append(fp)
    return table


_FP_TABLE = _make_table()


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

    def codec(self, name: str, version: int | None = None) -> AvroCodec:
        """A codec that writes ``name`` (latest version unless given) and reads into it."""
        sv = self.latest(name) if version is None else self.get(name, version)
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


class AvroCodec:
    """Encode with one writer version; decode anything in the catalog into one reader version."""

    def __init__(self, catalog: SchemaCatalog, schema: SchemaVersion) -> None:
        self.catalog = catalog
        self.schema = schema

    def encode(self, record: Mapping[str, Any]) -> bytes:
        buf = io.BytesIO()
        buf.write(self.schema.header)
        try:
            fastavro.schemaless_writer(buf, self.schema.schema, dict(record), strict_allow_default=True)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise EncodeError(f"{self.schema.name} v{self.schema.version}: {exc}") from exc
        return buf.getvalue()

    def decode(self, data: bytes | None) -> dict[str, Any]:
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
        try:
            record = fastavro.schemaless_reader(buf, writer.schema, self.schema.schema)
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
