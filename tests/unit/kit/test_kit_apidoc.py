"""tally_kit.apidoc: the route-vs-document check and 405 answers with Allow."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tally_kit import apidoc
from tally_kit.web import create_app


async def _ok(_: web.Request) -> web.Response:
    return web.json_response({})


def _app() -> web.Application:
    app = create_app("demo", verifier=None)
    app.router.add_get("/things", _ok)
    app.router.add_post("/things", _ok)
    app.router.add_get("/things/{id}/export.{fmt:csv|pdf}", _ok)
    app.router.add_post("/things/{id}/{action:send|mark-paid}", _ok)
    return app


def _doc(paths: dict[str, Any]) -> dict[str, Any]:
    return apidoc.document(title="demo", version="1", description="", server="http://127.0.0.1", paths=paths, schemas={})


OP = {"responses": {"200": {"description": "ok"}}}
FULL = {"/things": {"get": OP, "post": OP}, "/things/{id}/export.{fmt}": {"get": OP},
        "/things/{id}/send": {"post": OP}, "/things/{id}/mark-paid": {"post": OP}}


def test_a_document_describing_every_route_has_no_mismatch() -> None:
    assert apidoc.route_mismatches(_app(), _doc(FULL)) == []


def test_a_route_missing_from_the_document_and_a_described_route_that_is_gone_are_both_named() -> None:
    paths = {**FULL, "/things": {"get": OP, "delete": OP}, "/gone": {"get": OP}}
    del paths["/things/{id}/mark-paid"]
    assert sorted(apidoc.route_mismatches(_app(), _doc(paths))) == [
        "DELETE /things is in the document but not served",
        "GET /gone is in the document but not served",
        "POST /things is served but not in the document",
        "POST /things/{id}/mark-paid is served but not in the document",
    ]


def test_a_route_of_literal_alternatives_may_be_described_as_its_template() -> None:
    paths = {k: v for k, v in FULL.items() if k not in ("/things/{id}/send", "/things/{id}/mark-paid")}
    paths["/things/{id}/{action}"] = {"post": OP}
    assert apidoc.route_mismatches(_app(), _doc(paths)) == []


async def test_a_wrong_method_is_a_problem_json_405_naming_the_allowed_methods() -> None:
    async with TestClient(TestServer(_app())) as client:
        resp = await client.delete("/things")
        assert resp.status == 405
        assert resp.headers["Allow"] == "GET, HEAD, POST"
        assert resp.content_type == "application/problem+json"
        assert (await resp.json())["status"] == 405
        assert (await client.get("/nowhere")).status == 404


def test_errors_use_the_shared_problem_schema_and_429_and_503_carry_retry_after() -> None:
    out = apidoc.errors(404, 429, 503, _404="no such thing")
    assert out["404"]["description"] == "no such thing"
    assert out["404"]["content"]["application/problem+json"]["schema"] == apidoc.ref("Problem")
    assert "Retry-After" in out["429"]["headers"] and "Retry-After" in out["503"]["headers"]
    assert "headers" not in out["404"]
