"""The aiohttp shell every service shares: problem+json errors, bearer auth, request logs,
Prometheus ``/metrics``, ``/healthz`` (the process is alive) and ``/readyz`` (its
dependencies answer). Nothing is opened at import time: ``create_app`` wires it all.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from .apidoc import allow_on_405
from .auth import Principal, TokenVerifier, bearer_token
from .inputs import hostile_text
from .problems import ApiError, problem_response

log = logging.getLogger("tally.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ReadinessCheck = Callable[[web.Application], Awaitable[None]]

REGISTRY_KEY: web.AppKey[CollectorRegistry] = web.AppKey("tally_registry", CollectorRegistry)
VERIFIER_KEY: web.AppKey[TokenVerifier] = web.AppKey("tally_verifier", TokenVerifier)
CHECKS_KEY: web.AppKey[list[ReadinessCheck]] = web.AppKey("tally_ready_checks", list)
PRINCIPAL_KEY: web.RequestKey[Principal] = web.RequestKey("tally_principal", Principal)
REQUEST_ID_KEY: web.RequestKey[str] = web.RequestKey("tally_request_id", str)
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"})


class HttpMetrics:
    """The metric catalogue shared by every HTTP service (services add their own beside it)."""

    def __init__(self, registry: CollectorRegistry, service: str) -> None:
        self.requests = Counter(
            "tally_http_requests_total", "HTTP requests by route, method and status",
            ["service", "route", "method", "status"], registry=registry)
        self.latency = Histogram(
            "tally_http_request_seconds", "HTTP request latency by route", ["service", "route", "method"],
            registry=registry, buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.service = service


METRICS_KEY: web.AppKey[HttpMetrics] = web.AppKey("tally_http_metrics", HttpMetrics)


def principal(request: web.Request) -> Principal:
    """The authenticated caller (set by the auth middleware)."""
    p = request.get(PRINCIPAL_KEY)
    if p is None:
        raise ApiError(401, "authentication required")
    return p


def _printable_path(request: web.Request) -> str:
    """The path for a problem's ``instance``, encodable whatever the client sent."""
    return request.path.encode("utf-8", "backslashreplace").decode("utf-8")


def _route_name(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"


def create_app(
    service: str,
    *,
    verifier: TokenVerifier | None,
    public_paths: Iterable[str] = (),
    registry: CollectorRegistry | None = None,
    client_max_size: int = 8 * 1024 * 1024,
) -> web.Application:
    """An app with the shared middlewares and endpoints. ``verifier=None`` disables auth
    (only for internal tools; every public API passes one)."""
    public = PUBLIC_PATHS | set(public_paths)
    reg = registry or CollectorRegistry()
    metrics = HttpMetrics(reg, service)

    @web.middleware
    async def problems_mw(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
        request[REQUEST_ID_KEY] = request_id
        status = 500
        try:
            if verifier is not None and request.path not in public and not request.path.startswith("/static/"):
                request[PRINCIPAL_KEY] = verifier.verify(bearer_token(request.headers.get("Authorization")))
            # before any other work: a NUL or lone surrogate would fail deep inside (PostgreSQL, UTF-8)
            refused = hostile_text(request)
            if refused is not None:
                raise refused
            resp = await handler(request)
            status = resp.status
            return resp
        except ApiError as err:
            status = err.status
            return problem_response(err, _printable_path(request))
        except web.HTTPException as exc:
            status = exc.status
            if exc.status < 400:
                raise
            return problem_response(ApiError(exc.status, exc.reason), _printable_path(request))
        except Exception:
            log.exception("unhandled error", extra={"path": request.path, "request_id": request_id})
            return problem_response(ApiError(500, "internal error; see the service log", request_id=request_id),
                                    _printable_path(request))
        finally:
            route = _route_name(request)
            metrics.requests.labels(service, route, request.method, str(status)).inc()
            metrics.latency.labels(service, route, request.method).observe(time.perf_counter() - started)

    # allow_on_405 runs inside problems_mw, which renders its ApiError with the Allow header
    app = web.Application(middlewares=[problems_mw, allow_on_405], client_max_size=client_max_size)
    app[REGISTRY_KEY] = reg
    app[METRICS_KEY] = metrics
    app[CHECKS_KEY] = []
    if verifier is not None:
        app[VERIFIER_KEY] = verifier

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "service": service})

    async def readyz(request: web.Request) -> web.Response:
        failures: dict[str, str] = {}
        for check in request.app[CHECKS_KEY]:
            try:
                await check(request.app)
            except Exception as exc:  # a readiness probe reports, it does not crash
                failures[getattr(check, "__name__", "check")] = str(exc)
        if failures:
            return web.json_response({"status": "unavailable", "failures": failures}, status=503)
        return web.json_response({"status": "ready", "service": service})

    async def metrics_view(request: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(request.app[REGISTRY_KEY]))
        resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return resp

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    return app


def add_readiness_check(app: web.Application, check: ReadinessCheck) -> None:
    app[CHECKS_KEY].append(check)


def json_ok(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    from .db import dumps

    return web.Response(text=dumps(data), status=status, content_type="application/json", headers=headers)
