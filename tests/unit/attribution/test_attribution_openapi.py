"""The ingest API's OpenAPI document describes exactly the routes it serves."""

from __future__ import annotations

from tally_attribution.ingest import create_ingest_app
from tally_attribution.openapi_spec import spec
from tally_attribution.settings import SPEC
from tally_kit import apidoc
from tally_kit.auth import TokenVerifier
from tally_kit.settings import load
from tally_streams.avro import SchemaCatalog


def test_every_ingest_route_is_in_the_document_and_every_documented_route_is_served() -> None:
    app = create_ingest_app(load(SPEC, {}), SchemaCatalog.load(), verifier=TokenVerifier("t" * 40))
    assert apidoc.route_mismatches(app, spec()) == []


def test_the_ingest_document_is_openapi_3_1_with_every_reference_resolved() -> None:
    doc = spec()
    assert doc["openapi"] == "3.1.0"
    assert apidoc.unresolved_refs(doc) == []
    batch = doc["paths"]["/v1/impressions"]["post"]["responses"]
    assert {"200", "401", "403", "413", "415", "422", "429", "503"} <= set(batch)
