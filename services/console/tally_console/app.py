"""The gateway application: health and metrics (tally_kit), bearer checks on ``/api/``, the proxy,
demo users when enabled, and the built single-page app with history-API fallback."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware

from tally_kit.auth import TokenVerifier, bearer_token
from tally_kit.openapi import add_openapi
from tally_kit.problems import ApiError
from tally_kit.web import PRINCIPAL_KEY, REGISTRY_KEY, Handler, add_readiness_check, create_app

from .demo import add_demo_routes
from .metrics import ConsoleMetrics
from .openapi_spec import spec
from .proxy import make_proxy_handler, session_context
from .settings import ConsoleSettings, upstream_urls

#: hashed build outputs never change under the same name; everything else is revalidated
IMMUTABLE_PREFIX = "assets/"

#: besides GET and HEAD; anything else is a problem+json 405 with Allow (the console sends no OPTIONS: same origin)
PROXIED_METHODS = ("PUT", "POST", "PATCH", "DELETE")

#: never served, even if a build left one behind: a source map publishes the whole source
PRIVATE_SUFFIXES = frozenset({".map"})


def api_auth_middleware(verifier: TokenVerifier, public: frozenset[str]) -> Middleware:
    """Reject a missing or invalid token at the gateway (the services check it again and authorize)."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/api/") and request.path not in public:
            request[PRINCIPAL_KEY] = verifier.verify(bearer_token(request.headers.get("Authorization")))
        return await handler(request)

    return check


def static_handler(static_dir: Path) -> Handler:
    root = static_dir.resolve()

    async def serve(request: web.Request) -> web.StreamResponse:
        rel = request.match_info.get("path", "")
        if rel.startswith("api/") or rel == "api":
            raise ApiError(404, f"no API at {request.path}")
        index = root / "index.html"
        if not index.is_file():
            raise ApiError(503, "the console is not built: run `npm run build` in services/console/web")
        if rel:
            if Path(rel).suffix in PRIVATE_SUFFIXES:
                raise ApiError(404, f"no file {request.path}")
            candidate = (root / rel).resolve()
            if candidate.is_relative_to(root) and candidate.is_file():
                cache = "public, max-age=31536000, immutable" if rel.startswith(IMMUTABLE_PREFIX) else "no-cache"
                # FileResponse sends the build's precompressed name.br / name.gz when the browser accepts it
                return web.FileResponse(candidate, headers={"Cache-Control": cache, "Vary": "Accept-Encoding"})
            if rel.startswith(IMMUTABLE_PREFIX) or Path(rel).suffix in {".js", ".css", ".map", ".png", ".svg", ".ico"}:
                # a missing asset is a 404, not the app shell (which would confuse the browser)
                raise ApiError(404, f"no file {request.path}")
        # client-side routes (/contracts/42, /invoices, ...) all get the app shell
        return web.FileResponse(index, headers={"Cache-Control": "no-cache", "Vary": "Accept-Encoding"})

    return serve


def build_app(settings: ConsoleSettings, verifier: TokenVerifier, upstreams: Mapping[str, str] | None = None) -> web.Application:
    demo_path = "/api/demo/users"
    # the app shell and assets are public (a browser navigates without a token); /api/ is not
    app = create_app("console", verifier=None, client_max_size=32 * 1024 * 1024)
    app.middlewares.append(api_auth_middleware(verifier, frozenset({demo_path} if settings.console_demo else ())))
    metrics = ConsoleMetrics(app[REGISTRY_KEY])
    app.cleanup_ctx.append(session_context)
    static_dir = Path(settings.console_static_dir)

    async def app_is_built(_: web.Application) -> None:
        if not (static_dir / "index.html").is_file():
            raise RuntimeError(f"{static_dir}/index.html is missing: run `npm run build`")

    add_readiness_check(app, app_is_built)
    if settings.console_demo:
        add_demo_routes(app, verifier, metrics)
    add_openapi(app, spec(demo=settings.console_demo))
    proxy = make_proxy_handler(upstreams or upstream_urls(settings), metrics, settings.console_upstream_timeout_s)
    for path in ("/api/{service}/{tail:.*}", "/api/{service}"):
        app.router.add_get(path, proxy)  # and HEAD
        for method in PROXIED_METHODS:
            app.router.add_route(method, path, proxy)
    app.router.add_get("/{path:.*}", static_handler(static_dir))
    return app
