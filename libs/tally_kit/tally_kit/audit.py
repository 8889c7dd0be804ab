"""Append-only, hash-chained audit log for asyncpg services.

Every entry records who (``actor``, tenant), when (``at``), what (``entity_type``,
``entity_id``, ``action``) and the state ``before`` and ``after``. Each entry holds the hash
of the previous one (``prev_hash``) and its own ``hash`` = SHA-256 over the canonical JSON of
its fields plus ``prev_hash``; so editing, deleting or reordering any entry breaks the chain
at that point, and :func:`verify` (or ``python -m tally_kit.audit verify --dsn ...``) reports
the first broken link.

How a service uses it:

1. Migrate its database with :func:`tally_kit.migrations.migrate`, which applies the kit's
   ``kit/0001_audit_log`` (:data:`AUDIT_DDL`) before the service's own migrations. It creates
   ``audit_log``, the one-row ``audit_chain_head`` and a trigger that refuses UPDATE, DELETE
   and TRUNCATE on ``audit_log`` for every role, the owner included, as long as the trigger
   is enabled. In production the migrations run as an owner role and the service as a role
   granted only SELECT/INSERT on ``audit_log`` (see the DDL's comment), so the service cannot
   even disable the trigger.
2. Inside the transaction that makes a change, call :func:`append` on the same connection.
   The entry commits or rolls back with the change.

Appends are serialised by ``SELECT ... FOR UPDATE`` on the chain-head row: two concurrent
transactions can never link to the same predecessor (no forked chain); the second waits for
the first to commit or roll back. Sequence gaps (from rolled-back transactions) are harmless:
the chain links by hash, not by ``seq`` arithmetic.

Canonical JSON: sorted keys, no whitespace, ``Decimal`` as its string, ``datetime`` as ISO
8601 in UTC with microseconds; floats are refused (money is never a float).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import asyncpg
from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge

from .clock import wait_or_stop
from .db import POOL_KEY
from .migrations import KIT_SQL

log = logging.getLogger("tally.audit")

GENESIS_HASH = "0" * 64

#: The DDL (the kit's migration ``kit/0001_audit_log``, which :mod:`tally_kit.migrations` applies to every
#: database). Table names are fixed so the verifier CLI works on any service.
AUDIT_DDL = (KIT_SQL / "0001_audit_log.sql").read_text("utf-8")


class AuditError(RuntimeError):
    """Misuse of the audit API (e.g. appending outside a transaction)."""


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    entity_type: str
    entity_id: str
    action: str
    actor: str
    tenant_type: str | None
    tenant_id: str | None
    before: Any
    after: Any
    at: datetime
    prev_hash: str
    hash: str

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq, "entity_type": self.entity_type, "entity_id": self.entity_id,
            "action": self.action, "actor": self.actor, "tenant_type": self.tenant_type,
            "tenant_id": self.tenant_id, "before": self.before, "after": self.after,
            "at": _iso(self.at), "prev_hash": self.prev_hash, "hash": self.hash,
        }


@dataclass(frozen=True)
class BrokenLink:
    """The first entry at which the chain does not hold, and why."""

    seq: int
    reason: str

    def __str__(self) -> str:
        return f"audit chain broken at seq {self.seq}: {self.reason}"


def _iso(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("audit timestamps must be timezone-aware")
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def _default(o: Any) -> Any:
    if isinstance(o, Decimal):
        return str(o)
    if isinstance(o, datetime):
        return _iso(o)
    if isinstance(o, date):
        return o.isoformat()
    if isinstance(o, (set, frozenset, tuple)):
        return sorted(o) if isinstance(o, (set, frozenset)) else list(o)
    raise TypeError(f"{type(o).__name__} is not allowed in an audit entry")


def _refuse_floats(o: Any, path: str = "$") -> None:
    if isinstance(o, float):
        raise TypeError(f"{path}: floats are not allowed in an audit entry (use Decimal or str)")
    if isinstance(o, dict):
        for k, v in o.items():
            _refuse_floats(v, f"{path}.{k}")
    elif isinstance(o, (list, tuple)):
        for i, v in enumerate(o):
            _refuse_floats(v, f"{path}[{i}]")


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, Decimals as strings, datetimes as UTC ISO with microseconds."""
    _refuse_floats(value)
    return json.dumps(value, default=_default, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def normalise(value: Any) -> Any:
    """The JSON value as it will read back from ``jsonb`` (Decimals become strings, ...)."""
    return None if value is None else json.loads(canonical_json(value))


def entry_hash(
    *, seq: int, entity_type: str, entity_id: str, action: str, actor: str, tenant_type: str | None,
    tenant_id: str | None, before: Any, after: Any, at: datetime, prev_hash: str,
) -> str:
    """SHA-256 (hex) of the canonical JSON of an entry's fields and its predecessor's hash."""
    doc = {
        "seq": seq, "entity_type": entity_type, "entity_id": entity_id, "action": action, "actor": actor,
        "tenant_type": tenant_type, "tenant_id": tenant_id, "before": normalise(before),
        "after": normalise(after), "at": _iso(at), "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(doc).encode()).hexdigest()


async def lock_head(conn: asyncpg.Connection) -> None:
    """Take the chain-head lock now, before any other row lock of the transaction. A transaction
    that locks rows and then appends would otherwise wait for the head while holding them, and
    deadlock with one that holds the head and wants those rows (a batch of many appends does)."""
    if not conn.is_in_transaction():
        raise AuditError("audit.lock_head must run inside the transaction that appends")
    await conn.execute("SELECT 1 FROM audit_chain_head WHERE singleton FOR UPDATE")


async def append(
    conn: asyncpg.Connection,
    *,
    entity_type: str,
    entity_id: str,
    action: str,
    actor: str,
    before: Any = None,
    after: Any = None,
    tenant_type: str | None = None,
    tenant_id: str | None = None,
    at: datetime | None = None,
) -> AuditEntry:
    """Append one entry, linked to the current chain head. Call inside the caller's transaction
    (the entry commits with the change it records); concurrent appenders queue on the head row."""
    if not conn.is_in_transaction():
        raise AuditError("audit.append must run inside the transaction that makes the change")
    when = at if at is not None else datetime.now(UTC)
    before_n, after_n = normalise(before), normalise(after)
    head = await conn.fetchrow("SELECT seq, hash FROM audit_chain_head WHERE singleton FOR UPDATE")
    if head is None:
        raise AuditError("audit_chain_head is empty: were the kit's migrations (kit/0001_audit_log) applied?")
    seq = int(await conn.fetchval("SELECT nextval(pg_get_serial_sequence('audit_log', 'seq'))"))
    prev = str(head["hash"])
    digest = entry_hash(seq=seq, entity_type=entity_type, entity_id=entity_id, action=action, actor=actor,
                        tenant_type=tenant_type, tenant_id=tenant_id, before=before_n, after=after_n,
                        at=when, prev_hash=prev)
    await conn.execute(
        """INSERT INTO audit_log (seq, entity_type, entity_id, action, actor, tenant_type, tenant_id,
                                  before, after, at, prev_hash, hash)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb, $9::text::jsonb, $10, $11, $12)""",
        seq, entity_type, entity_id, action, actor, tenant_type, tenant_id,
        None if before_n is None else canonical_json(before_n),
        None if after_n is None else canonical_json(after_n), when, prev, digest,
    )
    await conn.execute("UPDATE audit_chain_head SET seq = $1, hash = $2 WHERE singleton", seq, digest)
    return AuditEntry(seq, entity_type, entity_id, action, actor, tenant_type, tenant_id, before_n, after_n,
                      when, prev, digest)


_SELECT = """SELECT seq, entity_type, entity_id, action, actor, tenant_type, tenant_id,
                    before::text AS before, after::text AS after, at, prev_hash, hash FROM audit_log"""


def _entry(r: asyncpg.Record) -> AuditEntry:
    return AuditEntry(
        r["seq"], r["entity_type"], r["entity_id"], r["action"], r["actor"], r["tenant_type"], r["tenant_id"],
        None if r["before"] is None else json.loads(r["before"]),
        None if r["after"] is None else json.loads(r["after"]), r["at"], r["prev_hash"], r["hash"],
    )


async def entries_for(conn: asyncpg.Connection, entity_type: str, entity_id: str, *, after_seq: int = 0,
                      limit: int = 100) -> list[AuditEntry]:
    """An entity's entries in chain order (``seq`` > ``after_seq``), at most ``limit``."""
    rows = await conn.fetch(
        _SELECT + " WHERE entity_type = $1 AND entity_id = $2 AND seq > $3 ORDER BY seq LIMIT $4",
        entity_type, entity_id, after_seq, limit)
    return [_entry(r) for r in rows]


@dataclass(frozen=True)
class VerifyResult:
    checked: int
    broken: BrokenLink | None


async def verify_report(conn: asyncpg.Connection, *, batch_size: int = 1000) -> VerifyResult:
    """Walk the whole chain in ``seq`` order; stop at the first broken link."""
    prev_hash, last_seq, checked = GENESIS_HASH, 0, 0
    while True:
        rows = await conn.fetch(_SELECT + " WHERE seq > $1 ORDER BY seq LIMIT $2", last_seq, batch_size)
        for r in rows:
            e = _entry(r)
            if e.prev_hash != prev_hash:
                return VerifyResult(checked, BrokenLink(e.seq, "prev_hash does not match the previous entry's hash "
                                                               "(an entry was removed, inserted or reordered)"))
            expected = entry_hash(seq=e.seq, entity_type=e.entity_type, entity_id=e.entity_id, action=e.action,
                                  actor=e.actor, tenant_type=e.tenant_type, tenant_id=e.tenant_id,
                                  before=e.before, after=e.after, at=e.at, prev_hash=e.prev_hash)
            if expected != e.hash:
                return VerifyResult(checked, BrokenLink(e.seq, "content does not match its hash (the entry was edited)"))
            prev_hash, last_seq = e.hash, e.seq
            checked += 1
        if len(rows) < batch_size:
            break
    head = await conn.fetchrow("SELECT seq, hash FROM audit_chain_head WHERE singleton")
    if head is not None and (head["seq"] != last_seq or head["hash"] != prev_hash):
        return VerifyResult(checked, BrokenLink(int(head["seq"]), f"chain head names seq {head['seq']} but the last entry "
                                                                  f"is seq {last_seq} (entries were removed from the end)"))
    return VerifyResult(checked, None)


async def verify(conn: asyncpg.Connection) -> BrokenLink | None:
    """The first broken link of the chain, or ``None`` when every entry holds."""
    return (await verify_report(conn)).broken


#: how often a service re-verifies its whole chain (``chain_watch``): a full walk, 1,000 entries a query
VERIFY_INTERVAL_S = 300.0


class ChainGauges:
    """``tally_audit_chain_*``: what the last verification of this database's chain found (the
    ``TallyAuditChainBroken`` alert of ``deploy/prometheus/rules`` reads ``tally_audit_chain_ok``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.ok = Gauge("tally_audit_chain_ok", "1 when the last verification of the audit hash chain passed, 0 when it "
                        "found a broken link (NaN until the first verification)", registry=registry)
        self.ok.set(float("nan"))
        self.verified = Gauge("tally_audit_chain_entries_verified",
                              "Entries the last verification checked before it ended or found a broken link", registry=registry)
        self.verified_at = Gauge("tally_audit_chain_verified_timestamp_seconds",
                                 "When the last verification finished (Unix time)", registry=registry)

    def record(self, result: VerifyResult) -> None:
        self.ok.set(1 if result.broken is None else 0)
        self.verified.set(result.checked)
        self.verified_at.set_to_current_time()


async def watch_chain(pool: asyncpg.Pool, gauges: ChainGauges, stop: asyncio.Event, *,
                      interval_s: float = VERIFY_INTERVAL_S) -> None:
    """Verify the whole chain now and every ``interval_s`` until ``stop``; a broken link is logged
    (with its seq and reason) and sets the gauge to 0, a database error is logged and retried."""
    while not stop.is_set():
        try:
            async with pool.acquire() as conn:
                result = await verify_report(conn)
            gauges.record(result)
            if result.broken is not None:
                log.error("audit chain broken", extra={"seq": result.broken.seq, "reason": result.broken.reason})
        except (asyncpg.PostgresError, OSError):
            log.exception("audit chain verification failed; will retry")
        await wait_or_stop(stop, interval_s)


def chain_watch(registry: CollectorRegistry, *, interval_s: float = VERIFY_INTERVAL_S
                ) -> Callable[[web.Application], AsyncIterator[None]]:
    """An aiohttp cleanup context that runs :func:`watch_chain` on the app's pool (``tally_kit.db``)
    beside the app; append it after the pool's context."""
    gauges = ChainGauges(registry)

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(watch_chain(app[POOL_KEY], gauges, stop, interval_s=interval_s), name="audit-chain-watch")
        try:
            yield
        finally:
            stop.set()
            task.cancel()  # a walk of a long chain is not worth waiting for at shutdown
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return ctx


async def _verify_cli(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        result = await verify_report(conn)
    finally:
        await conn.close()
    if result.broken is None:
        print(f"audit chain OK: {result.checked} entries verified")
        return 0
    print(f"{result.broken} ({result.checked} entries verified before it)")
    return 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tally-audit", description="Verify a service's hash-chained audit log.")
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("verify", help="walk the chain and report the first broken link (exit 1 when broken)")
    v.add_argument("--dsn", required=True, help="postgresql://... of the service database")
    args = p.parse_args(argv)
    return asyncio.run(_verify_cli(args.dsn))


if __name__ == "__main__":
    sys.exit(main())
