"""`make up`'s last step: wait for Kafka, create the catalog's topics, apply every service's
migrations to its own database (``services/<name>/migrations`` -> ``tally_<name>``).
Idempotent: running it twice changes nothing the second time."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tally_kit.migrations import migrate
from tally_streams.kafka import ensure_topics, wait_for_broker
from tally_streams.topics import CATALOG

ROOT = Path(__file__).resolve().parents[2]


def pg_url(database: str) -> str:
    port = os.environ.get("TALLY_PG_PORT", "5433")
    return f"postgresql://tally:tally@127.0.0.1:{port}/{database}"


async def migrate_all() -> None:
    for folder in sorted(ROOT.glob("services/*/migrations")):
        service = folder.parent.name
        applied = await migrate(pg_url(f"tally_{service}"), folder)
        print(f"[bootstrap] {service}: {len(applied)} migration(s) applied")


def main() -> int:
    bootstrap = os.environ.get("TALLY_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    wait_for_broker(bootstrap, timeout_s=120)
    created = ensure_topics(bootstrap, CATALOG)
    print(f"[bootstrap] kafka {bootstrap}: {len(CATALOG)} catalog topics ({len(created)} created now)")
    asyncio.run(migrate_all())
    return 0


if __name__ == "__main__":
    sys.exit(main())
