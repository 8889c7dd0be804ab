"""Pacing settings are validated together, and the faust app is wired without touching Kafka."""

from __future__ import annotations

import pytest

from tally_kit.settings import SettingsError, load
from tally_pacing.settings import SPEC


def test_every_bad_setting_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as exc:
        load(SPEC, {"TALLY_PACING_CURVE": "0:0,0.5:1.5,1:1", "TALLY_PACING_TOLERANCE_PCT": "ten",
                    "TALLY_PACING_UNDER_ALERT_PCT": "120", "TALLY_PACING_PORT": "0"})
    named = sorted(p.split(":")[0] for p in exc.value.problems)
    assert named == ["TALLY_PACING_CURVE", "TALLY_PACING_PORT", "TALLY_PACING_TOLERANCE_PCT",
                     "TALLY_PACING_UNDER_ALERT_PCT"]


def test_the_app_has_its_tables_and_agents_and_reads_committed_records() -> None:
    from faust.transport.drivers import aiokafka as driver

    from tally_kit.clock import WallClock
    from tally_pacing.app import build
    from tally_pacing.transport import Consumer, ReadCommittedConsumerThread, Transport

    built = build(load(SPEC, {"TALLY_PACING_APP_ID": "unit-pacing"}), WallClock())
    app = built.app
    assert sorted(app.tables) == ["budget", "flights", "hourly", "periods"]
    assert sorted(t.changelog_topic.get_topic_name() for t in app.tables.values()) == [
        "unit-pacing-budget-changelog", "unit-pacing-flights-changelog", "unit-pacing-hourly-changelog",
        "unit-pacing-periods-changelog"]
    assert all(t.partitions == 4 for t in app.tables.values())
    assert app.transport.__class__ is Transport
    # (the integration test proves it: an aborted transaction's total never counts)
    assert Transport.Consumer is Consumer and issubclass(ReadCommittedConsumerThread, driver.AIOKafkaConsumerThread)


def test_the_table_changelogs_are_replicated_like_every_topic_a_service_creates(monkeypatch: pytest.MonkeyPatch) -> None:
    from tally_kit.clock import WallClock
    from tally_pacing.app import build

    monkeypatch.setenv("TALLY_TOPIC_REPLICATION", "3")
    monkeypatch.setenv("TALLY_TOPIC_MIN_INSYNC_REPLICAS", "2")
    app = build(load(SPEC, {"TALLY_PACING_APP_ID": "unit-pacing-rf"}), WallClock()).app
    assert app.conf.topic_replication_factor == 3
    for table in app.tables.values():
        topic = table.changelog_topic
        assert (topic.replicas or app.conf.topic_replication_factor) == 3, table.name  # faust's Topic.declare
        assert topic.config is not None and topic.config["min.insync.replicas"] == "2", table.name
