"""RFC 9457 problem details (``application/problem+json``) for every error a service returns.

Handlers raise ``ApiError``; the middleware in ``tally_kit.web`` renders it. Validation
errors list every invalid field by path in ``errors`` (``[{"field": ..., "message": ...}]``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from aiohttp import web

PROBLEM_JSON = "application/problem+json"

_TITLES = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 412: "Precondition Failed",
    413: "Payload Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Content",
    428: "Precondition Required", 429: "Too Many Requests", 500: "Internal Server Error",
    503: "Service Unavailable",
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        title: str | None = None,
        type_: str | None = None,
        errors: Iterable[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        self.status = status
        self.title = title or _TITLES.get(status, "Error")
        self.detail = detail
        self.type = type_ or "about:blank"
        self.errors = list(errors or [])
        self.headers = headers or {}
        self.extra = extra
        super().__init__(detail or self.title)

    def body(self, instance: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status}
        if self.detail:
            out["detail"] = self.detail
        if instance:
            out["instance"] = instance
        if self.errors:
            out["errors"] = self.errors
        out.update(self.extra)
        return out


def validation_error(problems: Iterable[tuple[str, str]], detail: str = "the request has invalid fields") -> ApiError:
    """422 naming every invalid field: ``problems`` is ``[(field_path, message), ...]``."""
    return ApiError(422, detail, type_="https://tally.dev/problems/validation",
                    errors=[{"field": f, "message": m} for f, m in problems])


def not_found(what: str = "resource") -> ApiError:
    return ApiError(404, f"{what} not found")


def problem_response(err: ApiError, instance: str | None = None) -> web.Response:
    return web.Response(
        status=err.status,
        body=json.dumps(err.body(instance), default=str).encode(),
        content_type=PROBLEM_JSON,
        headers=err.headers,
    )
