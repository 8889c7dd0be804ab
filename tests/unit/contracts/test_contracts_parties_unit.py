"""The party registry's parsing and view, without a database: the lookup's query and the naming's
body report every problem by field, and the view is what the document's ``Party`` says."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jsonschema_rs

from tally_contracts import commands, views
from tally_contracts.openapi_spec import spec
from tally_kit.auth import Principal
from tally_kit.db import dumps

ADMIN = Principal(subject="adam", roles=frozenset({"admin"}))


def test_the_party_view_is_valid_for_the_document_and_names_no_staff() -> None:
    row = {"party_type": "advertiser", "party_id": "adv-acme", "display_name": "Acme Corp", "created_by": "adam",
           "updated_by": "adam", "updated_at": datetime(2026, 3, 1, tzinfo=UTC)}
    view = json.loads(dumps(views.party(row)))
    schema = {"$ref": "#/components/schemas/PartyList", "components": spec()["components"]}
    assert [e.message for e in jsonschema_rs.Draft202012Validator(schema).iter_errors({"items": [view]})] == []
    assert "adam" not in json.dumps(view)


def test_a_lookup_reads_type_and_ids_each_once_in_the_order_given() -> None:
    q = commands.party_query(ADMIN, {"type": "partner", "ids": "b,a,b"})
    assert q == commands.GetParties(ADMIN, "partner", ("b", "a"))
    assert commands.party_query(ADMIN, {"ids": "a"}) == commands.GetParties(ADMIN, None, ("a",))


def test_a_bad_lookup_names_every_problem() -> None:
    problems = commands.party_query(ADMIN, {"type": "agency", "ids": "ok,,bad id", "x": "1"})
    assert isinstance(problems, list)
    assert sorted(f for f, _ in problems) == ["query.ids[1]", "query.ids[2]", "query.type", "query.x"]
    too_many = commands.party_query(ADMIN, {"ids": ",".join("a" * 10**5)})
    assert too_many == [("query.ids", "must have at most 100 ids")]


def test_a_name_is_trimmed_and_one_with_a_control_character_is_refused() -> None:
    assert commands.name_party(ADMIN, "advertiser", "adv-acme", {"name": " Acme "}).name == "Acme"
    for bad in ("Acme\n", "A\x1bB", "A\x7f", "Acme\x85"):
        cmd = commands.name_party(ADMIN, "advertiser", "adv-acme", {"name": bad})
        assert cmd.name is None and [f for f, _ in cmd.problems] == ["name"], bad
