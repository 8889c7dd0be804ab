"""The earnings API: a partner's own payouts per contract and period from the running totals
(``running_total`` v2), provisional while open — never the advertiser's side or another partner."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tally_kit.auth import TokenVerifier
from tally_kit.settings import load
from tally_metering.api import VIEW_KEY, create_api
from tally_metering.settings import SPEC

from .test_metering_api import SECRET, token, total

pytestmark = pytest.mark.integration


def payout(partner_id: str, event_type: str, quantity: int, amount: str, version: int = 1) -> dict[str, Any]:
    return {"partner_id": partner_id, "contract_version": version, "event_type": event_type, "quantity": quantity,
            "amount_exact": Decimal(amount)}


def cpa_total(contract_id: str, period_key: str, payouts: list[dict[str, Any]], *, status: str = "open") -> dict[str, Any]:
    t = total(contract_id, "adv-shop", "99.999")
    year, month = int(period_key[:4]), int(period_key[5:])
    start = datetime(year, month, 1, 5, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, 4, tzinfo=UTC)
    t.update(total_id=f"{contract_id}/{period_key}", period_key=period_key, period_start=start, period_end=end,
             contract_type="cpa", status=status, payouts=payouts, minimum_commitment=Decimal("5000"),
             counts={"conversions_attributed": 9},
             lines=[{"line_type": "cpa_conversions", "contract_version": 1, "price_point": "event:purchase",
                     "event_type": "purchase", "quantity": 9, "unit": "per_unit", "unit_price": Decimal("11.111"),
                     "amount_exact": Decimal("99.999")}])
    return t


PARTNER_A = {"roles": ["partner"], "tenant_type": "partner", "tenant_id": "ptn-a"}


def _served(w: Any, records: list[dict[str, Any]]) -> Any:
    w.produce("running_totals", "running_total", records, lambda r: r["total_id"])
    return create_api(load(SPEC, w.env("api")), verifier=TokenVerifier(SECRET))


async def _wait_for(app: Any, n: int) -> None:
    deadline = time.monotonic() + 30
    while len(app[VIEW_KEY].totals) < n:
        assert time.monotonic() < deadline, "running totals not read"
        await asyncio.sleep(0.1)


async def test_a_partner_sees_only_its_own_payouts_provisional_with_when_it_closes(metering_world: Any) -> None:
    w = metering_world
    records = [
        cpa_total("E-shared", "2026-02", [payout("ptn-a", "purchase", 2, "1.249375")], status="closed"),
        cpa_total("E-shared", "2026-03", [payout("ptn-a", "purchase", 3, "2.083125"), payout("ptn-a", "signup", 1, "2.50"),
                                          payout("ptn-b", "purchase", 5, "7.10")]),
        cpa_total("E-b-only", "2026-03", [payout("ptn-b", "signup", 4, "10.00")]),
        total("E-cpm", "adv-x", "3.00"),  # a v1-shaped record: no payouts (the default)
    ]
    app = _served(w, records)
    async with TestClient(TestServer(app)) as client:
        await _wait_for(app, 4)
        resp = await client.get("/v1/earnings", headers=token(**PARTNER_A))
        assert resp.status == 200
        body = await resp.json()
        assert [(i["contract_id"], i["period_key"]) for i in body["items"]] == [("E-shared", "2026-02"), ("E-shared", "2026-03")]
        march = body["items"][1]
        assert march["partner_id"] == "ptn-a" and march["provisional"] is True and march["status"] == "open"
        assert march["amount_exact"] == "4.583125" and march["conversions"] == 4  # exact, never a float, never rounded
        assert [(ln["event_type"], ln["quantity"], ln["amount_exact"]) for ln in march["lines"]] == [
            ("purchase", 3, "2.083125"), ("signup", 1, "2.5")]
        assert march["updated_at"] == "2026-03-01T05:00:00+00:00"  # when metering computed it
        end = datetime.fromisoformat(march["period_end"])
        assert datetime.fromisoformat(march["closes_at"]) == end + timedelta(hours=2)  # end + the default grace
        assert body["items"][0]["provisional"] is False
        # nothing of the advertiser's side, nor of the other partner
        text = await resp.text()
        for leak in ("99.999", "11.111", "5000", "adv-shop", "ptn-b", "7.1", "minimum_commitment", "counts"):
            assert leak not in text, leak

        one = await (await client.get("/v1/earnings?period_key=2026-03&status=open", headers=token(**PARTNER_A))).json()
        assert [i["period_key"] for i in one["items"]] == ["2026-03"]
        # finance sees every partner, or one
        staff = await (await client.get("/v1/earnings?contract_id=E-shared&period_key=2026-03",
                                        headers=token(roles=["finance"]))).json()
        assert [(i["partner_id"], i["amount_exact"]) for i in staff["items"]] == [("ptn-a", "4.583125"), ("ptn-b", "7.1")]
        only_b = await (await client.get("/v1/earnings?partner_id=ptn-b", headers=token(roles=["ops"]))).json()
        assert {(i["contract_id"], i["period_key"]) for i in only_b["items"]} == {
            ("E-shared", "2026-02"), ("E-shared", "2026-03"), ("E-b-only", "2026-03")}
        assert [i["amount_exact"] for i in only_b["items"] if i["period_key"] == "2026-02"] == ["0"]

        # the spend API shows the partners' payouts to staff, never to the advertiser
        adv = await (await client.get("/v1/spend?contract_id=E-shared", headers=token(
            roles=["advertiser"], tenant_type="advertiser", tenant_id="adv-shop"))).json()
        assert adv["items"] and all("payouts" not in i for i in adv["items"])
        ops = await (await client.get("/v1/spend?contract_id=E-shared&period_key=2026-03", headers=token(roles=["ops"]))).json()
        assert [p["partner_id"] for p in ops["items"][0]["payouts"]] == ["ptn-a", "ptn-a", "ptn-b"]


async def test_earnings_are_tenant_scoped_and_bad_filters_name_the_field(metering_world: Any) -> None:
    w = metering_world
    app = _served(w, [cpa_total("T-a", "2026-03", [payout("ptn-a", "purchase", 1, "1.00")]),
                            cpa_total("T-b", "2026-03", [payout("ptn-b", "purchase", 1, "2.00")]),
                            cpa_total("T-none", "2026-03", [])])
    partner_a = token(**PARTNER_A)
    async with TestClient(TestServer(app)) as client:
        await _wait_for(app, 3)
        mine = await client.get("/v1/earnings?contract_id=T-a", headers=partner_a)
        assert mine.status == 200 and [i["contract_id"] for i in (await mine.json())["items"]] == ["T-a"]
        other = await client.get("/v1/earnings?contract_id=T-b", headers=partner_a)
        assert other.status == 404 and other.content_type == "application/problem+json"
        for contract in ("T-unknown", "T-none"):  # no totals, or totals that pay no one yet: nothing to tell
            unknown = await client.get(f"/v1/earnings?contract_id={contract}", headers=partner_a)
            assert unknown.status == 200 and (await unknown.json())["items"] == [], contract
        named = await client.get("/v1/earnings?partner_id=ptn-b", headers=partner_a)
        assert named.status == 200 and (await named.json())["items"] == []  # a list filter stays an empty list
        advertiser = await client.get("/v1/earnings", headers=token(roles=["advertiser"], tenant_type="advertiser",
                                                                     tenant_id="adv-shop"))
        assert advertiser.status == 403
        assert (await client.get("/v1/earnings")).status == 401
        for query, field in (("period_key=2026-13", "period_key"), ("period_key=March", "period_key"),
                             ("status=draft", "status"), ("colour=red", "colour"),
                             ("contract_id=" + "x" * 300, "contract_id"), ("partner_id=" + "p" * 300, "partner_id")):
            bad = await client.get(f"/v1/earnings?{query}", headers=partner_a)
            assert bad.status == 422 and bad.content_type == "application/problem+json", query
            assert [e["field"] for e in (await bad.json())["errors"]] == [field], query
        assert (await client.get("/v1/earnings?contract_id=%00", headers=partner_a)).status == 422
        assert (await client.get("/v1/earnings?period_key=2026-W10", headers=partner_a)).status == 200
