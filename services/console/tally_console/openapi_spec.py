"""The OpenAPI 3.1 document of the console gateway's own endpoints (served at /openapi.json and /docs).

The services' APIs behind ``/api/<service>/`` are described by their own documents (each at
``/api/<service>/openapi.json``); this one describes what the gateway itself answers: health,
readiness, metrics, the demo sign-in, its bearer check and proxy failures in front of the services,
and the web app. ``tests/unit/console/test_console_openapi.py`` fails when a route and this
document disagree.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from tally_kit.apidoc import document, errors, json_body, problem, ref

from .settings import ConsoleSettings

_PUBLIC: list[dict[str, Any]] = []  # an operation's ``security: []``: no token needed
_TEXT = {"type": "string"}

#: the services behind /api/ (a TALLY_CONSOLE_<NAME>_URL setting each)
SERVICES = tuple(f.name.removeprefix("console_").removesuffix("_url") for f in fields(ConsoleSettings) if f.name.endswith("_url"))
_SERVICE = {"name": "service", "in": "path", "required": True,
            "schema": {"type": "string", "description": f"one of {', '.join(SERVICES)}"}}
_TAIL = {"name": "tail", "in": "path", "required": True,
         "schema": {"type": "string"}, "description": "the path on the service, after /api/<service>/"}

#: what the gateway itself answers on /api/<service>/...; every other status is the service's own answer
_PROXY_RESPONSES: dict[str, Any] = {
    **errors(401, 404, _401="missing or invalid bearer token: checked at the gateway, the request never reaches a service",
             _404="no such service behind /api/ (or the service's own 404, relayed)"),
    "502": problem("the service is not reachable"),
    "504": problem("the service did not answer within TALLY_CONSOLE_UPSTREAM_TIMEOUT_S"),
    "default": {"description": "the service's own answer, relayed unchanged (status, headers, streamed body; "
                               "text/event-stream chunk by chunk); see its document at /api/<service>/openapi.json"},
}


def _proxy_operation(method: str, with_tail: bool) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": f"{method.upper()} on a service, through the gateway",
        "description": "Forwards the caller's Authorization header unchanged (the service authorizes the user); "
                       "drops hop-by-hop headers and cookies; adds X-Request-Id and X-Forwarded-*.",
        "parameters": [_SERVICE, _TAIL] if with_tail else [_SERVICE],
        "responses": _PROXY_RESPONSES,
    }
    if method in ("put", "post", "patch"):
        op["requestBody"] = {"required": False, "description": "streamed to the service as sent",
                             "content": {"application/json": {"schema": {}}}}
    return op


def _schemas() -> dict[str, Any]:
    return {
        "Health": {"type": "object", "required": ["status", "service"], "properties": {
            "status": {"const": "ok"}, "service": {"const": "console"}}},
        "Ready": {"type": "object", "required": ["status"], "properties": {
            "status": {"enum": ["ready", "unavailable"]}, "service": {"const": "console"},
            "failures": {"type": "object", "additionalProperties": {"type": "string"},
                         "description": "why it is not ready, per check (the app is not built)"}}},
        "DemoUser": {"type": "object", "required": ["subject", "name", "roles", "tenant_type", "tenant_id", "token"],
                     "properties": {
                         "subject": {"type": "string"}, "name": {"type": "string"},
                         "roles": {"type": "array", "items": {"type": "string"}},
                         "tenant_type": {"enum": ["advertiser", "partner", None]},
                         "tenant_id": {"type": ["string", "null"]},
                         "token": {"type": "string", "description": "an HS256 bearer token, valid 8 h"}}},
        "DemoUsers": {"type": "object", "required": ["users"], "properties": {
            "users": {"type": "array", "items": ref("DemoUser")}}},
    }


def spec(*, demo: bool = False) -> dict[str, Any]:
    """The gateway's document; ``demo``: with ``GET /api/demo/users`` (TALLY_CONSOLE_DEMO=true)."""
    paths: dict[str, Any] = {
        "/healthz": {"get": {"summary": "The process is alive", "security": _PUBLIC,
                             "responses": {"200": json_body(ref("Health"), "alive")}}},
        "/readyz": {"get": {"summary": "The web app is built and can be served", "security": _PUBLIC,
                            "responses": {"200": json_body(ref("Ready"), "ready"),
                                          "503": json_body(ref("Ready"), "not ready: web/dist/index.html is missing")}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "security": _PUBLIC,
                             "description": "the kit's tally_http_* plus tally_console_proxied_requests_total{service,outcome}, "
                                            "tally_console_open_event_streams, tally_console_demo_tokens_total",
                             "responses": {"200": {"description": "Prometheus text format",
                                                   "content": {"text/plain": {"schema": _TEXT}}}}}},
        "/openapi.json": {"get": {"summary": "This document", "security": _PUBLIC,
                                  "responses": {"200": json_body({"type": "object"}, "OpenAPI 3.1")}}},
        "/docs": {"get": {"summary": "This document as HTML", "security": _PUBLIC,
                          "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": _TEXT}}}}}},
        "/api/{service}/{tail}": {m: _proxy_operation(m, True) for m in ("get", "put", "post", "patch", "delete")},
        "/api/{service}": {m: _proxy_operation(m, False) for m in ("get", "put", "post", "patch", "delete")},
        "/{path}": {"get": {
            "summary": "The web app: a built file, else the app shell (history-API fallback)", "security": _PUBLIC,
            "description": "Hashed assets/ are immutable for a year; everything else is revalidated (no-cache). The "
                           "precompressed .br/.gz is sent when the browser accepts it. A source map is never served.",
            "parameters": [{"name": "path", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {
                "200": {"description": "the file, or index.html for a client-side route",
                        "content": {"text/html": {"schema": _TEXT}, "*/*": {"schema": {}}}},
                **errors(404, 503, _404="a missing asset or source map, or an /api/ path (never the app shell)",
                         _503="the web app is not built (npm run build)")}}},
    }
    if demo:
        paths["/api/demo/users"] = {"get": {
            "summary": "One-click demo users, one token per role", "security": _PUBLIC,
            "description": "Only with TALLY_CONSOLE_DEMO=true (the route does not exist otherwise); only on a loopback "
                           "Host (DNS rebinding). Tokens are minted with the local HS256 secret.",
            "responses": {"200": json_body(ref("DemoUsers"), "the demo users with their tokens"),
                          **errors(403, _403="the Host header is not a loopback address")}}}
    return document(
        title="Tally console gateway", version="1",
        description="The console's own endpoints. The services' APIs are behind /api/<service>/ with their own "
                    "documents (/api/<service>/openapi.json); the gateway checks the bearer token before proxying. "
                    "Errors are application/problem+json.",
        server="http://127.0.0.1:8080", paths=paths, schemas=_schemas())
