"""An ad server's own producer writes ``ads.impressions`` (not through ingest): an impression
beyond a limit of ``tally_billing.bounds`` (an id too long, or with a control character) is
dead-lettered by both of the topic's consumers — metering and attribution — with the same error
kind and the field named, and metering goes on counting the impressions around it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from confluent_kafka import Producer

from tally_attribution.processor import Processor
from tally_billing.examples import cpm_terms_json
from tally_streams.avro import SchemaCatalog
from tally_streams.kafka import delete_topics
from tests.integration.attribution.conftest import Collector, make_topics, running_processor

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 2, 20, 12, tzinfo=UTC)


def _terms(campaign: str) -> dict[str, Any]:
    t = cpm_terms_json()
    t["common"].update({"campaign_ids": [campaign], "flight_start": "2026-01-01", "flight_end": "2026-12-31",
                        "auto_renew": False, "renewal_term_months": None, "escalator_pct": None,
                        "notice_period_days": 0})
    return t


def _impression(campaign: str, i: int, **over: Any) -> dict[str, Any]:
    rec = {"impression_id": uuid.uuid4().hex, "event_time": NOW - timedelta(hours=1, seconds=-i),
           "advertiser_id": "adv-acme", "campaign_id": campaign, "partner_id": None, "household_id": f"hh-{i}",
           "device_type": "ctv", "ivt": "none", "measurement_source": "first_party"}
    rec.update(over)
    return rec


@pytest.fixture
def attribution_on(metering_world: Any, kafka_bootstrap: str,
                   catalog: SchemaCatalog) -> Iterator[tuple[Processor, Collector, dict[str, str]]]:
    """The attribution processor on a thread, reading the metering world's impressions topic."""
    names = make_topics(kafka_bootstrap)
    own_impressions = names["impressions"]
    names["impressions"] = metering_world.topics["impressions"]
    collector = Collector(kafka_bootstrap, catalog, names)
    try:
        with running_processor(kafka_bootstrap, catalog, names) as proc:
            yield proc, collector, names
    finally:
        collector.close()
        delete_topics(kafka_bootstrap, [*(n for r, n in names.items() if r != "impressions"), own_impressions])


def test_ids_beyond_their_limits_from_a_foreign_producer_are_refused_alike_and_counting_goes_on(
        metering_world: Any, attribution_on: tuple[Processor, Collector, dict[str, str]], catalog: SchemaCatalog) -> None:
    w = metering_world
    proc, collector, names = attribution_on
    w.publish_terms("R-foreign", [(1, T0, None, _terms("c-foreign"))])
    w.set_clock(NOW)
    worker = w.start_thread_worker()
    # the ad server's own producer: the catalog's schema and framing, but none of ingest's checks
    foreign = Producer({"bootstrap.servers": w.bootstrap, "client.id": "ad-server-42"})
    codec = catalog.codec("impression")
    bad = _impression("c-foreign", 5, household_id="h" * 300)
    # short, with a C1 control character: attribution's compiled reader leaves it to the checking path too
    control = _impression("c-foreign", 11, household_id="hh-\x85-11")
    records = ([_impression("c-foreign", i) for i in range(5)] + [bad] + [_impression("c-foreign", i) for i in range(6, 11)]
               + [control])
    for rec in records:
        foreign.produce(w.topics["impressions"], value=codec.encode(rec), key=rec["household_id"][:64])
    assert foreign.flush(30) == 0

    ours = w.wait_for("dlq_impressions", "dead_letter", lambda rs: len(rs) >= 2)
    theirs = collector.wait_for(names["dlq_impressions"], lambda r: r.get("field") == "household_id", count=2,
                                timeout_s=60)
    assert len(ours) == 2 and len(theirs) == 2
    reasons = ["household_id must have 1 to 256 characters (has 300)",
               "household_id must not contain control characters (NUL, newline, ...)"]
    # by value: the two records may be on different partitions, and each dead letter keeps its bytes whole
    ours_by_value, theirs_by_value = {d["value"]: d for d in ours}, {d["value"]: d for d in theirs}
    for rec, reason in zip([bad, control], reasons, strict=True):
        m, a = ours_by_value[codec.encode(rec)], theirs_by_value[codec.encode(rec)]
        assert (m["error_kind"], m["field"]) == (a["error_kind"], a["field"]) == ("invalid", "household_id")
        assert m["reason"] == a["reason"] == reason
        assert m["consumer_group"] == w.group and a["consumer_group"] == proc.s.attribution_group

    w.wait_idle()
    w.assert_alive()
    assert worker.metrics.events.labels("impression", "received")._value.get() == 10
    totals = w.wait_for("running_totals", "running_total",
                        lambda rs: any(r["contract_id"] == "R-foreign" and r["counts"].get("billable") == 10 for r in rs))
    assert totals
