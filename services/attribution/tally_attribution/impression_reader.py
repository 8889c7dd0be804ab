"""The exposure index's impression reader: per record only the fields the index keeps.

``AvroCodec.decode`` builds a dict of every field, with a ``datetime`` for the event time; the
index needs seven fields and the time in microseconds. The compiled reader
(``_impression_reader.c``, built at ``pip install``, optional) reads a batch of records of the
catalog's latest impression schema in one call; any record it does not read — another writer
version, or anything unusual — is decoded by ``AvroCodec.decode``, which gives the same fields
or the ``DecodeError`` (dead letter) exactly as before. ``compiled=False`` (or no build) uses
``AvroCodec.decode`` alone, and tests compare the two on random and corrupted records.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, cast

from tally_streams.avro import DecodeError, SchemaCatalog

from .domain import to_us

#: what ``read`` yields per record, in this order
FIELDS = ("impression_id", "event_time", "advertiser_id", "campaign_id", "partner_id", "household_id", "ivt")

#: the layout the compiled reader knows: (name, Avro type) per field, enums with their symbols
LAYOUT: tuple[tuple[str, Any], ...] = (
    ("impression_id", "string"),
    ("event_time", {"type": "long", "logicalType": "timestamp-micros"}),
    ("advertiser_id", "string"),
    ("campaign_id", "string"),
    ("partner_id", ["null", "string"]),
    ("household_id", "string"),
    ("device_type", "enum"),
    ("ivt", "enum"),
    ("measurement_source", "enum"),
)

#: one record's fields; event_time in µs since the epoch
Row = tuple[str, int, str, str, str | None, str, str]

_compiled: Any
try:  # built from the package's own C file by `pip install` (setup.py); optional
    _compiled = importlib.import_module("tally_attribution._impression_reader")
except ImportError:  # pragma: no cover - depends on the build
    _compiled = None


def _layout_matches(schema: Any) -> bool:
    fields = schema.get("fields") if isinstance(schema, dict) and schema.get("type") == "record" else None
    if not isinstance(fields, list) or len(fields) != len(LAYOUT):
        return False
    for f, (name, t) in zip(fields, LAYOUT, strict=True):
        got = f.get("type")
        if f.get("name") != name:
            return False
        if t == "enum":
            if not (isinstance(got, dict) and got.get("type") == "enum"):
                return False
        elif isinstance(t, dict):
            if not (isinstance(got, dict) and got.get("type") == t["type"] and got.get("logicalType") == t["logicalType"]):
                return False
        elif got != t:
            return False
    return True


class ImpressionReader:
    def __init__(self, catalog: SchemaCatalog, *, compiled: bool = True) -> None:
        self.codec = catalog.codec("impression")
        latest = self.codec.schema
        schema = latest.schema
        self._header = latest.header
        self._args: tuple[Any, ...] | None = None
        if compiled and _compiled is not None and _layout_matches(schema):
            enums = {f["name"]: tuple(f["type"]["symbols"]) for f in schema["fields"] if isinstance(f["type"], dict)
                     and f["type"].get("type") == "enum"}
            # the ivt symbols are handed over as the strings the index compares with
            self._args = (tuple(sys.intern(s) for s in enums["ivt"]), len(enums["device_type"]),
                          len(enums["measurement_source"]))

    @property
    def compiled(self) -> bool:
        return self._args is not None

    def read(self, values: list[bytes | None]) -> list[Row | DecodeError]:
        """Per record its fields (``FIELDS``), or the DecodeError ``AvroCodec.decode`` raises for it."""
        if self._args is not None:
            fast = _compiled.read_batch(values, self._header, *self._args)
            if None not in fast:
                return cast("list[Row | DecodeError]", fast)
        else:
            fast = [None] * len(values)
        return [row if row is not None else self._slow(value) for value, row in zip(values, fast, strict=True)]

    def _slow(self, value: bytes | None) -> Row | DecodeError:
        try:
            rec = self.codec.decode(value)
        except DecodeError as exc:
            return exc
        return (rec["impression_id"], to_us(rec["event_time"]), sys.intern(rec["advertiser_id"]),
                sys.intern(rec["campaign_id"]), None if rec["partner_id"] is None else sys.intern(rec["partner_id"]),
                rec["household_id"], rec["ivt"])
