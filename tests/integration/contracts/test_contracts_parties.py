"""The party registry (issue 18 item 6, "names beside ids"): ``GET /parties?ids=`` answers the
display names the caller may read, ``PUT /parties/{type}/{id}`` (admin only) names a party, and
every naming is an entry of the contracts audit chain."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from .conftest import ADMIN, APPROVER, FINANCE, OPS, Env, token

pytestmark = pytest.mark.integration

ACME = token("amy", "advertiser", advertiser="adv-acme")
GLOBEX = token("gus", "advertiser", advertiser="adv-globex")
STREAMLY = token("sid", "partner", partner="ptn-streamly")


async def name_all(env: Env) -> None:
    for kind, pid, name in (("advertiser", "adv-acme", "Acme Corp"), ("advertiser", "adv-globex", "Globex"),
                            ("partner", "ptn-streamly", "Streamly")):
        await env.ok("PUT", f"/parties/{kind}/{pid}", ADMIN, {"name": name}, expect=201)


def names(page: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {(p["type"], p["id"]): p["name"] for p in page["items"]}


async def party_audit(env: Env) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(env.dsn)
    try:
        return await conn.fetch("SELECT entity_id, action, actor, before, after FROM audit_log "
                                "WHERE entity_type = 'party' ORDER BY seq")
    finally:
        await conn.close()


async def test_internal_roles_read_every_named_party_and_unknown_ids_are_left_out(env: Env) -> None:
    await name_all(env)
    for tok in (OPS, APPROVER, FINANCE, ADMIN):
        page = await env.ok("GET", "/parties?ids=adv-acme,ptn-streamly,adv-nobody,adv-acme", tok)
        assert names(page) == {("advertiser", "adv-acme"): "Acme Corp", ("partner", "ptn-streamly"): "Streamly"}
        assert set(page["items"][0]) == {"type", "id", "name", "updated_at"}
    page = await env.ok("GET", "/parties?type=partner&ids=adv-acme,ptn-streamly", OPS)
    assert names(page) == {("partner", "ptn-streamly"): "Streamly"}


async def test_a_tenant_reads_only_its_own_party(env: Env) -> None:
    await name_all(env)
    everyone = "/parties?ids=adv-acme,adv-globex,ptn-streamly"
    assert names(await env.ok("GET", everyone, ACME)) == {("advertiser", "adv-acme"): "Acme Corp"}
    assert names(await env.ok("GET", everyone, GLOBEX)) == {("advertiser", "adv-globex"): "Globex"}
    assert names(await env.ok("GET", everyone, STREAMLY)) == {("partner", "ptn-streamly"): "Streamly"}
    # a partner whose id is also an advertiser's id does not read the advertiser's name
    await env.ok("PUT", "/parties/advertiser/ptn-streamly", ADMIN, {"name": "Streamly Ads"}, expect=201)
    assert names(await env.ok("GET", "/parties?ids=ptn-streamly", STREAMLY)) == {("partner", "ptn-streamly"): "Streamly"}


@pytest.mark.parametrize("tok", [OPS, APPROVER, FINANCE, ACME, STREAMLY])
async def test_only_an_admin_names_a_party(env: Env, tok: str) -> None:
    status, problem, _ = await env.call("PUT", "/parties/advertiser/adv-acme", tok, {"name": "Not Acme"})
    assert status == 403, problem
    assert problem["status"] == 403
    assert (await env.ok("GET", "/parties?ids=adv-acme", ADMIN))["items"] == []
    assert await party_audit(env) == []


async def test_naming_and_renaming_are_audited_and_the_same_name_again_records_nothing(env: Env) -> None:
    created = await env.ok("PUT", "/parties/advertiser/adv-acme", ADMIN, {"name": "  Acme  "}, expect=201)
    assert created["name"] == "Acme"
    renamed = await env.ok("PUT", "/parties/advertiser/adv-acme", ADMIN, {"name": "Acme Corp"}, expect=200)
    assert renamed == {**created, "name": "Acme Corp", "updated_at": renamed["updated_at"]}
    await env.ok("PUT", "/parties/advertiser/adv-acme", ADMIN, {"name": "Acme Corp"}, expect=200)
    rows = await party_audit(env)
    assert [(r["entity_id"], r["action"], r["actor"]) for r in rows] == [
        ("advertiser/adv-acme", "party.named", "adam"), ("advertiser/adv-acme", "party.renamed", "adam")]
    assert '"Acme"' in rows[1]["before"] and '"Acme Corp"' in rows[1]["after"]
    verified = await env.ok("GET", "/audit/verify", ADMIN)
    assert verified["ok"] is True and verified["checked"] >= 2


async def test_two_first_namings_at_once_are_audited_one_after_the_other(env: Env) -> None:
    answers = await asyncio.gather(*(env.call("PUT", "/parties/partner/ptn-castly", ADMIN, {"name": name})
                                     for name in ("Castly", "Castly Media")))
    assert sorted(status for status, _, _ in answers) == [200, 201]
    rows = await party_audit(env)
    assert [r["action"] for r in rows] == ["party.named", "party.renamed"]
    final = (await env.ok("GET", "/parties?ids=ptn-castly", OPS))["items"][0]["name"]
    assert final in rows[1]["after"]


@pytest.mark.parametrize(("body", "field"), [
    ({}, "name"), ({"name": ""}, "name"), ({"name": "   "}, "name"), ({"name": "x" * 201}, "name"),
    ({"name": "Acme\nCorp"}, "name"), ({"name": "Acme\tCorp"}, "name"), ({"name": "Acme\x85"}, "name"),
    ({"name": 7}, "name"), ({"name": "Acme", "id": "x"}, "id"), ([], "body"),
])
async def test_a_bad_name_is_422_naming_the_field_and_writes_nothing(env: Env, body: Any, field: str) -> None:
    status, problem, headers = await env.call("PUT", "/parties/advertiser/adv-acme", ADMIN, body)
    assert status == 422, problem
    assert headers["Content-Type"].startswith("application/problem+json")
    assert field in [e["field"] for e in problem["errors"]]
    assert await party_audit(env) == []


async def test_a_name_of_200_characters_is_accepted(env: Env) -> None:
    party = await env.ok("PUT", "/parties/partner/ptn-long", ADMIN, {"name": "N" * 200}, expect=201)
    assert len(party["name"]) == 200


@pytest.mark.parametrize(("query", "field"), [
    ("", "query.ids"), ("?ids=", "query.ids"), ("?ids=a,,b", "query.ids[1]"), ("?ids=adv%20acme", "query.ids[0]"),
    (f"?ids={'x' * 257}", "query.ids[0]"), ("?ids=" + ",".join(f"a{i}" for i in range(101)), "query.ids"),
    ("?ids=a&type=agency", "query.type"), ("?ids=a&name=b", "query.name"),
])
async def test_a_bad_lookup_is_422_naming_the_parameter(env: Env, query: str, field: str) -> None:
    status, problem, _ = await env.call("GET", f"/parties{query}", OPS)
    assert status == 422, problem
    assert field in [e["field"] for e in problem["errors"]]


async def test_a_lookup_of_exactly_100_ids_is_answered(env: Env) -> None:
    await env.ok("PUT", "/parties/advertiser/a99", ADMIN, {"name": "Ninety-nine"}, expect=201)
    page = await env.ok("GET", "/parties?ids=" + ",".join(f"a{i}" for i in range(100)), OPS)
    assert names(page) == {("advertiser", "a99"): "Ninety-nine"}


@pytest.mark.parametrize("path", ["/parties/agency/adv-acme", "/parties/advertiser/adv%20acme",
                                  f"/parties/partner/{'x' * 257}"])
async def test_a_path_no_party_can_have_is_404(env: Env, path: str) -> None:
    status, problem, _ = await env.call("PUT", path, ADMIN, {"name": "Acme"})
    assert status == 404, problem


async def test_without_a_token_the_registry_answers_401(env: Env) -> None:
    assert (await env.call("GET", "/parties?ids=adv-acme", None))[0] == 401
    assert (await env.call("PUT", "/parties/advertiser/adv-acme", None, {"name": "Acme"}))[0] == 401
