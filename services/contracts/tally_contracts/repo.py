"""Data access for contracts: ALL of the service's SQL but the relay's, and the ONE place tenant
scoping is enforced.

Every query that reads a contract or anything under it goes through :class:`Scope`: an
advertiser user sees only contracts of its advertiser, a partner user only contracts that
name its partner, and both only approved versions. A contract outside the caller's scope
is indistinguishable from a missing one (404). Handlers never filter by tenant themselves.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from tally_kit import audit
from tally_kit.auth import Principal
from tally_kit.db import dumps, like_literal
from tally_kit.idempotency import purge_expired

from .domain import NotFound, OpenVersionExists, VersionFacts

CONTRACT_COLUMNS = """c.id, c.name, c.contract_type, c.advertiser_id, c.partner_ids, c.currency, c.time_zone,
    c.created_by, c.created_at, c.revision, c.status, c.current_version, c.terminated_at,
    c.auto_renew_cancelled_for, c.auto_renew_cancelled_by, c.auto_renew_cancelled_at"""

VERSION_COLUMNS = """v.contract_id, v.version, v.kind, v.state, v.terms, v.effective_from, v.ends_at, v.backdated,
    v.committed_value, v.row_revision, v.submission, v.required_approvals, v.authors, v.submitted_by,
    v.submitted_at, v.decided_at, v.decided_by, v.decision_comment, v.comment, v.created_at, v.updated_at"""


@dataclass(frozen=True)
class Scope:
    """What a caller may see, as SQL predicates on ``contracts c`` and ``contract_versions v``."""

    principal: Principal

    def contracts(self, first_param: int) -> tuple[str, list[Any]]:
        p = self.principal
        if p.tenant_type == "advertiser":
            return f"c.advertiser_id = ${first_param}", [p.tenant_id]
        if p.tenant_type == "partner":
            return f"${first_param} = ANY(c.partner_ids)", [p.tenant_id]
        if p.is_tenant:  # an unknown tenant type sees nothing
            return "false", []
        return "true", []

    def versions(self) -> str:
        return "v.state = 'approved'" if self.principal.is_tenant else "true"

    def parties(self, first_param: int) -> tuple[str, list[Any]]:
        """Registry entries the caller may read, on ``parties pt``: a tenant only its own party
        (the simplest rule that gives away no other tenant's name), internal roles every one."""
        p = self.principal
        if p.is_tenant:
            if p.tenant_type not in ("advertiser", "partner"):
                return "false", []
            return f"pt.party_type = ${first_param} AND pt.party_id = ${first_param + 1}", [p.tenant_type, p.tenant_id]
        return "true", []


@dataclass(frozen=True)
class ListFilters:
    status: str | None = None
    advertiser_id: str | None = None
    partner_id: str | None = None
    contract_type: str | None = None
    effective_on: date | None = None
    name: str | None = None


#: contracts the scheduler looks at: a time-driven step may be due
SCHEDULED_STATUSES = "('scheduled', 'active', 'terminating')"


class ContractRepo:
    """Reads (scoped), the row locks lifecycle steps take, and the writes of those steps. Every
    method runs on the caller's connection, inside the caller's transaction when it has one."""

    async def contract(self, conn: asyncpg.Connection, scope: Scope, contract_id: str, *,
                       for_update: bool = False) -> asyncpg.Record:
        pred, args = scope.contracts(2)
        row = await conn.fetchrow(
            f"SELECT {CONTRACT_COLUMNS} FROM contracts c WHERE c.id = $1 AND {pred}"
            + (" FOR UPDATE" if for_update else ""), contract_id, *args)
        if row is None:
            raise NotFound("contract")
        return row

    async def versions(self, conn: asyncpg.Connection, scope: Scope, contract_id: str) -> list[asyncpg.Record]:
        await self.contract(conn, scope, contract_id)
        return await conn.fetch(
            f"SELECT {VERSION_COLUMNS} FROM contract_versions v WHERE v.contract_id = $1 AND {scope.versions()} "
            "ORDER BY v.version", contract_id)

    async def version(self, conn: asyncpg.Connection, scope: Scope, contract_id: str, version: int, *,
                      for_update: bool = False) -> asyncpg.Record:
        await self.contract(conn, scope, contract_id, for_update=for_update)
        row = await conn.fetchrow(
            f"SELECT {VERSION_COLUMNS} FROM contract_versions v WHERE v.contract_id = $1 AND v.version = $2 "
            f"AND {scope.versions()}" + (" FOR UPDATE" if for_update else ""), contract_id, version)
        if row is None:
            raise NotFound("version")
        return row

    async def approvals(self, conn: asyncpg.Connection, contract_id: str, version: int, submission: int
                        ) -> list[asyncpg.Record]:
        """Approvals of one submission (callers have already passed the scoped lookup)."""
        return await conn.fetch(
            "SELECT approver, role, comment, at FROM approvals WHERE contract_id = $1 AND version = $2 "
            "AND submission = $3 ORDER BY at, approver", contract_id, version, submission)

    async def list_page(self, conn: asyncpg.Connection, scope: Scope, f: ListFilters, limit: int,
                   after: tuple[datetime, str] | None) -> list[asyncpg.Record]:
        pred, args = scope.contracts(1)
        where = [pred]

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if f.status:
            where.append(f"c.status = {arg(f.status)}")
        if f.advertiser_id:
            where.append(f"c.advertiser_id = {arg(f.advertiser_id)}")
        if f.partner_id:
            where.append(f"{arg(f.partner_id)} = ANY(c.partner_ids)")
        if f.contract_type:
            where.append(f"c.contract_type = {arg(f.contract_type)}")
        if f.name:
            where.append(f"c.name ILIKE {arg('%' + like_literal(f.name) + '%')}")
        if f.effective_on:
            d = arg(f.effective_on)
            # a version in force at some instant of that local day, and not terminated before it
            where.append(
                f"""EXISTS (SELECT 1 FROM contract_versions v WHERE v.contract_id = c.id AND v.state = 'approved'
                      AND v.kind <> 'termination'
                      AND v.effective_from < (({d}::date + 1)::timestamp AT TIME ZONE c.time_zone)
                      AND (v.ends_at IS NULL OR v.ends_at > ({d}::date::timestamp AT TIME ZONE c.time_zone)))
                    AND (c.terminated_at IS NULL OR c.terminated_at > ({d}::date::timestamp AT TIME ZONE c.time_zone))""")
        if after is not None:
            where.append(f"(c.created_at, c.id) > ({arg(after[0])}, {arg(after[1])})")
        sql = (f"SELECT {CONTRACT_COLUMNS} FROM contracts c WHERE {' AND '.join(where)} "
               f"ORDER BY c.created_at, c.id LIMIT {arg(limit + 1)}")
        return await conn.fetch(sql, *args)

    async def submitted_page(self, conn: asyncpg.Connection, limit: int, after: tuple[datetime, str, int] | None, *,
                             not_involving: str | None = None, needing_any_of: Sequence[str] = ()
                             ) -> list[asyncpg.Record]:
        """Up to ``limit`` submitted versions with their contract's summary (``q_*`` columns),
        in (submitted_at, contract_id, version) order after ``after``. ``not_involving``: leave
        out the versions that subject authored, submitted or approved (this submission);
        ``needing_any_of``: only versions whose required approvals name one of these roles.
        Staff only: the approvals queue is not a tenant's read (partial index
        ``contract_versions_submitted``)."""
        args: list[Any] = []

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        where = ["v.state = 'submitted'"]
        if not_involving is not None:
            s = arg(not_involving)
            where.append(f"""NOT ({s} = ANY(v.authors)) AND v.submitted_by IS DISTINCT FROM {s}
                AND NOT EXISTS (SELECT 1 FROM approvals a WHERE a.contract_id = v.contract_id AND a.version = v.version
                                AND a.submission = v.submission AND a.approver = {s})""")
        if needing_any_of:
            where.append(f"v.required_approvals ?| {arg(list(needing_any_of))}::text[]")
        if after is not None:
            where.append(f"(v.submitted_at, v.contract_id, v.version) > ({arg(after[0])}, {arg(after[1])}, {arg(after[2])})")
        return await conn.fetch(
            f"""SELECT {VERSION_COLUMNS}, c.name AS q_name, c.advertiser_id AS q_advertiser_id,
                       c.currency AS q_currency, c.time_zone AS q_time_zone, c.terminated_at AS q_terminated_at
                FROM contract_versions v JOIN contracts c ON c.id = v.contract_id
                WHERE {' AND '.join(where)}
                ORDER BY v.submitted_at, v.contract_id, v.version LIMIT {arg(limit)}""", *args)

    async def approvals_of(self, conn: asyncpg.Connection, versions: Sequence[Mapping[str, Any]]
                           ) -> dict[tuple[str, int], list[dict[str, Any]]]:
        """The approvals of each version's current submission (the columns of :meth:`approvals`),
        by (contract_id, version)."""
        rows = await conn.fetch(
            """SELECT a.contract_id, a.version, a.approver, a.role, a.comment, a.at FROM approvals a
               JOIN unnest($1::text[], $2::integer[], $3::integer[]) AS k(contract_id, version, submission)
                 ON (a.contract_id, a.version, a.submission) = (k.contract_id, k.version, k.submission)
               ORDER BY a.at, a.approver""",
            [v["contract_id"] for v in versions], [v["version"] for v in versions], [v["submission"] for v in versions])
        by_version: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for r in rows:
            by_version.setdefault((r["contract_id"], r["version"]), []).append(
                {k: r[k] for k in ("approver", "role", "comment", "at")})
        return by_version

    async def facts(self, conn: asyncpg.Connection, contract_id: str) -> list[VersionFacts]:
        rows = await conn.fetch(
            "SELECT version, kind, state, effective_from, ends_at FROM contract_versions WHERE contract_id = $1 "
            "ORDER BY version", contract_id)
        return [VersionFacts(r["version"], r["kind"], r["state"], r["effective_from"], r["ends_at"]) for r in rows]

    async def facts_of(self, conn: asyncpg.Connection, contract_ids: Sequence[str]) -> dict[str, list[VersionFacts]]:
        rows = await conn.fetch(
            "SELECT contract_id, version, kind, state, effective_from, ends_at FROM contract_versions "
            "WHERE contract_id = ANY($1) ORDER BY version", list(contract_ids))
        by_id: dict[str, list[VersionFacts]] = {}
        for r in rows:
            by_id.setdefault(r["contract_id"], []).append(
                VersionFacts(r["version"], r["kind"], r["state"], r["effective_from"], r["ends_at"]))
        return by_id

    async def latest_approved(self, conn: asyncpg.Connection, contract_id: str) -> asyncpg.Record | None:
        """The approved version with terms that starts last (a termination carries none)."""
        return await conn.fetchrow(
            """SELECT version, terms, effective_from, ends_at FROM contract_versions
               WHERE contract_id = $1 AND state = 'approved' AND kind <> 'termination'
               ORDER BY effective_from DESC, version DESC LIMIT 1""", contract_id)

    async def unpublished(self, conn: asyncpg.Connection, contract_id: str) -> bool:
        """Whether an outbox record of the contract still waits for the relay."""
        return bool(await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM outbox WHERE contract_id = $1 AND published_at IS NULL)", contract_id))

    async def audit_entries(self, conn: asyncpg.Connection, contract_id: str, after_seq: int, limit: int
                            ) -> list[audit.AuditEntry]:
        return await audit.entries_for(conn, "contract", contract_id, after_seq=after_seq, limit=limit)

    # ------------------------------------------------------------------ the party registry

    async def parties(self, conn: asyncpg.Connection, scope: Scope, party_type: str | None,
                      ids: Sequence[str]) -> list[asyncpg.Record]:
        """The named parties among ``ids`` the caller may read (ids without an entry are left out)."""
        pred, args = scope.parties(3)
        return await conn.fetch(
            f"""SELECT pt.party_type, pt.party_id, pt.display_name, pt.updated_at FROM parties pt
                WHERE pt.party_id = ANY($1::text[]) AND ($2::text IS NULL OR pt.party_type = $2) AND {pred}
                ORDER BY pt.party_type, pt.party_id""", list(ids), party_type, *args)

    async def party_for_update(self, conn: asyncpg.Connection, party_type: str, party_id: str
                               ) -> asyncpg.Record | None:
        """The entry, locked until the transaction ends; also when there is none yet (a transaction
        lock on its key), so two first namings at once audit one after the other, each with its before."""
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"party/{party_type}/{party_id}")
        return await conn.fetchrow(
            """SELECT party_type, party_id, display_name, created_by, created_at, updated_by, updated_at
               FROM parties WHERE party_type = $1 AND party_id = $2 FOR UPDATE""", party_type, party_id)

    async def upsert_party(self, conn: asyncpg.Connection, party_type: str, party_id: str, *, name: str, by: str,
                           now: datetime) -> asyncpg.Record:
        """Create or rename (the caller holds :meth:`party_for_update`'s lock)."""
        row = await conn.fetchrow(
            """INSERT INTO parties (party_type, party_id, display_name, created_by, created_at, updated_by, updated_at)
               VALUES ($1, $2, $3, $4, $5, $4, $5)
               ON CONFLICT (party_type, party_id)
               DO UPDATE SET display_name = EXCLUDED.display_name, updated_by = EXCLUDED.updated_by,
                             updated_at = EXCLUDED.updated_at
               RETURNING party_type, party_id, display_name, updated_at""", party_type, party_id, name, by, now)
        assert row is not None
        return row

    async def audit_party(self, conn: asyncpg.Connection, party_type: str, party_id: str, by: Principal, *,
                          before: str | None, after: str, now: datetime) -> None:
        """The naming's entry in the contracts audit chain (entity ``party``, id ``<type>/<id>``)."""
        await audit.append(
            conn, entity_type="party", entity_id=f"{party_type}/{party_id}",
            action="party.named" if before is None else "party.renamed", actor=by.subject,
            tenant_type=by.tenant_type, tenant_id=by.tenant_id,
            before=None if before is None else {"name": before}, after={"name": after}, at=now)

    # ------------------------------------------------------------------ writes of lifecycle steps

    async def insert_contract(self, conn: asyncpg.Connection, contract_id: str, *, name: str, contract_type: str,
                              advertiser_id: str, partner_ids: Sequence[str], currency: str, time_zone: str,
                              created_by: str, now: datetime) -> None:
        await conn.execute(
            """INSERT INTO contracts (id, name, contract_type, advertiser_id, partner_ids, currency, time_zone,
                                      created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
            contract_id, name, contract_type, advertiser_id, list(partner_ids), currency, time_zone, created_by, now)

    async def next_version(self, conn: asyncpg.Connection, contract_id: str) -> int:
        return int(await conn.fetchval(
            "SELECT coalesce(max(version), 0) + 1 FROM contract_versions WHERE contract_id = $1", contract_id))

    async def insert_version(self, conn: asyncpg.Connection, contract_id: str, version: int, *, kind: str, state: str,
                             terms: Mapping[str, Any], effective_from: datetime, ends_at: datetime | None,
                             committed_value: Decimal | None, author: str, now: datetime, backdated: bool = False,
                             comment: str | None = None, submitted: bool = False,
                             required: Mapping[str, int] | None = None) -> None:
        """A new version; OpenVersionExists when it would be the contract's second open one."""
        try:
            await conn.execute(
                """INSERT INTO contract_versions (contract_id, version, kind, state, terms, effective_from, ends_at, backdated,
                       committed_value, authors, comment, created_at, updated_at, submission, submitted_by, submitted_at,
                       required_approvals, decided_at, decided_by)
                   VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, $7, $8, $9, $10, $11, $12, $12, $13, $14, $15,
                           $16::text::jsonb, $17, $18)""",
                contract_id, version, kind, state, dumps(terms), effective_from, ends_at, backdated,
                committed_value, [author], comment, now, 1 if submitted else 0,
                author if submitted else None, now if submitted else None,
                dumps(dict(required)) if required is not None else None,
                now if state == "approved" else None, author if state == "approved" else None)
        except asyncpg.UniqueViolationError:
            raise OpenVersionExists(contract_id) from None

    async def edit_version(self, conn: asyncpg.Connection, contract_id: str, version: int, *, terms: Mapping[str, Any],
                           effective_from: datetime, ends_at: datetime | None, backdated: bool,
                           committed_value: Decimal | None, comment: str | None, author: str, now: datetime) -> None:
        """New content of a draft (a withdrawn version becomes a draft again); OpenVersionExists
        when another version of the contract is open."""
        try:
            await conn.execute(
                """UPDATE contract_versions SET terms = $3::text::jsonb, effective_from = $4, ends_at = $5,
                       backdated = $6, committed_value = $7, comment = coalesce($8, comment), state = 'draft',
                       row_revision = row_revision + 1, updated_at = $9,
                       authors = CASE WHEN $10 = ANY(authors) THEN authors ELSE array_append(authors, $10) END
                   WHERE contract_id = $1 AND version = $2""",
                contract_id, version, dumps(terms), effective_from, ends_at, backdated, committed_value, comment, now,
                author)
        except asyncpg.UniqueViolationError:
            raise OpenVersionExists(contract_id) from None

    async def submit_version(self, conn: asyncpg.Connection, contract_id: str, version: int, *,
                             required: Mapping[str, int], submitted_by: str, now: datetime, backdated: bool) -> None:
        try:
            await conn.execute(
                """UPDATE contract_versions SET state = 'submitted', submission = submission + 1,
                       required_approvals = $3::text::jsonb, submitted_by = $4, submitted_at = $5, backdated = $6,
                       row_revision = row_revision + 1, updated_at = $5
                   WHERE contract_id = $1 AND version = $2""",
                contract_id, version, dumps(dict(required)), submitted_by, now, backdated)
        except asyncpg.UniqueViolationError:
            raise OpenVersionExists(contract_id) from None

    async def withdraw_version(self, conn: asyncpg.Connection, contract_id: str, version: int, now: datetime) -> None:
        await conn.execute(
            """UPDATE contract_versions SET state = 'withdrawn', row_revision = row_revision + 1, updated_at = $3
               WHERE contract_id = $1 AND version = $2""", contract_id, version, now)

    async def add_approval(self, conn: asyncpg.Connection, contract_id: str, version: int, submission: int, *,
                           approver: str, role: str, comment: str | None, now: datetime) -> None:
        await conn.execute(
            """INSERT INTO approvals (contract_id, version, submission, approver, role, comment, at)
               VALUES ($1, $2, $3, $4, $5, $6, $7)""", contract_id, version, submission, approver, role, comment, now)

    async def approve_version(self, conn: asyncpg.Connection, contract_id: str, version: int, *, decided_by: str,
                              now: datetime) -> None:
        await conn.execute(
            """UPDATE contract_versions SET state = 'approved', decided_at = $3, decided_by = $4, updated_at = $3
               WHERE contract_id = $1 AND version = $2""", contract_id, version, now, decided_by)

    async def reject_version(self, conn: asyncpg.Connection, contract_id: str, version: int, *, decided_by: str,
                             now: datetime, comment: str | None) -> None:
        await conn.execute(
            """UPDATE contract_versions SET state = 'rejected', decided_at = $3, decided_by = $4, decision_comment = $5,
                   updated_at = $3 WHERE contract_id = $1 AND version = $2""", contract_id, version, now, decided_by, comment)

    async def set_terminated(self, conn: asyncpg.Connection, contract_id: str, at: datetime) -> None:
        await conn.execute("UPDATE contracts SET terminated_at = $2 WHERE id = $1", contract_id, at)

    async def cancel_auto_renewal(self, conn: asyncpg.Connection, contract_id: str, *, term_end: datetime, by: str,
                                  now: datetime) -> None:
        await conn.execute(
            """UPDATE contracts SET auto_renew_cancelled_for = $2, auto_renew_cancelled_by = $3,
                   auto_renew_cancelled_at = $4 WHERE id = $1""", contract_id, term_end, by, now)

    # ------------------------------------------------------------------ the scheduler's

    async def scheduled_ids(self, conn: asyncpg.Connection) -> list[str]:
        return [r["id"] for r in await conn.fetch(
            f"SELECT id FROM contracts WHERE status IN {SCHEDULED_STATUSES} ORDER BY id")]

    async def lock_scheduled(self, conn: asyncpg.Connection, contract_id: str) -> asyncpg.Record | None:
        """The contract's row lock if it is free and the contract still scheduled (None otherwise)."""
        return await conn.fetchrow(
            f"""SELECT id, status, current_version, terminated_at, auto_renew_cancelled_for FROM contracts
                WHERE id = $1 AND status IN {SCHEDULED_STATUSES} FOR UPDATE SKIP LOCKED""", contract_id)

    async def purge_expired_keys(self, conn: asyncpg.Connection) -> None:
        """Idempotency keys past their lifetime (the kit's table)."""
        await purge_expired(conn)

    # ------------------------------------------------------------------ the step writer's (outbox.py)

    async def terminated_at(self, conn: asyncpg.Connection, contract_id: str) -> datetime | None:
        value: datetime | None = await conn.fetchval("SELECT terminated_at FROM contracts WHERE id = $1", contract_id)
        return value

    async def bump_revision(self, conn: asyncpg.Connection, contract_id: str, status: str,
                            current_version: int | None) -> asyncpg.Record:
        """Store the derived status and take the next revision; returns what the records carry."""
        row: asyncpg.Record = await conn.fetchrow(
            """UPDATE contracts SET revision = revision + 1, status = $2, current_version = $3 WHERE id = $1
               RETURNING id, advertiser_id, contract_type, revision, terminated_at""",
            contract_id, status, current_version)
        return row

    async def approved_terms(self, conn: asyncpg.Connection, contract_id: str) -> list[asyncpg.Record]:
        """The approved versions with terms in effective order, terms as stored JSON text."""
        return await conn.fetch(
            """SELECT version, effective_from, ends_at, decided_at, terms::text AS terms FROM contract_versions
               WHERE contract_id = $1 AND state = 'approved' AND kind <> 'termination'
               ORDER BY effective_from, version""", contract_id)

    async def add_outbox(self, conn: asyncpg.Connection, event_id: str, topic: str, contract_id: str, value: bytes,
                         now: datetime) -> None:
        await conn.execute(
            "INSERT INTO outbox (event_id, topic, contract_id, value, created_at) VALUES ($1, $2, $3, $4, $5)",
            uuid.UUID(event_id), topic, contract_id, value, now)
