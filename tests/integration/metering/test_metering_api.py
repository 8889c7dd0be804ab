"""The spend API: tenant-scoped running totals and a server-sent-event stream of changes."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tally_kit.auth import TokenVerifier, mint_token
from tally_kit.settings import load
from tally_metering.api import VIEW_KEY, create_api
from tally_metering.settings import SPEC

pytestmark = pytest.mark.integration
SECRET = "metering-api-test-secret-0123456789abcdef"


def total(contract_id: str, advertiser_id: str, amount: str) -> dict[str, Any]:
    t = datetime(2026, 3, 1, 5, tzinfo=UTC)
    return {"total_id": f"{contract_id}/2026-03", "contract_id": contract_id, "advertiser_id": advertiser_id,
            "contract_type": "cpm", "currency": "USD", "time_zone": "America/New_York", "period_kind": "month",
            "period_key": "2026-03", "period_start": t, "period_end": datetime(2026, 4, 1, 4, tzinfo=UTC), "status": "open",
            "amount_exact": Decimal(amount), "budget_cap_per_period": None, "budget_cap_total": None,
            "minimum_commitment": None, "lines": [], "counts": {"received": 3}, "latest_event_time": t, "updated_at": t}


def token(**kw: Any) -> dict[str, str]:
    return {"Authorization": "Bearer " + mint_token(SECRET, kw.pop("sub", "u"), kw.pop("roles"), **kw)}


async def test_spend_is_tenant_scoped_and_streams_changes(metering_world: Any) -> None:
    w = metering_world
    w.produce("running_totals", "running_total", [total("K-a", "adv-a", "12.345"), total("K-b", "adv-b", "7.00")],
              lambda r: r["total_id"])
    settings = load(SPEC, w.env("api"))
    app = create_api(settings, verifier=TokenVerifier(SECRET))
    async with TestClient(TestServer(app)) as client:
        view = app[VIEW_KEY]
        deadline = time.monotonic() + 30
        while len(view.totals) < 2:
            assert time.monotonic() < deadline, "running totals not read"
            await asyncio.sleep(0.1)
        resp = await client.get("/v1/spend", headers=token(roles=["finance"]))
        body = await resp.json()
        assert resp.status == 200 and body["count"] == 2
        assert body["items"][0]["amount_exact"] == "12.345"  # a decimal string, never a float
        mine = await (await client.get("/v1/spend", headers=token(roles=["advertiser"], tenant_type="advertiser",
                                                                   tenant_id="adv-a"))).json()
        assert [i["contract_id"] for i in mine["items"]] == ["K-a"]
        other = await (await client.get("/v1/spend?advertiser_id=adv-b", headers=token(
            roles=["advertiser"], tenant_type="advertiser", tenant_id="adv-a"))).json()
        assert other["items"] == []
        partner = await client.get("/v1/spend", headers=token(roles=["partner"], tenant_type="partner", tenant_id="p-1"))
        assert partner.status == 403
        assert (await client.get("/v1/spend")).status == 401
        bad = await client.get("/v1/spend?colour=red", headers=token(roles=["ops"]))
        assert bad.status in (400, 422)

        stream = await client.get("/v1/spend/stream?contract_id=K-a", headers=token(roles=["ops"]))
        assert stream.status == 200

        async def next_event() -> dict[str, Any]:
            data = None
            while True:
                line = (await stream.content.readline()).decode().strip()
                if line.startswith("data:"):
                    data = json.loads(line[5:])
                elif line == "" and data is not None:
                    return data

        first = await asyncio.wait_for(next_event(), 10)
        assert first["amount_exact"] == "12.345"
        w.produce("running_totals", "running_total", [total("K-b", "adv-b", "8.00"), total("K-a", "adv-a", "13.000")],
                  lambda r: r["total_id"])
        pushed = await asyncio.wait_for(next_event(), 30)
        assert (pushed["contract_id"], pushed["amount_exact"]) == ("K-a", "13")
        stream.close()
