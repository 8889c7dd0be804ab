"""Tenant isolation on every endpoint: another tenant's contract answers 404, never 403."""

from __future__ import annotations

import pytest

from .conftest import OPS, Env, cpa_terms, cpm_terms, token

pytestmark = pytest.mark.integration

ENDPOINTS: list[tuple[str, str, object]] = [
    ("GET", "", None), ("GET", "/versions", None), ("GET", "/versions/1", None), ("GET", "/diff?from=1&to=1", None),
    ("GET", "/audit", None), ("PUT", "/versions/1", {"terms": {}}), ("POST", "/versions/1/submit", None),
    ("POST", "/versions/1/withdraw", None), ("POST", "/versions/1/approve", {}),
    ("POST", "/versions/1/reject", {"comment": "no"}), ("POST", "/amendments", {"terms": {}}), ("POST", "/renew", {}),
    ("POST", "/cancel-auto-renewal", {}), ("POST", "/terminate", {"effective_date": "2026-12-01", "reason": "x"}),
]


@pytest.mark.parametrize(("method", "suffix", "body"), ENDPOINTS)
async def test_another_tenants_contract_is_not_found_on_every_endpoint(env: Env, method: str, suffix: str,
                                                                       body: object) -> None:
    acme = await env.approved_contract(cpm_terms(advertiser="adv-acme"))
    shop = await env.approved_contract(cpa_terms(advertiser="adv-shop", partner="partner-tv1"))
    intruders = [token("eve", "advertiser", advertiser="adv-rival"), token("pat", "partner", partner="partner-tv1"),
                 token("sam", "advertiser", advertiser="adv-shop")]
    for tok in intruders:
        status, problem, _ = await env.call(method, f"/contracts/{acme}{suffix}", tok, body)
        assert status == 404, (tok, status, problem)
        assert problem["title"] == "Not Found"
    # a partner of another contract, and an advertiser of another contract, neither see the CPA one
    for tok in (token("eve", "advertiser", advertiser="adv-rival"), token("pam", "partner", partner="partner-other")):
        status, _, _ = await env.call(method, f"/contracts/{shop}{suffix}", tok, body)
        assert status == 404


async def test_tenants_list_and_read_only_their_own_approved_versions(env: Env) -> None:
    acme = await env.approved_contract(cpm_terms(advertiser="adv-acme"))
    shop = await env.approved_contract(cpa_terms(advertiser="adv-shop", partner="partner-tv1"))
    await env.ok("POST", f"/contracts/{acme}/amendments", OPS, {"terms": cpm_terms(rate="20.00"), "effective_from": "2026-05-01"})
    acme_user = token("amy", "advertiser", advertiser="adv-acme")
    partner_user = token("pat", "partner", partner="partner-tv1")
    assert [c["id"] for c in (await env.ok("GET", "/contracts", acme_user))["items"]] == [acme]
    assert [c["id"] for c in (await env.ok("GET", "/contracts", partner_user))["items"]] == [shop]
    assert (await env.ok("GET", "/contracts?advertiser_id=adv-shop", acme_user))["items"] == []
    # the draft amendment is internal: the advertiser sees version 1 only
    assert [v["version"] for v in (await env.ok("GET", f"/contracts/{acme}/versions", acme_user))["items"]] == [1]
    assert [v["version"] for v in (await env.ok("GET", f"/contracts/{acme}", acme_user))["versions"]] == [1]
    status, _, _ = await env.call("GET", f"/contracts/{acme}/versions/2", acme_user)
    assert status == 404
    # own contract, but not a writer: 403 (it exists for them), and the audit trail is internal
    for method, suffix in (("POST", "/renew"), ("GET", "/audit")):
        status, _, _ = await env.call(method, f"/contracts/{acme}{suffix}", acme_user, {} if method == "POST" else None)
        assert status == 403
    status, _, _ = await env.call("GET", "/contracts", token("ingest-bot", "ingest"))
    assert status == 403
    status, _, _ = await env.call("GET", "/contracts", None)
    assert status == 401
