"""The contracts service layer: one handler per command (a lifecycle step) or query.

Each step runs in ONE transaction that locks the contract row, makes the change through the
repository, and records it (audit entry + outbox rows) through :class:`StepWriter`. Handlers
raise the domain's errors (``domain.ContractError``); the HTTP edge maps them to answers.

Roles: ``ops``/``admin`` draft, edit, submit, withdraw, renew, cancel auto-renewal and
terminate; the approval policy's roles (``approver``, ``finance``) approve and reject, never
for a version they authored or submitted. Reads go through the tenant-scoped repository.
Handlers are wired to their dependencies once, by ``bootstrap.bootstrap``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from tally_billing.terms import ContractTerms, parse_terms
from tally_kit.auth import Principal
from tally_kit.clock import Clock

from . import commands as c
from . import domain, views
from .commands import Problems
from .domain import ApprovalContext, ApprovalPolicy, Conflict, Forbidden, Invalid, MakerChecker, OpenVersionExists
from .metrics import ContractMetrics
from .outbox import Recorded, Step, StepWriter
from .repo import ContractRepo, Scope

log = logging.getLogger("tally.contracts.service")

WRITERS = ("ops", "admin")
READERS = ("admin", "ops", "approver", "finance", "advertiser", "partner")
AUDIT_READERS = ("admin", "ops", "approver", "finance")
SCHEDULER = "scheduler"
OPEN_VERSION = "the contract already has an open (draft or submitted) version; finish or withdraw it first"


@dataclass
class Deps:
    """What the handlers work with; built once by ``bootstrap``."""

    pool: asyncpg.Pool
    clock: Clock
    policy: ApprovalPolicy
    repo: ContractRepo
    writer: StepWriter
    metrics: ContractMetrics | None = None


@dataclass
class TickResult:
    done: list[str] = field(default_factory=list)
    #: contract ids this tick could not handle (retried by the next)
    failed: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ helpers


def _require(p: Principal, *roles: str) -> None:
    domain.require_role(p.roles, *roles)


def _raise_if_any(pr: Problems) -> None:
    if pr.items:
        raise Invalid(pr.items)


async def _record(d: Deps, conn: asyncpg.Connection, contract_id: str, p: Principal | None, step: Step) -> Recorded:
    if p is not None:
        step.tenant_type, step.tenant_id = p.tenant_type, p.tenant_id
    rec = await d.writer.record(conn, contract_id, step)
    if d.metrics is not None:
        d.metrics.lifecycle_steps.labels(step.event_type).inc()
    return rec


async def _insert_version(d: Deps, conn: asyncpg.Connection, contract_id: str, version: int, kind: str, state: str,
                          terms: ContractTerms, effective_from: datetime, *, author: str, now: datetime,
                          backdated: bool = False, comment: str | None = None, open_ended: bool = False,
                          submitted: bool = False, required: Mapping[str, int] | None = None) -> None:
    try:
        await d.repo.insert_version(
            conn, contract_id, version, kind=kind, state=state, terms=domain.terms_json(terms),
            effective_from=effective_from, ends_at=None if open_ended else domain.term_end(terms),
            committed_value=domain.committed(terms), author=author, now=now, backdated=backdated, comment=comment,
            submitted=submitted, required=required)
    except OpenVersionExists:
        raise Conflict(OPEN_VERSION) from None


def _backdating(pr: Problems, terms: ContractTerms, effective_from: datetime, flag: bool, now: datetime,
                field_name: str = "effective_from") -> bool:
    common = terms.common
    open_start = domain.open_period_start(now, common.time_zone, common.billing_period)
    backdated = effective_from < open_start
    if backdated and not flag:
        pr.add(field_name, f"lies in a closed billing period (the open period starts {open_start.isoformat()}); "
                           "set backdated: true to request a backdated amendment, which needs finance approval")
    return backdated


def _check_same_contract(pr: Problems, contract: Mapping[str, Any], terms: ContractTerms) -> None:
    for path, have, want in (("terms.common.advertiser_id", terms.common.advertiser_id, contract["advertiser_id"]),
                             ("terms.contract_type", terms.contract_type.value, contract["contract_type"]),
                             ("terms.common.currency", terms.common.currency, contract["currency"]),
                             ("terms.common.time_zone", terms.common.time_zone, contract["time_zone"])):
        if have != want:
            pr.add(path, f"must stay {want!r} for this contract (a different one is a new contract)")


def _check_if_match(v: Mapping[str, Any], if_match: str | None, *, required: bool) -> None:
    tag = views.etag(v)
    if if_match is None:
        if required:
            raise domain.PreconditionRequired("editing a draft requires If-Match with the version's current ETag", tag)
        return
    if required and if_match.strip() == "*":
        # "*" matches whatever is there now: it would skip the very check the header is for
        raise domain.PreconditionRequired(
            "If-Match must be the version's ETag (not *): that is what prevents lost updates", tag)
    if if_match.strip() not in (tag, "*"):
        raise domain.PreconditionFailed("the version changed since you read it (stale ETag); read it again", tag)


MAKER_CHECKER = "maker-checker: you authored or submitted this version, so you cannot decide on it"
ALREADY_APPROVED = "you already approved this submission"
QUEUE_READERS = ("approver", "finance", "admin")
#: who names parties: the registry is reference data every tenant's pages show
PARTY_WRITERS = ("admin",)


def _maker_checker(p: Principal, v: Mapping[str, Any]) -> None:
    if p.subject in v["authors"] or p.subject == v["submitted_by"]:
        raise MakerChecker(MAKER_CHECKER)


def _why_not(d: Deps, p: Principal, v: Mapping[str, Any], given: Sequence[Mapping[str, Any]]) -> str | None:
    """Why ``p`` cannot approve the submitted version ``v`` (approvals ``given``) now; None when
    it can. The same rules, in the same order, as :func:`approve` applies."""
    if not set(p.roles) & set(_decider_roles(d)):
        return f"requires one of the roles: {', '.join(_decider_roles(d))}"
    try:
        _maker_checker(p, v)
    except MakerChecker as err:
        return err.detail
    if any(a["approver"] == p.subject for a in given):
        return ALREADY_APPROVED
    missing = domain.remaining(v["required_approvals"] or {}, [a["role"] for a in given])
    if domain.pick_role(p.roles, missing, None) is None:
        return f"your roles cannot give any of the missing approvals {missing}"
    return None


def _decider_roles(d: Deps) -> tuple[str, ...]:
    return tuple(sorted(d.policy.approving_roles | {"approver", "finance"}))


async def _lock_contract(d: Deps, conn: asyncpg.Connection, cmd: c.ContractCommand, *roles: str) -> asyncpg.Record:
    """The contract, row-locked in the caller's transaction, for a caller with ``roles``."""
    contract = await d.repo.contract(conn, Scope(cmd.principal), cmd.contract_id, for_update=True)
    _require(cmd.principal, *roles)
    return contract


async def _live_contract(d: Deps, conn: asyncpg.Connection, cmd: c.ContractCommand, verb: str) -> asyncpg.Record:
    """The contract a writer adds a version to (``verb``: amended, renewed), locked; not terminated."""
    contract = await _lock_contract(d, conn, cmd, *WRITERS)
    if contract["terminated_at"] is not None:
        raise Conflict(f"the contract is terminated; it cannot be {verb}")
    return contract


async def _lock_version(d: Deps, conn: asyncpg.Connection, cmd: c.VersionCommand, *roles: str
                        ) -> tuple[asyncpg.Record, asyncpg.Record]:
    """The contract and the version, row-locked in the caller's transaction, for a caller with ``roles``."""
    scope = Scope(cmd.principal)
    contract = await d.repo.contract(conn, scope, cmd.contract_id, for_update=True)
    v = await d.repo.version(conn, scope, cmd.contract_id, cmd.version, for_update=True)
    _require(cmd.principal, *roles)
    return contract, v


async def _deciding(d: Deps, conn: asyncpg.Connection, cmd: c.VersionCommand, verb: str,
                    if_match: str | None = None) -> asyncpg.Record:
    """The submitted version an approver or finance user decides on, locked (maker-checker applied)."""
    _, v = await _lock_version(d, conn, cmd, *_decider_roles(d))
    _raise_if_any(Problems(cmd.problems))
    _check_if_match(v, if_match, required=False)
    if v["state"] != "submitted":
        raise Conflict(f"version {cmd.version} is {v['state']}; only a submitted version can be {verb}")
    _maker_checker(cmd.principal, v)
    return v


async def _editable(d: Deps, conn: asyncpg.Connection, cmd: c.VersionCommand, verb: str, if_match: str | None,
                    *, if_match_required: bool) -> tuple[asyncpg.Record, asyncpg.Record]:
    """The contract and the draft (or withdrawn) version a writer edits or submits, locked."""
    contract, v = await _lock_version(d, conn, cmd, *WRITERS)
    _check_if_match(v, if_match, required=if_match_required)
    if v["state"] not in domain.EDITABLE_STATES:
        raise Conflict(f"version {cmd.version} is {v['state']}; only drafts (or withdrawn versions) can be {verb}")
    return contract, v


async def _version_view(d: Deps, conn: asyncpg.Connection, v: Mapping[str, Any]) -> dict[str, Any]:
    given = await d.repo.approvals(conn, v["contract_id"], v["version"], v["submission"]) if v["submission"] else []
    return views.version(v, given)


async def _read_version(d: Deps, conn: asyncpg.Connection, p: Principal, contract_id: str, n: int) -> dict[str, Any]:
    return await _version_view(d, conn, await d.repo.version(conn, Scope(p), contract_id, n))


async def _contract_view(d: Deps, conn: asyncpg.Connection, contract: Mapping[str, Any], viewer: Principal, *,
                         full: bool, facts: list[domain.VersionFacts] | None = None) -> dict[str, Any]:
    facts = facts if facts is not None else await d.repo.facts(conn, contract["id"])
    derived = domain.derive_status(facts, contract["terminated_at"], d.clock.now())
    if not full:
        return views.contract(contract, facts, derived, viewer, full=False)
    latest = await d.repo.latest_approved(conn, contract["id"])
    published = not await d.repo.unpublished(conn, contract["id"])
    return views.contract(contract, facts, derived, viewer, full=True, latest=latest, published=published)


# ------------------------------------------------------------------ queries


async def get_contract(q: c.GetContract, d: Deps) -> dict[str, Any]:
    _require(q.principal, *READERS)
    async with d.pool.acquire() as conn:
        contract = await d.repo.contract(conn, Scope(q.principal), q.contract_id)
        return await _contract_view(d, conn, contract, q.principal, full=True)


async def list_contracts(q: c.ListContracts, d: Deps) -> tuple[list[dict[str, Any]], bool]:
    """One page (``limit`` items) and whether more follow."""
    _require(q.principal, *READERS)
    async with d.pool.acquire() as conn:
        rows = await d.repo.list_page(conn, Scope(q.principal), q.filters, q.limit, q.after)
        by_id = await d.repo.facts_of(conn, [r["id"] for r in rows])
        items = [await _contract_view(d, conn, r, q.principal, full=False, facts=by_id.get(r["id"], [])) for r in rows]
    return items, len(rows) > q.limit


async def list_versions(q: c.ListVersions, d: Deps) -> list[dict[str, Any]]:
    _require(q.principal, *READERS)
    async with d.pool.acquire() as conn:
        return [views.for_viewer(q.principal, await _version_view(d, conn, v))
                for v in await d.repo.versions(conn, Scope(q.principal), q.contract_id)]


async def get_version(q: c.GetVersion, d: Deps) -> dict[str, Any]:
    _require(q.principal, *READERS)
    async with d.pool.acquire() as conn:
        return views.for_viewer(q.principal, await _read_version(d, conn, q.principal, q.contract_id, q.version))


async def diff(q: c.Diff, d: Deps) -> dict[str, Any]:
    _require(q.principal, *READERS)
    async with d.pool.acquire() as conn:
        va = await d.repo.version(conn, Scope(q.principal), q.contract_id, q.from_version)
        vb = await d.repo.version(conn, Scope(q.principal), q.contract_id, q.to_version)
    return views.diff(q.principal, q.contract_id, va, vb)


async def approvals_queue(q: c.ApprovalsQueue, d: Deps) -> tuple[list[dict[str, Any]], bool]:
    """One page of submitted versions (``limit`` items) and whether more follow. ``me``: only
    those the caller can approve now (``_why_not`` is None); ``any``: every one, saying why not."""
    p = q.principal
    if p.is_tenant:
        raise Forbidden("the approvals queue is for approver, finance and admin users")
    _require(p, *QUEUE_READERS)
    mine = q.waiting_for == "me"
    roles = sorted(set(p.roles) & set(_decider_roles(d)))
    items: list[dict[str, Any]] = []
    after = q.after
    if mine and not roles:
        return [], False  # nothing can wait for a caller who decides on nothing
    async with d.pool.acquire() as conn:
        while len(items) <= q.limit:
            # SQL leaves out what the caller is part of and what needs none of its roles; the
            # rules (``_why_not``) decide the rest, so a batch may yield fewer items than rows
            rows = await d.repo.submitted_page(conn, q.limit + 1, after, not_involving=p.subject if mine else None,
                                               needing_any_of=roles if mine else ())
            given = await d.repo.approvals_of(conn, rows)
            facts = await d.repo.facts_of(conn, sorted({r["contract_id"] for r in rows}))
            now = d.clock.now()
            for r in rows:
                approvals = given.get((r["contract_id"], r["version"]), [])
                why_not = _why_not(d, p, r, approvals)
                if mine and why_not is not None:
                    continue
                items.append(views.queue_item(r, approvals, domain.derive_status(
                    facts.get(r["contract_id"], []), r["q_terminated_at"], now), why_not))
            if len(rows) <= q.limit:
                break
            after = (rows[-1]["submitted_at"], rows[-1]["contract_id"], rows[-1]["version"])
    return items[:q.limit + 1], len(items) > q.limit


async def audit_trail(q: c.AuditTrail, d: Deps) -> list[dict[str, Any]]:
    """Up to ``limit + 1`` entries after ``after_seq`` (the extra one tells a next page exists)."""
    async with d.pool.acquire() as conn:
        await d.repo.contract(conn, Scope(q.principal), q.contract_id)
        _require(q.principal, *AUDIT_READERS)
        return views.audit_entries(await d.repo.audit_entries(conn, q.contract_id, q.after_seq, q.limit + 1))


async def get_parties(q: c.GetParties, d: Deps) -> list[dict[str, Any]]:
    """The registry entries among ``q.ids`` the caller may read; an id without one is left out."""
    _require(q.principal, *READERS)
    async with d.pool.acquire() as conn:
        return [views.party(r) for r in await d.repo.parties(conn, Scope(q.principal), q.party_type, q.ids)]


# ------------------------------------------------------------------ commands


async def name_party(cmd: c.NameParty, d: Deps) -> tuple[dict[str, Any], bool]:
    """Create or rename a party's entry; returns it and whether it was created. Naming it what it
    is already called changes nothing and records nothing."""
    p = cmd.principal
    _require(p, *PARTY_WRITERS)
    _raise_if_any(Problems(cmd.problems))
    assert cmd.name is not None
    now = d.clock.now()
    async with d.pool.acquire() as conn, conn.transaction():
        before = await d.repo.party_for_update(conn, cmd.party_type, cmd.party_id)
        if before is not None and before["display_name"] == cmd.name:
            return views.party(before), False
        row = await d.repo.upsert_party(conn, cmd.party_type, cmd.party_id, name=cmd.name, by=p.subject, now=now)
        await d.repo.audit_party(conn, cmd.party_type, cmd.party_id, p,
                                 before=None if before is None else before["display_name"], after=cmd.name, now=now)
    return views.party(row), before is None


async def create_contract(cmd: c.CreateContract, d: Deps) -> tuple[dict[str, Any], dict[str, Any]]:
    """The contract and its version 1, a draft."""
    p = cmd.principal
    _require(p, *WRITERS)
    _raise_if_any(Problems(cmd.problems))
    terms, name = cmd.terms, cmd.name
    assert terms is not None and name is not None
    now = d.clock.now()
    contract_id = f"ctr_{uuid.uuid4().hex[:20]}"
    partners = sorted(set(cmd.partner_ids) | {o.partner_id for o in (terms.cpa.partner_overrides if terms.cpa else ())})
    common = terms.common
    async with d.pool.acquire() as conn, conn.transaction():
        await d.repo.insert_contract(conn, contract_id, name=name, contract_type=terms.contract_type.value,
                                     advertiser_id=common.advertiser_id, partner_ids=partners,
                                     currency=common.currency, time_zone=common.time_zone, created_by=p.subject,
                                     now=now)
        effective = domain.day_start(common.flight_start, common.time_zone)
        await _insert_version(d, conn, contract_id, 1, "initial", "draft", terms, effective, author=p.subject, now=now,
                              comment=cmd.comment)
        await _record(d, conn, contract_id, p, Step(
            "contract.created", p.subject, now, version=1, version_kind="initial", effective_at=effective,
            comment=cmd.comment, after={"name": name, "terms": domain.terms_json(terms)}))
        out = await _contract_view(d, conn, await d.repo.contract(conn, Scope(p), contract_id), p, full=True)
        v = await _read_version(d, conn, p, contract_id, 1)
    return out, v


async def draft_amendment(cmd: c.DraftAmendment, d: Deps) -> dict[str, Any]:
    p, contract_id = cmd.principal, cmd.contract_id
    async with d.pool.acquire() as conn, conn.transaction():
        contract = await _live_contract(d, conn, cmd, "amended")
        now = d.clock.now()
        pr = Problems(cmd.problems)
        terms, eff_day = cmd.terms, cmd.effective_from
        latest = await d.repo.latest_approved(conn, contract_id)
        kind = "amendment" if latest is not None else "initial"
        if kind == "amendment" and eff_day is None and not cmd.effective_from_given:
            pr.add("effective_from", "is required for an amendment")
        backdated = False
        effective: datetime | None = None
        if terms is not None:
            _check_same_contract(pr, contract, terms)
            if kind == "initial":
                effective = domain.day_start(terms.common.flight_start, terms.common.time_zone)
            elif eff_day is not None:
                effective = domain.day_start(eff_day, terms.common.time_zone)
                assert latest is not None
                if effective < latest["effective_from"]:
                    pr.add("effective_from", f"must be on or after the latest approved version's start "
                                             f"({latest['effective_from'].isoformat()})")
                backdated = _backdating(pr, terms, effective, bool(cmd.backdated), now)
        _raise_if_any(pr)
        assert terms is not None and effective is not None
        n = await d.repo.next_version(conn, contract_id)
        await _insert_version(d, conn, contract_id, n, kind, "draft", terms, effective, author=p.subject, now=now,
                              backdated=backdated, comment=cmd.comment)
        await _record(d, conn, contract_id, p, Step(
            "version.drafted", p.subject, now, version=n, version_kind=kind, effective_at=effective,
            backdated=backdated, comment=cmd.comment, after={"terms": domain.terms_json(terms)}))
        return await _read_version(d, conn, p, contract_id, n)


async def edit_draft(cmd: c.EditDraft, d: Deps) -> dict[str, Any]:
    p, contract_id, version = cmd.principal, cmd.contract_id, cmd.version
    async with d.pool.acquire() as conn, conn.transaction():
        contract, v = await _editable(d, conn, cmd, "edited", cmd.if_match, if_match_required=True)
        if v["kind"] == "termination":
            raise Conflict("a termination request is not edited; let it be rejected or withdrawn and request again")
        now = d.clock.now()
        pr = Problems(cmd.problems)
        terms = cmd.terms
        flag = bool(v["backdated"]) if cmd.backdated is None else cmd.backdated
        effective: datetime = v["effective_from"]
        backdated = False
        if terms is not None:
            _check_same_contract(pr, contract, terms)
            if v["kind"] == "initial":
                effective = domain.day_start(terms.common.flight_start, terms.common.time_zone)
            else:
                if cmd.effective_from is not None:
                    effective = domain.day_start(cmd.effective_from, terms.common.time_zone)
                backdated = _backdating(pr, terms, effective, flag, now)
        _raise_if_any(pr)
        assert terms is not None
        before = await _version_view(d, conn, v)
        try:
            await d.repo.edit_version(conn, contract_id, version, terms=domain.terms_json(terms),
                                      effective_from=effective, ends_at=domain.term_end(terms), backdated=backdated,
                                      committed_value=domain.committed(terms), comment=cmd.comment, author=p.subject,
                                      now=now)
        except OpenVersionExists:
            raise Conflict("the contract has another open version; a withdrawn version can be edited only "
                           "when no other draft or submitted version exists") from None
        after = await _read_version(d, conn, p, contract_id, version)
        await _record(d, conn, contract_id, p, Step(
            "version.edited", p.subject, now, version=version, version_kind=v["kind"], effective_at=effective,
            backdated=backdated, comment=cmd.comment, before=before, after=after,
            details={"changes": domain.diff(before["terms"], after["terms"])}))
        return after


async def submit(cmd: c.Submit, d: Deps) -> dict[str, Any]:
    p, contract_id, version = cmd.principal, cmd.contract_id, cmd.version
    async with d.pool.acquire() as conn, conn.transaction():
        contract, v = await _editable(d, conn, cmd, "submitted", cmd.if_match, if_match_required=False)
        now = d.clock.now()
        terms = parse_terms(v["terms"])
        backdated = bool(v["backdated"])
        if v["kind"] in ("amendment", "renewal"):
            pr = Problems()
            backdated = _backdating(pr, terms, v["effective_from"], bool(v["backdated"]), now)
            _raise_if_any(pr)
        required = d.policy.required(ApprovalContext(
            contract["contract_type"], v["kind"], contract["currency"], domain.committed(terms), backdated))
        try:
            await d.repo.submit_version(conn, contract_id, version, required=required, submitted_by=p.subject, now=now,
                                        backdated=backdated)
        except OpenVersionExists:
            raise Conflict("the contract has another open version; finish or withdraw it first") from None
        await _record(d, conn, contract_id, p, Step(
            "version.submitted", p.subject, now, version=version, version_kind=v["kind"],
            effective_at=v["effective_from"], backdated=backdated, details={"required_approvals": required}))
        return await _read_version(d, conn, p, contract_id, version)


async def withdraw(cmd: c.Withdraw, d: Deps) -> dict[str, Any]:
    p, contract_id, version = cmd.principal, cmd.contract_id, cmd.version
    async with d.pool.acquire() as conn, conn.transaction():
        _, v = await _lock_version(d, conn, cmd, *WRITERS)
        if v["state"] != "submitted":
            raise Conflict(f"version {version} is {v['state']}; only a submitted version can be withdrawn")
        now = d.clock.now()
        await d.repo.withdraw_version(conn, contract_id, version, now)
        await _record(d, conn, contract_id, p, Step(
            "version.withdrawn", p.subject, now, version=version, version_kind=v["kind"],
            details={"approvals_discarded": len(await d.repo.approvals(conn, contract_id, version, v["submission"]))}))
        return await _read_version(d, conn, p, contract_id, version)


async def approve(cmd: c.Approve, d: Deps) -> dict[str, Any]:
    p, contract_id, version = cmd.principal, cmd.contract_id, cmd.version
    async with d.pool.acquire() as conn, conn.transaction():
        v = await _deciding(d, conn, cmd, "approved", cmd.if_match)
        given = await d.repo.approvals(conn, contract_id, version, v["submission"])
        if any(a["approver"] == p.subject for a in given):
            raise Conflict(ALREADY_APPROVED)
        required = v["required_approvals"] or {}
        missing = domain.remaining(required, [a["role"] for a in given])
        role = domain.pick_role(p.roles, missing, cmd.role)
        if role is None:
            raise Forbidden(f"your roles cannot give any of the missing approvals {missing}", missing_approvals=missing)
        now = d.clock.now()
        await d.repo.add_approval(conn, contract_id, version, v["submission"], approver=p.subject, role=role,
                                  comment=cmd.comment, now=now)
        still = domain.remaining(required, [*(a["role"] for a in given), role])
        details = {"role": role, "required_approvals": required, "missing_approvals": still,
                   "approvers": [*(a["approver"] for a in given), p.subject]}
        if still:
            await _record(d, conn, contract_id, p, Step(
                "version.approval_recorded", p.subject, now, version=version, version_kind=v["kind"],
                effective_at=v["effective_from"], backdated=v["backdated"], comment=cmd.comment, details=details))
        else:
            await d.repo.approve_version(conn, contract_id, version, decided_by=p.subject, now=now)
            event = "version.approved"
            if v["kind"] == "termination":
                await d.repo.set_terminated(conn, contract_id, v["effective_from"])
                event = "contract.terminated"
            await _record(d, conn, contract_id, p, Step(
                event, p.subject, now, version=version, version_kind=v["kind"], effective_at=v["effective_from"],
                backdated=v["backdated"], comment=cmd.comment, details=details, publish_terms=True))
        return await _read_version(d, conn, p, contract_id, version)


async def reject(cmd: c.Reject, d: Deps) -> dict[str, Any]:
    p, contract_id, version = cmd.principal, cmd.contract_id, cmd.version
    async with d.pool.acquire() as conn, conn.transaction():
        v = await _deciding(d, conn, cmd, "rejected")
        now = d.clock.now()
        await d.repo.reject_version(conn, contract_id, version, decided_by=p.subject, now=now, comment=cmd.comment)
        await _record(d, conn, contract_id, p, Step(
            "version.rejected", p.subject, now, version=version, version_kind=v["kind"], comment=cmd.comment))
        return await _read_version(d, conn, p, contract_id, version)


async def renew(cmd: c.Renew, d: Deps) -> dict[str, Any]:
    p, contract_id = cmd.principal, cmd.contract_id
    async with d.pool.acquire() as conn, conn.transaction():
        await _live_contract(d, conn, cmd, "renewed")
        _raise_if_any(Problems(cmd.problems))
        latest = await d.repo.latest_approved(conn, contract_id)
        if latest is None:
            raise Conflict("only a contract with an approved version can be renewed")
        terms = parse_terms(latest["terms"])
        if terms.common.flight_end is None:
            raise Conflict("an evergreen contract (no flight_end) has no term to renew")
        try:
            new = domain.renewal_terms(terms, apply_escalator=cmd.apply_escalator)
        except domain.RenewalImpossible as exc:
            raise Conflict(str(exc), problems=exc.problems) from None
        effective = domain.day_start(new.common.flight_start, new.common.time_zone)
        now = d.clock.now()
        n = await d.repo.next_version(conn, contract_id)
        await _insert_version(d, conn, contract_id, n, "renewal", "draft", new, effective, author=p.subject, now=now,
                              comment=cmd.comment)
        await _record(d, conn, contract_id, p, Step(
            "version.drafted", p.subject, now, version=n, version_kind="renewal", effective_at=effective,
            comment=cmd.comment, details={"renews_version": latest["version"],
                                          "escalator_pct": terms.common.escalator_pct if cmd.apply_escalator else None},
            after={"terms": domain.terms_json(new)}))
        return await _read_version(d, conn, p, contract_id, n)


async def cancel_auto_renewal(cmd: c.CancelAutoRenewal, d: Deps) -> dict[str, Any]:
    p, contract_id = cmd.principal, cmd.contract_id
    async with d.pool.acquire() as conn, conn.transaction():
        contract = await _lock_contract(d, conn, cmd, *WRITERS)
        _raise_if_any(Problems(cmd.problems))
        latest = await d.repo.latest_approved(conn, contract_id)
        if latest is None:
            raise Conflict("the contract has no approved version, so nothing auto-renews")
        terms = parse_terms(latest["terms"])
        end = domain.term_end(terms)
        if not terms.common.auto_renew or end is None:
            raise Conflict("the contract does not auto-renew")
        if contract["terminated_at"] is not None:
            raise Conflict("the contract is terminated")
        if contract["auto_renew_cancelled_for"] == end:
            raise Conflict("auto-renewal of this term is already cancelled")
        now = d.clock.now()
        deadline = domain.notice_deadline(end, terms.common.notice_period_days)
        if now >= deadline:
            raise Conflict(f"inside the notice period: auto-renewal could be cancelled until {deadline.isoformat()} "
                           f"({terms.common.notice_period_days} days before the term ends {end.isoformat()})",
                           notice_deadline=deadline.isoformat(), term_ends_at=end.isoformat())
        await d.repo.cancel_auto_renewal(conn, contract_id, term_end=end, by=p.subject, now=now)
        await _record(d, conn, contract_id, p, Step(
            "contract.auto_renewal_cancelled", p.subject, now, version=latest["version"], effective_at=end,
            comment=cmd.reason, details={"term_ends_at": end.isoformat(), "notice_deadline": deadline.isoformat()}))
        return await _contract_view(d, conn, await d.repo.contract(conn, Scope(p), contract_id), p, full=True)


async def terminate(cmd: c.Terminate, d: Deps) -> dict[str, Any]:
    p, contract_id = cmd.principal, cmd.contract_id
    async with d.pool.acquire() as conn, conn.transaction():
        contract = await _lock_contract(d, conn, cmd, *WRITERS)
        pr = Problems(cmd.problems)
        latest = await d.repo.latest_approved(conn, contract_id)
        now = d.clock.now()
        if latest is None:
            raise Conflict("only a contract with an approved version can be terminated; withdraw or reject the draft")
        if contract["terminated_at"] is not None:
            raise Conflict(f"the contract is already terminated at {contract['terminated_at'].isoformat()}")
        facts = await d.repo.facts(conn, contract_id)
        if domain.derive_status(facts, None, d.clock.now()).status == "ended":
            raise Conflict("the contract has already ended")
        terms = parse_terms(latest["terms"])
        instant: datetime | None = None
        if cmd.effective_date is not None:
            instant = domain.day_start(cmd.effective_date, terms.common.time_zone)
            earliest = domain.earliest_termination(now, terms.common.notice_period_days)
            if instant < earliest:
                pr.add("effective_date", f"must respect the {terms.common.notice_period_days}-day notice period: "
                                         f"the earliest termination is at {earliest.isoformat()} (contract time zone "
                                         f"{terms.common.time_zone}, the contract ends at the start of that day)")
        _raise_if_any(pr)
        assert instant is not None
        required = d.policy.required(ApprovalContext(
            contract["contract_type"], "termination", contract["currency"], domain.committed(terms), False))
        n = await d.repo.next_version(conn, contract_id)
        await _insert_version(d, conn, contract_id, n, "termination", "submitted", terms, instant, author=p.subject,
                              now=now, comment=cmd.reason, open_ended=True, submitted=True, required=required)
        await _record(d, conn, contract_id, p, Step(
            "contract.termination_requested", p.subject, now, version=n, version_kind="termination",
            effective_at=instant, comment=cmd.reason, details={"required_approvals": required}))
        return await _read_version(d, conn, p, contract_id, n)


# ------------------------------------------------------------------ the scheduler


async def tick(cmd: c.Tick, d: Deps) -> TickResult:
    """One scheduler pass: auto-renewals, activations, ends. Safe to run on several replicas
    at once: each contract is handled under its row lock (SKIP LOCKED), and each action is
    decided from the state read under that lock, so a second pass finds nothing to do."""
    at = cmd.now if cmd.now is not None else d.clock.now()
    result = TickResult()
    async with d.pool.acquire() as conn:
        ids = await d.repo.scheduled_ids(conn)
    for contract_id in ids:
        try:
            result.done += await _tick_one(d, contract_id, at)
        except Exception:
            # one contract that cannot be handled (bad data, a bug) must not stop the others:
            # its transaction rolled back, so the next tick retries it from the same state
            log.exception("scheduler: contract failed; the others go on, it is retried next tick",
                          extra={"contract_id": contract_id})
            result.failed.append(contract_id)
            if d.metrics is not None:
                d.metrics.scheduler_failures.inc()
    async with d.pool.acquire() as conn:
        await d.repo.purge_expired_keys(conn)
    if d.metrics is not None:
        for e in result.done:
            d.metrics.scheduler_actions.labels(e).inc()
    return result


async def _tick_one(d: Deps, contract_id: str, at: datetime) -> list[str]:
    """One contract's due steps in one transaction, under its row lock (skipped if locked)."""
    done: list[str] = []
    async with d.pool.acquire() as conn, conn.transaction():
        contract = await d.repo.lock_scheduled(conn, contract_id)
        if contract is None:
            return done
        done += await _auto_renew(d, conn, contract, at)
        facts = await d.repo.facts(conn, contract_id)
        derived = domain.derive_status(facts, contract["terminated_at"], at)
        if (derived.status, derived.current_version) != (contract["status"], contract["current_version"]):
            event = "contract.status_changed" if derived.status != contract["status"] else "version.activated"
            await _record(d, conn, contract_id, None, Step(
                event, SCHEDULER, at, version=derived.current_version, publish_terms=True,
                details={"status_from": contract["status"], "status_to": derived.status,
                         "version_from": contract["current_version"], "version_to": derived.current_version}))
            done.append(event)
    return done


async def _auto_renew(d: Deps, conn: asyncpg.Connection, contract: Mapping[str, Any], now: datetime) -> list[str]:
    done: list[str] = []
    for _ in range(24):  # bounded: at most 24 missed terms caught up in one tick
        latest = await d.repo.latest_approved(conn, contract["id"])
        if latest is None:
            break
        terms = parse_terms(latest["terms"])
        end = domain.term_end(terms)
        if not terms.common.auto_renew or end is None:
            break
        if contract["terminated_at"] is not None and contract["terminated_at"] <= end:
            break
        if contract["auto_renew_cancelled_for"] == end:
            break
        if now < domain.notice_deadline(end, terms.common.notice_period_days):
            break
        try:
            new = domain.renewal_terms(terms)
        except domain.RenewalImpossible as exc:
            log.warning("auto-renewal impossible; the term ends without renewal",
                        extra={"contract_id": contract["id"], "reason": str(exc)})
            break
        effective = domain.day_start(new.common.flight_start, new.common.time_zone)
        n = await d.repo.next_version(conn, contract["id"])
        await _insert_version(d, conn, contract["id"], n, "renewal", "approved", new, effective, author=SCHEDULER,
                              now=now, comment="automatic renewal", required={})
        await _record(d, conn, contract["id"], None, Step(
            "contract.renewed", SCHEDULER, now, version=n, version_kind="renewal", effective_at=effective,
            publish_terms=True, after={"terms": domain.terms_json(new)},
            details={"renews_version": latest["version"], "escalator_pct": terms.common.escalator_pct,
                     "term_starts_at": effective.isoformat(),
                     "term_ends_at": (domain.term_end(new) or effective).isoformat()}))
        done.append("contract.renewed")
    return done


#: which handler answers which message (the bootstrap binds them to their dependencies)
HANDLERS: dict[type, Any] = {
    c.GetContract: get_contract, c.ListContracts: list_contracts, c.ListVersions: list_versions,
    c.GetVersion: get_version, c.Diff: diff, c.AuditTrail: audit_trail, c.ApprovalsQueue: approvals_queue,
    c.CreateContract: create_contract, c.DraftAmendment: draft_amendment, c.EditDraft: edit_draft,
    c.Submit: submit, c.Withdraw: withdraw, c.Approve: approve, c.Reject: reject, c.Renew: renew,
    c.CancelAutoRenewal: cancel_auto_renewal, c.Terminate: terminate, c.Tick: tick,
    c.GetParties: get_parties, c.NameParty: name_party,
}
