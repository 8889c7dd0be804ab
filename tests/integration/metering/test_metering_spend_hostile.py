"""The spend API against hostile or out-of-scope queries (issue 16): a contract of another
advertiser answers 404 like every Tally API (a list filter stays an empty list), NUL bytes and
over-long filters are 422."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tally_kit.auth import TokenVerifier
from tally_kit.settings import load
from tally_metering.api import VIEW_KEY, create_api
from tally_metering.settings import SPEC

from .test_metering_api import SECRET, token, total

pytestmark = pytest.mark.integration


async def test_another_advertisers_contract_is_404_and_bad_filters_are_422(metering_world: Any) -> None:
    w = metering_world
    w.produce("running_totals", "running_total", [total("H-a", "adv-a", "1.00"), total("H-b", "adv-b", "2.00")],
              lambda r: r["total_id"])
    app = create_api(load(SPEC, w.env("api")), verifier=TokenVerifier(SECRET))
    adv_a = token(roles=["advertiser"], tenant_type="advertiser", tenant_id="adv-a")
    async with TestClient(TestServer(app)) as client:
        deadline = time.monotonic() + 30
        while len(app[VIEW_KEY].totals) < 2:
            assert time.monotonic() < deadline, "running totals not read"
            await asyncio.sleep(0.1)
        mine = await client.get("/v1/spend?contract_id=H-a", headers=adv_a)
        assert mine.status == 200 and [i["contract_id"] for i in (await mine.json())["items"]] == ["H-a"]
        for path in ("/v1/spend?contract_id=H-b", "/v1/spend/stream?contract_id=H-b"):
            other = await client.get(path, headers=adv_a)
            assert other.status == 404, path
            assert other.content_type == "application/problem+json"
        unknown = await client.get("/v1/spend?contract_id=H-none", headers=adv_a)
        assert unknown.status == 200 and (await unknown.json())["items"] == []
        listed = await client.get("/v1/spend?advertiser_id=adv-b", headers=adv_a)
        assert listed.status == 200 and (await listed.json())["items"] == []
        staff = await client.get("/v1/spend?contract_id=H-b", headers=token(roles=["finance"]))
        assert staff.status == 200 and len((await staff.json())["items"]) == 1
        assert (await client.get("/v1/spend?contract_id=%00", headers=adv_a)).status == 422
        assert (await client.get("/v1/spend?period_key=" + "x" * 300, headers=adv_a)).status == 422
