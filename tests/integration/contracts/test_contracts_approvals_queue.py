"""GET /approvals — the approvals queue — on the real database: who sees which submitted
version (the maker-checker rules of the approve step), keyset paging that never skips or
repeats, and every answer valid for the OpenAPI document."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest

from tally_contracts.openapi_spec import spec
from tests.apidoc_check import schema_errors

from .conftest import ADMIN, APPROVER, APPROVER2, FINANCE, OPS, Env, cpm_terms, token

pytestmark = pytest.mark.integration

#: a user who drafts and approves: never for what it drafted itself
MAKER = token("mia", "ops", "approver")


async def _submitted(env: Env, name: str, *, total: str = "50000.00", by: str = OPS) -> str:
    c = await env.ok("POST", "/contracts", by, {"name": name, "terms": cpm_terms(total=total)})
    await env.ok("POST", f"/contracts/{c['id']}/versions/1/submit", by)
    env.clock.advance(timedelta(minutes=1))  # submission order = creation order
    return str(c["id"])


async def queue(env: Env, tok: str, **params: Any) -> dict[str, Any]:
    page: dict[str, Any] = await env.ok("GET", f"/approvals?{urlencode(params)}", tok)
    assert schema_errors(spec(), "ApprovalQueuePage", page) == []
    return page


async def every_page(env: Env, tok: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(50):
        page = await queue(env, tok, **params, **({"cursor": cursor} if cursor else {}))
        assert len(page["items"]) <= params.get("limit", 50)
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("the queue never ended")


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [i["contract"]["id"] for i in items]


async def test_the_queue_shows_each_caller_what_it_can_still_approve(env: Env) -> None:
    small = await _submitted(env, "Small")
    big = await _submitted(env, "Big", total="250000.00")  # needs approver and finance
    own = await _submitted(env, "Mia's own", by=MAKER)
    await env.ok("POST", f"/contracts/{big}/versions/1/approve", APPROVER, {})

    assert ids((await queue(env, APPROVER))["items"]) == [small, own]  # big: already approved by alex
    assert ids((await queue(env, APPROVER2))["items"]) == [small, own]  # big: only finance is missing
    assert ids((await queue(env, FINANCE))["items"]) == [big]
    assert ids((await queue(env, MAKER))["items"]) == [small]  # never its own
    mine = (await queue(env, FINANCE))["items"][0]
    assert mine["can_decide"] is True and mine["why_not"] is None
    assert mine["contract"] == {"id": big, "name": "Big", "advertiser_id": "adv-acme", "status": "pending_approval",
                                "currency": "USD", "time_zone": mine["contract"]["time_zone"]}
    assert mine["version"]["missing_approvals"] == {"finance": 1}
    assert [a["approver"] for a in mine["version"]["approvals"]] == ["alex"]
    assert mine["version"]["submitted_by"] == "olivia" and mine["version"]["authors"] == ["olivia"]

    every = {i["contract"]["id"]: i for i in (await queue(env, APPROVER, waiting_for="any"))["items"]}
    assert list(every) == [small, big, own]
    assert every[big]["can_decide"] is False and every[big]["why_not"] == "you already approved this submission"
    assert every[small]["can_decide"] is True
    by_maker = {i["contract"]["id"]: i for i in (await queue(env, MAKER, waiting_for="any"))["items"]}
    assert by_maker[own]["can_decide"] is False and "maker-checker" in by_maker[own]["why_not"]
    # an admin decides on nothing itself: its queue is everything, each saying why not
    admin = (await queue(env, ADMIN))["items"]
    assert ids(admin) == [small, big, own] and not any(i["can_decide"] for i in admin)

    # once decided, a version leaves every queue
    await env.ok("POST", f"/contracts/{big}/versions/1/approve", FINANCE, {})
    assert ids((await queue(env, FINANCE))["items"]) == []
    assert big not in ids((await queue(env, ADMIN))["items"])


async def test_paging_never_skips_or_repeats_even_with_equal_submission_instants(env: Env) -> None:
    made = [await _submitted(env, f"Contract {i}") for i in range(5)]
    # three more submitted at one instant (the clock stands still): the contract id breaks the tie
    same = []
    for i in range(3):
        c = await env.ok("POST", "/contracts", OPS, {"name": f"Same {i}", "terms": cpm_terms()})
        await env.ok("POST", f"/contracts/{c['id']}/versions/1/submit", OPS)
        same.append(str(c["id"]))
    env.clock.advance(timedelta(minutes=1))
    own = await _submitted(env, "Mia's own", by=MAKER)
    expected = [*made, *sorted(same)]
    for limit in (1, 2, 3, 50):
        assert ids(await every_page(env, APPROVER, limit=limit)) == [*expected, own]
        # the maker's own version is filtered out by the rules, and paging stays exact around it
        assert ids(await every_page(env, MAKER, limit=limit)) == expected
    first = await queue(env, APPROVER, limit=len(expected) + 1)
    assert first["next_cursor"] is None


async def test_tenants_and_writers_get_403_and_bad_parameters_422(env: Env) -> None:
    for tok in (OPS, token("ada", "advertiser", advertiser="adv-acme"), token("pat", "partner", partner="p1")):
        status, body, _ = await env.call("GET", "/approvals", tok)
        assert status == 403, body
    status, _, _ = await env.call("GET", "/approvals", None)
    assert status == 401
    for query, field in (("waiting_for=you", "query.waiting_for"), ("limit=0", "query.limit"),
                         ("limit=201", "query.limit"), ("cursor=nonsense", "query.cursor"),
                         ("cursor=WzEsMiwzXQ", "query.cursor"), ("status=draft", "query.status")):
        status, body, _ = await env.call("GET", f"/approvals?{query}", APPROVER)
        assert status == 422, (query, body)
        assert field in [e["field"] for e in body["errors"]], (query, body)
