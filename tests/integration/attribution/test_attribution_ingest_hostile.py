"""Hostile input against the HTTP ingest, on the real broker (issue 16): a deep or duplicated
NDJSON line fails only that line, a deep JSON body is 422 with nothing produced, an event time
at the edge of ``datetime`` is a field error, not a 500."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tally_attribution.ingest import create_ingest_app
from tally_attribution.settings import SPEC
from tally_kit.auth import TokenVerifier, mint_token
from tally_kit.settings import load
from tally_streams.avro import SchemaCatalog
from tests import clock

from .conftest import Harness, processor_env

pytestmark = pytest.mark.integration

SECRET = "ingest-hostile-secret-long-enough-for-hs256"
AUTH = {"Authorization": f"Bearer {mint_token(SECRET, 'adserver-1', ['ingest'])}"}
WHEN = (clock.now() - timedelta(minutes=10)).isoformat()


@pytest.fixture
async def client(kafka_bootstrap: str, catalog: SchemaCatalog, topic_names: dict[str, str]) -> AsyncIterator[TestClient[Any, Any]]:
    settings = load(SPEC, {**os.environ, **processor_env(kafka_bootstrap, topic_names)})
    c = TestClient(TestServer(create_ingest_app(settings, catalog, verifier=TokenVerifier(SECRET))))
    await c.start_server()
    yield c
    await c.close()


def imp(iid: str, **over: Any) -> dict[str, Any]:
    e = {"impression_id": iid, "event_time": WHEN, "advertiser_id": "adv-h", "campaign_id": "c-h", "household_id": "hh-h"}
    e.update(over)
    return e


async def test_a_deep_or_duplicated_ndjson_line_fails_only_that_line(client: TestClient[Any, Any], harness: Harness) -> None:
    lines = [json.dumps(imp("hx-good-1")).encode(), b"[" * 100_000 + b"]" * 100_000,
             b'{"impression_id": "hx-dup", "impression_id": "hx-dup2"}', json.dumps(imp("hx-good-2")).encode()]
    resp = await client.post("/v1/impressions", data=b"\n".join(lines),
                             headers={**AUTH, "Content-Type": "application/x-ndjson"})
    assert resp.status == 200
    body = await resp.json()
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected", "rejected", "accepted"]
    assert "deeper" in body["results"][1]["errors"][0]["message"]
    assert "duplicate key" in body["results"][2]["errors"][0]["message"]
    got = harness.collector.wait_for(harness.names["impressions"],
                                     lambda r: str(r.get("impression_id", "")).startswith("hx-good"), count=2)
    assert {r["impression_id"] for r in got} == {"hx-good-1", "hx-good-2"}


async def test_a_deep_json_body_is_422_before_anything_is_produced(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/v1/impressions", data=b"[" * 100_000 + b"]" * 100_000,
                             headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status == 422
    resp = await client.post("/v1/ivt-reports", data=b'{"report_id": "r", "report_id": "s"}',
                             headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status == 422 and "duplicate key" in await resp.text()


async def test_event_times_at_the_edge_of_datetime_and_control_characters_are_field_errors(
        client: TestClient[Any, Any]) -> None:
    batch = [imp("hx-t1", event_time="0001-01-01T00:00:00+14:00"), imp("hx-t2", event_time="9999-12-31T23:59:59-14:00"),
             imp("hx-t3", event_time="1999-12-31T23:59:59Z"), imp("hx-nul\u0000"), imp("hx-e", campaign_id="x" * 257)]
    resp = await client.post("/v1/impressions", json=batch, headers=AUTH)
    assert resp.status == 200
    results = (await resp.json())["results"]
    assert [r["status"] for r in results] == ["rejected"] * 5
    assert [r["errors"][0]["field"] for r in results] == ["event_time", "event_time", "event_time", "impression_id",
                                                          "campaign_id"]


async def test_a_nul_in_a_postback_parameter_is_422(client: TestClient[Any, Any]) -> None:
    partner = mint_token(SECRET, "p-user", ["partner"], tenant_type="partner", tenant_id="partner-9")
    resp = await client.get(f"/v1/postback?token={partner}&conversion_id=%00&event_type=purchase")
    assert resp.status == 422
