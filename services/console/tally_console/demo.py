"""Demo mode: one-click local users, one per role, with tokens minted from the local secret.

Only registered when ``TALLY_CONSOLE_DEMO=true``; the route does not exist otherwise (404).
Tenant ids are the demo data's advertisers and partners, so an advertiser user sees only
the contracts whose ``advertiser_id`` is theirs.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from tally_kit.auth import TokenVerifier, mint_token
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


def demo_secret(verifier: TokenVerifier) -> str:
    """The HS256 secret the services verify with; demo mode cannot mint for another issuer."""
    if tuple(verifier.algorithms) != ("HS256",):
        raise ValueError("demo mode needs local HS256 tokens (TALLY_JWT_ALGORITHMS=HS256)")
    return verifier.key


def add_demo_routes(app: web.Application, verifier: TokenVerifier, metrics: ConsoleMetrics) -> None:
    secret = demo_secret(verifier)

    async def demo_users(_: web.Request) -> web.Response:
        users = []
        for u in DEMO_USERS:
            token = mint_token(secret, u.subject, u.roles, tenant_type=u.tenant_type, tenant_id=u.tenant_id, ttl_s=DEMO_TTL_S)
            metrics.demo_tokens.inc()
            users.append({"subject": u.subject, "name": u.name, "roles": list(u.roles),
                          "tenant_type": u.tenant_type, "tenant_id": u.tenant_id, "token": token})
        return json_ok({"users": users}, headers={"Cache-Control": "no-store"})

    app.router.add_get("/api/demo/users", demo_users)
