"""The topic catalog is the one list of topics: every value schema it names exists, names are
unique, compaction and retention are as DESIGN.md says."""

from __future__ import annotations

from tally_streams.avro import SchemaCatalog
from tally_streams.topics import CATALOG, DAY_MS, by_name, dead_letter_topic


def test_every_topic_names_a_schema_in_the_catalog(catalog: SchemaCatalog) -> None:
    missing = [(t.name, t.value_schema) for t in CATALOG if t.value_schema not in catalog.names()]
    assert missing == []


def test_topic_names_are_unique_and_dead_letters_exist_for_input_topics() -> None:
    names = [t.name for t in CATALOG]
    assert len(names) == len(set(names))
    for source in ("ads.impressions", "ads.conversions"):
        assert dead_letter_topic(source) in names


def test_compacted_topics_are_the_state_topics_and_the_rest_keep_long_enough() -> None:
    assert {t.name for t in CATALOG if t.compacted} == {"contracts.terms", "billing.running_totals"}
    for t in CATALOG:
        cfg = t.config(min_insync_replicas=2)
        assert cfg["min.insync.replicas"] == "2" and cfg["unclean.leader.election.enable"] == "false"
        if not t.compacted:
            assert int(cfg["retention.ms"]) >= 7 * DAY_MS
    for audited in ("contracts.events", "billing.periods_closed", "billing.adjustments", "dlq.ingest"):
        assert by_name(audited).retention_ms >= 365 * DAY_MS
