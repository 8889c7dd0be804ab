"""``tally_streams.records`` agrees with the schemas: every TypedDict has the latest version's
fields with the types fastavro really returns for them (checked on decoded samples too)."""

from __future__ import annotations

import json
import random
import types
import typing
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import pytest

from tally_streams import records
from tally_streams.avro import SchemaCatalog, default_schemas_dir

from .avro_samples import sample

CATALOG = SchemaCatalog.load()
_PRIMITIVE = {"string": str, "long": int, "int": int, "boolean": bool, "bytes": bytes, "double": float, "float": float}


def _expected(t: Any, named: dict[str, Any]) -> Any:
    """The Python type ``AvroCodec.decode`` gives an Avro type, in the records module's terms."""
    if isinstance(t, list):
        branches = [_expected(b, named) for b in t if b != "null"]
        union = branches[0] if len(branches) == 1 else Union[tuple(branches)]  # noqa: UP007
        return union | None if "null" in t else union
    if isinstance(t, str):
        if t in _PRIMITIVE:
            return _PRIMITIVE[t]
        return _expected(named[t.split(".")[-1]], named)
    logical = t.get("logicalType")
    if logical == "timestamp-micros":
        return datetime
    if logical == "decimal":
        return Decimal
    kind = t["type"]
    if kind == "record":
        named[t["name"]] = t
        return getattr(records, t["name"] + "Record")
    if kind == "enum":
        named[t["name"]] = t
        return Literal[tuple(t["symbols"])]
    if kind == "array":
        return list[_expected(t["items"], named)]  # type: ignore[misc]
    if kind == "map":
        return dict[str, _expected(t["values"], named)]  # type: ignore[misc]
    return _expected(kind, named)


def _same(a: Any, b: Any) -> bool:
    """Type equality that sees through ``X | None`` vs ``Optional[X]`` and TypedDicts by name."""
    if a is b or a == b:
        return True
    oa, ob = get_origin(a), get_origin(b)
    if {oa, ob} <= {Union, types.UnionType} and oa is not None and ob is not None:
        return len(get_args(a)) == len(get_args(b)) and all(any(_same(x, y) for y in get_args(b)) for x in get_args(a))
    if oa is not None and oa == ob:
        return len(get_args(a)) == len(get_args(b)) and all(_same(x, y) for x, y in zip(get_args(a), get_args(b), strict=True))
    return False


def _check_record(td: Any, schema: dict[str, Any], named: dict[str, Any]) -> list[str]:
    hints = get_type_hints(td)
    problems = []
    names = [f["name"] for f in schema["fields"]]
    if list(hints) != names:
        problems.append(f"{td.__name__}: fields {list(hints)} != schema {names}")
    if td.__required_keys__ != frozenset(names):  # decode fills every field (defaults included)
        problems.append(f"{td.__name__}: every key must be required")
    for f in schema["fields"]:
        want = _expected(f["type"], named)
        got = hints.get(f["name"])
        if not _same(got, want):
            problems.append(f"{td.__name__}.{f['name']}: {got} != {want} (from {f['type']})")
        inner = f["type"]
        for t in inner if isinstance(inner, list) else [inner]:
            while isinstance(t, dict) and t.get("type") in ("array", "map"):
                t = t["items" if t["type"] == "array" else "values"]
            if isinstance(t, dict) and t.get("type") == "record":
                problems += _check_record(getattr(records, t["name"] + "Record"), t, named)
    return problems


def test_every_schema_has_a_typed_record() -> None:
    assert sorted(records.RECORDS) == CATALOG.names()


@pytest.mark.parametrize("name", CATALOG.names())
def test_the_typed_record_has_the_latest_schemas_fields_and_types(name: str) -> None:
    latest = CATALOG.latest(name)
    schema = json.loads((default_schemas_dir() / name / f"v{latest.version}.avsc").read_text("utf-8"))
    td = records.RECORDS[name]
    assert td.__name__ == schema["name"] + "Record"
    assert _check_record(td, schema, {}) == []


def _conforms(v: Any, t: Any) -> bool:
    """``v`` is a value of type ``t`` (as far as records use types)."""
    origin = get_origin(t)
    if origin in (Union, types.UnionType):
        return any(_conforms(v, a) for a in get_args(t))
    if t is type(None):
        return v is None
    if origin is Literal:
        return v in get_args(t)
    if origin is list:
        return isinstance(v, list) and all(_conforms(x, get_args(t)[0]) for x in v)
    if origin is dict:
        return isinstance(v, dict) and all(isinstance(k, str) and _conforms(x, get_args(t)[1]) for k, x in v.items())
    if typing.is_typeddict(t):
        hints = get_type_hints(t)
        return isinstance(v, dict) and v.keys() == hints.keys() and all(_conforms(v[k], h) for k, h in hints.items())
    if t is datetime:
        return isinstance(v, datetime) and v.tzinfo is not None
    if t is int:
        return type(v) is int
    return isinstance(v, t)


@pytest.mark.parametrize("name", CATALOG.names())
def test_what_the_codec_decodes_is_a_value_of_the_typed_record(name: str) -> None:
    codec = CATALOG.codec(name, record=records.RECORDS[name])
    rng = random.Random(name)
    for _ in range(25):
        rec = codec.decode(codec.encode(sample(codec.schema.schema, rng)))
        assert _conforms(rec, records.RECORDS[name]), rec


def test_an_old_version_decodes_to_the_latest_record_with_the_defaults_filled_in() -> None:
    v1 = CATALOG.codec("attributed_conversion", 1)
    rec = sample(v1.schema.schema, random.Random(1))
    got = CATALOG.codec("attributed_conversion", record=records.AttributedConversionRecord).decode(v1.encode(rec))
    assert got["reversal_completes"] is None and got["tier_position"] is None
    assert _conforms(got, records.AttributedConversionRecord)


def test_a_disagreeing_typed_record_is_caught() -> None:
    class ImpressionRecord(typing.TypedDict):  # household_id missing, event_time an int
        impression_id: str
        event_time: int

    schema = {"name": "Impression", "fields": [{"name": "impression_id", "type": "string"},
                                              {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-micros"}},
                                              {"name": "household_id", "type": "string"}]}
    problems = _check_record(ImpressionRecord, schema, {})
    assert any("fields" in p for p in problems) and any("event_time" in p for p in problems)




def test_a_codec_refuses_the_typed_record_of_another_schema() -> None:
    with pytest.raises(TypeError, match="not the typed record of adjustment"):
        CATALOG.codec("adjustment", record=records.PeriodClosedRecord)
    assert CATALOG.codec("attributed_conversion", 1, record=records.AttributedConversionRecord).schema.version == 1
