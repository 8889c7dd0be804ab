"""Data access for contracts — and the ONE place tenant scoping is enforced.

Every query that reads a contract or anything under it goes through :class:`Scope`: an
advertiser user sees only contracts of its advertiser, a partner user only contracts that
name its partner, and both only approved versions. A contract outside the caller's scope
is indistinguishable from a missing one (404). Handlers never filter by tenant themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg

from tally_kit.auth import Principal
from tally_kit.problems import not_found

from .domain import VersionFacts

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


@dataclass(frozen=True)
class ListFilters:
    status: str | None = None
    advertiser_id: str | None = None
    partner_id: str | None = None
    contract_type: str | None = None
    effective_on: date | None = None
    name: str | None = None


class ContractRepo:
    """Reads (scoped) and the row locks lifecycle steps take."""

    async def contract(self, conn: asyncpg.Connection, scope: Scope, contract_id: str, *,
                       for_update: bool = False) -> asyncpg.Record:
        pred, args = scope.contracts(2)
        row = await conn.fetchrow(
            f"SELECT {CONTRACT_COLUMNS} FROM contracts c WHERE c.id = $1 AND {pred}"
            + (" FOR UPDATE" if for_update else ""), contract_id, *args)
        if row is None:
            raise not_found("contract")
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
            raise not_found("version")
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
            escaped = f.name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append(f"c.name ILIKE {arg('%' + escaped + '%')}")
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

    async def facts(self, conn: asyncpg.Connection, contract_id: str) -> list[VersionFacts]:
        rows = await conn.fetch(
            "SELECT version, kind, state, effective_from, ends_at FROM contract_versions WHERE contract_id = $1 "
            "ORDER BY version", contract_id)
        return [VersionFacts(r["version"], r["kind"], r["state"], r["effective_from"], r["ends_at"]) for r in rows]
