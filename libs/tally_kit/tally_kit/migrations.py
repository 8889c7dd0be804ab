"""Plain-SQL migrations: ``NNNN_name.sql`` files applied in order, each in its own transaction,
recorded in ``tally_schema_migrations`` with a checksum. Safe to run twice and from two
processes at once (an advisory lock serialises them). An applied file that has since changed
is an error: history is fixed, a change is a new migration.

    python -m tally_kit.migrations --dsn postgresql://... --dir services/contracts/migrations
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncpg

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_ID = 0x7A11_0001


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


class MigrationError(RuntimeError):
    pass


def discover(folder: str | Path) -> list[Migration]:
    out = []
    for f in sorted(Path(folder).iterdir()):
        if f.suffix != ".sql":
            continue
        m = _FILE.match(f.name)
        if not m:
            raise MigrationError(f"{f}: migration files are named NNNN_lower_snake.sql")
        out.append(Migration(int(m.group(1)), m.group(2), f.read_text("utf-8")))
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{folder}: two migrations share a version number")
    return out


async def apply(conn: asyncpg.Connection, migrations: list[Migration]) -> list[int]:
    """Apply what is missing; returns the versions applied now."""
    applied_now: list[int] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS tally_schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"]: r["checksum"] for r in await conn.fetch("SELECT version, checksum FROM tally_schema_migrations")}
        for m in migrations:
            if m.version in done:
                if done[m.version] != m.checksum:
                    raise MigrationError(f"migration {m.version:04d}_{m.name} changed after it was applied; add a new migration instead")
                continue
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO tally_schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    m.version, m.name, m.checksum,
                )
            applied_now.append(m.version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    return applied_now


async def migrate(dsn: str, folder: str | Path) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        return await apply(conn, discover(folder))
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tally-migrate", description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--dsn", required=True)
    p.add_argument("--dir", required=True, help="folder of NNNN_name.sql files")
    args = p.parse_args(argv)
    applied = asyncio.run(migrate(args.dsn, args.dir))
    print(f"{args.dir}: applied {len(applied)} migration(s){': ' + ', '.join(map(str, applied)) if applied else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
