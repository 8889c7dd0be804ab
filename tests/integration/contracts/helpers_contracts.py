"""Shared helpers for the contracts integration tests (not a test module)."""

from __future__ import annotations

from typing import Any

import asyncpg

from tally_streams.avro import SchemaCatalog


async def outbox(dsn: str, catalog: SchemaCatalog, topic: str = "events", contract_id: str | None = None) -> list[dict[str, Any]]:
    """The decoded outbox records of ``topic`` ('events' or 'terms'), in outbox order."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT value FROM outbox WHERE topic = $1 AND ($2::text IS NULL OR contract_id = $2) "
                                "ORDER BY id", topic, contract_id)
    finally:
        await conn.close()
    codec = catalog.codec("contract_event" if topic == "events" else "contract_terms")
    return [codec.decode(bytes(r["value"])) for r in rows]
