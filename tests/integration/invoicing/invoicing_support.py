"""Support for the invoicing integration tests: a migrated throwaway database, the app behind
a test client, tokens, and builders for period_closed / adjustment records."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tally_invoicing.app import MIGRATIONS, build_app
from tally_invoicing.settings import InvoicingSettings, load_settings
from tally_kit.auth import TokenVerifier, mint_token
from tally_kit.db import create_pool
from tally_kit.migrations import migrate

SECRET = "invoicing-test-secret-0123456789abcdef"


@pytest.fixture
async def inv_dsn(fresh_database: str) -> str:
    await migrate(fresh_database, MIGRATIONS)
    return fresh_database


@pytest.fixture
async def inv_pool(inv_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(inv_dsn, max_size=20)
    yield pool
    await pool.close()


def make_settings(dsn: str, **env: str) -> InvoicingSettings:
    base = {"TALLY_INVOICING_DATABASE_URL": dsn, "TALLY_INVOICING_CONSUME": "false",
            "TALLY_INVOICING_FOUR_EYES_THRESHOLD": "*=10000", "TALLY_INVOICING_MINIMUM_PAYOUT": "JPY=5000,*=50"}
    base.update(env)
    return load_settings(base)


ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def make_client(inv_dsn: str) -> AsyncIterator[ClientFactory]:
    clients: list[TestClient[Any, Any]] = []

    async def make(**env: str) -> TestClient[Any, Any]:
        app = build_app(make_settings(inv_dsn, **env), TokenVerifier(SECRET), apply_migrations=False)
        client: TestClient[Any, Any] = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.close()


def auth(sub: str, *roles: str, advertiser: str | None = None, partner: str | None = None) -> dict[str, str]:
    tenant_type = "advertiser" if advertiser else "partner" if partner else None
    token = mint_token(SECRET, sub, roles, tenant_type=tenant_type, tenant_id=advertiser or partner)
    return {"Authorization": f"Bearer {token}"}


FINANCE_1 = auth("fin-alice", "finance")
FINANCE_2 = auth("fin-bob", "finance")


def ts(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=UTC) if "+" not in s else datetime.fromisoformat(s)


def cpm_line(quantity: int, rate: str, *, version: int = 1, band: int = 0) -> dict[str, Any]:
    rate_d = Decimal(rate)
    return {"line_type": "cpm_impressions", "contract_version": version, "price_point": f"band:{band}", "event_type": None,
            "quantity": quantity, "unit": "per_thousand", "unit_price": rate_d,
            "amount_exact": Decimal(quantity) * rate_d / 1000}


def cpa_line(quantity: int, amount: str, event_type: str = "purchase", *, version: int = 1) -> dict[str, Any]:
    amt = Decimal(amount)
    return {"line_type": "cpa_conversions", "contract_version": version, "price_point": f"event:{event_type}",
            "event_type": event_type, "quantity": quantity, "unit": "per_unit",
            "unit_price": (amt / quantity).quantize(Decimal("1e-12")) if quantity else Decimal(0), "amount_exact": amt}


def closed(contract_id: str, advertiser_id: str, *, period_key: str = "2026-03", currency: str = "USD",
           lines: list[dict[str, Any]] | None = None, payouts: list[dict[str, Any]] | None = None,
           minimum: str | None = None, contract_type: str = "cpm") -> dict[str, Any]:
    return {
        "close_id": f"{contract_id}/{period_key}", "contract_id": contract_id, "advertiser_id": advertiser_id,
        "contract_type": contract_type, "currency": currency, "time_zone": "UTC", "period_kind": "month",
        "period_key": period_key, "period_start": ts("2026-03-01T00:00:00"), "period_end": ts("2026-04-01T00:00:00"),
        "closed_at": ts("2026-04-01T02:00:00"), "payment_terms_days": 30, "po_reference": "PO-1",
        "minimum_commitment": None if minimum is None else Decimal(minimum),
        "lines": lines or [], "payouts": payouts or [], "counts": {"received": 1},
        "source_offsets": [{"topic": "ads.impressions", "partition": 0, "offset": 42}],
    }


def payout(partner_id: str, quantity: int, amount: str, event_type: str = "purchase", version: int = 1) -> dict[str, Any]:
    return {"partner_id": partner_id, "contract_version": version, "event_type": event_type, "quantity": quantity,
            "amount_exact": Decimal(amount)}


def adjustment(contract_id: str, advertiser_id: str, *, kind: str, quantity: int, amount: str,
               partner_id: str | None = None, payout_amount: str | None = None, corrects: str = "2026-03",
               applies: str = "2026-04", currency: str = "USD", line_type: str = "cpa_conversions",
               price_point: str = "event:purchase", event_type: str | None = "purchase", unit_price: str = "0",
               adjustment_id: str | None = None) -> dict[str, Any]:
    return {
        "adjustment_id": adjustment_id or f"adj-{uuid.uuid4().hex[:10]}", "kind": kind, "contract_id": contract_id,
        "advertiser_id": advertiser_id, "currency": currency, "corrects_period_key": corrects,
        "applies_to_period_key": applies, "line_type": line_type, "contract_version": 1, "price_point": price_point,
        "event_type": event_type, "partner_id": partner_id, "quantity": quantity,
        "unit": "per_unit" if line_type == "cpa_conversions" else "per_thousand", "unit_price": Decimal(unit_price),
        "amount_exact": Decimal(amount), "partner_payout_exact": None if payout_amount is None else Decimal(payout_amount),
        "source_event_id": f"conv-{uuid.uuid4().hex[:8]}", "source_topic": "billing.attributed_conversions",
        "source_partition": 0, "source_offset": 7, "reason": kind, "created_at": ts("2026-04-03T10:00:00"),
    }


async def wait_for(check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0, what: str = "condition") -> None:
    """Poll ``check`` until it holds, with a bounded deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
