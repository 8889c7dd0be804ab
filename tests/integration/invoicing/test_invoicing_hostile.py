"""Hostile requests against the invoicing API (issue 16): NUL bytes, lone surrogates, deep or
duplicated JSON, a body that is not JSON and out-of-bounds amounts are 4xx naming the field,
before any work, with nothing written."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest

from .invoicing_support import FINANCE_1

pytestmark = pytest.mark.integration

JSON = {**FINANCE_1, "Content-Type": "application/json"}


async def _written(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT (SELECT count(*) FROM invoice_lines) + (SELECT count(*) FROM credit_notes)"))


async def test_hostile_manual_credit_bodies_are_refused_before_any_work(inv_pool: asyncpg.Pool, make_client: Any) -> None:
    client = await make_client()
    before = await _written(inv_pool)
    good = {"corrects_line_id": "00000000-0000-0000-0000-000000000001", "amount": "1.00", "period_key": "2026-03",
            "reason": "r"}
    cases: list[tuple[bytes, dict[str, str], int]] = [
        (b"[" * 100_000 + b"]" * 100_000, JSON, 422),
        (b'{"amount": "1.00", "amount": "2.00"}', JSON, 422),
        (json.dumps({**good, "reason": "a\u0000b"}).encode(), JSON, 422),
        (json.dumps(good).encode().replace(b'"r"', b'"\\udc00"'), JSON, 422),
        (json.dumps(good).encode(), {**FINANCE_1, "Content-Type": "text/plain"}, 415),
        (json.dumps({**good, "amount": "1" * 40}).encode(), JSON, 422),
        (json.dumps({**good, "period_key": "x" * 10_000}).encode(), JSON, 422),
        (json.dumps({**good, "reason": "x" * 2001}).encode(), JSON, 422),
    ]
    for data, headers, want in cases:
        r = await client.post("/manual-credits", data=data, headers=headers)
        assert r.status == want, (data[:60], await r.text())
        assert r.content_type == "application/problem+json"
    assert await _written(inv_pool) == before


async def test_nul_and_surrogates_in_query_and_path_are_422_and_404(make_client: Any) -> None:
    client = await make_client()
    r = await client.get("/invoices?advertiser_id=%00", headers=FINANCE_1)
    assert r.status == 422
    r = await client.get("/invoices?advertiser_id=" + "a" * 300, headers=FINANCE_1)
    assert r.status == 422
    r = await client.get("/invoices/%00", headers=FINANCE_1)
    assert r.status == 404
    r = await client.get("/invoices/%ED%A0%80", headers=FINANCE_1)
    assert r.status == 404


async def test_a_list_filter_on_a_uuid_column_that_is_not_a_uuid_is_422_naming_it(make_client: Any) -> None:
    """Found by the fuzz run: ``GET /credit-notes?invoice_id=not-a-uuid`` reached asyncpg (500)."""
    client = await make_client()
    r = await client.get("/credit-notes?invoice_id=not-a-uuid", headers=FINANCE_1)
    assert r.status == 422
    assert "query.invoice_id" in await r.text()
    r = await client.get("/credit-notes?invoice_id=00000000-0000-0000-0000-000000000001", headers=FINANCE_1)
    assert r.status == 200 and (await r.json())["items"] == []


async def test_a_number_filter_that_is_not_a_number_or_its_start_is_422_naming_it_for_every_caller(
        make_client: Any) -> None:
    from .invoicing_support import auth

    client = await make_client()
    advertiser = auth("user-a", "advertiser", advertiser="adv-a")
    partner = auth("user-p", "partner", partner="ptr-1")
    bad = ["*", "INV-2026-*1", "INV-2026-**", "INV_2026", "INV-2026-%25", "INV%202026", "INV-%00", "I" * 33,
           "%ED%A0%80"]
    for path in ("/invoices", "/credit-notes", "/statements"):
        for value in bad:
            # the scope of a tenant comes after validation: a partner on /invoices gets the 422 too
            for hdr in (FINANCE_1, advertiser, partner):
                r = await client.get(f"{path}?number={value}", headers=hdr)
                assert r.status == 422, (path, value, await r.text())
                assert r.content_type == "application/problem+json"
                assert "query.number" in await r.text(), (path, value)
        r = await client.get(f"{path}?number={'I' * 31}*", headers=FINANCE_1)  # 32 characters: the bound
        assert r.status == 200 and (await r.json())["items"] == []
