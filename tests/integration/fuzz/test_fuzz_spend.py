"""Schemathesis against the spend API (metering), on a throwaway running-totals topic."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from confluent_kafka import Producer

from tally_kit.auth import TokenVerifier
from tally_kit.settings import load
from tally_metering.api import VIEW_KEY, create_api
from tally_metering.openapi_spec import spec
from tally_metering.settings import SPEC
from tally_streams.avro import SchemaCatalog
from tally_streams.kafka import delete_topics, ensure_topics, producer_config
from tally_streams.topics import RUNNING_TOTALS
from tests.integration.fuzz.fuzz_support import SECRET, ServedApp, cases, fuzz, unsupported_method_answers

pytestmark = pytest.mark.integration

#: every role that may call the spend API, and partner (always refused: its answers must match too)
CALLERS = ("finance", "ops", "advertiser", "partner")


def _total(contract_id: str, advertiser_id: str, amount: str) -> dict[str, Any]:
    t = datetime(2026, 3, 1, 5, tzinfo=UTC)
    return {"total_id": f"{contract_id}/2026-03", "contract_id": contract_id, "advertiser_id": advertiser_id,
            "contract_type": "cpm", "currency": "USD", "time_zone": "America/New_York", "period_kind": "month",
            "period_key": "2026-03", "period_start": t, "period_end": datetime(2026, 4, 1, 4, tzinfo=UTC), "status": "open",
            "amount_exact": Decimal(amount), "budget_cap_per_period": Decimal("1000"), "budget_cap_total": None,
            "minimum_commitment": None, "counts": {"received": 3}, "latest_event_time": t, "updated_at": t,
            "lines": [{"line_type": "cpm_impressions", "contract_version": 1, "price_point": "band:0", "event_type": None,
                       "quantity": 3000, "unit": "per_thousand", "unit_price": Decimal("4.115"),
                       "amount_exact": Decimal(amount)}]}


@pytest.fixture(scope="module")
def served(kafka_bootstrap: str, catalog: SchemaCatalog) -> Iterator[ServedApp]:
    topic = f"test-fuzz-{time.monotonic_ns() % 10**12}-running-totals"
    ensure_topics(kafka_bootstrap, [RUNNING_TOTALS.renamed(topic)])
    codec = catalog.codec("running_total")
    producer = Producer(producer_config(kafka_bootstrap, client_id="fuzz-spend"))
    for rec in (_total("K-fuzz-a", "adv-fuzz", "12.345"), _total("K-fuzz-b", "adv-other", "7.00")):
        producer.produce(topic, value=codec.encode(rec), key=rec["total_id"])
    assert producer.flush(30) == 0
    settings = load(SPEC, {"TALLY_KAFKA_BOOTSTRAP": kafka_bootstrap, "TALLY_METERING_TOPIC_RUNNING_TOTALS": topic})
    server = ServedApp(lambda: create_api(settings, verifier=TokenVerifier(SECRET), catalog=catalog)).start()
    assert server.app is not None
    view = server.app[VIEW_KEY]
    assert view.caught_up.wait(60), "the spend API did not read the running totals topic"
    assert len(view.totals) == 2
    yield server
    server.stop()
    delete_topics(kafka_bootstrap, [topic])


@pytest.mark.parametrize(("role", "method", "path"), cases(spec(), CALLERS))
def test_every_spend_answer_matches_the_document(served: ServedApp, role: str, method: str, path: str) -> None:
    fuzz(served.schema(), method, path, role, base_url=served.base_url, stream=path.endswith("/stream"))


def test_every_spend_path_answers_an_undocumented_method_with_405_and_allow(served: ServedApp) -> None:
    assert unsupported_method_answers(served.base_url, spec(), "finance") == []
