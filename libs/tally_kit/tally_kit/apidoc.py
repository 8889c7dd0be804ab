"""One way to describe an aiohttp API in OpenAPI 3.1, and to keep the description honest.

- Building blocks every service's document uses (``ref``, ``json_body``, ``errors``,
  ``document``): the same ``Problem`` schema, the same wording per status, the same bearer
  scheme, so a client reads every Tally API alike. Serving stays ``tally_kit.openapi.add_openapi``.
- :func:`route_mismatches` compares an app's router with its document (paths and methods both
  ways), so a route added without its description, or a description of a route that is gone,
  fails that service's test; :func:`unresolved_refs` finds a ``$ref`` naming no schema.
- :func:`allow_on_405` answers a known path called with the wrong method as problem+json 405
  carrying ``Allow`` (RFC 9110 §15.5.6): aiohttp's own 405 names the methods, but the kit's
  problem middleware renders every ``HTTPException`` without its headers.
  ``tally_kit.web.create_app`` installs it on every service.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from aiohttp import web

from .problems import PROBLEM_JSON, ApiError

#: paths the kit serves on every app (``tally_kit.web``, ``tally_kit.openapi``); a service's
#: document describes its own API, so the route check leaves these out
KIT_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"})
METHODS = ("get", "put", "post", "patch", "delete", "options", "trace")

#: what each status means when an operation does not say more
MEANINGS: dict[int, str] = {
    400: "malformed request (unreadable body, bad Idempotency-Key)",
    401: "missing or invalid bearer token",
    403: "the caller's role may not do this",
    404: "no such resource (or not the caller's)",
    405: "method not allowed on this path (Allow names the allowed ones)",
    409: "state conflict, or the same Idempotency-Key is still in flight",
    412: "stale If-Match ETag",
    413: "body or batch too large; nothing was written",
    415: "unsupported Content-Type",
    422: "invalid fields, every one named by path in errors[]",
    428: "If-Match required",
    429: "too many requests or the queue is full; retry after Retry-After seconds",
    503: "a dependency is unavailable; retry after Retry-After seconds",
}

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object", "description": "RFC 9457 problem details",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
        "detail": {"type": "string"}, "instance": {"type": "string"},
        "request_id": {"type": "string", "description": "500 only: find it in the service log"},
        "errors": {"type": "array", "items": {
            "type": "object", "required": ["field", "message"],
            "properties": {"field": {"type": "string", "description": "path of the field, e.g. entries[2].count"},
                           "message": {"type": "string"}}}}},
}
RETRY_AFTER: dict[str, Any] = {"Retry-After": {"description": "seconds to wait before retrying",
                                               "schema": {"type": "string", "pattern": "^[0-9]+$"}}}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(schema: Mapping[str, Any], description: str, *, headers: Mapping[str, Any] | None = None,
              media_type: str = "application/json") -> dict[str, Any]:
    """A response whose body is ``schema`` as JSON."""
    out: dict[str, Any] = {"description": description, "content": {media_type: {"schema": dict(schema)}}}
    if headers:
        out["headers"] = dict(headers)
    return out


def problem(description: str, *, headers: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A problem+json response."""
    return json_body(ref("Problem"), description, headers=headers, media_type=PROBLEM_JSON)


def errors(*codes: int, **meanings: str) -> dict[str, Any]:
    """problem+json responses for ``codes``; ``meanings`` (``_409="..."``) overrides the wording.
    429 and 503 carry ``Retry-After``."""
    out: dict[str, Any] = {}
    for code in codes:
        text = meanings.get(f"_{code}", MEANINGS[code])
        out[str(code)] = problem(text, headers=RETRY_AFTER if code in (429, 503) else None)
    return out


def document(*, title: str, version: str, description: str, server: str, paths: Mapping[str, Any],
             schemas: Mapping[str, Any], security_schemes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document: bearer JWT on every operation unless it says otherwise."""
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "servers": [{"url": server}],
        "components": {"schemas": {"Problem": PROBLEM_SCHEMA, **schemas},
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                                           **(security_schemes or {})}},
        "security": [{"bearer": []}],
        "paths": dict(paths),
    }


# --------------------------------------------------------------------------- routes vs the document

_ALTERNATIVES = re.compile(r"\(\?P<(?P<name>\w+)>(?P<body>[^()]*)\)")
_LITERAL = re.compile(r"[\w.-]+")


def _route_paths(resource: web.AbstractResource) -> tuple[str, list[str]]:
    """``(template, concrete)``: the OpenAPI template of a route (``/a/{id}/export.{fmt}``) and,
    when its variables are literal alternatives (``{action:send|void}``), every concrete path."""
    info = resource.get_info()
    template = resource.canonical
    pattern = info.get("pattern")
    if pattern is None:
        return template, [template]
    expansions = [template]
    for m in _ALTERNATIVES.finditer(pattern.pattern):
        options = m.group("body").split("|")
        if not all(_LITERAL.fullmatch(o) for o in options):
            continue
        expansions = [e.replace("{" + m.group("name") + "}", o) for e in expansions for o in options]
    return template, expansions


def document_operations(spec: Mapping[str, Any]) -> dict[str, set[str]]:
    return {path: {m for m in METHODS if m in item} for path, item in spec.get("paths", {}).items()}


def route_mismatches(app: web.Application, spec: Mapping[str, Any], *, ignore: Iterable[str] = KIT_PATHS) -> list[str]:
    """Every (method, path) the router serves and the document does not describe, and back.

    A route whose variable is a list of literals (``/invoices/{id}/{action:send|void}``) may be
    described either as its template or path by path (``/invoices/{id}/send``, ...).
    """
    skip = set(ignore)
    documented = {p: ms for p, ms in document_operations(spec).items() if p not in skip}
    unmatched_doc = {(p, m) for p, ms in documented.items() for m in ms}
    problems: list[str] = []
    for route in app.router.routes():
        method = route.method.lower()
        if method == "head" or route.resource is None:
            continue
        template, concrete = _route_paths(route.resource)
        if template in skip or template.startswith("/static"):
            continue
        candidates = [template] if method in documented.get(template, set()) else concrete
        for path in candidates:
            if method in documented.get(path, set()):
                unmatched_doc.discard((path, method))
            else:
                problems.append(f"{method.upper()} {path} is served but not in the document")
    problems += [f"{m.upper()} {p} is in the document but not served" for p, m in sorted(unmatched_doc)]
    return problems


# --------------------------------------------------------------------------- 405 with Allow

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def allow_on_405(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """A 405 as problem+json with ``Allow`` (the kit's problem middleware renders it)."""
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        raise ApiError(405, f"{request.method} is not allowed on this path; allowed: {allowed}",
                       headers={"Allow": allowed}) from None


def unresolved_refs(spec: Mapping[str, Any]) -> list[str]:
    """Every ``$ref`` of the document that names no schema of its own."""
    known = {f"#/components/schemas/{n}" for n in spec.get("components", {}).get("schemas", {})}
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            target = node.get("$ref")
            if isinstance(target, str) and target not in known:
                found.append(target)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(spec)
    return found
