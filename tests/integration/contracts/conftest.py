"""Fixtures for the contracts service's integration tests: a migrated throwaway database,
the API app in-process with an injectable clock, and token helpers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tally_billing.examples import cpa_terms_json, cpm_terms_json
from tally_contracts.api import SERVICE_KEY, build_app
from tally_contracts.bootstrap import Contracts
from tally_contracts.domain import DEFAULT_POLICY_JSON, parse_policy
from tally_contracts.settings import SPEC
from tally_kit.auth import TokenVerifier, mint_token
from tally_kit.clock import FixedClock
from tally_kit.migrations import migrate
from tally_kit.settings import load
from tally_streams.avro import SchemaCatalog

ROOT = Path(__file__).resolve().parents[3]
MIGRATIONS = ROOT / "services" / "contracts" / "migrations"
SECRET = "contracts-test-secret-0123456789abcdef"
T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def token(sub: str, *roles: str, advertiser: str | None = None, partner: str | None = None) -> str:
    tenant_type = "advertiser" if advertiser else "partner" if partner else None
    return mint_token(SECRET, sub, roles, tenant_type=tenant_type, tenant_id=advertiser or partner, ttl_s=3600,
                      now=datetime.now(UTC).timestamp())


OPS = token("olivia", "ops")
OPS2 = token("oscar", "ops")
APPROVER = token("alex", "approver")
APPROVER2 = token("ava", "approver")
FINANCE = token("fiona", "finance")
ADMIN = token("adam", "admin")


def cpm_terms(*, advertiser: str = "adv-acme", start: str = "2026-04-01", end: str | None = "2026-06-30",
              total: str = "50000.00", auto_renew: bool = False, notice: int = 30, escalator: str | None = None,
              months: int | None = None, rate: str = "12.50") -> dict[str, Any]:
    t = cpm_terms_json()
    c = t["common"]
    c.update(advertiser_id=advertiser, flight_start=start, flight_end=end, auto_renew=auto_renew,
             notice_period_days=notice, escalator_pct=escalator, renewal_term_months=months)
    t["cpm"]["budget_caps"] = {"total": total, "per_period": None}
    t["cpm"]["minimum_commitment_per_period"] = None
    t["cpm"]["rate_card"] = {"kind": "flat", "tier_basis": "period", "bands": [{"from_impressions": 0, "rate_cpm": rate}]}
    return t


def cpa_terms(*, advertiser: str = "adv-shop", partner: str = "partner-tv1") -> dict[str, Any]:
    t = cpa_terms_json()
    t["common"]["advertiser_id"] = advertiser
    t["common"]["committed_value"] = "5000.00"
    for o in t["cpa"]["partner_overrides"]:
        o["partner_id"] = partner
    return t


@dataclass
class Env:
    client: TestClient
    clock: FixedClock
    dsn: str
    service: Contracts
    catalog: SchemaCatalog

    async def call(self, method: str, path: str, tok: str | None, body: Any = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
        h = {"Authorization": f"Bearer {tok}"} if tok else {}
        h.update(headers or {})
        kwargs: dict[str, Any] = {"headers": h}
        if body is not None:
            kwargs["json"] = body
        async with self.client.request(method, path, **kwargs) as resp:
            text = await resp.text()
            data = json.loads(text) if text and "json" in resp.content_type else text
            return resp.status, data, resp.headers

    async def ok(self, method: str, path: str, tok: str, body: Any = None, headers: dict[str, str] | None = None,
                 expect: int | tuple[int, ...] = (200, 201)) -> Any:
        status, data, _ = await self.call(method, path, tok, body, headers)
        want = (expect,) if isinstance(expect, int) else expect
        assert status in want, f"{method} {path} -> {status}: {data}"
        return data

    async def approved_contract(self, terms: dict[str, Any], *, name: str = "Test contract") -> str:
        """Create, submit and approve (by whoever the policy needs) a contract; returns its id."""
        c = await self.ok("POST", "/contracts", OPS, {"name": name, "terms": terms})
        await self.ok("POST", f"/contracts/{c['id']}/versions/1/submit", OPS)
        await self.approve_fully(c["id"], 1)
        return str(c["id"])

    async def approve_fully(self, contract_id: str, version: int) -> dict[str, Any]:
        v: dict[str, Any] = {}
        for tok in (APPROVER, FINANCE):
            v = await self.ok("POST", f"/contracts/{contract_id}/versions/{version}/approve", tok, {})
            if v["state"] == "approved":
                break
        assert v["state"] == "approved", v
        return v


async def make_env(dsn: str, policy: dict[str, Any] | None = None) -> AsyncIterator[Env]:
    await migrate(dsn, MIGRATIONS)
    settings = load(SPEC, {"TALLY_CONTRACTS_DATABASE_URL": dsn,
                           "TALLY_CONTRACTS_APPROVAL_POLICY": json.dumps(policy or DEFAULT_POLICY_JSON)})
    parse_policy(policy or DEFAULT_POLICY_JSON)
    clock = FixedClock(T0)
    catalog = SchemaCatalog.load(ROOT / "schemas")
    app = build_app(settings, clock=clock, verifier=TokenVerifier(SECRET), catalog=catalog, background=False)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield Env(client, clock, dsn, app[SERVICE_KEY], catalog)
    finally:
        await client.close()


@pytest.fixture
async def env(fresh_database: str) -> AsyncIterator[Env]:
    async for e in make_env(fresh_database):
        yield e
