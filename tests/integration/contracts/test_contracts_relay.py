"""The outbox relay as a real process, killed with SIGKILL mid-stream: no loss, no reorder,
and a duplicate after the crash carries the same event id."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tally_streams.kafka import AvroConsumer, consumer_config
from tally_streams.topics import CONTRACT_EVENTS, CONTRACT_TERMS

from .conftest import APPROVER, OPS, Env, cpm_terms
from .helpers_contracts import outbox

pytestmark = pytest.mark.integration


def _start_relay(env: Env, bootstrap: str, events_topic: str, terms_topic: str, log: Path) -> subprocess.Popen[bytes]:
    child_env = {**os.environ, "TALLY_CONTRACTS_DATABASE_URL": env.dsn, "TALLY_KAFKA_BOOTSTRAP": bootstrap,
                 "TALLY_CONTRACTS_EVENTS_TOPIC": events_topic, "TALLY_CONTRACTS_TERMS_TOPIC": terms_topic,
                 "TALLY_CONTRACTS_RELAY_BATCH": "1", "TALLY_CONTRACTS_RELAY_IDLE_S": "0.05"}
    with log.open("ab") as f:
        return subprocess.Popen([sys.executable, "-m", "tally_contracts", "relay"], env=child_env,
                                stdout=f, stderr=subprocess.STDOUT)


async def _published(conn: asyncpg.Connection) -> tuple[int, int]:
    row = await conn.fetchrow("SELECT count(*) FILTER (WHERE published_at IS NOT NULL) AS done, count(*) AS total FROM outbox")
    return int(row["done"]), int(row["total"])


async def _wait_for(cond: Callable[[], Any], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def _consume(bootstrap: str, topic: str, codec: Any, want: int, timeout_s: float = 60) -> list[tuple[bytes, dict[str, Any]]]:
    consumer = AvroConsumer(consumer_config(bootstrap, f"test-{uuid.uuid4().hex}"), [topic], codec)
    seen: list[tuple[bytes, dict[str, Any]]] = []
    ids: set[str] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while len(ids) < want and time.monotonic() < deadline:
            batch = consumer.poll_batch(500, 0.5)
            assert not batch.failed
            for r in batch.records:
                seen.append((r.key or b"", r.value))
                ids.add(r.value["event_id"])
    finally:
        consumer.close()
    return seen


async def test_relay_killed_with_sigkill_loses_nothing_and_keeps_each_contracts_order(
    env: Env, kafka_bootstrap: str, make_topic: Callable[..., str], tmp_path: Path
) -> None:
    events_topic, terms_topic = make_topic(like=CONTRACT_EVENTS), make_topic(like=CONTRACT_TERMS)
    ids = []
    for i in range(12):
        c = await env.ok("POST", "/contracts", OPS, {"name": f"Relay {i}", "terms": cpm_terms()})
        await env.ok("POST", f"/contracts/{c['id']}/versions/1/submit", OPS)
        ids.append(c["id"])
    log = tmp_path / "relay.log"
    conn = await asyncpg.connect(env.dsn)
    relay = _start_relay(env, kafka_bootstrap, events_topic, terms_topic, log)
    try:
        await _wait_for(lambda: _some_published(conn), 60, "the relay to publish something")
        relay.send_signal(signal.SIGKILL)
        relay.wait(10)
        done, total = await _published(conn)
        # the crash window: records the broker acked but the relay never marked (it died before the
        # UPDATE) — recreate it for the last rows so the restart must re-publish them
        await conn.execute("""UPDATE outbox SET published_at = NULL WHERE id IN (
                                  SELECT id FROM outbox WHERE published_at IS NOT NULL ORDER BY id DESC LIMIT 3)""")
        # life goes on while the relay is down
        for cid in ids:
            await env.ok("POST", f"/contracts/{cid}/versions/1/approve", APPROVER, {})
        relay = _start_relay(env, kafka_bootstrap, events_topic, terms_topic, log)
        await _wait_for(lambda: _all_published(conn), 90, "the restarted relay to publish everything")
    finally:
        relay.kill()
        relay.wait(10)
        await conn.close()
    assert done < total, "the relay was killed mid-stream"

    expected = await outbox(env.dsn, env.catalog, "events")
    records = await asyncio.to_thread(_consume, kafka_bootstrap, events_topic, env.catalog.codec("contract_event"),
                                      len(expected))
    got_ids = [v["event_id"] for _, v in records]
    assert set(got_ids) == {e["event_id"] for e in expected}  # nothing lost
    assert len(got_ids) > len(set(got_ids))  # the re-published ones arrived twice, under the same event id
    for cid in ids:
        first_seen: list[str] = []
        for key, v in records:
            if v["contract_id"] == cid:
                assert key == cid.encode()
                if v["event_id"] not in first_seen:
                    first_seen.append(v["event_id"])
        assert first_seen == [e["event_id"] for e in expected if e["contract_id"] == cid]  # never reordered
    terms_expected = await outbox(env.dsn, env.catalog, "terms")
    terms_records = await asyncio.to_thread(_consume, kafka_bootstrap, terms_topic, env.catalog.codec("contract_terms"),
                                            len(terms_expected))
    assert {v["event_id"] for _, v in terms_records} == {t["event_id"] for t in terms_expected}
    assert len(terms_expected) == len(ids)


async def _some_published(conn: asyncpg.Connection) -> bool:
    return (await _published(conn))[0] >= 4


async def _all_published(conn: asyncpg.Connection) -> bool:
    done, total = await _published(conn)
    return done == total


async def test_a_second_relay_stands_by_while_the_first_leads(env: Env, kafka_bootstrap: str,
                                                              make_topic: Callable[..., str]) -> None:
    from tally_contracts.relay import RELAY_LOCK_ID, Relay

    events_topic, terms_topic = make_topic(like=CONTRACT_EVENTS), make_topic(like=CONTRACT_TERMS)
    await env.ok("POST", "/contracts", OPS, {"name": "Standby", "terms": cpm_terms()})
    holder = await asyncpg.connect(env.dsn)
    stop = asyncio.Event()
    relay = Relay(env.dsn, kafka_bootstrap, {"events": events_topic, "terms": terms_topic}, idle_s=0.05)
    task = asyncio.create_task(relay.run(stop))
    try:
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_ID)  # someone else leads
        await asyncio.sleep(0.5)  # give the standby time to (wrongly) publish
        assert (await _published(holder))[0] == 0
        await holder.execute("SELECT pg_advisory_unlock($1)", RELAY_LOCK_ID)
        await _wait_for(lambda: _all_published(holder), 30, "the standby to take over")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await holder.close()


async def test_a_contract_reads_published_once_the_relay_has_put_all_its_changes_on_kafka(
    env: Env, kafka_bootstrap: str, make_topic: Callable[..., str], tmp_path: Path
) -> None:
    contract_id = await env.approved_contract(cpm_terms())
    assert (await env.ok("GET", f"/contracts/{contract_id}", OPS))["published"] is False  # no relay runs yet
    relay = _start_relay(env, kafka_bootstrap, make_topic(like=CONTRACT_EVENTS), make_topic(like=CONTRACT_TERMS),
                         tmp_path / "relay.log")
    try:
        async def published() -> bool:
            return bool((await env.ok("GET", f"/contracts/{contract_id}", OPS))["published"])

        await _wait_for(published, 60, "the contract to read published")
        conn = await asyncpg.connect(env.dsn)
        try:
            assert (await _published(conn))[0] == (await _published(conn))[1]  # it says so only when every row is out
        finally:
            await conn.close()
    finally:
        relay.terminate()
        relay.wait(30)
    await env.ok("POST", f"/contracts/{contract_id}/terminate", OPS,
                 {"effective_date": "2026-06-01", "reason": "test: a later change is unpublished again"})
    assert (await env.ok("GET", f"/contracts/{contract_id}", OPS))["published"] is False
