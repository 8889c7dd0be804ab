"""The kit's hostile-input defences (issue 16): strict JSON (depth, duplicate keys, NaN, NUL,
lone surrogates), typed token claims (anything else is 401) and cursors that hide bad text."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from typing import Any

import pytest

from tally_billing import bounds
from tally_kit.auth import principal_from_claims
from tally_kit.inputs import MAX_JSON_DEPTH, JsonRefused, loads_strict
from tally_kit.openapi import decode_cursor
from tally_kit.problems import ApiError


@pytest.mark.parametrize(("raw", "field", "words"), [
    (b"[" * 100_000 + b"]" * 100_000, "body", "deeper"),
    (b"[" * 33 + b"]" * 33, "[0]" * 32, "deeper"),
    (b'{"a": {"b": 1, "b": 2}}', "body", "duplicate key 'b'"),
    (b"[NaN]", "body", "NaN"),
    (b'{"x": -Infinity}', "body", "Infinity"),
    (b'{"a": ["ok", "\\u0000"]}', "a[1]", "NUL"),
    (b'{"a\\u0000": 1}', "a\\x00", "key must not contain a NUL"),
    (b'{"t": "\\ud800"}', "t", "lone surrogate"),
    (b'"\\uDFFF"', "body", "lone surrogate"),
    (b"{not json", "body", "not valid JSON"),
    (b"\xff\xfe", "body", "not valid JSON"),
])
def test_loads_strict_refuses_what_cannot_be_accepted(raw: bytes, field: str, words: str) -> None:
    with pytest.raises(JsonRefused) as err:
        loads_strict(raw)
    assert err.value.field == field and words in err.value.message


def test_loads_strict_keeps_what_is_fine() -> None:
    assert loads_strict(b'{"a": 1.50, "e": "\\ud83d\\ude00", "n": null}') == {"a": Decimal("1.50"), "e": "😀", "n": None}
    assert loads_strict(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH) is not None
    assert loads_strict(b'["\\u0000"]', text=False) == ["\x00"]  # left to the caller's field checks


def test_the_kit_json_depth_is_the_one_in_the_bounds_table() -> None:
    assert bounds.LIMITS["(JSON body)"].maximum == str(MAX_JSON_DEPTH)


def _claims(**over: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"sub": "amy", "roles": ["advertiser"], "tenant_type": "advertiser", "tenant_id": "adv-acme"}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


@pytest.mark.parametrize("claims", [
    _claims(tenant_id=["adv-acme"]), _claims(tenant_id=42), _claims(tenant_id={"a": 1}), _claims(tenant_id=""),
    _claims(tenant_id="adv acme"), _claims(tenant_id="adv\u0000"), _claims(tenant_id="x" * 257),
    _claims(tenant_type=["advertiser"]), _claims(tenant_type="partner"), _claims(roles=["advertiser", "admin"]),
    _claims(roles=["partner"]), _claims(roles=["advertiser", "partner"]), _claims(roles=["ops"]),
    _claims(tenant_type="advertiser", tenant_id=None), _claims(tenant_type=None, roles=["ops"]),
    _claims(sub=7), _claims(sub="eve\u0000"), _claims(sub="\ud800"), _claims(sub=""), _claims(sub="x" * 257),
    _claims(roles="advertiser"), _claims(roles=[1]),
])
def test_untyped_or_inconsistent_claims_are_401(claims: dict[str, Any]) -> None:
    with pytest.raises(ApiError) as err:
        principal_from_claims(claims)
    assert err.value.status == 401


def test_typed_claims_make_a_principal() -> None:
    p = principal_from_claims(_claims())
    assert (p.subject, p.tenant_type, p.tenant_id) == ("amy", "advertiser", "adv-acme")
    staff = principal_from_claims({"sub": "auth0|olivia", "roles": ["ops", "approver"]})
    assert not staff.is_tenant


@pytest.mark.parametrize("key", [["\u0000"], ["\ud800"], [[[1]]]])
def test_a_cursor_hiding_bad_text_or_nesting_is_422(key: Any) -> None:
    raw = json.dumps(key).encode()
    with pytest.raises(ApiError) as err:
        decode_cursor(base64.urlsafe_b64encode(raw).decode().rstrip("="))
    assert err.value.status == 422
