"""The invoicing API's OpenAPI document describes exactly the routes it serves."""

from __future__ import annotations

from tally_invoicing.app import build_app
from tally_invoicing.openapi_spec import build_spec
from tally_invoicing.settings import load_settings
from tally_kit import apidoc
from tally_kit.auth import TokenVerifier


def test_every_invoicing_route_is_in_the_document_and_every_documented_route_is_served() -> None:
    app = build_app(load_settings({"TALLY_INVOICING_DATABASE_URL": "postgresql://unused/none"}), TokenVerifier("t" * 40))
    assert apidoc.route_mismatches(app, build_spec()) == []


def test_the_invoicing_document_is_openapi_3_1_with_every_reference_resolved() -> None:
    doc = build_spec()
    assert doc["openapi"] == "3.1.0"
    assert apidoc.unresolved_refs(doc) == []
    finalize = doc["paths"]["/invoices/{id}/finalize"]["post"]["responses"]
    assert {"200", "202", "400", "401", "403", "404", "409", "422"} <= set(finalize)
