"""A seeded generator of valid sample records for any schema in the catalog (logical types included)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any


def sample(schema: Any, rng: random.Random, named: dict[str, Any] | None = None) -> Any:
    if named is None:
        named = {}
        _register(schema, named)  # a named type may be defined where no value was sampled (an empty map)
    if isinstance(schema, str):
        if schema in named:
            return sample(named[schema], rng, named)
        return _primitive(schema, rng)
    if isinstance(schema, list):
        return sample(rng.choice(schema), rng, named)
    t = schema["type"]
    logical = schema.get("logicalType")
    if logical == "timestamp-micros":
        return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=rng.randrange(0, 10**14))
    if logical == "decimal":
        scale = schema.get("scale", 0)
        digits = min(schema["precision"], 18)
        unscaled = rng.randrange(-(10**digits) + 1, 10**digits)
        return Decimal(unscaled).scaleb(-scale)
    if t == "record":
        named[schema["name"]] = schema
        return {f["name"]: sample(f["type"], rng, named) for f in schema["fields"]}
    if t == "enum":
        named[schema["name"]] = schema
        return rng.choice(schema["symbols"])
    if t == "array":
        return [sample(schema["items"], rng, named) for _ in range(rng.randrange(0, 4))]
    if t == "map":
        return {f"k{i}": sample(schema["values"], rng, named) for i in range(rng.randrange(0, 4))}
    if t == "fixed":
        return bytes(rng.randrange(256) for _ in range(schema["size"]))
    return sample(t, rng, named)


def _register(schema: Any, named: dict[str, Any]) -> None:
    """Every named type (record, enum, fixed) defined anywhere in ``schema``, by name."""
    if isinstance(schema, list):
        for branch in schema:
            _register(branch, named)
    elif isinstance(schema, dict):
        if schema.get("type") in ("record", "enum", "fixed"):
            named[schema["name"]] = schema
        for f in schema.get("fields", []):
            _register(f["type"], named)
        for k in ("items", "values"):
            if k in schema:
                _register(schema[k], named)


def _primitive(name: str, rng: random.Random) -> Any:
    if name == "null":
        return None
    if name == "boolean":
        return rng.random() < 0.5
    if name == "int":
        return rng.randrange(-(2**31), 2**31)
    if name == "long":
        return rng.randrange(-(2**63), 2**63)
    if name == "string":
        return "".join(rng.choice("abcxyz-_0123é") for _ in range(rng.randrange(0, 12)))
    if name == "bytes":
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 12)))
    if name == "float" or name == "double":
        raise AssertionError("no float or double belongs in Tally's schemas")
    raise AssertionError(f"unknown primitive {name}")
