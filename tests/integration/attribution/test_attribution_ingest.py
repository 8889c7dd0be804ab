"""HTTP ingest against the real broker: per-event answers, dead letters, postbacks, backpressure."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tally_attribution.ingest import create_ingest_app
from tally_attribution.processor import Processor
from tally_attribution.settings import SPEC
from tally_kit.auth import TokenVerifier, mint_token
from tally_kit.settings import load
from tally_streams.avro import SchemaCatalog
from tests import clock
from tests.attribution_builders import EPOCH_2026, cpa_terms, terms_record

from .conftest import Harness, processor_env

pytestmark = pytest.mark.integration

SECRET = "ingest-test-secret-long-enough-for-hs256"
INGEST = mint_token(SECRET, "adserver-1", ["ingest"])
PARTNER = mint_token(SECRET, "partner-user", ["partner"], tenant_type="partner", tenant_id="partner-77")
WHEN = (clock.now() - timedelta(minutes=10)).isoformat()

ClientFactory = Callable[..., Any]


@pytest.fixture
async def client_for(kafka_bootstrap: str, catalog: SchemaCatalog, topic_names: dict[str, str]) -> AsyncIterator[ClientFactory]:
    clients: list[TestClient[Any, Any]] = []

    async def make(**env: str) -> TestClient[Any, Any]:
        settings = load(SPEC, {**os.environ, **processor_env(kafka_bootstrap, topic_names), **env})
        app = create_ingest_app(settings, catalog, verifier=TokenVerifier(SECRET))
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.close()


def auth(token: str = INGEST) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def imp(iid: str, **over: Any) -> dict[str, Any]:
    e = {"impression_id": iid, "event_time": WHEN, "advertiser_id": "adv-i", "campaign_id": "c-i", "household_id": "hh-i"}
    e.update(over)
    return e


async def test_batch_mixing_good_and_bad_events(client_for: ClientFactory, harness: Harness) -> None:
    client = await client_for()
    batch = [imp("ing-good-1"), imp("ing-bad-1", event_time="yesterday"), imp("ing-good-2", partner_id="p1"),
             imp("ing-bad-2", ivt="maybe", household_id="")]
    resp = await client.post("/v1/impressions", json=batch, headers=auth())
    assert resp.status == 200
    body = await resp.json()
    assert (body["accepted"], body["rejected"]) == (2, 2)
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected", "accepted", "rejected"]
    assert body["results"][1]["errors"] == [{"field": "event_time", "message": body["results"][1]["errors"][0]["message"]}]
    assert {e["field"] for e in body["results"][3]["errors"]} == {"ivt", "household_id"}
    # acknowledged means on the topic already
    got = {r["impression_id"] for r in harness.collector.wait_for(
        harness.names["impressions"], lambda r: str(r.get("impression_id", "")).startswith("ing-good"), count=2)}
    assert got == {"ing-good-1", "ing-good-2"}
    dead = harness.collector.wait_for(harness.names["dlq_ingest"], lambda r: b"ing-bad" in (r["value"] or b""), count=2)
    assert {d["field"] for d in dead} == {"event_time", "household_id"}
    assert all(d["source"] == "http:/v1/impressions" and d["error_kind"] == "invalid" for d in dead)
    assert any("ivt" in d["reason"] for d in dead)


async def test_ndjson_conversions_with_a_broken_line(client_for: ClientFactory, harness: Harness) -> None:
    client = await client_for()
    good = {"conversion_id": "nd-1", "event_time": WHEN, "advertiser_id": "a", "household_id": "h", "event_type": "purchase",
            "value": "19.99", "currency": "USD", "order_id": "o-1"}
    body = "\n".join([json.dumps(good), "{not json", json.dumps({**good, "conversion_id": "nd-2", "value": 19.99})]) + "\n"
    resp = await client.post("/v1/conversions", data=body, headers={**auth(), "Content-Type": "application/x-ndjson"})
    answer = await resp.json()
    assert [r["status"] for r in answer["results"]] == ["accepted", "rejected", "rejected"]
    assert answer["results"][1]["errors"][0]["field"] == "$"
    assert answer["results"][2]["errors"][0]["field"] == "value"
    [rec] = harness.collector.wait_for(harness.names["conversions"], lambda r: r.get("conversion_id") == "nd-1")
    assert rec["value"] == Decimal("19.990000") and rec["source"] == "api"
    harness.collector.wait_for(harness.names["dlq_ingest"], lambda r: r["value"] == b"{not json")


async def test_ingest_requires_the_ingest_role(client_for: ClientFactory) -> None:
    client = await client_for()
    assert (await client.post("/v1/impressions", json=[imp("x")])).status == 401
    assert (await client.post("/v1/impressions", json=[imp("x")], headers=auth(PARTNER))).status == 403
    assert (await client.post("/v1/impressions", data="x", headers={**auth(), "Content-Type": "text/plain"})).status == 415


async def test_postback_authenticated_by_the_partner_token(client_for: ClientFactory, harness: Harness) -> None:
    client = await client_for()
    params = {"conversion_id": "pb-1", "order_id": "o-pb", "event_type": "purchase", "value": "42.50", "currency": "USD",
              "household_id": "hh-pb", "timestamp": WHEN, "advertiser_id": "adv-pb", "token": PARTNER}
    resp = await client.get("/v1/postback", params=params)
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"status": "accepted", "conversion_id": "pb-1"}
    [rec] = harness.collector.wait_for(harness.names["conversions"], lambda r: r.get("conversion_id") == "pb-1")
    assert (rec["source"], rec["partner_id"], rec["value"]) == ("postback", "partner-77", Decimal("42.500000"))
    form = {**params, "conversion_id": "pb-2"}
    del form["token"]
    resp = await client.post("/v1/postback", data=form, headers=auth(PARTNER))
    assert resp.status == 200
    bad = await client.get("/v1/postback", params={**params, "conversion_id": "pb-3", "value": "lots", "colour": "red"})
    assert bad.status == 422
    assert {e["field"] for e in (await bad.json())["errors"]} == {"value", "colour"}
    harness.collector.wait_for(harness.names["dlq_ingest"], lambda r: b"pb-3" in (r["value"] or b""))
    assert (await client.get("/v1/postback", params={**params, "token": INGEST})).status == 403
    assert (await client.get("/v1/postback", params={**params, "token": "forged"})).status == 401


async def test_full_queue_answers_429_with_retry_after(client_for: ClientFactory) -> None:
    client = await client_for(TALLY_ATTRIBUTION_PRODUCER_QUEUE_MAX="2", TALLY_ATTRIBUTION_RETRY_AFTER_S="3")
    resp = await client.post("/v1/impressions", json=[imp("q1"), imp("q2"), imp("q3")], headers=auth())
    assert resp.status == 429 and resp.headers["Retry-After"] == "3"
    ok = await client.post("/v1/impressions", json=[imp("q1"), imp("q2")], headers=auth())
    assert ok.status == 200


async def test_batch_over_the_maximum_is_refused_whole(client_for: ClientFactory) -> None:
    client = await client_for(TALLY_ATTRIBUTION_MAX_EVENTS_PER_REQUEST="2")
    resp = await client.post("/v1/impressions", json=[imp("m1"), imp("m2"), imp("m3")], headers=auth())
    assert resp.status == 413


async def test_http_events_end_to_end_to_an_outcome(client_for: ClientFactory, harness: Harness, processor: Processor) -> None:
    harness.terms(terms_record("k-http", "adv-http", [(1, EPOCH_2026, None, cpa_terms("adv-http", ["c-http"]))]))
    deadline = time.monotonic() + 20
    while "k-http" not in processor.book.entries:  # terms first, or the impression's campaign is unknown
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    client = await client_for()
    resp = await client.post("/v1/impressions", headers=auth(), json=[
        imp("http-i1", advertiser_id="adv-http", campaign_id="c-http", household_id="hh-http", partner_id="p-http")])
    assert (await resp.json())["accepted"] == 1
    conv = {"conversion_id": "http-v1", "event_time": clock.now().isoformat(), "advertiser_id": "adv-http",
            "household_id": "hh-http", "event_type": "purchase"}
    resp = await client.post("/v1/conversions", json=[conv], headers=auth())
    assert (await resp.json())["accepted"] == 1
    out = harness.outcome("http-v1")
    assert (out["outcome"], out["contract_id"], out["partner_id"], out["exposure_id"]) == (
        "attributed", "k-http", "p-http", "http-i1")


async def test_refused_and_unqueued_records_are_answered_per_event(client_for: ClientFactory, harness: Harness) -> None:
    """The batch is awaited as one: a record the broker refused is ``failed`` (503), records the
    full queue did not take are ``retry`` (429); the others keep their own answer."""
    from tally_attribution.ingest import PRODUCER_KEY

    client = await client_for()
    producer = client.server.app[PRODUCER_KEY]
    real = producer.produce_batch
    mode = {"refuse": 1, "take": None}

    def produce_batch(records: Any) -> Any:
        records = list(records)
        take = mode["take"]
        queued, acks = real(records[:take] if take is not None else records)

        async def with_refusal() -> dict[int, Exception]:
            failures = dict(await acks)
            if mode["refuse"] is not None:
                failures[mode["refuse"]] = RuntimeError("broker said no")
            return failures
        return queued, asyncio.ensure_future(with_refusal())

    producer.produce_batch = produce_batch
    batch = [imp("fr-1"), imp("fr-2"), imp("fr-bad", ivt="maybe")]
    resp = await client.post("/v1/impressions", json=batch, headers=auth())
    assert resp.status == 503 and resp.headers["Retry-After"] == "1"
    body = await resp.json()
    assert [r["status"] for r in body["results"]] == ["accepted", "failed", "rejected"]
    assert (body["accepted"], body["rejected"]) == (1, 1)
    mode.update(refuse=None, take=1)
    resp = await client.post("/v1/impressions", json=[imp("rt-1"), imp("rt-2"), imp("rt-3")], headers=auth())
    assert resp.status == 429
    assert [r["status"] for r in (await resp.json())["results"]] == ["accepted", "retry", "retry"]
    got = harness.collector.wait_for(harness.names["impressions"], lambda r: r["impression_id"] in {"fr-1", "rt-1"}, count=2)
    assert sorted(r["impression_id"] for r in got) == ["fr-1", "rt-1"]


async def test_the_answer_keeps_its_shape_for_any_id(client_for: ClientFactory, harness: Harness) -> None:
    client = await client_for()
    batch = [imp("ünï-1"), imp("\ud800-lone", campaign_id="\ud800")]  # a lone surrogate cannot be UTF-8 (nor Avro)
    resp = await client.post("/v1/impressions", data=json.dumps(batch), headers={**auth(), "Content-Type": "application/json"})
    assert resp.status == 200 and resp.content_type == "application/json"
    body = json.loads(await resp.read())
    assert list(body) == ["accepted", "rejected", "results"]
    assert body["results"][0] == {"id": "ünï-1", "index": 0, "status": "accepted"}
    assert body["results"][1]["id"] == "\ud800-lone" and body["results"][1]["status"] == "rejected"
    assert body["results"][1]["errors"][0]["field"] == "$"
    harness.collector.wait_for(harness.names["dlq_ingest"], lambda r: b"lone" in (r["value"] or b""))
