"""Service kit: settings are typed and report every problem at once; tokens carry roles and tenants."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from mypy import api as mypy_api

from tally_kit.auth import Principal, TokenVerifier, mint_token, principal_from_claims
from tally_kit.problems import ApiError
from tally_kit.settings import KafkaSettings, SettingsError, Spec, boolean, describe, load, port, positive_int, setting, validate_main

ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True, kw_only=True)
class XSettings(KafkaSettings):
    x_port: int = setting("TALLY_X_PORT", "HTTP port", "8081", port)
    x_database_url: str = setting("TALLY_X_DATABASE_URL", "PostgreSQL DSN", secret=True)
    x_batch: int = setting("TALLY_X_BATCH", "batch size", "500", positive_int)
    x_demo: bool = setting("TALLY_X_DEMO", "demo mode", "false", boolean)


SPEC = Spec(XSettings)


def test_settings_load_defaults_and_overrides() -> None:
    s = load(SPEC, {"TALLY_X_DATABASE_URL": "postgresql://x", "TALLY_X_BATCH": "10"})
    assert (s.x_port, s.x_database_url, s.x_batch, s.x_demo) == (8081, "postgresql://x", 10, False)
    assert s.kafka_bootstrap == "127.0.0.1:9092"  # the included group, under its own env name


def test_settings_report_every_problem_together() -> None:
    with pytest.raises(SettingsError) as err:
        load(SPEC, {"TALLY_KAFKA_BOOTSTRAP": " ", "TALLY_X_PORT": "99999", "TALLY_X_BATCH": "-1", "TALLY_X_DEMO": "maybe"})
    problems = err.value.problems
    assert [p.split(":")[0] for p in problems] == ["TALLY_KAFKA_BOOTSTRAP", "TALLY_X_PORT", "TALLY_X_DATABASE_URL", "TALLY_X_BATCH",
                                                   "TALLY_X_DEMO"]


def test_a_secret_is_masked_in_problems_and_left_out_of_repr() -> None:
    @dataclass(frozen=True, kw_only=True)
    class Secretive:
        x_token: int = setting("TALLY_X_TOKEN", "a numeric secret", None, positive_int, secret=True)
        x_batch: int = setting("TALLY_X_BATCH", "batch size", "500", positive_int)

    with pytest.raises(SettingsError) as err:
        load(Spec(Secretive), {"TALLY_X_TOKEN": "s3cr3t", "TALLY_X_BATCH": "lots"})
    assert [p.split(" is not valid")[0] for p in err.value.problems] == ["TALLY_X_TOKEN: ***", "TALLY_X_BATCH: 'lots'"]
    s = load(SPEC, {"TALLY_X_DATABASE_URL": "postgresql://x:hunter2@db"})
    assert "hunter2" not in repr(s) and "x_port=8081" in repr(s)


def test_a_groups_checks_across_settings_are_reported_once_every_setting_parsed() -> None:
    @dataclass(frozen=True, kw_only=True)
    class Paired:
        x_user: str = setting("TALLY_X_USER", "user", "")
        x_batch: int = setting("TALLY_X_BATCH", "batch size", "500", positive_int)

        def problems(self) -> list[str]:
            return [] if self.x_user else ["TALLY_X_USER: required here"]

    with pytest.raises(SettingsError) as err:
        load(Spec(Paired), {"TALLY_X_BATCH": "0"})
    assert [p.split(":")[0] for p in err.value.problems] == ["TALLY_X_BATCH"]
    with pytest.raises(SettingsError) as err:
        load(Spec(Paired), {})
    assert err.value.problems == ["TALLY_X_USER: required here"]
    assert load(Spec(Paired), {"TALLY_X_USER": "u"}).x_user == "u"


def test_a_spec_refuses_a_field_that_is_not_a_setting_or_not_named_after_its_env() -> None:
    @dataclass(frozen=True)
    class Plain:
        x_port: int = 8081

    @dataclass(frozen=True, kw_only=True)
    class Misnamed:
        port: int = setting("TALLY_X_PORT", "HTTP port", "8081", port)

    with pytest.raises(TypeError, match="setting"):
        Spec(Plain)
    with pytest.raises(TypeError, match="x_port"):
        Spec(Misnamed)


def test_the_settings_table_lists_every_setting_with_its_default() -> None:
    rows = describe(SPEC).splitlines()
    assert [r.split()[0] for r in rows] == ["TALLY_KAFKA_BOOTSTRAP", "TALLY_X_PORT", "TALLY_X_DATABASE_URL", "TALLY_X_BATCH",
                                            "TALLY_X_DEMO"]
    assert rows[2].split()[1] == "(required)" and rows[1].split()[1] == "8081"


def test_a_misspelt_setting_or_a_parser_of_the_wrong_type_is_a_mypy_error(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from dataclasses import dataclass\n"
        "from tally_kit.settings import Spec, load, port, setting\n"
        "@dataclass(frozen=True, kw_only=True)\n"
        "class P:\n"
        "    p_port: str = setting('TALLY_P_PORT', 'HTTP port', '8081', port)\n"
        "s = load(Spec(P))\n"
        "n: int = s.p_prot\n")
    out, _, status = mypy_api.run(["--config-file", str(ROOT / "pyproject.toml"), "--no-incremental", str(probe)])
    assert status == 1
    assert 'has no attribute "p_prot"' in out
    assert 'Incompatible types in assignment (expression has type "int", variable has type "str")' in out


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


def test_settings_flag_prints_the_table_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as code:
        validate_main(SPEC, ["--settings"])
    assert code.value.code == 0
    assert capsys.readouterr().out.strip() == describe(SPEC)


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
