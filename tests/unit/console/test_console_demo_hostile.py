"""The demo sign-in against DNS rebinding (issue 16): ``/api/demo/users`` hands out tokens only
to a request whose ``Host`` is a loopback name; a page on another site pointing its own name at
127.0.0.1 gets 403 and no token."""

from __future__ import annotations

import pytest

from tally_console.demo import is_loopback_host

from .test_console_gateway import GatewayFactory, gateway, static_dir, upstream  # noqa: F401 - fixtures


@pytest.mark.parametrize(("host", "ok"), [
    ("localhost", True), ("localhost:5173", True), ("LOCALHOST.", True), ("127.0.0.1:8080", True), ("127.1.2.3", True),
    ("[::1]", True), ("[::1]:8080", True),
    ("evil.example", False), ("evil.example:8080", False), ("127.0.0.1.nip.io", False), ("localhost.evil.example", False),
    ("10.0.0.5", False), ("[::2]:80", False), ("", False), (None, False), ("localhost:80x", False), ("[::1]x", False),
])
def test_only_loopback_host_headers_count_as_local(host: str | None, ok: bool) -> None:
    assert is_loopback_host(host) is ok


async def test_demo_sign_in_refuses_a_foreign_host_header(gateway: GatewayFactory) -> None:  # noqa: F811 - the fixture
    client = await gateway(TALLY_CONSOLE_DEMO="true")
    foreign = await client.get("/api/demo/users", headers={"Host": "rebound.attacker.example"})
    assert foreign.status == 403
    assert "token" not in await foreign.text()
    local = await client.get("/api/demo/users", headers={"Host": "localhost:8080"})
    assert local.status == 200
