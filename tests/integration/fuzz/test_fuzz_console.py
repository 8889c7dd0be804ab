"""Schemathesis against the console gateway's own document (demo mode on): health, readiness, metrics,
the demo sign-in, the web app, and the bearer check and proxy failures in front of the services.

Every service behind it points at a closed port, so a request that passes the gateway's checks is
its 502 (the services' own answers are fuzzed against their own documents)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from schemathesis import check
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import ServerError

from tally_console.app import build_app
from tally_console.openapi_spec import SERVICES, spec
from tally_console.settings import load_settings
from tally_kit.auth import TokenVerifier
from tests.integration.fuzz.fuzz_support import CHECKS, SECRET, ServedApp, cases, fuzz, unsupported_method_answers

pytestmark = pytest.mark.integration

#: an internal role, a tenant and the role every service refuses: the gateway treats them alike
CALLERS = ("ops", "advertiser", "partner")
DOC = spec(demo=True)




@check
def no_server_error_but_an_unreachable_service(ctx: Any, response: Any, case: Any) -> bool | None:
    """No 5xx, except the proxy's documented 502 naming the unreachable service (nothing listens behind it)."""
    if response.status_code < 500:
        return None
    try:
        body = response.json()
    except ValueError:
        body = {}
    unreachable = isinstance(body, dict) and body.get("service") in SERVICES
    if response.status_code == 502 and case.path.startswith("/api/{service}") and unreachable:
        return None
    raise ServerError(operation=case.operation.label, status_code=response.status_code)


GATEWAY_CHECKS = [no_server_error_but_an_unreachable_service, *(c for c in CHECKS if c is not not_a_server_error)]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApp]:
    static = tmp_path_factory.mktemp("console-dist")
    (static / "assets").mkdir()
    (static / "index.html").write_text("<!doctype html><title>Tally console</title><div id=root></div>")
    (static / "assets" / "app-abc123.js").write_text("console.log('tally')")
    # nothing listens on port 9 (discard)
    env = {"TALLY_CONSOLE_STATIC_DIR": str(static), "TALLY_CONSOLE_DEMO": "true",
           **{f"TALLY_CONSOLE_{name.upper()}_URL": "http://127.0.0.1:9" for name in SERVICES}}
    server = ServedApp(lambda: build_app(load_settings(env), TokenVerifier(SECRET))).start()
    yield server
    server.stop()


@pytest.mark.parametrize(("role", "method", "path"), cases(DOC, CALLERS))
def test_every_gateway_answer_matches_the_document(served: ServedApp, role: str, method: str, path: str) -> None:
    # besides generated names, requests aimed at a real service name (past the gateway's checks: its 502)
    aimed = {"service": "contracts"} if path.startswith("/api/{service}") else None
    fuzz(served.schema(), method, path, role, base_url=served.base_url, path_parameters=aimed, checks=GATEWAY_CHECKS)


def test_every_gateway_path_answers_an_undocumented_method_with_405_and_allow(served: ServedApp) -> None:
    # /api/demo/users with another method is /api/{service}/{tail} (no service "demo": 404), as documented there
    paths = {p: item for p, item in DOC["paths"].items() if p != "/api/demo/users"}
    assert unsupported_method_answers(served.base_url, {**DOC, "paths": paths}, "ops") == []


def test_the_static_dir_is_the_one_served(served: ServedApp, tmp_path: Path) -> None:
    import requests

    shell = requests.get(f"{served.base_url}/contracts/ctr_1", timeout=10)
    assert shell.status_code == 200
    assert "Tally console" in shell.text
