"""The same-origin proxy: ``/api/<service>/<path>`` → ``<service base URL>/<path>``.

Bodies stream both ways (uploads, PDF/CSV downloads, server-sent events) without being
buffered; the caller's ``Authorization`` header is forwarded unchanged so each service
authorizes the real user. Hop-by-hop headers are dropped (RFC 9110 §7.6.1).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from tally_kit.problems import ApiError
from tally_kit.web import REQUEST_ID_KEY

from .metrics import ConsoleMetrics

log = logging.getLogger("tally.console.proxy")

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te", "trailer",
    "transfer-encoding", "upgrade",
})
#: never sent upstream: the gateway sets Host itself, and the console uses no cookies
DROP_REQUEST = HOP_BY_HOP | {"host", "cookie", "content-length"}
DROP_RESPONSE = HOP_BY_HOP | {"set-cookie"}
CHUNK_BYTES = 64 * 1024

SESSION_KEY: web.AppKey[aiohttp.ClientSession] = web.AppKey("console_upstream_session", aiohttp.ClientSession)


def request_headers(request: web.Request) -> CIMultiDict[str]:
    """What goes upstream: the caller's headers (Authorization included) minus hop-by-hop ones."""
    connection_tokens = {t.strip().lower() for t in request.headers.get("Connection", "").split(",") if t.strip()}
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in request.headers.items():
        low = name.lower()
        if low in DROP_REQUEST or low in connection_tokens:
            continue
        out.add(name, value)
    out["X-Request-Id"] = request.get(REQUEST_ID_KEY) or request.headers.get("X-Request-Id") or ""
    out["X-Forwarded-Host"] = request.host
    out["X-Forwarded-Proto"] = request.scheme
    if request.remote:
        prior = request.headers.get("X-Forwarded-For")
        out["X-Forwarded-For"] = f"{prior}, {request.remote}" if prior else request.remote
    return out


def response_headers(upstream: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    connection_tokens = {t.strip().lower() for t in upstream.get("Connection", "").split(",") if t.strip()}
    return CIMultiDict((k, v) for k, v in upstream.items() if k.lower() not in DROP_RESPONSE and k.lower() not in connection_tokens)


def is_event_stream(headers: Mapping[str, str]) -> bool:
    return headers.get("Content-Type", "").split(";")[0].strip().lower() == "text/event-stream"


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_chunked(CHUNK_BYTES):
        yield chunk


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def upstream_url(base: str, request: web.Request, service: str) -> URL:
    """The service URL for ``request``: the path after ``/api/<service>`` and the query, still encoded."""
    prefix = f"/api/{service}"
    tail = request.rel_url.raw_path[len(prefix):] or "/"
    query = request.rel_url.raw_query_string
    return URL(base + tail + (f"?{query}" if query else ""), encoded=True)


def make_proxy_handler(upstreams: Mapping[str, str], metrics: ConsoleMetrics, timeout_s: int) -> Handler:
    async def proxy(request: web.Request) -> web.StreamResponse:
        service = request.match_info["service"]
        base = upstreams.get(service)
        if base is None:
            raise ApiError(404, f"no service {service!r} behind /api/ (known: {', '.join(sorted(upstreams))})")
        url = upstream_url(base, request, service)
        wants_stream = "text/event-stream" in request.headers.get("Accept", "")
        # an event stream may stay quiet for long; everything else must answer within the timeout
        timeout = aiohttp.ClientTimeout(total=None, connect=5, sock_connect=5, sock_read=None if wants_stream else timeout_s)
        session = request.app[SESSION_KEY]
        try:
            upstream = await session.request(
                request.method, url, headers=request_headers(request),
                data=_body(request) if request.body_exists else None,
                allow_redirects=False, timeout=timeout,
            )
        except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError) as exc:
            metrics.proxied.labels(service, "unreachable").inc()
            raise ApiError(502, f"the {service} service is not reachable ({exc.__class__.__name__})", service=service) from exc
        except TimeoutError as exc:
            metrics.proxied.labels(service, "timeout").inc()
            raise ApiError(504, f"the {service} service did not answer in time", service=service) from exc
        try:
            metrics.proxied.labels(service, str(upstream.status)).inc()
            headers = response_headers(upstream.headers)
            streaming = is_event_stream(upstream.headers)
            if streaming:
                # tell any further proxy not to buffer, and never cache a live stream
                headers["Cache-Control"] = "no-cache"
                headers["X-Accel-Buffering"] = "no"
                headers.pop("Content-Length", None)
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
            if streaming:
                metrics.open_streams.labels(service).inc()
            try:
                await response.prepare(request)
                # iter_any hands over whatever arrived, so each event is relayed as soon as it is read
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except (ConnectionResetError, aiohttp.ClientConnectionResetError):
                log.info("client went away", extra={"service": service, "path": request.path})
            except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, TimeoutError):
                # the service dropped the body mid-way: the browser sees a truncated response, not a hang
                log.warning("upstream body interrupted", extra={"service": service, "path": request.path})
                response.force_close()
            finally:
                if streaming:
                    metrics.open_streams.labels(service).dec()
            return response
        finally:
            upstream.release()

    return proxy


async def session_context(app: web.Application) -> AsyncIterator[None]:
    """One pooled client session for every upstream; bytes pass through untouched (no decompression)."""
    connector = aiohttp.TCPConnector(limit=200, limit_per_host=100)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()) as session:
        app[SESSION_KEY] = session
        yield
