"""Schemathesis against a running service: the app served on a thread, its own OpenAPI document
loaded from it, and every operation fuzzed for one role with a bounded number of examples.

Each (role, operation) is its own pytest test, so a failure names the role and the operation.
No failure is tolerated: every server error the fuzzing found so far is fixed, with a test of its
own beside the service's other hostile-input tests.

Checks (schemathesis' own): no 5xx, and every answer's status, content type, headers and body
as the document says. Generation mixes positive (schema-valid) and negative (schema-violating)
requests, derandomized so a run is reproducible; ``TALLY_FUZZ_EXAMPLES`` sets the examples per
test (default 12), and ``TALLY_FUZZ_SEED`` (any integer) draws a different, still reproducible,
set of requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, reject, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tally_kit.auth import mint_token
from tally_kit.db import drop_database
from tally_kit.migrations import migrate

SECRET = "fuzz-test-secret-0123456789abcdef0123456789"
EXAMPLES = int(os.environ.get("TALLY_FUZZ_EXAMPLES", "12"))
SEED = int(os.environ.get("TALLY_FUZZ_SEED", "0"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
REQUEST_TIMEOUT_S = 30
#: aiohttp refuses a request line above 8190 bytes with a plain-text 400 before any middleware;
#: generated requests that long test the HTTP server, not the service, and are left out
REQUEST_LINE_MAX = 8000

#: role name → the token claims of a caller in that role
ROLES: dict[str, dict[str, Any]] = {
    "admin": {"roles": ["admin"]},
    "ops": {"roles": ["ops"]},
    "approver": {"roles": ["approver"]},
    "finance": {"roles": ["finance"]},
    "advertiser": {"roles": ["advertiser"], "tenant_type": "advertiser", "tenant_id": "adv-fuzz"},
    "partner": {"roles": ["partner"], "tenant_type": "partner", "tenant_id": "ptr-fuzz"},
    "ingest": {"roles": ["ingest"]},
    "verification": {"roles": ["verification"]},
}


def auth_headers(role: str) -> dict[str, str]:
    claims = ROLES[role]
    token = mint_token(SECRET, f"fuzz-{role}", claims["roles"], tenant_type=claims.get("tenant_type"),
                       tenant_id=claims.get("tenant_id"))
    return {"Authorization": f"Bearer {token}"}


class ServedApp:
    """An aiohttp app on 127.0.0.1 (a free port), on an event loop of its own thread, so the
    synchronous schemathesis client can call it like any server."""

    def __init__(self, make_app: Callable[[], web.Application]) -> None:
        self._make_app = make_app
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fuzz-server", daemon=True)
        self._runner: web.AppRunner | None = None
        self.app: web.Application | None = None
        self.base_url = ""

    def run(self, coro: Any, timeout_s: float = 60) -> Any:
        """Run a coroutine on the server's loop (e.g. to read the app's state) and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def start(self) -> ServedApp:
        self._thread.start()

        async def up() -> None:
            self.app = self._make_app()
            # an event stream's handler waits for its next event even after the client left: do not wait for it
            self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            port = self._runner.addresses[0][1]  # the free port the kernel picked
            self.base_url = f"http://127.0.0.1:{port}"

        self.run(up())
        return self

    def stop(self) -> None:
        if self._runner is not None:
            self.run(self._runner.cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)

    def schema(self) -> Any:
        """The document the service serves, as schemathesis reads it."""
        return schemathesis.openapi.from_url(f"{self.base_url}/openapi.json")


def operations(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(METHOD, path)`` of every operation of a document."""
    methods = ("get", "put", "post", "patch", "delete")
    return [(m.upper(), path) for path, item in spec["paths"].items() for m in methods if m in item]


def cases(spec: Mapping[str, Any], roles: Iterable[str]) -> list[Any]:
    """One pytest param per (role, operation)."""
    return [pytest.param(role, method, path, id=f"{role}-{method} {path}")
            for role in roles for method, path in operations(spec)]


def fuzz(schema: Any, method: str, path: str, role: str, *, base_url: str,
         path_parameters: Mapping[str, Any] | None = None, stream: bool = False, checks: list[Any] | None = None) -> None:
    """Run the bounded fuzz of one operation as one role; raises on the first failing answer.

    ``path_parameters`` adds requests aimed at existing resources (generated ids rarely exist).
    ``stream``: the answer is an endless event stream, so a 200 is checked by its headers only.
    ``checks``: instead of ``CHECKS`` (the console gateway's documented 502 is not a server error of its own).
    """
    operation = schema[path][method]
    strategies = [operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)]
    if path_parameters:
        strategies.append(operation.as_strategy(GenerationMode.POSITIVE, path_parameters=dict(path_parameters)))
    headers = auth_headers(role)

    @seed(SEED)
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=SEED == 0, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    @given(case=st.one_of(*strategies))
    def run(case: Any) -> None:
        if _request_line_bytes(case, base_url) > REQUEST_LINE_MAX:
            reject()  # aiohttp's own limit, before any Tally code: a plain-text 400 no document describes
        if stream:
            _call_stream(case, headers, base_url)
        else:
            case.call_and_validate(base_url=base_url, headers=headers, checks=checks or CHECKS, timeout=REQUEST_TIMEOUT_S)

    run()


def _request_line_bytes(case: Any, base_url: str) -> int:
    """The longest line of the request's head: the request line, or a header line."""
    kwargs = case.as_transport_kwargs(base_url=base_url)
    prepared = requests.models.PreparedRequest()
    prepared.prepare_url(kwargs["url"], kwargs.get("params"))
    header_lines = [len(f"{k}: {v}".encode()) for k, v in (kwargs.get("headers") or {}).items()]
    return max([len(kwargs["method"]) + len(prepared.url or "") + 10, *header_lines])


def _call_stream(case: Any, headers: dict[str, str], base_url: str) -> None:
    kwargs = case.as_transport_kwargs(base_url=base_url, headers=headers)
    with requests.request(**kwargs, stream=True, timeout=REQUEST_TIMEOUT_S) as resp:
        if resp.status_code == 200:
            assert resp.headers.get("Content-Type", "").startswith("text/event-stream"), resp.headers
            return
        resp.content  # noqa: B018 - an error answer is finite: read it whole before validating
    case.validate_response(resp, checks=CHECKS)


@contextlib.contextmanager
def migrated_database(migrations: Path) -> Iterator[str]:
    """A new database with ``migrations`` applied, dropped afterwards; yields its DSN."""
    port = os.environ.get("TALLY_PG_PORT", "5433")
    admin_dsn = f"postgresql://tally:tally@127.0.0.1:{port}/tally_contracts"
    name = f"test_fuzz_{uuid.uuid4().hex[:12]}"
    dsn = f"postgresql://tally:tally@127.0.0.1:{port}/{name}"

    async def create() -> None:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        await migrate(dsn, migrations)

    async def drop() -> None:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await drop_database(admin, name)
        finally:
            await admin.close()

    asyncio.run(create())
    try:
        yield dsn
    finally:
        asyncio.run(drop())


def unsupported_method_answers(base_url: str, spec: Mapping[str, Any], role: str) -> list[str]:
    """Call every documented path with each method its document does not list: each must be a
    problem+json 405 whose ``Allow`` names exactly the documented methods (and HEAD beside GET).
    Returns what did not hold."""
    problems: list[str] = []
    for path, item in spec["paths"].items():
        documented = {m.upper() for m in ("get", "put", "post", "patch", "delete") if m in item}
        url = base_url + path.replace("{fmt}", "csv")
        for name in [seg[1:-1] for seg in path.split("/") if seg.startswith("{") and seg.endswith("}")]:
            url = url.replace("{" + name + "}", "x1")
        url = url.replace("{id}", "x1")  # a variable inside a segment (export.{fmt} is already filled)
        expected = documented | ({"HEAD"} if "GET" in documented else set())
        for method in sorted({"GET", "PUT", "POST", "PATCH", "DELETE"} - documented):
            resp = requests.request(method, url, headers=auth_headers(role), timeout=REQUEST_TIMEOUT_S)
            allow = {m.strip() for m in resp.headers.get("Allow", "").split(",") if m.strip()}
            if resp.status_code != 405 or allow != expected or not resp.headers.get("Content-Type", "").startswith(
                    "application/problem+json"):
                problems.append(f"{method} {path}: {resp.status_code}, Allow {sorted(allow)}, expected 405 {sorted(expected)}")
    return problems
