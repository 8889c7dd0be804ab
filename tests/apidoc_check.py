"""Validating answers against a service's OpenAPI document, the one way the tests do it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jsonschema_rs

from tally_kit.db import dumps


def component_validator(spec: Mapping[str, Any], name: str) -> Any:
    """A JSON Schema 2020-12 validator of ``#/components/schemas/<name>`` of ``spec``."""
    return jsonschema_rs.Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": spec["components"]})


def schema_errors(spec: Mapping[str, Any], name: str, value: Any) -> list[str]:
    """Where ``value`` — as the API writes it (``json_ok``: decimals as strings, instants ISO
    8601) — breaks the component ``name``: ``"<path>: <message>"`` each, empty when valid."""
    wire = json.loads(dumps(value))
    return [f"{e.instance_path}: {e.message}" for e in component_validator(spec, name).iter_errors(wire)]
