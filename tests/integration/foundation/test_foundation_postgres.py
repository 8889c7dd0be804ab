"""The migrations runner against the real PostgreSQL: in order, recorded, idempotent,
serialised between concurrent runners, and refusing an edited history."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from tally_kit.migrations import MigrationError, migrate

pytestmark = pytest.mark.integration


def write(folder: Path, name: str, sql: str) -> None:
    (folder / name).write_text(sql)


async def test_migrations_apply_in_order_once(fresh_database: str, tmp_path: Path) -> None:
    write(tmp_path, "0001_create_accounts.sql", "CREATE TABLE accounts (id text PRIMARY KEY, balance numeric(38,12) NOT NULL);")
    write(tmp_path, "0002_add_currency.sql", "ALTER TABLE accounts ADD COLUMN currency char(3) NOT NULL DEFAULT 'USD';")
    assert await migrate(fresh_database, tmp_path) == [1, 2]
    assert await migrate(fresh_database, tmp_path) == []
    conn = await asyncpg.connect(fresh_database)
    try:
        cols = [r["column_name"] for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name='accounts' ORDER BY ordinal_position")]
        rows = await conn.fetch("SELECT version, name FROM tally_schema_migrations ORDER BY version")
        recorded = [(r["version"], r["name"]) for r in rows]
    finally:
        await conn.close()
    assert cols == ["id", "balance", "currency"]
    assert recorded == [(1, "create_accounts"), (2, "add_currency")]


async def test_a_failing_migration_leaves_nothing_half_applied(fresh_database: str, tmp_path: Path) -> None:
    write(tmp_path, "0001_ok.sql", "CREATE TABLE a (id int);")
    write(tmp_path, "0002_broken.sql", "CREATE TABLE b (id int); SELECT * FROM no_such_table;")
    with pytest.raises(asyncpg.UndefinedTableError):
        await migrate(fresh_database, tmp_path)
    conn = await asyncpg.connect(fresh_database)
    try:
        assert await conn.fetchval("SELECT to_regclass('b')") is None
        assert await conn.fetchval("SELECT max(version) FROM tally_schema_migrations") == 1
    finally:
        await conn.close()


async def test_concurrent_runners_apply_each_migration_once(fresh_database: str, tmp_path: Path) -> None:
    write(tmp_path, "0001_t.sql", "CREATE TABLE t (id int);")
    write(tmp_path, "0002_u.sql", "CREATE TABLE u (id int);")
    results = await asyncio.gather(*(migrate(fresh_database, tmp_path) for _ in range(4)))
    assert sorted(v for r in results for v in r) == [1, 2]


async def test_an_applied_migration_that_changed_is_refused(fresh_database: str, tmp_path: Path) -> None:
    write(tmp_path, "0001_t.sql", "CREATE TABLE t (id int);")
    await migrate(fresh_database, tmp_path)
    write(tmp_path, "0001_t.sql", "CREATE TABLE t (id bigint);")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(fresh_database, tmp_path)
