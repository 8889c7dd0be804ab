"""The partner view (issue 16): a partner named on a CPA contract reads its payout terms,
windows, caps and overrides, the flight, currency and campaigns — never the advertiser's prices,
PO reference, committed value, other partners or their overrides, or staff names."""

from __future__ import annotations

import json

import pytest

from tally_contracts.domain import PARTNER_COMMON_FIELDS

from .conftest import OPS, Env, cpa_terms, token

pytestmark = pytest.mark.asyncio

ME = "partner-tv1"
PARTNER = token("pat", "partner", partner=ME)
OTHER = "partner-zz-other"


async def test_a_partner_reads_only_its_own_side_of_a_cpa_contract(env: Env) -> None:
    terms = cpa_terms(partner=ME)
    terms["common"]["po_reference"] = "PO-SECRET-4711"
    terms["cpa"]["payouts"][1]["advertiser_price"] = {"kind": "flat", "amount": "4.17"}
    terms["cpa"]["partner_overrides"].append({"partner_id": OTHER, "event_type": None, "effective_from": "2026-02-01",
                                              "partner_payout": {"kind": "flat", "amount": "9.99"}, "lookback_days": None,
                                              "caps": None})
    cid = await env.approved_contract(terms, name="Shop CPA")
    amended = json.loads(json.dumps(terms))
    amended["cpa"]["payouts"][1]["advertiser_price"] = {"kind": "flat", "amount": "4.29"}
    await env.ok("POST", f"/contracts/{cid}/amendments", OPS, {"terms": amended, "effective_from": "2026-04-01"})
    await env.ok("POST", f"/contracts/{cid}/versions/2/submit", OPS)
    await env.approve_fully(cid, 2)

    contract = await env.ok("GET", f"/contracts/{cid}", PARTNER)
    listed = (await env.ok("GET", "/contracts", PARTNER))["items"]
    versions = (await env.ok("GET", f"/contracts/{cid}/versions", PARTNER))["items"]
    v1 = await env.ok("GET", f"/contracts/{cid}/versions/1", PARTNER)
    diff = await env.ok("GET", f"/contracts/{cid}/diff?from=1&to=2", PARTNER)
    everything = json.dumps([contract, listed, versions, v1, diff])
    for secret in ("PO-SECRET-4711", "4.17", "4.29", "12.5", "advertiser_price", "committed_value", "5000",
                   OTHER, "9.99", "olivia", "alex", "fiona", "ava", "authors", "approvals", "created_by"):
        assert secret not in everything, secret
    assert contract["partner_ids"] == [ME] and contract["view"] == "partner"
    assert [i["id"] for i in listed] == [cid] and listed[0]["partner_ids"] == [ME]
    # only the advertiser price changed: of the partner's side, only the version's start
    assert [c["path"] for c in diff["changes"]] == ["effective_from"]
    t = v1["terms"]
    assert t["view"] == "partner" and set(t["common"]) == set(PARTNER_COMMON_FIELDS)
    assert t["common"]["campaign_ids"] == terms["common"]["campaign_ids"]
    assert [r["partner_payout"] for r in t["cpa"]["payouts"]] == [r["partner_payout"] for r in terms["cpa"]["payouts"]]
    assert t["cpa"]["payouts"][1]["tiers"] == [{"from_conversions": 1000, "partner_payout": {"kind": "flat", "amount": "2.00"}}]
    assert {o["partner_id"] for o in t["cpa"]["partner_overrides"]} == {ME}
    assert len(t["cpa"]["partner_overrides"]) == len(terms["cpa"]["partner_overrides"]) - 1
    assert t["cpa"]["attribution"] == terms["cpa"]["attribution"] and "per_partner" in t["cpa"]["caps"]
    assert [v["version"] for v in versions] == [1, 2] and all(v["view"] == "partner" for v in versions)

    staff = await env.ok("GET", f"/contracts/{cid}/versions/1", OPS)  # everyone else still reads it all
    assert staff["terms"]["common"]["po_reference"] == "PO-SECRET-4711" and staff["authors"] == ["olivia"]
