"""The console gateway's own OpenAPI document describes exactly the routes it serves, in demo mode and not."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tally_console.app import build_app
from tally_console.openapi_spec import spec
from tally_console.settings import load_settings
from tally_kit import apidoc
from tally_kit.auth import TokenVerifier, mint_token

SECRET = "console-openapi-secret-0123456789abcdef"
VERIFIER = TokenVerifier(SECRET)


@pytest.mark.parametrize("demo", [False, True])
def test_every_gateway_route_is_in_the_document_and_every_documented_route_is_served(tmp_path: Path, demo: bool) -> None:
    settings = load_settings({"TALLY_CONSOLE_STATIC_DIR": str(tmp_path), "TALLY_CONSOLE_DEMO": str(demo).lower()})
    # the kit's own paths are checked too: the gateway's document describes them
    assert apidoc.route_mismatches(build_app(settings, VERIFIER), spec(demo=demo), ignore=()) == []


def test_the_gateway_document_is_openapi_3_1_with_every_reference_resolved() -> None:
    doc = spec(demo=True)
    assert doc["openapi"] == "3.1.0"
    assert apidoc.unresolved_refs(doc) == []
    proxied = doc["paths"]["/api/{service}/{tail}"]["get"]["responses"]
    assert {"401", "404", "502", "504", "default"} <= set(proxied)
    assert set(doc["paths"]["/readyz"]["get"]["responses"]) == {"200", "503"}
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    assert "/api/demo/users" not in spec(demo=False)["paths"]


async def test_the_gateway_serves_its_document_and_answers_an_unproxied_method_with_405(tmp_path: Path) -> None:
    settings = load_settings({"TALLY_CONSOLE_STATIC_DIR": str(tmp_path)})
    async with TestClient(TestServer(build_app(settings, VERIFIER))) as client:
        served = await client.get("/openapi.json")
        assert served.status == 200
        assert (await served.json())["info"]["title"] == "Tally console gateway"
        auth = {"Authorization": f"Bearer {mint_token(SECRET, 'tester', ['ops'])}"}
        options = await client.options("/api/contracts/v1/contracts", headers=auth)
        assert options.status == 405
        assert options.content_type == "application/problem+json"
        assert set(options.headers["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"}
