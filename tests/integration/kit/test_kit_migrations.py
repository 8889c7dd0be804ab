"""The migrations runner against the real PostgreSQL: the kit's migrations before the service's own,
in order, recorded, idempotent, serialised between concurrent runners, refusing an edited history, and
adopting the copies of the kit's DDL that services applied as their own before the kit shipped it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from tally_kit import audit
from tally_kit.migrations import FORMER_COPIES, KIT_SQL, Migration, MigrationError, kit_migrations, migrate

pytestmark = pytest.mark.integration
KIT = ["kit/0001_audit_log", "kit/0002_idempotency"]


def write(folder: Path, name: str, sql: str) -> None:
    (folder / name).write_text(sql)


async def test_migrations_apply_in_order_once(fresh_database: str, tmp_path: Path) -> None:
    write(tmp_path, "0001_create_accounts.sql", "CREATE TABLE accounts (id text PRIMARY KEY, balance numeric(38,12) NOT NULL);")
    write(tmp_path, "0002_add_currency.sql", "ALTER TABLE accounts ADD COLUMN currency char(3) NOT NULL DEFAULT 'USD';")
    assert await migrate(fresh_database, tmp_path) == [*KIT, "0001_create_accounts", "0002_add_currency"]
    assert await migrate(fresh_database, tmp_path) == []
    conn = await asyncpg.connect(fresh_database)
    try:
        cols = [r["column_name"] for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name='accounts' ORDER BY ordinal_position")]
        rows = await conn.fetch("SELECT namespace, version, name FROM tally_schema_migrations ORDER BY namespace DESC, version")
        recorded = [(r["namespace"], r["version"], r["name"]) for r in rows]
        kit_tables = [await conn.fetchval("SELECT to_regclass($1)::text", t) for t in ("audit_log", "idempotency_keys")]
    finally:
        await conn.close()
    assert cols == ["id", "balance", "currency"]
    assert recorded == [("kit", 1, "audit_log"), ("kit", 2, "idempotency"), ("", 1, "create_accounts"), ("", 2, "add_currency")]
    assert kit_tables == ["audit_log", "idempotency_keys"]


async def test_a_failing_migration_leaves_nothing_half_applied(fresh_database: str, tmp_path: Path) -> None:
    write(tmp_path, "0001_ok.sql", "CREATE TABLE a (id int);")
    write(tmp_path, "0002_broken.sql", "CREATE TABLE b (id int); SELECT * FROM no_such_table;")
    with pytest.raises(asyncpg.UndefinedTableError):
        await migrate(fresh_database, tmp_path)
    conn = await asyncpg.connect(fresh_database)
    try:
        assert await conn.fetchval("SELECT to_regclass('b')") is None
        assert await conn.fetchval("SELECT max(version) FROM tally_schema_migrations WHERE namespace = ''") == 1
    finally:
        await conn.close()


async def test_concurrent_runners_apply_each_migration_once(fresh_database: str, tmp_path: Path) -> None:
    write(tmp_path, "0001_t.sql", "CREATE TABLE t (id int);")
    write(tmp_path, "0002_u.sql", "CREATE TABLE u (id int);")
    results = await asyncio.gather(*(migrate(fresh_database, tmp_path) for _ in range(4)))
    assert sorted(v for r in results for v in r) == sorted([*KIT, "0001_t", "0002_u"])


async def test_an_applied_migration_that_changed_is_refused(fresh_database: str, tmp_path: Path) -> None:
    write(tmp_path, "0001_t.sql", "CREATE TABLE t (id int);")
    await migrate(fresh_database, tmp_path)
    write(tmp_path, "0001_t.sql", "CREATE TABLE t (id bigint);")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(fresh_database, tmp_path)


def former_copy(kit_file: str, first_line: str) -> str:
    """A service's copy of a kit migration as it was applied before the kit shipped it: its own first line."""
    body = (KIT_SQL / kit_file).read_text("utf-8").split("\nCREATE TABLE", 1)[1]
    return f"{first_line}\nCREATE TABLE{body}"


OLD_AUDIT = former_copy("0001_audit_log.sql", "-- Append-only, hash-chained audit log (tally_kit.audit). Copied verbatim from AUDIT_DDL.")
OLD_IDEMPOTENCY = former_copy("0002_idempotency.sql",
                              "-- Idempotency-Key records (tally_kit.idempotency). Copied verbatim from IDEMPOTENCY_DDL.")


async def old_runner(dsn: str, applied: list[tuple[int, str, str]]) -> None:
    """What a database migrated before the kit owned its SQL holds: the copies applied as the service's own,
    recorded in the bookkeeping table of that time (keyed by version alone)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("""CREATE TABLE tally_schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
                              checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())""")
        for version, name, sql in applied:
            await conn.execute(sql)
            await conn.execute("INSERT INTO tally_schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                               version, name, Migration(version, name, sql).checksum)
    finally:
        await conn.close()


def test_the_old_copies_are_the_ones_the_runner_knows() -> None:
    assert Migration(1, "audit_log", OLD_AUDIT).checksum in FORMER_COPIES["audit_log"]
    assert Migration(3, "idempotency", OLD_IDEMPOTENCY).checksum in FORMER_COPIES["idempotency"]


async def test_a_database_that_ran_the_copies_adopts_the_kit_migrations_without_running_them(
        fresh_database: str, tmp_path: Path) -> None:
    mine = "CREATE TABLE invoices (id text PRIMARY KEY);"
    await old_runner(fresh_database, [(1, "audit_log", OLD_AUDIT), (2, "invoicing", mine), (3, "idempotency", OLD_IDEMPOTENCY)])
    conn = await asyncpg.connect(fresh_database)
    try:
        async with conn.transaction():
            await audit.append(conn, entity_type="invoice", entity_id="i-1", action="issue", actor="alice")
        write(tmp_path, "0002_invoicing.sql", mine)
        assert await migrate(fresh_database, tmp_path) == KIT
        assert await migrate(fresh_database, tmp_path) == []
        rows = await conn.fetch("SELECT namespace, version, name, checksum FROM tally_schema_migrations ORDER BY namespace DESC, version")
        assert [(r["namespace"], r["version"], r["name"]) for r in rows] == [
            ("kit", 1, "audit_log"), ("kit", 2, "idempotency"), ("", 2, "invoicing")]
        assert [r["checksum"] for r in rows[:2]] == [m.checksum for m in kit_migrations()]
        # nothing ran again: the entry written before is there and the chain still verifies
        assert await conn.fetchval("SELECT count(*) FROM audit_log") == 1
        assert await audit.verify(conn) is None
        # the service's next migration may take a number a copy had
        write(tmp_path, "0003_credit_notes.sql", "CREATE TABLE credit_notes (id text PRIMARY KEY);")
        assert await migrate(fresh_database, tmp_path) == ["0003_credit_notes"]
    finally:
        await conn.close()


async def test_an_unknown_copy_of_a_kit_migration_is_refused_and_nothing_changes(fresh_database: str, tmp_path: Path) -> None:
    edited = OLD_AUDIT.replace("CREATE INDEX audit_log_entity", "CREATE INDEX audit_log_by_entity")
    await old_runner(fresh_database, [(1, "audit_log", edited)])
    with pytest.raises(MigrationError, match="not a known copy of kit/0001_audit_log"):
        await migrate(fresh_database, tmp_path)
    conn = await asyncpg.connect(fresh_database)
    try:
        rows = await conn.fetch("SELECT namespace, version, name FROM tally_schema_migrations")
        assert [(r["namespace"], r["version"], r["name"]) for r in rows] == [("", 1, "audit_log")]
    finally:
        await conn.close()


async def test_a_service_folder_still_holding_a_copy_is_refused(fresh_database: str, tmp_path: Path) -> None:
    write(tmp_path, "0001_audit_log.sql", OLD_AUDIT)
    with pytest.raises(MigrationError, match="is a copy of a tally_kit migration"):
        await migrate(fresh_database, tmp_path)
