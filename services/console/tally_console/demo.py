"""Demo mode: one-click local users, one per role, with tokens minted from the local secret.

Only registered when ``TALLY_CONSOLE_DEMO=true``; the route does not exist otherwise (404).
Tenant ids are the demo data's advertisers and partners, so an advertiser user sees only
the contracts whose ``advertiser_id`` is theirs.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from aiohttp import web

from tally_kit.auth import TokenVerifier, mint_token
from tally_kit.problems import ApiError
from tally_kit.web import json_ok

from .metrics import ConsoleMetrics


@dataclass(frozen=True)
class DemoUser:
    subject: str
    name: str
    roles: tuple[str, ...]
    tenant_type: str | None = None
    tenant_id: str | None = None


#: two users for the roles that need a second pair of eyes (maker-checker, four-eyes finalization)
DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser("ada", "Ada (admin)", ("admin",)),
    DemoUser("olga", "Olga (operations)", ("ops",)),
    DemoUser("oscar", "Oscar (operations)", ("ops",)),
    DemoUser("arjun", "Arjun (approver)", ("approver",)),
    DemoUser("fiona", "Fiona (finance)", ("finance",)),
    DemoUser("felix", "Felix (finance)", ("finance",)),
    DemoUser("acme-user", "Acme Corp (advertiser)", ("advertiser",), "advertiser", "adv-acme"),
    DemoUser("globex-user", "Globex (advertiser)", ("advertiser",), "advertiser", "adv-globex"),
    DemoUser("streamly-user", "Streamly (partner)", ("partner",), "partner", "ptn-streamly"),
)

DEMO_TTL_S = 8 * 3600


def is_loopback_host(host: str | None) -> bool:
    """Whether a ``Host`` header names this machine's loopback: ``localhost``, 127.0.0.0/8 or
    ``[::1]``, with or without a port. Any other name, even one resolving to 127.0.0.1, is not."""
    if not host:
        return False
    name = host.strip().lower()
    if name.startswith("["):
        name, sep, rest = name[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return False
    else:
        name, _, port = name.partition(":")
        if port and not port.isdigit():
            return False
    name = name.removesuffix(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def demo_secret(verifier: TokenVerifier) -> str:
    """The HS256 secret the services verify with; demo mode cannot mint for another issuer."""
    if tuple(verifier.algorithms) != ("HS256",):
        raise ValueError("demo mode needs local HS256 tokens (TALLY_JWT_ALGORITHMS=HS256)")
    return verifier.key


def add_demo_routes(app: web.Application, verifier: TokenVerifier, metrics: ConsoleMetrics) -> None:
    secret = demo_secret(verifier)

    async def demo_users(request: web.Request) -> web.Response:
        if not is_loopback_host(request.headers.get("Host")):
            # a web page on another site could point its own name at 127.0.0.1 (DNS rebinding) and
            # read the tokens from the browser: only a loopback Host is the person at this machine
            raise ApiError(403, "the demo sign-in answers only on a loopback address "
                                "(http://localhost, http://127.0.0.1 or http://[::1])")
        users = []
        for u in DEMO_USERS:
            token = mint_token(secret, u.subject, u.roles, tenant_type=u.tenant_type, tenant_id=u.tenant_id, ttl_s=DEMO_TTL_S)
            metrics.demo_tokens.inc()
            users.append({"subject": u.subject, "name": u.name, "roles": list(u.roles),
                          "tenant_type": u.tenant_type, "tenant_id": u.tenant_id, "token": token})
        return json_ok({"users": users}, headers={"Cache-Control": "no-store"})

    app.router.add_get("/api/demo/users", demo_users)
