"""Writing a lifecycle step: one audit entry and its outbox records, in the caller's transaction.

``contracts.events`` gets one record per step; ``contracts.terms`` gets the contract's full
picture of approved versions whenever a step changes it. Records are Avro-encoded here, at
write time, so the relay only moves bytes and a re-publish carries identical bytes and the
same ``event_id``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from tally_kit import audit
from tally_kit.db import dumps
from tally_streams.avro import SchemaCatalog

from .domain import derive_status
from .repo import ContractRepo

EVENTS, TERMS = "events", "terms"


@dataclass
class Step:
    """One lifecycle step of one contract."""

    event_type: str
    actor: str
    now: datetime
    version: int | None = None
    version_kind: str | None = None
    effective_at: datetime | None = None
    backdated: bool = False
    comment: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    before: Any = None
    after: Any = None
    tenant_type: str | None = None
    tenant_id: str | None = None
    publish_terms: bool = False


@dataclass(frozen=True)
class Recorded:
    event_id: str
    revision: int
    status: str
    current_version: int | None


class StepWriter:
    def __init__(self, catalog: SchemaCatalog, repo: ContractRepo) -> None:
        self.event_codec = catalog.codec("contract_event")
        self.terms_codec = catalog.codec("contract_terms")
        self.repo = repo

    async def record(self, conn: asyncpg.Connection, contract_id: str, step: Step) -> Recorded:
        """Refresh the derived status, bump the revision, append the audit entry and the outbox
        rows. The contract row must already be locked by the caller's transaction."""
        facts = await self.repo.facts(conn, contract_id)
        terminated_at = await self.repo.terminated_at(conn, contract_id)
        derived = derive_status(facts, terminated_at, step.now)
        c = await self.repo.bump_revision(conn, contract_id, derived.status, derived.current_version)
        event_id = str(uuid.uuid4())
        details = {**step.details}
        event = {
            "event_id": event_id, "event_type": step.event_type, "contract_id": contract_id,
            "advertiser_id": c["advertiser_id"], "contract_type": c["contract_type"], "revision": c["revision"],
            "version": step.version, "version_kind": step.version_kind, "status": derived.status,
            "actor": step.actor, "occurred_at": step.now, "effective_at": step.effective_at,
            "backdated": step.backdated, "comment": step.comment, "details_json": dumps(details),
        }
        await audit.append(
            conn, entity_type="contract", entity_id=contract_id, action=step.event_type, actor=step.actor,
            tenant_type=step.tenant_type, tenant_id=step.tenant_id, before=_jsonable(step.before),
            after=_jsonable({"event_id": event_id, "revision": c["revision"], "status": derived.status,
                             "version": step.version, "comment": step.comment, "details": details,
                             "state": step.after}),
            at=step.now)
        await self.repo.add_outbox(conn, event_id, EVENTS, contract_id, self.event_codec.encode(event), step.now)
        if step.publish_terms:
            terms = await self.terms_record(conn, contract_id, event_id, c["revision"], derived.status, c["terminated_at"],
                                            c["advertiser_id"], c["contract_type"])
            await self.repo.add_outbox(conn, event_id, TERMS, contract_id, self.terms_codec.encode(terms), step.now)
        return Recorded(event_id, c["revision"], derived.status, derived.current_version)

    async def terms_record(self, conn: asyncpg.Connection, contract_id: str, event_id: str, revision: int, status: str,
                           terminated_at: datetime | None, advertiser_id: str, contract_type: str) -> dict[str, Any]:
        rows = await self.repo.approved_terms(conn, contract_id)
        versions = []
        for r in rows:
            end = r["ends_at"]
            if terminated_at is not None and (end is None or end > terminated_at):
                end = terminated_at
            # terms_json is tally_billing.terms.terms_to_json output, serialised with json.dumps
            versions.append({"version": r["version"], "effective_from": r["effective_from"], "effective_to": None,
                             "approved_at": r["decided_at"], "terms_json": json.dumps(json.loads(r["terms"])),
                             "_end": end})
        # effective_to: where the next version takes over, else the term end / termination
        for i, v in enumerate(versions):
            nxt = versions[i + 1]["effective_from"] if i + 1 < len(versions) else None
            end = v.pop("_end")
            candidates = [x for x in (nxt, end) if x is not None]
            v["effective_to"] = min(candidates) if candidates else None
        # a version fully superseded by one starting at the same instant governs nothing: left out
        return {"contract_id": contract_id, "advertiser_id": advertiser_id, "contract_type": contract_type,
                "status": status, "terminated_at": terminated_at, "revision": revision, "event_id": event_id,
                "versions": [v for v in versions if v["effective_to"] is None or v["effective_to"] > v["effective_from"]]}


def _jsonable(value: Any) -> Any:
    """Records and nested values in audit-safe JSON form (Decimals and datetimes as strings)."""
    if value is None:
        return None
    if isinstance(value, Mapping) or hasattr(value, "items"):
        return json.loads(dumps(dict(value)))
    return json.loads(dumps(value))
