"""Schemathesis against the ingest API (attribution), producing to throwaway topics."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tally_attribution.ingest import create_ingest_app
from tally_attribution.openapi_spec import spec
from tally_attribution.settings import SPEC
from tally_kit.auth import TokenVerifier
from tally_kit.settings import load
from tally_streams import topics as catalog_topics
from tally_streams.avro import SchemaCatalog
from tally_streams.kafka import delete_topics, ensure_topics
from tests.integration.fuzz.fuzz_support import SECRET, ServedApp, cases, fuzz, unsupported_method_answers

pytestmark = pytest.mark.integration

#: ingest (batches, IVT reports), verification (IVT reports), partner (postbacks); each answers every other route too
CALLERS = ("ingest", "verification", "partner")
TOPICS = {"impressions": catalog_topics.IMPRESSIONS, "conversions": catalog_topics.CONVERSIONS,
          "ivt_reports": catalog_topics.IVT_REPORTS, "dlq_ingest": catalog_topics.DLQ_INGEST}


@pytest.fixture(scope="module")
def served(kafka_bootstrap: str, catalog: SchemaCatalog) -> Iterator[ServedApp]:
    prefix = f"test-{uuid.uuid4().hex[:10]}-fuzz"
    names = {role: f"{prefix}-{role}" for role in TOPICS}
    ensure_topics(kafka_bootstrap, [spec_.renamed(names[role]) for role, spec_ in TOPICS.items()])
    env = {"TALLY_KAFKA_BOOTSTRAP": kafka_bootstrap,
           **{f"TALLY_ATTRIBUTION_TOPIC_{role.upper()}": name for role, name in names.items()}}
    settings = load(SPEC, env)
    server = ServedApp(lambda: create_ingest_app(settings, catalog, verifier=TokenVerifier(SECRET))).start()
    yield server
    server.stop()
    delete_topics(kafka_bootstrap, list(names.values()))


@pytest.mark.parametrize(("role", "method", "path"), cases(spec(), CALLERS))
def test_every_ingest_answer_matches_the_document(served: ServedApp, role: str, method: str, path: str) -> None:
    fuzz(served.schema(), method, path, role, base_url=served.base_url)


def test_every_ingest_path_answers_an_undocumented_method_with_405_and_allow(served: ServedApp) -> None:
    assert unsupported_method_answers(served.base_url, spec(), "ingest") == []
