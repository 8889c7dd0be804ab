"""Unit tests for tally_kit.openapi: docs rendering and cursors."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from aiohttp.test_utils import make_mocked_request

from tally_kit import openapi
from tally_kit.problems import ApiError

SPEC = {
    "openapi": "3.1.0",
    "info": {"title": "Demo <API>", "version": "1"},
    "paths": {"/things/{id}": {"parameters": [{"name": "id", "in": "path", "required": True}],
                               "get": {"summary": "Get a thing", "responses": {"200": {"description": "the thing"}}}}},
    "components": {"schemas": {"Thing": {"type": "object", "description": "A thing"}}},
}


def test_docs_page_lists_operations_escaped_and_without_external_assets() -> None:
    page = openapi.render_docs(SPEC)
    assert "/things/{id}" in page and "Get a thing" in page and "schema-Thing" in page
    assert "Demo &lt;API&gt;" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_cursor_round_trips_datetimes_and_decimals_as_json() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    cursor = openapi.encode_cursor([at, Decimal("1.50"), "c-1"])
    assert "=" not in cursor
    assert openapi.decode_cursor(cursor) == [at.isoformat(), "1.50", "c-1"]


@pytest.mark.parametrize("bad", ["!!!", "e30", openapi.encode_cursor([])[:0] + "bnVsbA"])
def test_foreign_cursors_are_a_422_naming_the_cursor(bad: str) -> None:
    with pytest.raises(ApiError) as exc:
        openapi.decode_cursor(bad)
    assert exc.value.status == 422 and exc.value.errors[0]["field"] == "query.cursor"


def test_page_params_report_every_bad_parameter_together() -> None:
    req = make_mocked_request("GET", "/x?limit=0&cursor=%21")
    with pytest.raises(ApiError) as exc:
        openapi.page_params(req)
    assert [e["field"] for e in exc.value.errors] == ["query.limit", "query.cursor"]


def test_page_cuts_limit_plus_one_rows() -> None:
    rows = [{"id": i} for i in range(4)]
    out = openapi.page(rows, 3, key=lambda r: [r["id"]])
    assert [r["id"] for r in out["items"]] == [0, 1, 2]
    assert openapi.decode_cursor(out["next_cursor"]) == [2]
    assert openapi.page(rows[:3], 3, key=lambda r: [r["id"]])["next_cursor"] is None
