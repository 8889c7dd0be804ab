"""Schemathesis against the invoicing API, on a database of its own seeded with one closed period
(an invoice for the fuzzing advertiser, a payout statement for the fuzzing partner)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from tally_invoicing.app import MIGRATIONS, build_app
from tally_invoicing.apply import Source, apply_period_closed
from tally_invoicing.openapi_spec import build_spec
from tally_invoicing.settings import load_settings
from tally_kit.auth import TokenVerifier
from tally_kit.db import init_connection
from tests.integration.fuzz.fuzz_support import (
    SECRET,
    ServedApp,
    cases,
    fuzz,
    migrated_database,
    unsupported_method_answers,
)

pytestmark = pytest.mark.integration

#: every role that may read invoicing (finance also writes; the ledger is finance's and admin's)
CALLERS = ("finance", "admin", "ops", "approver", "advertiser", "partner")


def _closed_period() -> dict[str, Any]:
    t = datetime(2026, 3, 1, tzinfo=UTC)
    return {
        "close_id": "K-fuzz/2026-03", "contract_id": "K-fuzz", "advertiser_id": "adv-fuzz", "contract_type": "cpa",
        "currency": "USD", "time_zone": "UTC", "period_kind": "month", "period_key": "2026-03", "period_start": t,
        "period_end": datetime(2026, 4, 1, tzinfo=UTC), "closed_at": datetime(2026, 4, 1, 2, tzinfo=UTC),
        "payment_terms_days": 30, "po_reference": "PO-fuzz", "minimum_commitment": None,
        "lines": [{"line_type": "cpa_conversions", "contract_version": 1, "price_point": "event:purchase",
                   "event_type": "purchase", "quantity": 4, "unit": "per_unit", "unit_price": Decimal("25"),
                   "amount_exact": Decimal("100")}],
        "payouts": [{"partner_id": "ptr-fuzz", "contract_version": 1, "event_type": "purchase", "quantity": 4,
                     "amount_exact": Decimal("60")}],
        "counts": {"received": 4}, "source_offsets": [{"topic": "ads.conversions", "partition": 0, "offset": 9}],
    }


@dataclass
class Seeded:
    server: ServedApp
    ids: dict[str, dict[str, str]]  # path prefix → path parameters of an existing document


async def _seed(dsn: str) -> dict[str, dict[str, str]]:
    conn = await asyncpg.connect(dsn)
    await init_connection(conn)
    try:
        assert await apply_period_closed(conn, _closed_period(), Source("billing.periods_closed", 0, 1)) == "applied"
        inv = await conn.fetchrow("SELECT i.id, l.id AS line_id FROM invoices i JOIN invoice_lines l ON l.invoice_id = i.id")
        st = await conn.fetchrow(
            "SELECT s.id, l.id AS line_id FROM payout_statements s JOIN statement_lines l ON l.statement_id = s.id")
    finally:
        await conn.close()
    return {"/invoices/": {"id": str(inv["id"]), "line_id": str(inv["line_id"])},
            "/statements/": {"id": str(st["id"]), "line_id": str(st["line_id"])}}


@pytest.fixture(scope="module")
def seeded() -> Iterator[Seeded]:
    import asyncio

    with migrated_database(MIGRATIONS) as dsn:
        ids = asyncio.run(_seed(dsn))
        settings = load_settings({"TALLY_INVOICING_DATABASE_URL": dsn, "TALLY_INVOICING_CONSUME": "false"})
        server = ServedApp(lambda: build_app(settings, TokenVerifier(SECRET), run_consumer=False,
                                             apply_migrations=False)).start()
        yield Seeded(server, ids)
        server.stop()


@pytest.mark.parametrize(("role", "method", "path"), cases(build_spec(), CALLERS))
def test_every_invoicing_answer_matches_the_document(seeded: Seeded, role: str, method: str, path: str) -> None:
    existing = next((ids for prefix, ids in seeded.ids.items() if path.startswith(prefix) and "{id}" in path), None)
    if existing is not None and "{line_id}" not in path:
        existing = {"id": existing["id"]}
    fuzz(seeded.server.schema(), method, path, role, base_url=seeded.server.base_url, path_parameters=existing)


def test_every_invoicing_path_answers_an_undocumented_method_with_405_and_allow(seeded: Seeded) -> None:
    assert unsupported_method_answers(seeded.server.base_url, build_spec(), "finance") == []
