"""Unit tests of the contracts request parsers (tally_contracts.commands) and the mapping of the
domain's errors to problem+json (tally_contracts.api.problem): pure, no database."""

from __future__ import annotations

from datetime import date

import pytest

from tally_billing.examples import cpm_terms_json
from tally_contracts import commands, domain
from tally_contracts.api import problem
from tally_kit.auth import Principal

OPS = Principal("olivia", frozenset({"ops"}))


def fields(cmd: commands.Command) -> list[str]:
    return [f for f, _ in cmd.problems]


def test_a_good_create_body_parses_into_a_command_without_problems() -> None:
    cmd = commands.create_contract(OPS, {"name": "  Acme  ", "terms": cpm_terms_json(), "partner_ids": ["p-1"]})
    assert cmd.problems == ()
    assert cmd.name == "Acme" and cmd.partner_ids == ("p-1",) and cmd.terms is not None


def test_a_bad_body_is_never_raised_by_the_parser_and_names_every_field() -> None:
    cmd = commands.create_contract(OPS, {"name": "", "partner_ids": "p-1", "colour": "red"})
    assert sorted(fields(cmd)) == ["colour", "name", "partner_ids", "terms"]
    assert commands.create_contract(OPS, [1, 2]).problems == (("body", "must be a JSON object"),)


@pytest.mark.parametrize(("body", "flag", "problems"), [
    ({}, None, []),  # absent: the handler picks the default (the version's own flag for an edit)
    ({"backdated": True}, True, []),
    ({"backdated": False}, False, []),
    ({"backdated": None}, None, ["backdated"]),
    ({"backdated": "yes"}, None, ["backdated"]),
])
def test_backdated_is_true_false_or_left_to_the_handler(body: dict[str, object], flag: bool | None,
                                                        problems: list[str]) -> None:
    cmd = commands.edit_draft(OPS, "ctr_1", 2, {"terms": cpm_terms_json(), **body}, '"etag"')
    assert cmd.backdated is flag
    assert fields(cmd) == problems


def test_an_amendment_remembers_whether_effective_from_was_sent_at_all() -> None:
    sent_bad = commands.draft_amendment(OPS, "ctr_1", {"terms": cpm_terms_json(), "effective_from": "2026-13-01"})
    assert sent_bad.effective_from is None and sent_bad.effective_from_given and fields(sent_bad) == ["effective_from"]
    absent = commands.draft_amendment(OPS, "ctr_1", {"terms": cpm_terms_json()})
    assert absent.effective_from is None and not absent.effective_from_given and absent.problems == ()
    good = commands.draft_amendment(OPS, "ctr_1", {"terms": cpm_terms_json(), "effective_from": "2026-05-01"})
    assert good.effective_from == date(2026, 5, 1)


def test_renew_applies_the_escalator_unless_told_not_to() -> None:
    assert commands.renew(OPS, "ctr_1", None).apply_escalator is True
    assert commands.renew(OPS, "ctr_1", {"apply_escalator": False}).apply_escalator is False
    assert fields(commands.renew(OPS, "ctr_1", {"apply_escalator": 1})) == ["apply_escalator"]


def test_terminate_and_reject_require_their_fields() -> None:
    assert sorted(fields(commands.terminate(OPS, "ctr_1", {}))) == ["effective_date", "reason"]
    assert fields(commands.reject(OPS, "ctr_1", 1, {"comment": None})) == ["comment"]


@pytest.mark.parametrize(("err", "status", "type_"), [
    (domain.NotFound("contract"), 404, None),
    (domain.Invalid([("name", "is required")]), 422, None),
    (domain.Forbidden("requires one of the roles: ops"), 403, None),
    (domain.MakerChecker("maker-checker: …"), 403, "https://tally.dev/problems/maker-checker"),
    (domain.Conflict("the contract is terminated"), 409, "https://tally.dev/problems/conflict"),
    (domain.PreconditionRequired("If-Match required", '"c.v1.r1"'), 428, None),
    (domain.PreconditionFailed("stale ETag", '"c.v1.r2"'), 412, None),
])
def test_each_domain_error_has_its_problem_answer(err: domain.ContractError, status: int, type_: str | None) -> None:
    answer = problem(err)
    assert answer.status == status
    if type_ is not None:
        assert answer.type == type_
    if isinstance(err, domain.PreconditionRequired | domain.PreconditionFailed):
        assert answer.headers == {"ETag": err.etag}
    if isinstance(err, domain.Invalid):
        assert answer.errors == [{"field": "name", "message": "is required"}]


def test_require_role_speaks_like_the_kit() -> None:
    domain.require_role({"ops"}, "ops", "admin")
    with pytest.raises(domain.Forbidden, match="requires one of the roles: admin, ops"):
        domain.require_role({"partner"}, "ops", "admin")
