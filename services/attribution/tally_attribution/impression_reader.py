"""The exposure index's impression reader: per record only the fields the index keeps.

``AvroCodec.decode`` builds a dict of every field, with a ``datetime`` for the event time; the
index needs seven fields and the time in microseconds. The compiled reader
(``_impression_reader.c``, built at ``pip install``, optional) reads a batch of records of the
catalog's latest impression schema in one call, checking each value against its limit
(``tally_billing.bounds``: ids of 1..256 characters without control characters, event times in
2000..2199); any record it does not read — another writer version, a value beyond its limit, or
anything unusual — is decoded by ``AvroCodec.decode`` and checked against every limit
(``record_problem``), which gives the same fields or the ``DecodeError`` (dead letter) exactly as
before, naming the field beyond its limit as metering does. ``compiled=False`` (or no build) uses
``AvroCodec.decode`` alone, and tests compare the two on random and corrupted records and on
values at and beyond every limit.
"""

from __future__ import annotations

import importlib
import sys
from datetime import UTC, datetime
from typing import Any, cast

from tally_billing.bounds import INSTANT_US_MAX, INSTANT_US_MIN, avro_limit, record_problem
from tally_billing.usage import to_micros
from tally_streams.avro import DecodeError, SchemaCatalog
from tally_streams.kafka import out_of_bounds
from tally_streams.records import ImpressionRecord

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


def _limits() -> tuple[tuple[int, int], ...] | None:
    """The (lo, hi) the compiled reader checks per non-enum field of ``LAYOUT`` (``tally_billing.bounds``):
    ids by characters, the event time in µs; None when a field has a limit it cannot check."""
    out = []
    for name, t in LAYOUT:
        if t == "enum":
            continue
        lim = avro_limit("impression", name)
        if lim is None or lim.kind not in ("id", "instant"):
            return None
        out.append((INSTANT_US_MIN, INSTANT_US_MAX) if lim.kind == "instant" else (int(lim.minimum), int(lim.maximum)))
    return tuple(out)


class ImpressionReader:
    def __init__(self, catalog: SchemaCatalog, *, compiled: bool = True) -> None:
        self.codec = catalog.codec("impression", record=ImpressionRecord)
        latest = self.codec.schema
        schema = latest.schema
        self._header = latest.header
        self._args: tuple[Any, ...] | None = None
        limits = _limits()
        if compiled and _compiled is not None and limits is not None and _layout_matches(schema):
            enums = {f["name"]: tuple(f["type"]["symbols"]) for f in schema["fields"] if isinstance(f["type"], dict)
                     and f["type"].get("type") == "enum"}
            # the ivt symbols are handed over as the strings the index compares with
            self._args = (tuple(sys.intern(s) for s in enums["ivt"]), len(enums["device_type"]),
                          len(enums["measurement_source"]), limits)

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
        # Ad servers' own producers write ads.impressions too: every limit, as the compiled reader
        # (which leaves a record beyond one to this path) and metering check them.
        problem = record_problem("impression", rec)
        if problem is not None:
            return out_of_bounds(problem, rec, datetime.now(UTC))  # any clock gives an out-of-range time one kind
        return (rec["impression_id"], to_micros(rec["event_time"]), sys.intern(rec["advertiser_id"]),
                sys.intern(rec["campaign_id"]), None if rec["partner_id"] is None else sys.intern(rec["partner_id"]),
                rec["household_id"], rec["ivt"])
