"""Shared fixtures. Integration tests talk to the real stack started by `make up`:
Kafka at TALLY_KAFKA_BOOTSTRAP (127.0.0.1:9092) and PostgreSQL at 127.0.0.1:TALLY_PG_PORT (5433).
Every test gets throwaway topics (`test-<uuid>-...`) and, when it asks, its own database."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from tally_kit.db import drop_database
from tally_streams.avro import SchemaCatalog
from tally_streams.topics import TopicSpec

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def catalog() -> SchemaCatalog:
    return SchemaCatalog.load(ROOT / "schemas")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    from tally_streams.kafka import wait_for_broker

    bootstrap = os.environ.get("TALLY_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    wait_for_broker(bootstrap, timeout_s=60)
    return bootstrap


@pytest.fixture
def make_topic(kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """Create a unique throwaway topic (optionally shaped like a catalog spec); deleted afterwards."""
    from tally_streams.kafka import delete_topics, ensure_topics

    created: list[str] = []

    def make(like: TopicSpec | None = None, *, partitions: int = 1, compacted: bool = False, suffix: str = "t") -> str:
        name = f"test-{uuid.uuid4().hex[:12]}-{suffix}"
        spec = like.renamed(name) if like is not None else TopicSpec(name, "test", "test", partitions=partitions, compacted=compacted)
        ensure_topics(kafka_bootstrap, [spec])
        created.append(name)
        return name

    yield make
    delete_topics(kafka_bootstrap, created)


def pg_admin_dsn(database: str = "postgres") -> str:
    port = os.environ.get("TALLY_PG_PORT", "5433")
    return f"postgresql://tally:tally@127.0.0.1:{port}/{database}"


@pytest.fixture
async def fresh_database() -> AsyncIterator[str]:
    """A new, empty database for this test (dropped afterwards); yields its DSN."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(pg_admin_dsn("tally_contracts"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield pg_admin_dsn(name)
    admin = await asyncpg.connect(pg_admin_dsn("tally_contracts"))
    try:
        await drop_database(admin, name)
    finally:
        await admin.close()
