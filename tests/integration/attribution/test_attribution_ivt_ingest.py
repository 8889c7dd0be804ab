"""POST /v1/ivt-reports against the real broker: a good report is produced once, with its windows in
UTC (both window forms, DST days included); a report with any bad field is refused whole (422 naming
every bad field by JSON path) and nothing of it reaches the topic; only verification/ingest may post."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tally_attribution.ingest import PRODUCER_KEY, create_ingest_app
from tally_attribution.settings import SPEC
from tally_kit import auth as kit_auth
from tally_kit.auth import TokenVerifier, mint_token
from tally_kit.clock import FixedClock
from tally_kit.settings import load
from tally_streams.avro import SchemaCatalog

from .conftest import Harness, processor_env

pytestmark = pytest.mark.integration

SECRET = "ivt-ingest-test-secret-long-enough-for-hs256"
INGEST = mint_token(SECRET, "vendor-ingest", ["ingest"])
PARTNER = mint_token(SECRET, "partner-user", ["partner"], tenant_type="partner", tenant_id="partner-77")
ADVERTISER = mint_token(SECRET, "adv-user", ["advertiser"], tenant_type="advertiser", tenant_id="adv-ivt")
FINANCE = mint_token(SECRET, "fin-user", ["finance"])
#: the ingest's clock in these tests: fixed, so the DST days below are in the past whatever the date
NOW = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)

ClientFactory = Callable[..., Any]


def verification_token(subject: str = "vendor-ias") -> str:
    """A token with the ``verification`` role, built by hand: ``mint_token`` refuses roles the kit
    does not list yet."""
    now = int(time.time())
    claims = {"sub": subject, "roles": ["verification"], "iss": kit_auth.ISSUER, "aud": kit_auth.AUDIENCE,
              "iat": now, "exp": now + 3600}
    return jwt.encode(claims, SECRET, algorithm="HS256")


@pytest.fixture
async def client_for(kafka_bootstrap: str, catalog: SchemaCatalog, topic_names: dict[str, str]) -> AsyncIterator[ClientFactory]:
    clients: list[TestClient[Any, Any]] = []

    async def make(**env: str) -> TestClient[Any, Any]:
        settings = load(SPEC, {**os.environ, **processor_env(kafka_bootstrap, topic_names), **env})
        app = create_ingest_app(settings, catalog, verifier=TokenVerifier(SECRET), clock=FixedClock(NOW))
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.close()


def auth(token: str = INGEST) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def entry(**over: Any) -> dict[str, Any]:
    e: dict[str, Any] = {"campaign_id": "c-ivt", "ivt_class": "givt", "count": 10,
                         "window_start": "2026-03-01T00:00:00Z", "window_end": "2026-03-01T01:00:00Z"}
    e.update(over)
    return {k: v for k, v in e.items() if v is not _DROP}


def report(ident: str, /, *entries: dict[str, Any], **over: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"report_id": ident, "advertiser_id": "adv-ivt", "entries": list(entries) or [entry()]}
    r.update(over)
    return {k: v for k, v in r.items() if v is not _DROP}


_DROP = object()  # a field left out


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def on_topic(harness: Harness, report_id: str) -> list[dict[str, Any]]:
    return [r for r in harness.collector.get(harness.names["ivt_reports"]) if r.get("report_id") == report_id]


async def accepted(client: TestClient[Any, Any], harness: Harness, body: dict[str, Any], token: str = INGEST) -> dict[str, Any]:
    """Post a good report, check the answer, and return its record on the topic."""
    resp = await client.post("/v1/ivt-reports", json=body, headers=auth(token))
    assert resp.status == 202, await resp.text()
    assert await resp.json() == {"report_id": body["report_id"], "entries": len(body["entries"]), "status": "accepted"}
    # acknowledged means on the topic already
    [rec] = harness.collector.wait_for(harness.names["ivt_reports"], lambda r: r.get("report_id") == body["report_id"])
    return rec


async def test_a_report_with_both_window_forms_is_produced_once_in_utc(client_for: ClientFactory, harness: Harness) -> None:
    client = await client_for()
    body = report(
        "rep-ok-1",
        entry(window_start="2026-03-01T01:15:00+01:00", window_end="2026-03-02T00:00:00Z", count=7),
        # the spring-forward day in New York: 23 hours
        entry(campaign_id="c-ivt-2", ivt_class="sivt", count=12, window_start=_DROP, window_end=_DROP,
              date="2026-03-08", time_zone="America/New_York"),
        # the fall-back day: 25 hours
        entry(campaign_id="c-ivt-2", count=3, measurement_source="third_party", window_start=_DROP, window_end=_DROP,
              date="2026-11-01", time_zone="America/New_York"),
        # a plain day far east, and a zone 45 minutes off the hour
        entry(count=1, window_start=_DROP, window_end=_DROP, date="2026-07-04", time_zone="Asia/Tokyo"),
        entry(count=2, window_start=_DROP, window_end=_DROP, date="2026-07-04", time_zone="Asia/Kathmandu"),
    )
    rec = await accepted(client, harness, body)
    assert (rec["report_id"], rec["vendor"], rec["advertiser_id"], rec["received_at"]) == (
        "rep-ok-1", "vendor-ingest", "adv-ivt", NOW)
    got = [(e["campaign_id"], e["ivt_class"], e["measurement_source"], e["count"], e["window_start"], e["window_end"])
           for e in rec["entries"]]
    assert got == [
        ("c-ivt", "givt", "first_party", 7, utc(2026, 3, 1, 0, 15), utc(2026, 3, 2)),
        ("c-ivt-2", "sivt", "first_party", 12, utc(2026, 3, 8, 5), utc(2026, 3, 9, 4)),
        ("c-ivt-2", "givt", "third_party", 3, utc(2026, 11, 1, 4), utc(2026, 11, 2, 5)),
        ("c-ivt", "givt", "first_party", 1, utc(2026, 7, 3, 15), utc(2026, 7, 4, 15)),
        ("c-ivt", "givt", "first_party", 2, utc(2026, 7, 3, 18, 15), utc(2026, 7, 4, 18, 15)),
    ]
    assert got[1][5] - got[1][4] == timedelta(hours=23) and got[2][5] - got[2][4] == timedelta(hours=25)
    # once: a later report on the same (single-partition) topic arrives, and the first is still alone
    await accepted(client, harness, report("rep-ok-1-after"))
    assert len(on_topic(harness, "rep-ok-1")) == 1


async def test_the_same_report_id_is_accepted_again_metering_applies_it_once(client_for: ClientFactory,
                                                                            harness: Harness) -> None:
    """The ingest does not remember report ids (metering does): a resend is produced again."""
    client = await client_for()
    await accepted(client, harness, report("rep-twice"))
    resp = await client.post("/v1/ivt-reports", json=report("rep-twice"), headers=auth())
    assert resp.status == 202
    harness.collector.wait_for(harness.names["ivt_reports"], lambda r: r.get("report_id") == "rep-twice", count=2)


BAD_CASES: list[tuple[str, Callable[[str], Any], set[str]]] = [
    # (name, body from its report id, the fields the answer must name)
    ("report-id-missing", lambda rid: report(rid, report_id=_DROP, advertiser_id=f"adv-{rid}"), {"report_id"}),
    ("report-id-empty", lambda rid: report(rid, report_id="", advertiser_id=f"adv-{rid}"), {"report_id"}),
    ("report-id-too-long", lambda rid: report(rid, report_id=rid + "x" * 300), {"report_id"}),
    ("report-id-number", lambda rid: report(rid, report_id=42, advertiser_id=f"adv-{rid}"), {"report_id"}),
    ("advertiser-missing", lambda rid: report(rid, advertiser_id=_DROP), {"advertiser_id"}),
    ("advertiser-blank", lambda rid: report(rid, advertiser_id="  "), {"advertiser_id"}),
    ("vendor-in-body", lambda rid: report(rid, vendor="someone-else"), {"vendor"}),
    ("unknown-top-field", lambda rid: report(rid, colour="red"), {"colour"}),
    ("entries-missing", lambda rid: report(rid, entries=_DROP), {"entries"}),
    ("entries-empty", lambda rid: report(rid, entries=[]), {"entries"}),
    ("entries-not-array", lambda rid: report(rid, entries={"campaign_id": "c"}), {"entries"}),
    ("entries-too-many", lambda rid: report(rid, entries=[entry()] * 1001), {"entries"}),
    ("entry-not-object", lambda rid: report(rid, entries=[entry(), "c-ivt"]), {"entries[1]"}),
    ("campaign-missing", lambda rid: report(rid, entry(), entry(), entry(campaign_id=_DROP)), {"entries[2].campaign_id"}),
    ("campaign-number", lambda rid: report(rid, entry(campaign_id=7)), {"entries[0].campaign_id"}),
    ("class-missing", lambda rid: report(rid, entry(ivt_class=_DROP)), {"entries[0].ivt_class"}),
    ("class-unknown", lambda rid: report(rid, entry(ivt_class="none")), {"entries[0].ivt_class"}),
    ("source-unknown", lambda rid: report(rid, entry(measurement_source="vendor")), {"entries[0].measurement_source"}),
    ("unknown-entry-field", lambda rid: report(rid, entry(ivt="givt")), {"entries[0].ivt"}),
    ("count-true", lambda rid: report(rid, entry(count=True)), {"entries[0].count"}),
    ("count-missing", lambda rid: report(rid, entry(count=_DROP)), {"entries[0].count"}),
    ("count-zero", lambda rid: report(rid, entry(count=0)), {"entries[0].count"}),
    ("count-negative", lambda rid: report(rid, entry(count=-3)), {"entries[0].count"}),
    ("count-fraction", lambda rid: report(rid, entry(count=1.5)), {"entries[0].count"}),
    ("count-float-whole", lambda rid: report(rid, entry(count=2.0)), {"entries[0].count"}),
    ("count-string", lambda rid: report(rid, entry(count="5")), {"entries[0].count"}),
    ("count-too-large", lambda rid: report(rid, entry(count=10**12 + 1)), {"entries[0].count"}),
    ("start-off-boundary", lambda rid: report(rid, entry(window_start="2026-03-01T00:07:00Z")), {"entries[0].window_start"}),
    ("end-off-boundary-by-a-microsecond", lambda rid: report(rid, entry(window_end="2026-03-01T01:00:00.000001Z")),
     {"entries[0].window_end"}),
    ("start-offset-off-boundary", lambda rid: report(rid, entry(window_start="2026-03-01T00:00:00+00:10")),
     {"entries[0].window_start"}),
    ("start-without-zone", lambda rid: report(rid, entry(window_start="2026-03-01T00:00:00")), {"entries[0].window_start"}),
    ("end-not-a-time", lambda rid: report(rid, entry(window_end="yesterday")), {"entries[0].window_end"}),
    ("end-missing", lambda rid: report(rid, entry(window_end=_DROP)), {"entries[0].window_end"}),
    ("start-missing", lambda rid: report(rid, entry(window_start=_DROP)), {"entries[0].window_start"}),
    ("end-before-start", lambda rid: report(rid, entry(window_start="2026-03-02T00:00:00Z", window_end="2026-03-01T00:00:00Z")),
     {"entries[0].window_end"}),
    ("empty-window", lambda rid: report(rid, entry(window_end="2026-03-01T00:00:00Z")), {"entries[0].window_end"}),
    ("span-32-days", lambda rid: report(rid, entry(window_end="2026-04-02T00:00:00Z")), {"entries[0].window_end"}),
    ("end-in-the-future", lambda rid: report(rid, entry(window_start="2026-11-15T12:00:00Z", window_end="2026-11-15T12:15:00Z")),
     {"entries[0].window_end"}),
    ("no-window", lambda rid: report(rid, entry(window_start=_DROP, window_end=_DROP)), {"entries[0]"}),
    ("both-window-forms", lambda rid: report(rid, entry(date="2026-03-01", time_zone="UTC")),
     {"entries[0].date", "entries[0].time_zone"}),
    ("date-without-zone", lambda rid: report(rid, entry(window_start=_DROP, window_end=_DROP, date="2026-03-01")),
     {"entries[0].time_zone"}),
    ("zone-without-date", lambda rid: report(rid, entry(window_start=_DROP, window_end=_DROP, time_zone="UTC")),
     {"entries[0].date"}),
    ("date-not-a-date", lambda rid: report(rid, entry(window_start=_DROP, window_end=_DROP, date="2026-02-30", time_zone="UTC")),
     {"entries[0].date"}),
    ("date-basic-format", lambda rid: report(rid, entry(window_start=_DROP, window_end=_DROP, date="20260301", time_zone="UTC")),
     {"entries[0].date"}),
    ("date-with-time", lambda rid: report(rid, entry(window_start=_DROP, window_end=_DROP, date="2026-03-01T00:00:00Z",
                                                     time_zone="UTC")), {"entries[0].date"}),
    ("zone-unknown", lambda rid: report(rid, entry(window_start=_DROP, window_end=_DROP, date="2026-03-01",
                                                   time_zone="Mars/Olympus_Mons")), {"entries[0].time_zone"}),
    ("zone-absurdly-long", lambda rid: report(rid, entry(window_start=_DROP, window_end=_DROP, date="2026-03-01",
                                                         time_zone="Europe/" + "x" * 5000)), {"entries[0].time_zone"}),
    ("zone-path", lambda rid: report(rid, entry(window_start=_DROP, window_end=_DROP, date="2026-03-01",
                                                time_zone="../../etc/passwd")), {"entries[0].time_zone"}),
    ("day-not-over-yet", lambda rid: report(rid, entry(window_start=_DROP, window_end=_DROP, date="2026-11-15",
                                                       time_zone="Europe/Paris")), {"entries[0].date"}),
    ("date-before-standard-time", lambda rid: report(rid, entry(window_start=_DROP, window_end=_DROP, date="1880-01-01",
                                                                time_zone="America/New_York")), {"entries[0].date"}),
    ("one-bad-entry-among-good", lambda rid: report(rid, entry(), entry(count=True), entry()), {"entries[1].count"}),
    # (the span, a check across two fields, is judged only once both ends are good)
    ("every-bad-field-at-once", lambda rid: report(rid, entry(campaign_id="", count=True, ivt_class="x"),
                                                   entry(window_start="2026-03-01T00:07:00Z", window_end="2026-05-01T00:00:00Z"),
                                                   entry(window_end="2026-04-01T00:00:00.5Z", date="2026-03-01"),
                                                   advertiser_id=_DROP, extra=1),
     {"advertiser_id", "extra", "entries[0].campaign_id", "entries[0].count", "entries[0].ivt_class",
      "entries[1].window_start", "entries[2].date"}),
    ("lone-surrogate", lambda rid: report(rid, entry(campaign_id="\ud800")), {"$"}),
    ("body-is-an-array", lambda rid: [report(rid)], {"$"}),
    ("body-not-json", lambda rid: f"{{not json {rid}", {"$"}),
]


@pytest.mark.parametrize(("name", "body", "fields"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
async def test_a_bad_field_refuses_the_whole_report_and_writes_nothing(
        client_for: ClientFactory, harness: Harness, name: str, body: Callable[[str], Any], fields: set[str]) -> None:
    client = await client_for()
    rid = f"bad-{name}"
    payload = body(rid)
    data = payload if isinstance(payload, str) else json.dumps(payload)
    resp = await client.post("/v1/ivt-reports", data=data, headers={**auth(), "Content-Type": "application/json"})
    assert resp.status == 422, await resp.text()
    assert resp.content_type == "application/problem+json"
    problem = await resp.json()
    assert problem["status"] == 422 and problem["type"] == "https://tally.dev/problems/validation"
    assert {e["field"] for e in problem["errors"]} == fields, problem["errors"]
    assert all(e["message"] for e in problem["errors"])
    # nothing written: a good report sent after it reaches the (single-partition) topic alone
    sentinel = f"after-{name}-{uuid.uuid4().hex[:6]}"
    await accepted(client, harness, report(sentinel))
    leaked = [r for r in harness.collector.get(harness.names["ivt_reports"])
              if str(r.get("report_id", "")).startswith(rid) or r.get("advertiser_id") == f"adv-{rid}"
              or any(e["campaign_id"] == "\ud800" for e in r.get("entries", []))]
    assert leaked == []


async def test_only_verification_and_ingest_may_post(client_for: ClientFactory, harness: Harness) -> None:
    client = await client_for()
    assert (await client.post("/v1/ivt-reports", json=report("rep-anon"))).status == 401
    for token in (PARTNER, ADVERTISER, FINANCE):
        resp = await client.post("/v1/ivt-reports", json=report("rep-forbidden"), headers=auth(token))
        assert resp.status == 403
        assert resp.content_type == "application/problem+json"
        assert "verification" in (await resp.json())["detail"]
    await accepted(client, harness, report("rep-role-ok"))
    assert on_topic(harness, "rep-forbidden") == [] and on_topic(harness, "rep-anon") == []


async def test_a_verification_token_posts_as_its_vendor(client_for: ClientFactory, harness: Harness) -> None:
    client = await client_for()
    rec = await accepted(client, harness, report("rep-vendor"), token=verification_token("vendor-ias"))
    assert rec["vendor"] == "vendor-ias"


async def test_request_shape_limits(client_for: ClientFactory, harness: Harness) -> None:
    client = await client_for(TALLY_ATTRIBUTION_MAX_BODY_BYTES="4096")
    resp = await client.post("/v1/ivt-reports", data="report_id=x", headers={**auth(), "Content-Type": "text/plain"})
    assert resp.status == 415
    big = report("rep-too-big", *[entry(campaign_id=f"c-{i}") for i in range(100)])
    resp = await client.post("/v1/ivt-reports", json=big, headers=auth())
    assert resp.status == 413
    await accepted(client, harness, report("rep-shape-ok"))
    assert on_topic(harness, "rep-too-big") == []


async def test_a_refused_delivery_answers_503(client_for: ClientFactory) -> None:
    client = await client_for(TALLY_ATTRIBUTION_RETRY_AFTER_S="4")
    producer = client.server.app[PRODUCER_KEY]
    real = producer.produce_batch

    def refusing(records: Any) -> Any:
        queued, acks = real(records)

        async def refused() -> dict[int, Exception]:
            await acks
            return {0: RuntimeError("broker said no")}
        return queued, asyncio.ensure_future(refused())

    producer.produce_batch = refusing
    resp = await client.post("/v1/ivt-reports", json=report("rep-refused"), headers=auth())
    assert resp.status == 503 and resp.headers["Retry-After"] == "4"
    assert resp.content_type == "application/problem+json"
