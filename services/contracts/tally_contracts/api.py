"""HTTP API of the contracts service (aiohttp). Handlers parse the request and call
:class:`ContractService`; tenant scoping lives in the repository, not here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import date, datetime
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from tally_billing import bounds
from tally_kit import audit, db, idempotency
from tally_kit.auth import TokenVerifier
from tally_kit.inputs import check_lengths, read_json_body
from tally_kit.openapi import add_openapi, encode_cursor, page_params
from tally_kit.problems import ApiError, not_found, validation_error
from tally_kit.settings import Settings
from tally_kit.web import REGISTRY_KEY, add_readiness_check, create_app, json_ok, principal
from tally_streams.avro import SchemaCatalog

from .clock import Clock, SystemClock
from .domain import STATUSES
from .metrics import ContractMetrics
from .openapi_spec import spec
from .outbox import StepWriter
from .repo import ContractRepo, ListFilters
from .service import ContractService

log = logging.getLogger("tally.contracts.api")

SERVICE_KEY: web.AppKey[ContractService] = web.AppKey("contracts_service", ContractService)
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


def _with_etag(v: dict[str, Any], status: int = 200) -> web.Response:
    return json_ok(v, status=status, headers={"ETag": v["etag"]})


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
    svc = lambda r: r.app[SERVICE_KEY]  # noqa: E731 - a one-line accessor

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
        items, more = await svc(request).list_contracts(principal(request), filters, limit, cursor)
        items = items[:limit]
        nxt = encode_cursor([items[-1]["created_at"], items[-1]["id"]]) if more and items else None
        return json_ok({"items": items, "next_cursor": nxt})

    async def create_contract(request: web.Request) -> web.Response:
        contract, version = await svc(request).create(principal(request), await _body(request))
        return json_ok({**contract, "draft": version}, status=201,
                       headers={"Location": f"/contracts/{contract['id']}", "ETag": version["etag"]})

    async def get_contract(request: web.Request) -> web.Response:
        return json_ok(await svc(request).get_contract(principal(request), _id(request)))

    async def list_versions(request: web.Request) -> web.Response:
        return json_ok({"items": await svc(request).list_versions(principal(request), _id(request))})

    async def get_version(request: web.Request) -> web.Response:
        return _with_etag(await svc(request).get_version(principal(request), _id(request), _version_no(request)))

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
        return json_ok(await svc(request).diff(principal(request), _id(request), nums["from"], nums["to"]))

    async def amend(request: web.Request) -> web.Response:
        v = await svc(request).amend(principal(request), _id(request), await _body(request))
        resp = _with_etag(v, 201)
        resp.headers["Location"] = f"/contracts/{v['contract_id']}/versions/{v['version']}"
        return resp

    async def edit(request: web.Request) -> web.Response:
        return _with_etag(await svc(request).edit(principal(request), _id(request), _version_no(request),
                                                  await _body(request), request.headers.get("If-Match")))

    async def submit(request: web.Request) -> web.Response:
        await _body(request)
        return _with_etag(await svc(request).submit(principal(request), _id(request), _version_no(request),
                                                    request.headers.get("If-Match")))

    async def withdraw(request: web.Request) -> web.Response:
        await _body(request)
        return _with_etag(await svc(request).withdraw(principal(request), _id(request), _version_no(request)))

    async def approve(request: web.Request) -> web.Response:
        return _with_etag(await svc(request).approve(principal(request), _id(request), _version_no(request),
                                                     await _body(request), request.headers.get("If-Match")))

    async def reject(request: web.Request) -> web.Response:
        return _with_etag(await svc(request).reject(principal(request), _id(request), _version_no(request),
                                                    await _body(request)))

    async def renew(request: web.Request) -> web.Response:
        v = await svc(request).renew(principal(request), _id(request), await _body(request))
        resp = _with_etag(v, 201)
        resp.headers["Location"] = f"/contracts/{v['contract_id']}/versions/{v['version']}"
        return resp

    async def cancel_auto_renewal(request: web.Request) -> web.Response:
        return json_ok(await svc(request).cancel_auto_renewal(principal(request), _id(request),
                                                               await _body(request)))

    async def terminate(request: web.Request) -> web.Response:
        v = await svc(request).terminate(principal(request), _id(request), await _body(request))
        resp = _with_etag(v, 201)
        resp.headers["Location"] = f"/contracts/{v['contract_id']}/versions/{v['version']}"
        return resp

    async def audit_trail(request: web.Request) -> web.Response:
        limit, after = page_params(request)
        after_seq = 0
        if after is not None:
            if len(after) != 1 or not isinstance(after[0], int) or isinstance(after[0], bool) or not 0 <= after[0] <= SEQ_MAX:
                raise validation_error([("query.cursor", "is not a cursor returned by this API")])
            after_seq = after[0]
        entries = await svc(request).audit_trail(principal(request), _id(request), after_seq, limit)
        items = entries[:limit]
        nxt = encode_cursor([items[-1]["seq"]]) if len(entries) > limit and items else None
        return json_ok({"items": items, "next_cursor": nxt})

    async def verify_audit(request: web.Request) -> web.Response:
        principal(request).require("admin")
        async with request.app[db.POOL_KEY].acquire() as conn:
            result = await audit.verify_report(conn)
        broken = None if result.broken is None else {"seq": result.broken.seq, "reason": result.broken.reason}
        return json_ok({"ok": broken is None, "checked": result.checked, "first_broken_link": broken})

    r = app.router
    r.add_get("/contracts", list_contracts)
    r.add_post("/contracts", create_contract)
    r.add_get("/contracts/{id}", get_contract)
    r.add_get("/contracts/{id}/versions", list_versions)
    r.add_get("/contracts/{id}/versions/{version}", get_version)
    r.add_put("/contracts/{id}/versions/{version}", edit)
    r.add_post("/contracts/{id}/versions/{version}/submit", submit)
    r.add_post("/contracts/{id}/versions/{version}/withdraw", withdraw)
    r.add_post("/contracts/{id}/versions/{version}/approve", approve)
    r.add_post("/contracts/{id}/versions/{version}/reject", reject)
    r.add_get("/contracts/{id}/diff", diff)
    r.add_post("/contracts/{id}/amendments", amend)
    r.add_post("/contracts/{id}/renew", renew)
    r.add_post("/contracts/{id}/cancel-auto-renewal", cancel_auto_renewal)
    r.add_post("/contracts/{id}/terminate", terminate)
    r.add_get("/contracts/{id}/audit", audit_trail)
    r.add_get("/audit/verify", verify_audit)


def build_app(
    settings: Settings,
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
    the_clock = clock or SystemClock()
    the_catalog = catalog or SchemaCatalog.load()
    app.cleanup_ctx.append(db.pool_context(lambda _: settings.contracts_database_url))

    async def service_ctx(a: web.Application) -> AsyncIterator[None]:
        repo = ContractRepo()
        a[SERVICE_KEY] = ContractService(a[db.POOL_KEY], the_clock, settings.contracts_approval_policy,
                                         StepWriter(the_catalog, repo), repo, metrics)
        yield

    app.cleanup_ctx.append(service_ctx)
    run_bg = background if background is not None else True
    if run_bg:
        app.cleanup_ctx.append(_background(settings, metrics))

    async def database_answers(a: web.Application) -> None:
        async with a[db.POOL_KEY].acquire() as conn:
            await conn.fetchval("SELECT 1")

    add_readiness_check(app, database_answers)
    idempotency.install(app)
    add_openapi(app, spec())
    routes(app)
    return app


def _background(settings: Settings, metrics: ContractMetrics) -> Any:
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
