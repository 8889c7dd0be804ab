"""Plain-SQL migrations: ``NNNN_name.sql`` files applied in order, each in its own transaction,
recorded in ``tally_schema_migrations`` with a checksum. Safe to run twice and from two
processes at once (an advisory lock serialises them). An applied file that has since changed
is an error: history is fixed, a change is a new migration.

The kit owns the SQL of its own tables (``tally_kit/sql``: the audit log, the Idempotency-Key
records). :func:`migrate` applies them to every database first, as ``kit/0001_audit_log``,
``kit/0002_idempotency``, …, then the service's folder (``0001_contracts``, …): each namespace
numbers its migrations on its own, and a row is keyed by (namespace, version).

Until issue 21 the services carried copies of the kit's DDL as their own migrations
(:data:`FORMER_COPIES`). On a database that applied such a copy the runner records the kit
migration as applied and forgets the copy's row, in one transaction, without running any SQL.

    python -m tally_kit.migrations --dsn postgresql://... --dir services/contracts/migrations
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import sys
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

import asyncpg

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_ID = 0x7A11_0001

#: The namespace of the kit's migrations; a service's own have the empty namespace.
KIT = "kit"
KIT_SQL: Traversable = files("tally_kit") / "sql"

#: sha256 of the copies of a kit migration that services applied as their own before the kit shipped it,
#: by the kit migration's name: services/contracts/migrations/0002_audit_log.sql and 0003_idempotency.sql,
#: services/invoicing/migrations/0001_audit_log.sql and 0003_idempotency.sql (byte-identical pairs).
FORMER_COPIES: dict[str, frozenset[str]] = {
    "audit_log": frozenset({"0b7c9238b13b67acaaca4b18475b7b4a4aeb9a94020c1877059ea9d061988a8d"}),
    "idempotency": frozenset({"baafc5ab0174d9795f76eb82fce8953f39487f985693db0b4cc942160dc479b9"}),
}

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS tally_schema_migrations (
    namespace  text        NOT NULL DEFAULT '',
    version    integer     NOT NULL,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, version));
-- a table from before namespaces: its rows are the service's own
ALTER TABLE tally_schema_migrations ADD COLUMN IF NOT EXISTS namespace text NOT NULL DEFAULT '';
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str
    namespace: str = ""

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def label(self) -> str:
        """``kit/0001_audit_log`` for the kit's, ``0001_contracts`` for a service's own."""
        return f"{self.namespace + '/' if self.namespace else ''}{self.version:04d}_{self.name}"


class MigrationError(RuntimeError):
    pass


def discover(folder: str | Path | Traversable, namespace: str = "") -> list[Migration]:
    if isinstance(folder, str):
        folder = Path(folder)
    out = []
    for f in sorted(folder.iterdir(), key=lambda f: f.name):
        if not f.name.endswith(".sql"):
            continue
        m = _FILE.match(f.name)
        if not m:
            raise MigrationError(f"{f}: migration files are named NNNN_lower_snake.sql")
        out.append(Migration(int(m.group(1)), m.group(2), f.read_text("utf-8"), namespace))
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{folder}: two migrations share a version number")
    return out


def kit_migrations() -> list[Migration]:
    return discover(KIT_SQL, KIT)


async def _upgrade_bookkeeping(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        await conn.execute(_BOOKKEEPING)
        old_key = await conn.fetchval(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'tally_schema_migrations'::regclass "
            "AND contype = 'p' AND cardinality(conkey) = 1")
        if old_key is not None:
            await conn.execute(f'ALTER TABLE tally_schema_migrations DROP CONSTRAINT "{old_key}", '
                               "ADD PRIMARY KEY (namespace, version)")


def _former_copy(m: Migration, own_rows: dict[str, tuple[int, str]]) -> int | None:
    """The version of the service's own row that is a copy of kit migration ``m``, if there is one."""
    if m.namespace != KIT or m.name not in own_rows:
        return None
    version, checksum = own_rows[m.name]
    if checksum not in FORMER_COPIES.get(m.name, frozenset()):
        raise MigrationError(f"{version:04d}_{m.name} was applied as the service's own migration but is not a known copy "
                             f"of {m.label}: reconcile tally_schema_migrations by hand")
    return version


async def apply(conn: asyncpg.Connection, migrations: list[Migration]) -> list[str]:
    """Apply what is missing, in the order given; returns the labels of those applied now."""
    for m in migrations:
        if not m.namespace and any(m.checksum in copies for copies in FORMER_COPIES.values()):
            raise MigrationError(f"{m.label} is a copy of a tally_kit migration, which the kit applies itself: delete it")
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await _upgrade_bookkeeping(conn)
        rows = await conn.fetch("SELECT namespace, version, name, checksum FROM tally_schema_migrations")
        done = {(r["namespace"], r["version"]): r["checksum"] for r in rows}
        own_rows = {r["name"]: (r["version"], r["checksum"]) for r in rows if r["namespace"] == ""}
        for m in migrations:
            if (m.namespace, m.version) in done:
                if done[(m.namespace, m.version)] != m.checksum:
                    raise MigrationError(f"migration {m.label} changed after it was applied; add a new migration instead")
                continue
            async with conn.transaction():
                copy_version = _former_copy(m, own_rows)
                if copy_version is None:
                    await conn.execute(m.sql)
                else:
                    await conn.execute("DELETE FROM tally_schema_migrations WHERE namespace = '' AND version = $1", copy_version)
                await conn.execute(
                    "INSERT INTO tally_schema_migrations (namespace, version, name, checksum) VALUES ($1, $2, $3, $4)",
                    m.namespace, m.version, m.name, m.checksum,
                )
            applied_now.append(m.label)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    return applied_now


async def migrate(dsn: str, folder: str | Path) -> list[str]:
    """The kit's migrations, then ``folder``'s; returns the labels applied now."""
    migrations = kit_migrations() + discover(folder)
    conn = await asyncpg.connect(dsn)
    try:
        return await apply(conn, migrations)
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tally-migrate", description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--dsn", required=True)
    p.add_argument("--dir", required=True, help="folder of NNNN_name.sql files (applied after the kit's own)")
    args = p.parse_args(argv)
    applied = asyncio.run(migrate(args.dsn, args.dir))
    print(f"{args.dir}: applied {len(applied)} migration(s){': ' + ', '.join(applied) if applied else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
