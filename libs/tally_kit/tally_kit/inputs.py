"""Request parsing every service shares, so hostile input is refused before any other work.

- :func:`loads_strict` reads JSON with a small nesting limit, refusing duplicate keys, NaN and
  Infinity, NUL characters and lone surrogates (none can be stored or encoded downstream);
  floats come back as ``Decimal``. It raises :class:`JsonRefused` naming the JSON path.
- :func:`read_json_body` is the one way an aiohttp handler reads a JSON body: 415 when the
  ``Content-Type`` is not JSON, 400 when the bytes are not JSON, 422 naming the field for
  everything :func:`loads_strict` refuses.
- :func:`hostile_text` finds a NUL or lone surrogate in a request's path (→ 404: such an id
  exists nowhere) or query (→ 422 ``query.<name>``); ``tally_kit.web`` calls it for every
  request before the handler.

The limits (JSON depth and the rest) are listed in ``tally_billing.bounds``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from aiohttp import web

from .problems import ApiError, validation_error

#: deepest JSON nesting a request may have (every Tally body fits in 8 levels)
MAX_JSON_DEPTH = 32
#: a ``\u0000`` or a surrogate escape: only then do strings need a look one by one
_SUSPECT = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
JSON_TYPES = frozenset({"application/json"})


class JsonRefused(ValueError):
    """JSON that parses but may not be accepted (or does not parse at all: ``field == "body"``)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise JsonRefused("body", f"duplicate key {_printable(k)!r}")
            seen.add(k)
    return out


def _constant(name: str) -> Any:
    raise JsonRefused("body", f"{name} is not a JSON number")


def _printable(s: str) -> str:
    """``s`` safe to echo in a problem: non-printable characters as escapes, at most 80 long."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in s[:80])


def _text_problem(s: str) -> str | None:
    if "\x00" in s:
        return "must not contain a NUL character"
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return "must not contain a lone surrogate"
    return None


def _walk(value: Any, max_depth: int, check_text: bool) -> None:
    """Depth (and, when asked, text) of a parsed value, iteratively: no recursion to exhaust."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        v, depth, path = stack.pop()
        if isinstance(v, dict):
            if depth > max_depth:
                raise JsonRefused(path or "body", f"nests deeper than {max_depth} levels")
            for k, item in v.items():
                sub = f"{path}.{k}" if path else str(k)
                if check_text and (problem := _text_problem(k)):
                    raise JsonRefused(_printable(sub), f"key {problem}")
                if isinstance(item, (dict, list)):
                    stack.append((item, depth + 1, sub))
                elif check_text and isinstance(item, str) and (problem := _text_problem(item)):
                    raise JsonRefused(_printable(sub), problem)
        elif isinstance(v, list):
            if depth > max_depth:
                raise JsonRefused(path or "body", f"nests deeper than {max_depth} levels")
            for i, item in enumerate(v):
                sub = f"{path}[{i}]"
                if isinstance(item, (dict, list)):
                    stack.append((item, depth + 1, sub))
                elif check_text and isinstance(item, str) and (problem := _text_problem(item)):
                    raise JsonRefused(sub, problem)
        elif check_text and isinstance(v, str) and (problem := _text_problem(v)):
            raise JsonRefused(path or "body", problem)


def loads_strict(raw: bytes | str, *, max_depth: int = MAX_JSON_DEPTH, text: bool = True) -> Any:
    """Parse ``raw`` as JSON under Tally's rules, or raise :class:`JsonRefused`. ``text=False``
    leaves NUL characters and lone surrogates in strings to the caller's field checks (the
    ingest answers each event on its own, naming the field)."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    # The nesting bound is checked before parsing would recurse: brackets can only nest as deep
    # as there are brackets, so a cheap count spares the common flat body the walk below.
    brackets = data.count(b"[") + data.count(b"{")
    try:
        value = json.loads(data, parse_float=Decimal, parse_constant=_constant, object_pairs_hook=_pairs)
    except RecursionError:
        raise JsonRefused("body", f"nests deeper than {max_depth} levels") from None
    except JsonRefused:
        raise
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise JsonRefused("body", f"not valid JSON: {exc}") from None
    suspect = text and _SUSPECT.search(data) is not None
    if brackets > max_depth or suspect:
        _walk(value, max_depth, suspect)
    return value


def is_json_type(content_type: str) -> bool:
    return content_type in JSON_TYPES or (content_type.startswith("application/") and content_type.endswith("+json"))


def refused_problem(err: JsonRefused, prefix: str = "") -> ApiError:
    """The problem+json answer for ``err``: 400 for bytes that are not JSON, 422 otherwise."""
    if err.message.startswith("not valid JSON"):
        return ApiError(400, "the request body is not valid JSON", errors=[{"field": "body", "message": err.message}])
    field = err.field if not prefix or err.field == "body" else f"{prefix}{err.field}"
    return validation_error([(field, err.message)], "the request body cannot be accepted")


async def read_json_body(request: web.Request, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The request's JSON body, or None when it has none. 415 for a body that is not JSON by its
    ``Content-Type``; 400 for bytes that do not parse; 422 for what :func:`loads_strict` refuses."""
    raw = await request.read()
    if not raw.strip():
        return None
    if not is_json_type(request.content_type):
        raise ApiError(415, f"send the body as application/json (got {_printable(request.content_type)!r})",
                       headers={"Accept-Post": "application/json"})
    try:
        return loads_strict(raw, max_depth=max_depth)
    except JsonRefused as err:
        raise refused_problem(err) from None


def hostile_text(request: web.Request) -> ApiError | None:
    """A 404 for a NUL or lone surrogate in the path, a 422 for one in the query; else None."""
    if _text_problem(request.path) or any(_text_problem(v) for v in request.match_info.values()):
        return ApiError(404, "no such resource (the path holds a character no id has)")
    problems = [(f"query.{_printable(k)}", p) for k, v in request.query.items()
                if (p := _text_problem(k) or _text_problem(v))]
    if problems:
        return validation_error(problems, "invalid query parameters")
    return None


def check_lengths(values: Mapping[str, str | None], max_len: int, prefix: str = "query.") -> list[tuple[str, str]]:
    """``(field, message)`` for every value longer than ``max_len``."""
    return [(f"{prefix}{k}", f"must be at most {max_len} characters") for k, v in values.items()
            if v is not None and len(v) > max_len]
