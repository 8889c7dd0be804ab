"""The spend API's OpenAPI document describes exactly the routes it serves."""

from __future__ import annotations

from tally_kit import apidoc
from tally_kit.auth import TokenVerifier
from tally_kit.settings import load
from tally_metering.api import create_api
from tally_metering.openapi_spec import spec
from tally_metering.settings import SPEC
from tally_streams.avro import SchemaCatalog


def test_every_spend_route_is_in_the_document_and_every_documented_route_is_served() -> None:
    app = create_api(load(SPEC, {}), verifier=TokenVerifier("t" * 40), catalog=SchemaCatalog.load())
    assert apidoc.route_mismatches(app, spec()) == []


def test_the_spend_document_is_openapi_3_1_with_every_reference_resolved() -> None:
    doc = spec()
    assert doc["openapi"] == "3.1.0"
    assert apidoc.unresolved_refs(doc) == []
