"""Contract lifecycle steps. Each runs in ONE transaction that locks the contract row, makes
the change, and records it (audit entry + outbox rows) through :class:`StepWriter`.

Roles: ``ops``/``admin`` draft, edit, submit, withdraw, renew, cancel auto-renewal and
terminate; the approval policy's roles (``approver``, ``finance``) approve and reject, never
for a version they authored or submitted. Reads go through the tenant-scoped repository.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

import asyncpg

from tally_billing import bounds
from tally_billing.terms import ContractTerms, parse_terms, read_terms
from tally_kit import audit
from tally_kit.auth import Principal
from tally_kit.db import dumps
from tally_kit.idempotency import purge_expired
from tally_kit.problems import ApiError, validation_error

from . import domain
from .clock import Clock
from .domain import ApprovalContext, ApprovalPolicy, DerivedStatus, VersionFacts
from .metrics import ContractMetrics
from .outbox import Recorded, Step, StepWriter
from .repo import ContractRepo, Scope

log = logging.getLogger("tally.contracts.service")

WRITERS = ("ops", "admin")
READERS = ("admin", "ops", "approver", "finance", "advertiser", "partner")
MAX_NAME = 200
MAX_TEXT = 2000
MAX_PARTNERS = 100
SCHEDULER = "scheduler"


def etag(v: Mapping[str, Any]) -> str:
    """Strong ETag of a version's editable content; changes with every edit, submit and withdraw."""
    return f'"{v["contract_id"]}.v{v["version"]}.r{v["row_revision"]}"'


def conflict(detail: str, **extra: Any) -> ApiError:
    return ApiError(409, detail, type_="https://tally.dev/problems/conflict", **extra)


class Problems:
    """Collects every problem of a request body, then raises one 422 naming them all."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.items.append((path, message))

    def obj(self, raw: Any, allowed: set[str], required: frozenset[str] | set[str] = frozenset()) -> Mapping[str, Any]:
        if not isinstance(raw, Mapping):
            self.add("body", "must be a JSON object")
            return {}
        for k in sorted(set(raw) - allowed)[:20]:  # a body of a million unknown keys gets a short answer
            self.add(k[:100], "unknown field")
        for k in sorted(required - set(raw)):
            self.add(k, "is required")
        return raw

    def string(self, raw: Mapping[str, Any], key: str, *, required: bool = False, max_len: int = MAX_TEXT) -> str | None:
        v = raw.get(key)
        if v is None:
            if required and key in raw:
                self.add(key, "is required")
            return None
        if not isinstance(v, str) or not v.strip():
            self.add(key, "must be a non-empty string")
            return None
        if len(v) > max_len:
            self.add(key, f"must be at most {max_len} characters")
            return None
        return v.strip()

    def day(self, raw: Mapping[str, Any], key: str) -> date | None:
        v = raw.get(key)
        if v is None:
            return None
        try:
            if not isinstance(v, str) or len(v) != 10:
                raise ValueError
            d = date.fromisoformat(v)
        except ValueError:
            self.add(key, "must be a date YYYY-MM-DD")
            return None
        if not bounds.DATE_MIN <= d <= bounds.DATE_MAX:
            self.add(key, f"must be from {bounds.DATE_MIN.isoformat()} to {bounds.DATE_MAX.isoformat()}")
            return None
        return d

    def boolean(self, raw: Mapping[str, Any], key: str, default: bool = False) -> bool:
        v = raw.get(key, default)
        if not isinstance(v, bool):
            self.add(key, "must be true or false")
            return default
        return v

    def terms(self, raw: Mapping[str, Any], key: str = "terms") -> ContractTerms | None:
        if key not in raw:
            return None
        terms, found = read_terms(raw[key])  # one pass: validating twice would double the CPU per request
        for p in found:
            self.add(key if p.path in ("", "$") else f"{key}.{p.path}", p.message)
        return terms

    def raise_if_any(self) -> None:
        if self.items:
            raise validation_error(self.items)


class ContractService:
    def __init__(self, pool: asyncpg.Pool, clock: Clock, policy: ApprovalPolicy, writer: StepWriter,
                 repo: ContractRepo, metrics: ContractMetrics | None = None) -> None:
        self.pool, self.clock, self.policy, self.writer, self.repo, self.metrics = pool, clock, policy, writer, repo, metrics
        #: contract ids the last scheduler tick could not handle (retried by the next)
        self.last_tick_failures: list[str] = []

    # ------------------------------------------------------------------ helpers

    async def _record(self, conn: asyncpg.Connection, contract_id: str, p: Principal | None, step: Step) -> Recorded:
        if p is not None:
            step.tenant_type, step.tenant_id = p.tenant_type, p.tenant_id
        rec = await self.writer.record(conn, contract_id, step)
        if self.metrics is not None:
            self.metrics.lifecycle_steps.labels(step.event_type).inc()
        return rec

    @staticmethod
    def _require(p: Principal, *roles: str) -> None:
        p.require(*roles)

    async def _latest_approved(self, conn: asyncpg.Connection, contract_id: str) -> asyncpg.Record | None:
        return await conn.fetchrow(
            """SELECT version, terms, effective_from, ends_at FROM contract_versions
               WHERE contract_id = $1 AND state = 'approved' AND kind <> 'termination'
               ORDER BY effective_from DESC, version DESC LIMIT 1""", contract_id)

    async def _next_version(self, conn: asyncpg.Connection, contract_id: str) -> int:
        return int(await conn.fetchval(
            "SELECT coalesce(max(version), 0) + 1 FROM contract_versions WHERE contract_id = $1", contract_id))

    async def _open_version(self, conn: asyncpg.Connection, contract_id: str) -> int | None:
        v = await conn.fetchval("SELECT version FROM contract_versions WHERE contract_id = $1 AND state IN ('draft', 'submitted')",
                                contract_id)
        return None if v is None else int(v)

    async def _insert_version(self, conn: asyncpg.Connection, contract_id: str, version: int, kind: str, state: str,
                              terms: ContractTerms, effective_from: datetime, *, author: str, now: datetime,
                              backdated: bool = False, comment: str | None = None,
                              open_ended: bool = False, submitted: bool = False,
                              required: Mapping[str, int] | None = None) -> None:
        end = None if open_ended else domain.term_end(terms)
        try:
            await conn.execute(
                """INSERT INTO contract_versions (contract_id, version, kind, state, terms, effective_from, ends_at, backdated,
                       committed_value, authors, comment, created_at, updated_at, submission, submitted_by, submitted_at,
                       required_approvals, decided_at, decided_by)
                   VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, $7, $8, $9, $10, $11, $12, $12, $13, $14, $15,
                           $16::text::jsonb, $17, $18)""",
                contract_id, version, kind, state, _json_text(domain.terms_json(terms)), effective_from, end, backdated,
                domain.committed(terms), [author], comment, now, 1 if submitted else 0,
                author if submitted else None, now if submitted else None,
                _json_text(dict(required)) if required is not None else None,
                now if state == "approved" else None, author if state == "approved" else None)
        except asyncpg.UniqueViolationError:
            raise conflict("the contract already has an open (draft or submitted) version; finish or withdraw it first") from None

    def _backdating(self, problems: Problems, terms: ContractTerms, effective_from: datetime, flag: bool, now: datetime,
                    field: str = "effective_from") -> bool:
        c = terms.common
        open_start = domain.open_period_start(now, c.time_zone, c.billing_period)
        backdated = effective_from < open_start
        if backdated and not flag:
            problems.add(field, f"lies in a closed billing period (the open period starts {open_start.isoformat()}); "
                                "set backdated: true to request a backdated amendment, which needs finance approval")
        return backdated

    def _check_same_contract(self, problems: Problems, c: Mapping[str, Any], terms: ContractTerms) -> None:
        for path, have, want in (("terms.common.advertiser_id", terms.common.advertiser_id, c["advertiser_id"]),
                                 ("terms.contract_type", terms.contract_type.value, c["contract_type"]),
                                 ("terms.common.currency", terms.common.currency, c["currency"]),
                                 ("terms.common.time_zone", terms.common.time_zone, c["time_zone"])):
            if have != want:
                problems.add(path, f"must stay {want!r} for this contract (a different one is a new contract)")

    def _check_if_match(self, v: Mapping[str, Any], if_match: str | None, *, required: bool) -> None:
        if if_match is None:
            if required:
                raise ApiError(428, "editing a draft requires If-Match with the version's current ETag",
                               headers={"ETag": etag(v)})
            return
        if required and if_match.strip() == "*":
            # "*" matches whatever is there now: it would skip the very check the header is for
            raise ApiError(428, "If-Match must be the version's ETag (not *): that is what prevents lost updates",
                           headers={"ETag": etag(v)})
        if if_match.strip() not in (etag(v), "*"):
            raise ApiError(412, "the version changed since you read it (stale ETag); read it again",
                           headers={"ETag": etag(v)}, current_etag=etag(v))

    # ------------------------------------------------------------------ reads

    def status_of(self, facts: Sequence[VersionFacts], terminated_at: datetime | None) -> DerivedStatus:
        return domain.derive_status(facts, terminated_at, self.clock.now())

    async def get_contract(self, p: Principal, contract_id: str) -> dict[str, Any]:
        p.require(*READERS)
        async with self.pool.acquire() as conn:
            c = await self.repo.contract(conn, Scope(p), contract_id)
            return await self._contract_json(conn, c, Scope(p), full=True)

    async def _contract_json(self, conn: asyncpg.Connection, c: Mapping[str, Any], scope: Scope, *, full: bool,
                             facts: Sequence[VersionFacts] | None = None) -> dict[str, Any]:
        facts = facts if facts is not None else await self.repo.facts(conn, c["id"])
        derived = self.status_of(facts, c["terminated_at"])
        out: dict[str, Any] = {
            "id": c["id"], "name": c["name"], "contract_type": c["contract_type"], "advertiser_id": c["advertiser_id"],
            "partner_ids": list(c["partner_ids"]), "currency": c["currency"], "time_zone": c["time_zone"],
            "status": derived.status, "current_version": derived.current_version, "revision": c["revision"],
            "created_at": c["created_at"], "created_by": c["created_by"], "terminated_at": c["terminated_at"],
        }
        visible = [f for f in facts if not scope.principal.is_tenant or f.state == "approved"]
        out["versions"] = [{"version": f.version, "kind": f.kind, "state": f.state} for f in visible]
        partner = _partner_of(scope.principal)
        if partner is not None:
            # a partner sees itself among the partners, and no staff name
            out["partner_ids"] = [partner]
            del out["created_by"]
            out["view"] = "partner"
        if full:
            latest = await self._latest_approved(conn, c["id"])
            renewal: dict[str, Any] = {"auto_renew": False}
            if latest is not None:
                t = parse_terms(latest["terms"])
                end = domain.term_end(t)
                renewal = {"auto_renew": t.common.auto_renew, "term_ends_at": end, "notice_deadline": None,
                           "cancelled": end is not None and c["auto_renew_cancelled_for"] == end,
                           "cancelled_at": c["auto_renew_cancelled_at"], "cancelled_by": c["auto_renew_cancelled_by"]}
                if partner is not None:
                    del renewal["cancelled_by"]
                if end is not None:
                    renewal["notice_deadline"] = domain.notice_deadline(end, t.common.notice_period_days)
            out["renewal"] = renewal
            # Stream processors know a contract only from contracts.terms: clients that send
            # traffic right after an approval wait for this (the simulator does).
            out["published"] = not await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM outbox WHERE contract_id = $1 AND published_at IS NULL)", c["id"])
        return out

    async def list_contracts(self, p: Principal, filters: Any, limit: int, after: tuple[datetime, str] | None
                             ) -> tuple[list[dict[str, Any]], bool]:
        p.require(*READERS)
        scope = Scope(p)
        async with self.pool.acquire() as conn:
            rows = await self.repo.list_page(conn, scope, filters, limit, after)
            ids = [r["id"] for r in rows]
            fact_rows = await conn.fetch(
                "SELECT contract_id, version, kind, state, effective_from, ends_at FROM contract_versions "
                "WHERE contract_id = ANY($1) ORDER BY version", ids)
            by_id: dict[str, list[VersionFacts]] = {}
            for r in fact_rows:
                by_id.setdefault(r["contract_id"], []).append(
                    VersionFacts(r["version"], r["kind"], r["state"], r["effective_from"], r["ends_at"]))
            items = [await self._contract_json(conn, r, scope, full=False, facts=by_id.get(r["id"], [])) for r in rows]
        return items, len(rows) > limit

    async def version_json(self, conn: asyncpg.Connection, v: Mapping[str, Any]) -> dict[str, Any]:
        given = await self.repo.approvals(conn, v["contract_id"], v["version"], v["submission"]) if v["submission"] else []
        required = v["required_approvals"] or {}
        return {
            "contract_id": v["contract_id"], "version": v["version"], "kind": v["kind"], "state": v["state"],
            "terms": v["terms"], "effective_from": v["effective_from"], "ends_at": v["ends_at"],
            "backdated": v["backdated"], "committed_value": v["committed_value"], "etag": etag(v),
            "authors": list(v["authors"]), "submitted_by": v["submitted_by"], "submitted_at": v["submitted_at"],
            "submission": v["submission"], "required_approvals": required,
            "approvals": [dict(a) for a in given],
            "missing_approvals": domain.remaining(required, [a["role"] for a in given]) if v["state"] == "submitted" else {},
            "decided_at": v["decided_at"], "decided_by": v["decided_by"], "decision_comment": v["decision_comment"],
            "comment": v["comment"], "created_at": v["created_at"], "updated_at": v["updated_at"],
        }

    async def list_versions(self, p: Principal, contract_id: str) -> list[dict[str, Any]]:
        p.require(*READERS)
        async with self.pool.acquire() as conn:
            return [_for_viewer(p, await self.version_json(conn, v))
                    for v in await self.repo.versions(conn, Scope(p), contract_id)]

    async def get_version(self, p: Principal, contract_id: str, version: int) -> dict[str, Any]:
        p.require(*READERS)
        async with self.pool.acquire() as conn:
            return _for_viewer(p, await self.version_json(conn, await self.repo.version(conn, Scope(p), contract_id, version)))

    async def diff(self, p: Principal, contract_id: str, a: int, b: int) -> dict[str, Any]:
        p.require(*READERS)
        async with self.pool.acquire() as conn:
            va = await self.repo.version(conn, Scope(p), contract_id, a)
            vb = await self.repo.version(conn, Scope(p), contract_id, b)
        partner = _partner_of(p)

        def seen(terms: Mapping[str, Any]) -> Mapping[str, Any]:
            return terms if partner is None else domain.partner_terms(terms, partner)

        left = {"terms": seen(va["terms"]), "effective_from": va["effective_from"].isoformat(),
                "ends_at": va["ends_at"].isoformat() if va["ends_at"] else None}
        right = {"terms": seen(vb["terms"]), "effective_from": vb["effective_from"].isoformat(),
                 "ends_at": vb["ends_at"].isoformat() if vb["ends_at"] else None}
        return {"contract_id": contract_id, "from_version": a, "to_version": b, "changes": domain.diff(left, right)}

    async def audit_trail(self, p: Principal, contract_id: str, after_seq: int, limit: int) -> list[dict[str, Any]]:
        async with self.pool.acquire() as conn:
            await self.repo.contract(conn, Scope(p), contract_id)
            p.require("admin", "ops", "approver", "finance")
            return [e.as_json() for e in await audit.entries_for(conn, "contract", contract_id, after_seq=after_seq,
                                                                  limit=limit + 1)]

    # ------------------------------------------------------------------ writes

    async def create(self, p: Principal, body: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        p.require(*WRITERS)
        pr = Problems()
        raw = pr.obj(body, {"name", "terms", "partner_ids", "comment"}, {"name", "terms"})
        name = pr.string(raw, "name", max_len=MAX_NAME)
        comment = pr.string(raw, "comment")
        partners_raw = raw.get("partner_ids", [])
        if not isinstance(partners_raw, list):
            pr.add("partner_ids", "must be a list of partner ids")
            partners_raw = []
        elif len(partners_raw) > MAX_PARTNERS:
            pr.add("partner_ids", f"must have at most {MAX_PARTNERS} partner ids")
            partners_raw = []
        for i, x in enumerate(partners_raw):
            if (problem := bounds.id_problem(x)) is not None:
                pr.add(f"partner_ids[{i}]", problem)
        terms = pr.terms(raw)
        pr.raise_if_any()
        assert terms is not None and name is not None
        now = self.clock.now()
        contract_id = f"ctr_{uuid.uuid4().hex[:20]}"
        partners = sorted(set(partners_raw) | {o.partner_id for o in (terms.cpa.partner_overrides if terms.cpa else ())})
        c = terms.common
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO contracts (id, name, contract_type, advertiser_id, partner_ids, currency, time_zone,
                                          created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
                contract_id, name, terms.contract_type.value, c.advertiser_id, partners, c.currency, c.time_zone,
                p.subject, now)
            effective = domain.day_start(c.flight_start, c.time_zone)
            await self._insert_version(conn, contract_id, 1, "initial", "draft", terms, effective, author=p.subject,
                                       now=now, comment=comment)
            await self._record(conn, contract_id, p, Step(
                "contract.created", p.subject, now, version=1, version_kind="initial", effective_at=effective,
                comment=comment, after={"name": name, "terms": domain.terms_json(terms)}))
            out = await self._contract_json(conn, await self.repo.contract(conn, Scope(p), contract_id), Scope(p), full=True)
            v = await self.version_json(conn, await self.repo.version(conn, Scope(p), contract_id, 1))
        return out, v

    async def amend(self, p: Principal, contract_id: str, body: Any) -> dict[str, Any]:
        async with self.pool.acquire() as conn, conn.transaction():
            c = await self.repo.contract(conn, Scope(p), contract_id, for_update=True)
            p.require(*WRITERS)
            if c["terminated_at"] is not None:
                raise conflict("the contract is terminated; it cannot be amended")
            now = self.clock.now()
            pr = Problems()
            raw = pr.obj(body, {"terms", "effective_from", "backdated", "comment"}, {"terms"})
            terms = pr.terms(raw)
            eff_day = pr.day(raw, "effective_from")
            flag = pr.boolean(raw, "backdated")
            comment = pr.string(raw, "comment")
            latest = await self._latest_approved(conn, contract_id)
            kind = "amendment" if latest is not None else "initial"
            if kind == "amendment" and eff_day is None and "effective_from" not in raw:
                pr.add("effective_from", "is required for an amendment")
            backdated = False
            effective: datetime | None = None
            if terms is not None:
                self._check_same_contract(pr, c, terms)
                if kind == "initial":
                    effective = domain.day_start(terms.common.flight_start, terms.common.time_zone)
                elif eff_day is not None:
                    effective = domain.day_start(eff_day, terms.common.time_zone)
                    assert latest is not None
                    if effective < latest["effective_from"]:
                        pr.add("effective_from", f"must be on or after the latest approved version's start "
                                                 f"({latest['effective_from'].isoformat()})")
                    backdated = self._backdating(pr, terms, effective, flag, now)
            pr.raise_if_any()
            assert terms is not None and effective is not None
            n = await self._next_version(conn, contract_id)
            await self._insert_version(conn, contract_id, n, kind, "draft", terms, effective, author=p.subject, now=now,
                                       backdated=backdated, comment=comment)
            await self._record(conn, contract_id, p, Step(
                "version.drafted", p.subject, now, version=n, version_kind=kind, effective_at=effective,
                backdated=backdated, comment=comment, after={"terms": domain.terms_json(terms)}))
            return await self.version_json(conn, await self.repo.version(conn, Scope(p), contract_id, n))

    async def edit(self, p: Principal, contract_id: str, version: int, body: Any, if_match: str | None) -> dict[str, Any]:
        async with self.pool.acquire() as conn, conn.transaction():
            c = await self.repo.contract(conn, Scope(p), contract_id, for_update=True)
            v = await self.repo.version(conn, Scope(p), contract_id, version, for_update=True)
            p.require(*WRITERS)
            self._check_if_match(v, if_match, required=True)
            if v["state"] not in domain.EDITABLE_STATES:
                raise conflict(f"version {version} is {v['state']}; only drafts (or withdrawn versions) can be edited")
            if v["kind"] == "termination":
                raise conflict("a termination request is not edited; let it be rejected or withdrawn and request again")
            now = self.clock.now()
            pr = Problems()
            raw = pr.obj(body, {"terms", "effective_from", "backdated", "comment"}, {"terms"})
            terms = pr.terms(raw)
            eff_day = pr.day(raw, "effective_from")
            flag = pr.boolean(raw, "backdated", default=bool(v["backdated"]))
            comment = pr.string(raw, "comment")
            effective: datetime = v["effective_from"]
            backdated = False
            if terms is not None:
                self._check_same_contract(pr, c, terms)
                if v["kind"] == "initial":
                    effective = domain.day_start(terms.common.flight_start, terms.common.time_zone)
                else:
                    if eff_day is not None:
                        effective = domain.day_start(eff_day, terms.common.time_zone)
                    backdated = self._backdating(pr, terms, effective, flag, now)
            pr.raise_if_any()
            assert terms is not None
            before = await self.version_json(conn, v)
            try:
                await conn.execute(
                    """UPDATE contract_versions SET terms = $3::text::jsonb, effective_from = $4, ends_at = $5,
                           backdated = $6, committed_value = $7, comment = coalesce($8, comment), state = 'draft',
                           row_revision = row_revision + 1, updated_at = $9,
                           authors = CASE WHEN $10 = ANY(authors) THEN authors ELSE array_append(authors, $10) END
                       WHERE contract_id = $1 AND version = $2""",
                    contract_id, version, _json_text(domain.terms_json(terms)), effective, domain.term_end(terms),
                    backdated, domain.committed(terms), comment, now, p.subject)
            except asyncpg.UniqueViolationError:
                raise conflict("the contract has another open version; a withdrawn version can be edited only "
                               "when no other draft or submitted version exists") from None
            after = await self.version_json(conn, await self.repo.version(conn, Scope(p), contract_id, version))
            await self._record(conn, contract_id, p, Step(
                "version.edited", p.subject, now, version=version, version_kind=v["kind"], effective_at=effective,
                backdated=backdated, comment=comment, before=before, after=after,
                details={"changes": domain.diff(before["terms"], after["terms"])}))
            return after

    async def submit(self, p: Principal, contract_id: str, version: int, if_match: str | None) -> dict[str, Any]:
        async with self.pool.acquire() as conn, conn.transaction():
            c = await self.repo.contract(conn, Scope(p), contract_id, for_update=True)
            v = await self.repo.version(conn, Scope(p), contract_id, version, for_update=True)
            p.require(*WRITERS)
            self._check_if_match(v, if_match, required=False)
            if v["state"] not in domain.EDITABLE_STATES:
                raise conflict(f"version {version} is {v['state']}; only drafts (or withdrawn versions) can be submitted")
            now = self.clock.now()
            terms = parse_terms(v["terms"])
            backdated = bool(v["backdated"])
            if v["kind"] in ("amendment", "renewal"):
                pr = Problems()
                backdated = self._backdating(pr, terms, v["effective_from"], bool(v["backdated"]), now)
                pr.raise_if_any()
            required = self.policy.required(ApprovalContext(
                c["contract_type"], v["kind"], c["currency"], domain.committed(terms), backdated))
            try:
                await conn.execute(
                    """UPDATE contract_versions SET state = 'submitted', submission = submission + 1,
                           required_approvals = $3::text::jsonb, submitted_by = $4, submitted_at = $5, backdated = $6,
                           row_revision = row_revision + 1, updated_at = $5
                       WHERE contract_id = $1 AND version = $2""",
                    contract_id, version, _json_text(required), p.subject, now, backdated)
            except asyncpg.UniqueViolationError:
                raise conflict("the contract has another open version; finish or withdraw it first") from None
            await self._record(conn, contract_id, p, Step(
                "version.submitted", p.subject, now, version=version, version_kind=v["kind"],
                effective_at=v["effective_from"], backdated=backdated, details={"required_approvals": required}))
            return await self.version_json(conn, await self.repo.version(conn, Scope(p), contract_id, version))

    async def withdraw(self, p: Principal, contract_id: str, version: int) -> dict[str, Any]:
        async with self.pool.acquire() as conn, conn.transaction():
            await self.repo.contract(conn, Scope(p), contract_id, for_update=True)
            v = await self.repo.version(conn, Scope(p), contract_id, version, for_update=True)
            p.require(*WRITERS)
            if v["state"] != "submitted":
                raise conflict(f"version {version} is {v['state']}; only a submitted version can be withdrawn")
            now = self.clock.now()
            await conn.execute(
                """UPDATE contract_versions SET state = 'withdrawn', row_revision = row_revision + 1, updated_at = $3
                   WHERE contract_id = $1 AND version = $2""", contract_id, version, now)
            await self._record(conn, contract_id, p, Step(
                "version.withdrawn", p.subject, now, version=version, version_kind=v["kind"],
                details={"approvals_discarded": len(await self.repo.approvals(conn, contract_id, version, v["submission"]))}))
            return await self.version_json(conn, await self.repo.version(conn, Scope(p), contract_id, version))

    def _maker_checker(self, p: Principal, v: Mapping[str, Any]) -> None:
        if p.subject in v["authors"] or p.subject == v["submitted_by"]:
            raise ApiError(403, "maker-checker: you authored or submitted this version, so you cannot decide on it",
                           type_="https://tally.dev/problems/maker-checker")

    def _decider_roles(self) -> tuple[str, ...]:
        return tuple(sorted(self.policy.approving_roles | {"approver", "finance"}))

    async def approve(self, p: Principal, contract_id: str, version: int, body: Any, if_match: str | None) -> dict[str, Any]:
        async with self.pool.acquire() as conn, conn.transaction():
            await self.repo.contract(conn, Scope(p), contract_id, for_update=True)
            v = await self.repo.version(conn, Scope(p), contract_id, version, for_update=True)
            p.require(*self._decider_roles())
            pr = Problems()
            raw = pr.obj(body if body is not None else {}, {"comment", "role"})
            comment = pr.string(raw, "comment")
            asked = pr.string(raw, "role", max_len=40)
            pr.raise_if_any()
            self._check_if_match(v, if_match, required=False)
            if v["state"] != "submitted":
                raise conflict(f"version {version} is {v['state']}; only a submitted version can be approved")
            self._maker_checker(p, v)
            given = await self.repo.approvals(conn, contract_id, version, v["submission"])
            if any(a["approver"] == p.subject for a in given):
                raise conflict("you already approved this submission")
            required = v["required_approvals"] or {}
            missing = domain.remaining(required, [a["role"] for a in given])
            role = domain.pick_role(p.roles, missing, asked)
            if role is None:
                raise ApiError(403, f"your roles cannot give any of the missing approvals {missing}",
                               missing_approvals=missing)
            now = self.clock.now()
            await conn.execute(
                """INSERT INTO approvals (contract_id, version, submission, approver, role, comment, at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7)""", contract_id, version, v["submission"], p.subject, role, comment, now)
            still = domain.remaining(required, [*(a["role"] for a in given), role])
            details = {"role": role, "required_approvals": required, "missing_approvals": still,
                       "approvers": [*(a["approver"] for a in given), p.subject]}
            if still:
                await self._record(conn, contract_id, p, Step(
                    "version.approval_recorded", p.subject, now, version=version, version_kind=v["kind"],
                    effective_at=v["effective_from"], backdated=v["backdated"], comment=comment, details=details))
            else:
                await conn.execute(
                    """UPDATE contract_versions SET state = 'approved', decided_at = $3, decided_by = $4, updated_at = $3
                       WHERE contract_id = $1 AND version = $2""", contract_id, version, now, p.subject)
                event = "version.approved"
                if v["kind"] == "termination":
                    await conn.execute("UPDATE contracts SET terminated_at = $2 WHERE id = $1", contract_id, v["effective_from"])
                    event = "contract.terminated"
                await self._record(conn, contract_id, p, Step(
                    event, p.subject, now, version=version, version_kind=v["kind"], effective_at=v["effective_from"],
                    backdated=v["backdated"], comment=comment, details=details, publish_terms=True))
            return await self.version_json(conn, await self.repo.version(conn, Scope(p), contract_id, version))

    async def reject(self, p: Principal, contract_id: str, version: int, body: Any) -> dict[str, Any]:
        async with self.pool.acquire() as conn, conn.transaction():
            await self.repo.contract(conn, Scope(p), contract_id, for_update=True)
            v = await self.repo.version(conn, Scope(p), contract_id, version, for_update=True)
            p.require(*self._decider_roles())
            pr = Problems()
            raw = pr.obj(body, {"comment"}, {"comment"})
            comment = pr.string(raw, "comment", required=True)
            pr.raise_if_any()
            if v["state"] != "submitted":
                raise conflict(f"version {version} is {v['state']}; only a submitted version can be rejected")
            self._maker_checker(p, v)
            now = self.clock.now()
            await conn.execute(
                """UPDATE contract_versions SET state = 'rejected', decided_at = $3, decided_by = $4, decision_comment = $5,
                       updated_at = $3 WHERE contract_id = $1 AND version = $2""", contract_id, version, now, p.subject, comment)
            await self._record(conn, contract_id, p, Step(
                "version.rejected", p.subject, now, version=version, version_kind=v["kind"], comment=comment))
            return await self.version_json(conn, await self.repo.version(conn, Scope(p), contract_id, version))

    async def renew(self, p: Principal, contract_id: str, body: Any) -> dict[str, Any]:
        async with self.pool.acquire() as conn, conn.transaction():
            c = await self.repo.contract(conn, Scope(p), contract_id, for_update=True)
            p.require(*WRITERS)
            if c["terminated_at"] is not None:
                raise conflict("the contract is terminated; it cannot be renewed")
            pr = Problems()
            raw = pr.obj(body if body is not None else {}, {"apply_escalator", "comment"})
            apply_escalator = pr.boolean(raw, "apply_escalator", default=True)
            comment = pr.string(raw, "comment")
            pr.raise_if_any()
            latest = await self._latest_approved(conn, contract_id)
            if latest is None:
                raise conflict("only a contract with an approved version can be renewed")
            terms = parse_terms(latest["terms"])
            if terms.common.flight_end is None:
                raise conflict("an evergreen contract (no flight_end) has no term to renew")
            try:
                new = domain.renewal_terms(terms, apply_escalator=apply_escalator)
            except domain.RenewalImpossible as exc:
                raise conflict(str(exc), problems=exc.problems) from None
            effective = domain.day_start(new.common.flight_start, new.common.time_zone)
            now = self.clock.now()
            n = await self._next_version(conn, contract_id)
            await self._insert_version(conn, contract_id, n, "renewal", "draft", new, effective, author=p.subject,
                                       now=now, comment=comment)
            await self._record(conn, contract_id, p, Step(
                "version.drafted", p.subject, now, version=n, version_kind="renewal", effective_at=effective,
                comment=comment, details={"renews_version": latest["version"],
                                          "escalator_pct": terms.common.escalator_pct if apply_escalator else None},
                after={"terms": domain.terms_json(new)}))
            return await self.version_json(conn, await self.repo.version(conn, Scope(p), contract_id, n))

    async def cancel_auto_renewal(self, p: Principal, contract_id: str, body: Any) -> dict[str, Any]:
        async with self.pool.acquire() as conn, conn.transaction():
            c = await self.repo.contract(conn, Scope(p), contract_id, for_update=True)
            p.require(*WRITERS)
            pr = Problems()
            raw = pr.obj(body if body is not None else {}, {"reason"})
            reason = pr.string(raw, "reason")
            pr.raise_if_any()
            latest = await self._latest_approved(conn, contract_id)
            if latest is None:
                raise conflict("the contract has no approved version, so nothing auto-renews")
            terms = parse_terms(latest["terms"])
            end = domain.term_end(terms)
            if not terms.common.auto_renew or end is None:
                raise conflict("the contract does not auto-renew")
            if c["terminated_at"] is not None:
                raise conflict("the contract is terminated")
            if c["auto_renew_cancelled_for"] == end:
                raise conflict("auto-renewal of this term is already cancelled")
            now = self.clock.now()
            deadline = domain.notice_deadline(end, terms.common.notice_period_days)
            if now >= deadline:
                raise conflict(f"inside the notice period: auto-renewal could be cancelled until {deadline.isoformat()} "
                               f"({terms.common.notice_period_days} days before the term ends {end.isoformat()})",
                               notice_deadline=deadline.isoformat(), term_ends_at=end.isoformat())
            await conn.execute(
                """UPDATE contracts SET auto_renew_cancelled_for = $2, auto_renew_cancelled_by = $3,
                       auto_renew_cancelled_at = $4 WHERE id = $1""", contract_id, end, p.subject, now)
            await self._record(conn, contract_id, p, Step(
                "contract.auto_renewal_cancelled", p.subject, now, version=latest["version"], effective_at=end,
                comment=reason, details={"term_ends_at": end.isoformat(), "notice_deadline": deadline.isoformat()}))
            return await self._contract_json(conn, await self.repo.contract(conn, Scope(p), contract_id), Scope(p), full=True)

    async def terminate(self, p: Principal, contract_id: str, body: Any) -> dict[str, Any]:
        async with self.pool.acquire() as conn, conn.transaction():
            c = await self.repo.contract(conn, Scope(p), contract_id, for_update=True)
            p.require(*WRITERS)
            pr = Problems()
            raw = pr.obj(body, {"effective_date", "reason"}, {"effective_date", "reason"})
            day = pr.day(raw, "effective_date")
            reason = pr.string(raw, "reason", required=True)
            latest = await self._latest_approved(conn, contract_id)
            now = self.clock.now()
            if latest is None:
                raise conflict("only a contract with an approved version can be terminated; withdraw or reject the draft")
            if c["terminated_at"] is not None:
                raise conflict(f"the contract is already terminated at {c['terminated_at'].isoformat()}")
            if self.status_of(await self.repo.facts(conn, contract_id), None).status == "ended":
                raise conflict("the contract has already ended")
            terms = parse_terms(latest["terms"])
            instant: datetime | None = None
            if day is not None:
                instant = domain.day_start(day, terms.common.time_zone)
                earliest = domain.earliest_termination(now, terms.common.notice_period_days)
                if instant < earliest:
                    pr.add("effective_date", f"must respect the {terms.common.notice_period_days}-day notice period: "
                                             f"the earliest termination is at {earliest.isoformat()} (contract time zone "
                                             f"{terms.common.time_zone}, the contract ends at the start of that day)")
            pr.raise_if_any()
            assert instant is not None
            required = self.policy.required(ApprovalContext(
                c["contract_type"], "termination", c["currency"], domain.committed(terms), False))
            n = await self._next_version(conn, contract_id)
            await self._insert_version(conn, contract_id, n, "termination", "submitted", terms, instant, author=p.subject,
                                       now=now, comment=reason, open_ended=True, submitted=True, required=required)
            await self._record(conn, contract_id, p, Step(
                "contract.termination_requested", p.subject, now, version=n, version_kind="termination",
                effective_at=instant, comment=reason, details={"required_approvals": required}))
            return await self.version_json(conn, await self.repo.version(conn, Scope(p), contract_id, n))

    # ------------------------------------------------------------------ scheduler

    async def tick(self, now: datetime | None = None) -> list[str]:
        """One scheduler pass: auto-renewals, activations, ends. Safe to run on several replicas
        at once: each contract is handled under its row lock (SKIP LOCKED), and each action is
        decided from the state read under that lock, so a second pass finds nothing to do."""
        at = now if now is not None else self.clock.now()
        done: list[str] = []
        async with self.pool.acquire() as conn:
            ids = [r["id"] for r in await conn.fetch(
                "SELECT id FROM contracts WHERE status IN ('scheduled', 'active', 'terminating') ORDER BY id")]
        failed: list[str] = []
        for contract_id in ids:
            try:
                done += await self._tick_one(contract_id, at)
            except Exception:
                # one contract that cannot be handled (bad data, a bug) must not stop the others:
                # its transaction rolled back, so the next tick retries it from the same state
                log.exception("scheduler: contract failed; the others go on, it is retried next tick",
                              extra={"contract_id": contract_id})
                failed.append(contract_id)
                if self.metrics is not None:
                    self.metrics.scheduler_failures.inc()
        self.last_tick_failures = failed
        async with self.pool.acquire() as conn:
            await purge_expired(conn)
        if self.metrics is not None:
            for e in done:
                self.metrics.scheduler_actions.labels(e).inc()
        return done

    async def _tick_one(self, contract_id: str, at: datetime) -> list[str]:
        """One contract's due steps in one transaction, under its row lock (skipped if locked)."""
        done: list[str] = []
        async with self.pool.acquire() as conn, conn.transaction():
            c = await conn.fetchrow(
                """SELECT id, status, current_version, terminated_at, auto_renew_cancelled_for FROM contracts
                   WHERE id = $1 AND status IN ('scheduled', 'active', 'terminating') FOR UPDATE SKIP LOCKED""",
                contract_id)
            if c is None:
                return done
            done += await self._auto_renew(conn, c, at)
            facts = await self.repo.facts(conn, contract_id)
            derived = domain.derive_status(facts, c["terminated_at"], at)
            if (derived.status, derived.current_version) != (c["status"], c["current_version"]):
                event = "contract.status_changed" if derived.status != c["status"] else "version.activated"
                await self._record(conn, contract_id, None, Step(
                    event, SCHEDULER, at, version=derived.current_version, publish_terms=True,
                    details={"status_from": c["status"], "status_to": derived.status,
                             "version_from": c["current_version"], "version_to": derived.current_version}))
                done.append(event)
        return done

    async def _auto_renew(self, conn: asyncpg.Connection, c: Mapping[str, Any], now: datetime) -> list[str]:
        done: list[str] = []
        for _ in range(24):  # bounded: at most 24 missed terms caught up in one tick
            latest = await self._latest_approved(conn, c["id"])
            if latest is None:
                break
            terms = parse_terms(latest["terms"])
            end = domain.term_end(terms)
            if not terms.common.auto_renew or end is None:
                break
            if c["terminated_at"] is not None and c["terminated_at"] <= end:
                break
            if c["auto_renew_cancelled_for"] == end:
                break
            if now < domain.notice_deadline(end, terms.common.notice_period_days):
                break
            try:
                new = domain.renewal_terms(terms)
            except domain.RenewalImpossible as exc:
                log.warning("auto-renewal impossible; the term ends without renewal",
                            extra={"contract_id": c["id"], "reason": str(exc)})
                break
            effective = domain.day_start(new.common.flight_start, new.common.time_zone)
            n = await self._next_version(conn, c["id"])
            await self._insert_version(conn, c["id"], n, "renewal", "approved", new, effective, author=SCHEDULER, now=now,
                                       comment="automatic renewal", required={})
            await self._record(conn, c["id"], None, Step(
                "contract.renewed", SCHEDULER, now, version=n, version_kind="renewal", effective_at=effective,
                publish_terms=True, after={"terms": domain.terms_json(new)},
                details={"renews_version": latest["version"], "escalator_pct": terms.common.escalator_pct,
                         "term_starts_at": effective.isoformat(),
                         "term_ends_at": (domain.term_end(new) or effective).isoformat()}))
            done.append("contract.renewed")
        return done


def _partner_of(p: Principal) -> str | None:
    """The partner id of a partner user, whose reads are the partner view; None for anyone else."""
    return p.tenant_id if p.tenant_type == "partner" else None


def _for_viewer(p: Principal, version: dict[str, Any]) -> dict[str, Any]:
    partner = _partner_of(p)
    return version if partner is None else domain.partner_version(version, partner)


def _json_text(value: Any) -> str:
    return dumps(value)
