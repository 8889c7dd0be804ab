"""The replay command recomputes a closed CPM period from raw impressions and the terms topic."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest
from confluent_kafka import Consumer, TopicPartition

from tally_billing.examples import cpm_terms_json
from tally_invoicing.apply import Source, apply_period_closed
from tally_invoicing.replay import run_replay
from tally_streams.avro import SchemaCatalog
from tally_streams.kafka import SyncProducer, producer_config
from tally_streams.topics import CONTRACT_TERMS, IMPRESSIONS

from .invoicing_support import closed, cpm_line, make_settings

pytestmark = pytest.mark.integration


async def test_replay_agrees_then_reports_a_difference(
    inv_dsn: str, inv_pool: asyncpg.Pool, catalog: SchemaCatalog, kafka_bootstrap: str,
    make_topic: Callable[..., str], capsys: pytest.CaptureFixture[str],
) -> None:
    terms_topic, imp_topic = make_topic(CONTRACT_TERMS, suffix="terms"), make_topic(IMPRESSIONS, suffix="imp")
    terms = cpm_terms_json()  # graduated 12.50 / 10.00 / 8.125, New York, campaigns cmp-100 and cmp-101
    start = datetime(2026, 3, 1, 5, 0, tzinfo=UTC)  # 2026-03-01 00:00 in New York
    p = SyncProducer(producer_config(kafka_bootstrap), catalog)
    p.produce(terms_topic, "contract_terms", {
        "contract_id": "ctr-r", "advertiser_id": "adv-acme", "contract_type": "cpm", "status": "active",
        "terminated_at": None, "revision": 3, "event_id": "e-3", "versions": [{
            "version": 1, "effective_from": datetime(2026, 1, 1, 5, tzinfo=UTC), "effective_to": None,
            "approved_at": datetime(2025, 12, 20, tzinfo=UTC), "terms_json": json.dumps(terms)}]}, key="ctr-r")

    def imp(i: int, **over: object) -> dict[str, object]:
        base = {"impression_id": f"imp-{i}", "event_time": start + timedelta(minutes=i), "advertiser_id": "adv-acme",
                "campaign_id": "cmp-100", "partner_id": None, "household_id": f"hh-{i % 7}", "device_type": "ctv",
                "ivt": "none", "measurement_source": "first_party"}
        base.update(over)
        return base

    billable = 40
    records = [imp(i) for i in range(billable)]
    records += [imp(3), imp(100, ivt="sivt"), imp(101, campaign_id="cmp-999"),
                imp(102, event_time=start - timedelta(minutes=1)), imp(103, advertiser_id="adv-other")]
    for r in records:
        p.produce(imp_topic, "impression", r, key=str(r["household_id"]))
    p.flush()
    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "replay-watermarks"})
    offsets = [{"topic": imp_topic, "partition": part, "offset": c.get_watermark_offsets(TopicPartition(imp_topic, part))[1]}
               for part in range(IMPRESSIONS.partitions)]
    c.close()
    rec = closed("ctr-r", "adv-acme", lines=[cpm_line(billable, "12.50")], minimum="5000.00")
    rec.update(time_zone="America/New_York", period_start=start, period_end=datetime(2026, 4, 1, 4, tzinfo=UTC),
               source_offsets=offsets)
    async with inv_pool.acquire() as conn:
        assert await apply_period_closed(conn, rec, Source("pc", 0, 0)) == "applied"
    settings = make_settings(inv_dsn, TALLY_KAFKA_BOOTSTRAP=kafka_bootstrap, TALLY_INVOICING_TERMS_TOPIC=terms_topic,
                             TALLY_INVOICING_IMPRESSIONS_TOPIC=imp_topic)

    assert await run_replay(settings, "ctr-r", "2026-03") == 0
    assert "no difference" in capsys.readouterr().out

    # Pretend metering had counted one impression too many: the replay shows it, to the cent.
    await inv_pool.execute(
        """UPDATE period_closes SET record = jsonb_set(jsonb_set(record, '{lines,0,quantity}', '41'),
               '{lines,0,amount_exact}', '"0.5125"') WHERE close_id = 'ctr-r/2026-03'""")
    assert await run_replay(settings, "ctr-r", "2026-03") == 1
    out = capsys.readouterr().out
    assert "DIFF cpm_impressions / v1 / rate 12.5: invoiced 41 = 0.5125, replayed 40 = 0.5" in out
    assert f"difference -1 = {Decimal('-0.0125'):f}" in out
    assert await run_replay(settings, "ctr-r", "2026-02") == 2
