"""Exposures that precede their contract: a CPA contract published after delivery began still
attributes to them (when its version was in force at the impression), across a restart too."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tally_attribution.processor import Processor
from tally_streams.avro import SchemaCatalog
from tally_streams.kafka import delete_topics
from tests import clock
from tests.attribution_builders import conversion, cpa_terms, impression, terms_record

from .conftest import Harness, make_topics, running_processor

pytestmark = pytest.mark.integration

AT = clock.now().replace(microsecond=0) - timedelta(hours=1)


def uid(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}"


def wait_until(what: str, pred: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def exposure_ids(proc: Processor, household: str) -> list[str]:
    return [e[0] for e in proc.state.get("x:" + household) or ()]


def publish_late_contract(h: Harness, proc: Processor, adv: str, campaign: str, effective_from: datetime) -> str:
    """A CPA contract approved now, whose version is effective from ``effective_from``."""
    cid = uid("k")
    record = terms_record(cid, adv, [(1, effective_from, None, cpa_terms(adv, [campaign]))])
    record["versions"][0]["approved_at"] = datetime.now(UTC)
    h.terms(record)
    wait_until("terms never reached the processor", lambda: cid in proc.book.entries)
    return cid




@pytest.fixture
def adv(processor: Processor) -> str:
    return uid("adv")


def test_contract_published_after_the_impression_attributes_to_it(harness: Harness, processor: Processor,
                                                                   adv: str) -> None:
    h = harness
    reg = processor.registry
    uncovered = {"outcome": "uncovered"}
    before = reg.get_sample_value("tally_attribution_impressions_total", uncovered) or 0
    hh, early, v = uid("hh"), uid("i"), uid("v")
    h.impression(impression(early, hh, AT - timedelta(hours=2), adv, f"{adv}-c", "p1"))
    wait_until("the uncovered impression was not kept", lambda: early in exposure_ids(processor, hh))
    assert reg.get_sample_value("tally_attribution_impressions_total", uncovered) == before + 1

    k = publish_late_contract(h, processor, adv, f"{adv}-c", effective_from=AT - timedelta(days=1))
    h.conversion(conversion(v, hh, AT, adv))
    out = h.outcome(v)
    assert (out["outcome"], out["contract_id"], out["exposure_id"], out["partner_id"]) == ("attributed", k, early, "p1")
    assert out["exposure_time"] == AT - timedelta(hours=2)
    [a] = h.attributed(v)
    assert (a["exposure_id"], a["advertiser_amount"]) == (early, out["advertiser_amount"])
    assert all(r["key"] != hh.encode() for r in h.collector.get(h.names["dlq_impressions"]))


def test_version_effective_after_the_impression_does_not_cover_it(harness: Harness, processor: Processor,
                                                                   adv: str) -> None:
    h = harness
    hh, early, v = uid("hh"), uid("i"), uid("v")
    h.impression(impression(early, hh, AT - timedelta(hours=2), adv, f"{adv}-c", "p1"))
    wait_until("the uncovered impression was not kept", lambda: early in exposure_ids(processor, hh))
    publish_late_contract(h, processor, adv, f"{adv}-c", effective_from=AT - timedelta(hours=1))
    h.conversion(conversion(v, hh, AT, adv))
    out = h.outcome(v)
    assert (out["outcome"], out["reason"]) == ("rejected", "no_exposure")


def test_precontract_exposures_survive_a_restart(kafka_bootstrap: str, catalog: SchemaCatalog) -> None:
    names = make_topics(kafka_bootstrap)
    h = Harness(kafka_bootstrap, catalog, names)
    try:
        adv, hh, early, v = uid("adv"), uid("hh"), uid("i"), uid("v")
        with running_processor(kafka_bootstrap, catalog, names) as first:
            h.impression(impression(early, hh, AT - timedelta(hours=2), adv, f"{adv}-c", "p1"))
            wait_until("the uncovered impression was not kept", lambda: early in exposure_ids(first, hh))
        with running_processor(kafka_bootstrap, catalog, names) as second:
            assert exposure_ids(second, hh) == [early]  # restored from the changelog
            k = publish_late_contract(h, second, adv, f"{adv}-c", effective_from=AT - timedelta(days=1))
            h.conversion(conversion(v, hh, AT, adv))
            out = h.outcome(v)
            assert (out["outcome"], out["contract_id"], out["exposure_id"]) == ("attributed", k, early)
    finally:
        h.collector.close()
        delete_topics(kafka_bootstrap, list(names.values()))
