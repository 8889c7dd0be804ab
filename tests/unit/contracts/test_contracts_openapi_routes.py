"""The contracts API's OpenAPI document describes exactly the routes it serves."""

from __future__ import annotations

from tally_contracts.api import build_app
from tally_contracts.openapi_spec import spec
from tally_contracts.settings import SPEC
from tally_kit import apidoc
from tally_kit.auth import TokenVerifier
from tally_kit.settings import load
from tally_streams.avro import SchemaCatalog


def test_every_contracts_route_is_in_the_document_and_every_documented_route_is_served() -> None:
    app = build_app(load(SPEC, {}), verifier=TokenVerifier("t" * 40), catalog=SchemaCatalog.load(), background=False)
    assert apidoc.route_mismatches(app, spec()) == []
