"""HTTP API of the contracts service (aiohttp). A handler here parses the request into a command
or query (``commands``), hands it to the service layer (``bootstrap.Contracts``), and answers;
the domain's errors become problem+json in :func:`problem`. Tenant scoping lives in the
repository, not here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date, datetime
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from tally_billing import bounds
from tally_kit import audit, db, idempotency
from tally_kit.auth import TokenVerifier
from tally_kit.clock import Clock, WallClock
from tally_kit.inputs import check_lengths, read_json_body
from tally_kit.openapi import add_openapi, encode_cursor, page_params
from tally_kit.problems import ApiError, not_found, validation_error
from tally_kit.web import REGISTRY_KEY, add_readiness_check, create_app, json_ok, principal
from tally_streams.avro import SchemaCatalog

from . import commands as c
from . import domain
from .bootstrap import Contracts, bootstrap
from .domain import STATUSES
from .metrics import ContractMetrics
from .openapi_spec import spec
from .repo import ListFilters
from .settings import ContractsSettings

log = logging.getLogger("tally.contracts.api")

SERVICE_KEY: web.AppKey[Contracts] = web.AppKey("contracts_service", Contracts)
METRICS_KEY: web.AppKey[ContractMetrics] = web.AppKey("contracts_metrics", ContractMetrics)


#: longest text a query filter takes (``q``: a name fragment; ids: the id bound)
Q_LEN_MAX = 200
CURSOR_LEN_MAX = 1024
#: the largest body (413 beyond): the largest valid terms are about 300 KiB, and parsing a
#: megabyte of JSON stays in the tens of milliseconds
MAX_BODY_BYTES = 1024 * 1024
#: audit sequence numbers are PostgreSQL bigint
SEQ_MAX = 2**63 - 1


async def _body(request: web.Request) -> Any:
    """The JSON body (None when empty): 415 unless JSON, 422 when too deep or with duplicate keys."""
    return await read_json_body(request)


def _id(request: web.Request) -> str:
    """The contract id in the path; one no contract can have is simply not found."""
    raw = request.match_info["id"]
    if bounds.id_problem(raw) is not None:
        raise not_found("contract")
    return raw


def _version_no(request: web.Request, name: str = "version") -> int:
    raw = request.match_info[name]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 10:
        raise not_found("version")
    n = int(raw)
    if not 1 <= n <= bounds.VERSION_MAX:
        raise not_found("version")
    return n


def _party_key(request: web.Request) -> tuple[str, str]:
    """The party type and id in the path; a pair no party can have is simply not found."""
    party_type, party_id = request.match_info["type"], request.match_info["id"]
    if party_type not in c.PARTY_TYPES or bounds.id_problem(party_id) is not None:
        raise not_found("party")
    return party_type, party_id


def problem(err: domain.ContractError) -> ApiError:
    """The problem+json answer to a domain error."""
    if isinstance(err, domain.NotFound):
        return not_found(err.what)
    if isinstance(err, domain.Invalid):
        return validation_error(err.problems)
    if isinstance(err, domain.PreconditionRequired):
        return ApiError(428, err.detail, headers={"ETag": err.etag})
    if isinstance(err, domain.PreconditionFailed):
        return ApiError(412, err.detail, headers={"ETag": err.etag}, current_etag=err.etag)
    if isinstance(err, domain.MakerChecker):
        return ApiError(403, err.detail, type_="https://tally.dev/problems/maker-checker", **err.extra)
    if isinstance(err, domain.Forbidden):
        return ApiError(403, err.detail, **err.extra)
    if isinstance(err, domain.Conflict):
        return ApiError(409, err.detail, type_="https://tally.dev/problems/conflict", **err.extra)
    return ApiError(400, err.detail, **err.extra)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _answers(handler: Handler) -> Handler:
    """``handler`` with the domain's errors answered as problem+json."""

    async def run(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except domain.ContractError as err:
            raise problem(err) from None

    return run


def _with_etag(v: dict[str, Any], status: int = 200) -> web.Response:
    return json_ok(v, status=status, headers={"ETag": v["etag"]})


def _created_version(v: dict[str, Any]) -> web.Response:
    resp = _with_etag(v, 201)
    resp.headers["Location"] = f"/contracts/{v['contract_id']}/versions/{v['version']}"
    return resp


def _filters(request: web.Request) -> ListFilters:
    q = request.query
    problems: list[tuple[str, str]] = []
    status = q.get("status")
    if status is not None and status not in STATUSES:
        problems.append(("query.status", f"must be one of {', '.join(STATUSES)}"))
    ctype = q.get("contract_type")
    if ctype is not None and ctype not in ("cpm", "cpa"):
        problems.append(("query.contract_type", "must be cpm or cpa"))
    effective_on: date | None = None
    if q.get("effective_on"):
        try:
            effective_on = date.fromisoformat(q["effective_on"])
        except ValueError:
            problems.append(("query.effective_on", "must be a date YYYY-MM-DD"))
    known = {"status", "contract_type", "effective_on", "advertiser_id", "partner_id", "q", "limit", "cursor"}
    problems += [(f"query.{k}", "unknown parameter") for k in sorted(set(q) - known)]
    problems += check_lengths({"q": q.get("q")}, Q_LEN_MAX)
    problems += check_lengths({"advertiser_id": q.get("advertiser_id"), "partner_id": q.get("partner_id")},
                              bounds.ID_LEN_MAX)
    problems += check_lengths({"cursor": q.get("cursor")}, CURSOR_LEN_MAX)
    try:
        page_params(request)
    except ApiError as err:  # report paging problems together with the filters'
        problems += [(e["field"], e["message"]) for e in err.errors]
    if problems:
        raise validation_error(problems, "invalid query parameters")
    return ListFilters(status=status, advertiser_id=q.get("advertiser_id"), partner_id=q.get("partner_id"),
                       contract_type=ctype, effective_on=effective_on, name=q.get("q"))


def routes(app: web.Application) -> None:
    def bus(request: web.Request) -> Contracts:
        return request.app[SERVICE_KEY]

    async def list_contracts(request: web.Request) -> web.Response:
        filters = _filters(request)
        limit, after = page_params(request)
        cursor: tuple[datetime, str] | None = None
        if after is not None:
            try:
                if len(after) != 2 or not isinstance(after[1], str) or bounds.id_problem(after[1]) is not None:
                    raise ValueError(after)
                cursor = (datetime.fromisoformat(after[0]), after[1])
                if cursor[0].tzinfo is None:
                    raise ValueError(after)
            except (ValueError, IndexError, TypeError):
                raise validation_error([("query.cursor", "is not a cursor returned by this API")]) from None
        items, more = await bus(request).handle(c.ListContracts(principal(request), filters, limit, cursor))
        items = items[:limit]
        nxt = encode_cursor([items[-1]["created_at"], items[-1]["id"]]) if more and items else None
        return json_ok({"items": items, "next_cursor": nxt})

    async def create_contract(request: web.Request) -> web.Response:
        cmd = c.create_contract(principal(request), await _body(request))
        contract, version = await bus(request).handle(cmd)
        return json_ok({**contract, "draft": version}, status=201,
                       headers={"Location": f"/contracts/{contract['id']}", "ETag": version["etag"]})

    async def get_contract(request: web.Request) -> web.Response:
        return json_ok(await bus(request).handle(c.GetContract(principal(request), _id(request))))

    async def list_versions(request: web.Request) -> web.Response:
        return json_ok({"items": await bus(request).handle(c.ListVersions(principal(request), _id(request)))})

    async def get_version(request: web.Request) -> web.Response:
        return _with_etag(await bus(request).handle(c.GetVersion(principal(request), _id(request),
                                                                 _version_no(request))))

    async def diff(request: web.Request) -> web.Response:
        problems = []
        nums: dict[str, int] = {}
        for k in ("from", "to"):
            raw = request.query.get(k, "")
            if not raw.isascii() or not raw.isdigit() or len(raw) > 10 or not 1 <= int(raw) <= bounds.VERSION_MAX:
                problems.append((f"query.{k}", f"is required: a version number from 1 to {bounds.VERSION_MAX}"))
            else:
                nums[k] = int(raw)
        if problems:
            raise validation_error(problems, "invalid query parameters")
        return json_ok(await bus(request).handle(c.Diff(principal(request), _id(request), nums["from"], nums["to"])))

    async def amend(request: web.Request) -> web.Response:
        cmd = c.draft_amendment(principal(request), _id(request), await _body(request))
        return _created_version(await bus(request).handle(cmd))

    async def edit(request: web.Request) -> web.Response:
        cmd = c.edit_draft(principal(request), _id(request), _version_no(request), await _body(request),
                           request.headers.get("If-Match"))
        return _with_etag(await bus(request).handle(cmd))

    async def submit(request: web.Request) -> web.Response:
        await _body(request)
        cmd = c.Submit(principal=principal(request), contract_id=_id(request), version=_version_no(request),
                       if_match=request.headers.get("If-Match"))
        return _with_etag(await bus(request).handle(cmd))

    async def withdraw(request: web.Request) -> web.Response:
        await _body(request)
        cmd = c.Withdraw(principal=principal(request), contract_id=_id(request), version=_version_no(request))
        return _with_etag(await bus(request).handle(cmd))

    async def approve(request: web.Request) -> web.Response:
        cmd = c.approve(principal(request), _id(request), _version_no(request), await _body(request),
                        request.headers.get("If-Match"))
        return _with_etag(await bus(request).handle(cmd))

    async def reject(request: web.Request) -> web.Response:
        cmd = c.reject(principal(request), _id(request), _version_no(request), await _body(request))
        return _with_etag(await bus(request).handle(cmd))

    async def renew(request: web.Request) -> web.Response:
        cmd = c.renew(principal(request), _id(request), await _body(request))
        return _created_version(await bus(request).handle(cmd))

    async def cancel_auto_renewal(request: web.Request) -> web.Response:
        cmd = c.cancel_auto_renewal(principal(request), _id(request), await _body(request))
        return json_ok(await bus(request).handle(cmd))

    async def terminate(request: web.Request) -> web.Response:
        cmd = c.terminate(principal(request), _id(request), await _body(request))
        return _created_version(await bus(request).handle(cmd))

    async def approvals_queue(request: web.Request) -> web.Response:
        p, q = principal(request), request.query
        problems = [(f"query.{k}", "unknown parameter") for k in sorted(set(q) - {"waiting_for", "limit", "cursor"})]
        # an admin decides on nothing itself: its queue is every submitted version
        waiting_for = q.get("waiting_for", "any" if p.has_role("admin") and not p.has_role("approver", "finance")
                            else "me")
        if waiting_for not in ("me", "any"):
            problems.append(("query.waiting_for", "must be me or any"))
        limit, after = 0, None
        try:
            limit, after = page_params(request)
        except ApiError as err:  # report paging problems together with the others
            problems += [(e["field"], e["message"]) for e in err.errors]
        cursor: tuple[datetime, str, int] | None = None
        if after is not None and not problems:
            try:
                at, contract_id, n = after
                cursor = (datetime.fromisoformat(at), contract_id, n)
                if (cursor[0].tzinfo is None or not isinstance(contract_id, str) or bounds.id_problem(contract_id)
                        or not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= bounds.VERSION_MAX):
                    raise ValueError(after)
            except (ValueError, TypeError):
                problems.append(("query.cursor", "is not a cursor returned by this API"))
        if problems:
            raise validation_error(problems, "invalid query parameters")
        items, more = await bus(request).handle(c.ApprovalsQueue(p, waiting_for, limit, cursor))
        items = items[:limit]
        last = items[-1] if items else None
        nxt = encode_cursor([last["version"]["submitted_at"], last["contract"]["id"], last["version"]["version"]]
                            ) if more and last else None
        return json_ok({"items": items, "next_cursor": nxt})

    async def audit_trail(request: web.Request) -> web.Response:
        limit, after = page_params(request)
        after_seq = 0
        if after is not None:
            if len(after) != 1 or not isinstance(after[0], int) or isinstance(after[0], bool) or not 0 <= after[0] <= SEQ_MAX:
                raise validation_error([("query.cursor", "is not a cursor returned by this API")])
            after_seq = after[0]
        entries = await bus(request).handle(c.AuditTrail(principal(request), _id(request), after_seq, limit))
        items = entries[:limit]
        nxt = encode_cursor([items[-1]["seq"]]) if len(entries) > limit and items else None
        return json_ok({"items": items, "next_cursor": nxt})

    async def get_parties(request: web.Request) -> web.Response:
        q = c.party_query(principal(request), request.query)
        if isinstance(q, list):
            raise validation_error(q, "invalid query parameters")
        return json_ok({"items": await bus(request).handle(q)})

    async def name_party(request: web.Request) -> web.Response:
        party_type, party_id = _party_key(request)
        cmd = c.name_party(principal(request), party_type, party_id, await _body(request))
        party, created = await bus(request).handle(cmd)
        return json_ok(party, status=201 if created else 200)

    async def verify_audit(request: web.Request) -> web.Response:
        principal(request).require("admin")
        async with request.app[db.POOL_KEY].acquire() as conn:
            result = await audit.verify_report(conn)
        broken = None if result.broken is None else {"seq": result.broken.seq, "reason": result.broken.reason}
        return json_ok({"ok": broken is None, "checked": result.checked, "first_broken_link": broken})

    r = app.router
    add = {"GET": r.add_get, "POST": r.add_post, "PUT": r.add_put}  # add_get also answers HEAD
    for method, path, handler in (
        ("GET", "/contracts", list_contracts),
        ("POST", "/contracts", create_contract),
        ("GET", "/contracts/{id}", get_contract),
        ("GET", "/contracts/{id}/versions", list_versions),
        ("GET", "/contracts/{id}/versions/{version}", get_version),
        ("PUT", "/contracts/{id}/versions/{version}", edit),
        ("POST", "/contracts/{id}/versions/{version}/submit", submit),
        ("POST", "/contracts/{id}/versions/{version}/withdraw", withdraw),
        ("POST", "/contracts/{id}/versions/{version}/approve", approve),
        ("POST", "/contracts/{id}/versions/{version}/reject", reject),
        ("GET", "/contracts/{id}/diff", diff),
        ("POST", "/contracts/{id}/amendments", amend),
        ("POST", "/contracts/{id}/renew", renew),
        ("POST", "/contracts/{id}/cancel-auto-renewal", cancel_auto_renewal),
        ("POST", "/contracts/{id}/terminate", terminate),
        ("GET", "/contracts/{id}/audit", audit_trail),
        ("GET", "/approvals", approvals_queue),
        ("GET", "/parties", get_parties),
        ("PUT", "/parties/{type}/{id}", name_party),
        ("GET", "/audit/verify", verify_audit),
    ):
        add[method](path, _answers(handler))


def build_app(
    settings: ContractsSettings,
    *,
    clock: Clock | None = None,
    verifier: TokenVerifier | None = None,
    catalog: SchemaCatalog | None = None,
    registry: CollectorRegistry | None = None,
    background: bool | None = None,
) -> web.Application:
    """The API app. ``background`` (default: from settings) runs the scheduler and the relay
    as tasks of this process; tests pass ``False`` and drive them directly."""
    app = create_app("contracts", verifier=verifier or TokenVerifier.from_env(), registry=registry,
                     client_max_size=MAX_BODY_BYTES)
    metrics = ContractMetrics(app[REGISTRY_KEY])
    app[METRICS_KEY] = metrics
    the_clock = clock or WallClock()
    the_catalog = catalog or SchemaCatalog.load()
    app.cleanup_ctx.append(db.pool_context(lambda _: settings.contracts_database_url))

    async def service_ctx(a: web.Application) -> AsyncIterator[None]:
        a[SERVICE_KEY] = bootstrap(a[db.POOL_KEY], the_clock, settings.contracts_approval_policy, the_catalog, metrics)
        yield

    app.cleanup_ctx.append(service_ctx)
    run_bg = background if background is not None else True
    if run_bg:
        app.cleanup_ctx.append(_background(settings, metrics))
        app.cleanup_ctx.append(audit.chain_watch(app[REGISTRY_KEY]))

    async def database_answers(a: web.Application) -> None:
        async with a[db.POOL_KEY].acquire() as conn:
            await conn.fetchval("SELECT 1")

    add_readiness_check(app, database_answers)
    idempotency.install(app)
    add_openapi(app, spec())
    routes(app)
    return app


def _background(settings: ContractsSettings, metrics: ContractMetrics) -> Any:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        from .relay import Relay
        from .scheduler import run_scheduler

        stop = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        if settings.contracts_run_scheduler:
            tasks.append(asyncio.create_task(run_scheduler(app[SERVICE_KEY], settings.contracts_scheduler_interval_s, stop)))
        if settings.contracts_run_relay:
            relay = Relay.from_settings(settings, metrics)
            tasks.append(asyncio.create_task(relay.run(stop)))
        try:
            yield
        finally:
            stop.set()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(t, 10)

    return ctx
