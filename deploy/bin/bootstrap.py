"""`make up`'s last step: wait for Kafka, create the catalog's topics, apply every service's
migrations to its own database (``services/<name>/migrations`` -> ``tally_<name>``), each after
the kit's own (``tally_kit/sql``: the audit log, Idempotency-Key records).
Idempotent: running it twice changes nothing the second time.

``TALLY_TOPIC_REPLICATION`` and ``TALLY_TOPIC_MIN_INSYNC_REPLICAS`` (default 1 and 1, the single
local broker) set the catalog's replication; `make up-cluster` passes the production 3 and 2 and
waits for that many brokers first."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient

from tally_kit.migrations import migrate
from tally_streams.kafka import ensure_topics, topic_replication, wait_for_broker
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


def wait_for_brokers(bootstrap: str, count: int, timeout_s: float) -> None:
    """Until ``count`` brokers are registered: a topic with replication factor N needs N of them."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout_s
    while len(admin.list_topics(timeout=5).brokers) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {count} brokers at {bootstrap} after {timeout_s:.0f}s")
        time.sleep(0.2)


def main() -> int:
    bootstrap = os.environ.get("TALLY_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    replication, min_insync = topic_replication()
    wait_for_broker(bootstrap, timeout_s=120)
    wait_for_brokers(bootstrap, replication, timeout_s=120)
    created = ensure_topics(bootstrap, CATALOG, replication_factor=replication, min_insync_replicas=min_insync)
    print(f"[bootstrap] kafka {bootstrap}: {len(CATALOG)} catalog topics ({len(created)} created now, "
          f"replication {replication}, min.insync.replicas {min_insync})")
    asyncio.run(migrate_all())
    return 0


if __name__ == "__main__":
    sys.exit(main())
