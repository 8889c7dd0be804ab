"""OpenAPI 3.1 serving and cursor pagination for aiohttp services.

- :func:`add_openapi` serves the document at ``/openapi.json`` and a self-contained,
  human-readable page at ``/docs`` (server-rendered HTML, no JavaScript, no CDN: the page
  works offline). Both paths are public in ``tally_kit.web``.
- Cursor pagination: a cursor is the opaque base64url JSON of the last item's sort key.
  :func:`page_params` reads ``limit`` and ``cursor`` from the query (problem+json 422 naming
  the parameter when either is invalid); :func:`page` cuts the ``limit + 1`` rows a handler
  fetched into ``{"items": [...], "next_cursor": ...}``.

Typical handler::

    limit, after = page_params(request)          # after: list of JSON values, or None
    rows = await conn.fetch("... WHERE (created_at, id) > ($1, $2) ORDER BY created_at, id LIMIT $3",
                            *(after or [EPOCH, ""]), limit + 1)
    return json_ok(page([dict(r) for r in rows], limit, key=lambda r: [r["created_at"], r["id"]]))

Cursor values come back as JSON: datetimes are ISO strings (parse them with
``datetime.fromisoformat``) and Decimals are strings.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

from .inputs import loads_strict
from .problems import validation_error

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
#: longest cursor accepted (ours are a few dozen characters)
MAX_CURSOR_LEN = 1024
METHODS = ("get", "put", "post", "patch", "delete", "head", "options")


def add_openapi(app: web.Application, spec: Mapping[str, Any] | Callable[[], Mapping[str, Any]]) -> None:
    """Serve ``spec`` (a dict, or a function returning one) at ``/openapi.json`` and ``/docs``."""

    def current() -> Mapping[str, Any]:
        return spec() if callable(spec) else spec

    async def openapi_json(_: web.Request) -> web.Response:
        return web.json_response(current())

    async def docs(_: web.Request) -> web.Response:
        return web.Response(text=render_docs(current()), content_type="text/html")

    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/docs", docs)


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _schema_text(schema: Mapping[str, Any] | None) -> str:
    if not schema:
        return ""
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return f'<a href="#schema-{_e(name)}">{_e(name)}</a>'
    return f"<code>{_e(json.dumps(schema, sort_keys=True))}</code>"


def render_docs(spec: Mapping[str, Any]) -> str:
    """A standalone HTML page listing every operation, parameter, body, response and schema."""
    info = spec.get("info", {})
    out: list[str] = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{_e(info.get('title', 'API'))} — API reference</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;color:#222}"
        "h2{border-bottom:1px solid #ccc;margin-top:2rem}.op{border:1px solid #ddd;border-radius:6px;margin:1rem 0;"
        "padding:.6rem 1rem}.m{display:inline-block;min-width:4.5rem;font-weight:700;text-transform:uppercase}"
        ".get{color:#0a6}.post{color:#06c}.put,.patch{color:#a60}.delete{color:#c33}table{border-collapse:collapse}"
        "td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left;vertical-align:top}code{font-size:.85em}"
        "pre{background:#f6f6f6;padding:.5rem;overflow:auto}</style></head><body>",
        f"<h1>{_e(info.get('title', 'API'))} <small>{_e(info.get('version', ''))}</small></h1>",
        f"<p>{_e(info.get('description', ''))}</p>",
        "<p>Machine-readable: <a href='/openapi.json'>/openapi.json</a> (OpenAPI "
        f"{_e(spec.get('openapi', '3.1.0'))})</p>",
        "<h2>Operations</h2>",
    ]
    for path, item in spec.get("paths", {}).items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            out.append(f"<div class='op' id='{_e(op.get('operationId', method + path))}'>")
            out.append(f"<div><span class='m {method}'>{method}</span> <code>{_e(path)}</code> — "
                       f"{_e(op.get('summary', ''))}</div>")
            if op.get("description"):
                out.append(f"<p>{_e(op['description'])}</p>")
            params = [*item.get("parameters", []), *op.get("parameters", [])]
            if params:
                out.append("<table><tr><th>parameter</th><th>in</th><th>required</th><th>description</th></tr>")
                for prm in params:
                    out.append(f"<tr><td><code>{_e(prm.get('name'))}</code></td><td>{_e(prm.get('in'))}</td>"
                               f"<td>{'yes' if prm.get('required') else 'no'}</td><td>{_e(prm.get('description', ''))}"
                               f" {_schema_text(prm.get('schema'))}</td></tr>")
                out.append("</table>")
            body = op.get("requestBody", {}).get("content", {})
            for ctype, media in body.items():
                out.append(f"<p>Request body ({_e(ctype)}): {_schema_text(media.get('schema'))}</p>")
            responses = op.get("responses", {})
            if responses:
                out.append("<table><tr><th>status</th><th>meaning</th><th>body</th></tr>")
                for status, r in responses.items():
                    first: Mapping[str, Any] = next(iter(r.get("content", {}).values()), {})
                    schema = first.get("schema")
                    out.append(f"<tr><td>{_e(status)}</td><td>{_e(r.get('description', ''))}</td>"
                               f"<td>{_schema_text(schema)}</td></tr>")
                out.append("</table>")
            out.append("</div>")
    schemas = spec.get("components", {}).get("schemas", {})
    if schemas:
        out.append("<h2>Schemas</h2>")
        for name, schema in schemas.items():
            out.append(f"<h3 id='schema-{_e(name)}'>{_e(name)}</h3>")
            if schema.get("description"):
                out.append(f"<p>{_e(schema['description'])}</p>")
            out.append(f"<pre>{_e(json.dumps(schema, indent=2, sort_keys=True))}</pre>")
    out.append("</body></html>")
    return "\n".join(out)


# --------------------------------------------------------------------------- pagination


def _default(o: Any) -> Any:
    if isinstance(o, Decimal):
        return str(o)
    if isinstance(o, (datetime, date)):
        return o.isoformat()
    raise TypeError(f"{type(o).__name__} cannot be part of a cursor")


def encode_cursor(sort_key: Sequence[Any]) -> str:
    """Opaque cursor for ``sort_key`` (the last returned item's sort key)."""
    raw = json.dumps(list(sort_key), default=_default, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> list[Any]:
    """The sort key inside ``cursor``; 422 naming ``cursor`` when it is not one of ours."""
    try:
        if len(cursor) > MAX_CURSOR_LEN:
            raise ValueError(cursor)
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = loads_strict(raw, max_depth=2)  # a sort key is a flat list of plain values
    except (binascii.Error, ValueError, UnicodeDecodeError):
        value = None
    if not isinstance(value, list):
        raise validation_error([("query.cursor", "is not a cursor returned by this API")])
    return value


def page_params(request: web.Request, *, default_limit: int = DEFAULT_LIMIT, max_limit: int = MAX_LIMIT
                ) -> tuple[int, list[Any] | None]:
    """``(limit, after)`` from ``?limit=&cursor=``; every invalid parameter is reported together."""
    problems: list[tuple[str, str]] = []
    limit = default_limit
    raw_limit = request.query.get("limit")
    if raw_limit is not None:
        try:
            limit = int(raw_limit)
            if not 1 <= limit <= max_limit:
                raise ValueError
        except ValueError:
            problems.append(("query.limit", f"must be an integer from 1 to {max_limit}"))
    after: list[Any] | None = None
    raw_cursor = request.query.get("cursor")
    if raw_cursor:
        try:
            after = decode_cursor(raw_cursor)
        except Exception:
            problems.append(("query.cursor", "is not a cursor returned by this API"))
    if problems:
        raise validation_error(problems, "invalid query parameters")
    return limit, after


def page(rows: Sequence[Any], limit: int, key: Callable[[Any], Sequence[Any]]) -> dict[str, Any]:
    """``{"items": rows[:limit], "next_cursor": cursor-after-the-last | None}``; fetch ``limit + 1``
    rows so the presence of a next page is known without a count."""
    items = list(rows[:limit])
    more = len(rows) > limit
    return {"items": items, "next_cursor": encode_cursor(key(items[-1])) if more and items else None}
