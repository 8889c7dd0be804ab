"""Service kit: settings report every problem at once; tokens carry roles and tenants."""

from __future__ import annotations

import time

import pytest

from tally_kit.auth import Principal, TokenVerifier, mint_token, principal_from_claims
from tally_kit.problems import ApiError
from tally_kit.settings import Setting, SettingsError, boolean, load, port, positive_int, validate_main

SPEC = (
    Setting("TALLY_X_PORT", "HTTP port", "8081", port),
    Setting("TALLY_X_DATABASE_URL", "PostgreSQL DSN"),
    Setting("TALLY_X_BATCH", "batch size", "500", positive_int),
    Setting("TALLY_X_DEMO", "demo mode", "false", boolean),
)


def test_settings_load_defaults_and_overrides() -> None:
    s = load(SPEC, {"TALLY_X_DATABASE_URL": "postgresql://x", "TALLY_X_BATCH": "10"})
    assert (s.x_port, s.x_database_url, s.x_batch, s.x_demo) == (8081, "postgresql://x", 10, False)


def test_settings_report_every_problem_together() -> None:
    with pytest.raises(SettingsError) as err:
        load(SPEC, {"TALLY_X_PORT": "99999", "TALLY_X_BATCH": "-1", "TALLY_X_DEMO": "maybe"})
    problems = err.value.problems
    assert len(problems) == 4
    assert [p.split(":")[0] for p in problems] == ["TALLY_X_PORT", "TALLY_X_DATABASE_URL", "TALLY_X_BATCH", "TALLY_X_DEMO"]


def test_validate_flag_exits_zero_on_good_config(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TALLY_X_DATABASE_URL", "postgresql://x")
    with pytest.raises(SystemExit) as code:
        validate_main(SPEC, ["--validate"])
    assert code.value.code == 0
    assert "configuration OK" in capsys.readouterr().out


def test_validate_flag_exits_two_listing_problems(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("TALLY_X_DATABASE_URL", raising=False)
    monkeypatch.setenv("TALLY_X_PORT", "0")
    with pytest.raises(SystemExit) as code:
        validate_main(SPEC, ["--validate"])
    assert code.value.code == 2
    err = capsys.readouterr().err
    assert "TALLY_X_PORT" in err and "TALLY_X_DATABASE_URL" in err


SECRET = "test-secret-that-is-long-enough-for-hs256"


def test_token_round_trip_with_tenant() -> None:
    token = mint_token(SECRET, "adv-user", ["advertiser"], tenant_type="advertiser", tenant_id="adv-1")
    p = TokenVerifier(SECRET).verify(token)
    assert p == Principal("adv-user", frozenset({"advertiser"}), "advertiser", "adv-1")
    assert p.sees_advertiser("adv-1") and not p.sees_advertiser("adv-2")
    assert not p.sees_partner("p-1")


def test_internal_user_sees_every_tenant_and_roles_gate() -> None:
    p = TokenVerifier(SECRET).verify(mint_token(SECRET, "olga", ["ops"]))
    assert p.sees_advertiser("anyone") and not p.is_tenant
    p.require("ops", "admin")
    with pytest.raises(ApiError) as err:
        p.require("finance")
    assert err.value.status == 403


@pytest.mark.parametrize(
    "token_of",
    [
        lambda: mint_token("another-secret-another-secret-another", "x", ["ops"]),
        lambda: mint_token(SECRET, "x", ["ops"], ttl_s=10, now=time.time() - 3600),
        lambda: "not-a-jwt",
    ],
    ids=["wrong-key", "expired", "garbage"],
)
def test_bad_tokens_are_401(token_of) -> None:
    with pytest.raises(ApiError) as err:
        TokenVerifier(SECRET).verify(token_of())
    assert err.value.status == 401


def test_tenant_roles_must_name_their_tenant() -> None:
    with pytest.raises(ApiError):
        principal_from_claims({"sub": "x", "roles": ["advertiser"]})
    with pytest.raises(ApiError):
        principal_from_claims({"sub": "x", "roles": ["ops"], "tenant_type": "publisher", "tenant_id": "p"})
    with pytest.raises(ValueError):
        mint_token(SECRET, "x", ["superuser"])
