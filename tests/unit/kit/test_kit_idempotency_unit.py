"""Unit tests for tally_kit.idempotency helpers (no database)."""

from __future__ import annotations

import pytest

from tally_kit import idempotency
from tally_kit.auth import Principal
from tally_kit.problems import ApiError


def test_request_hash_covers_method_path_and_body_without_ambiguity() -> None:
    base = idempotency.request_hash("POST", "/a?x=1", b"{}")
    assert base == idempotency.request_hash("post", "/a?x=1", b"{}")
    assert base != idempotency.request_hash("POST", "/a?x=2", b"{}")
    assert base != idempotency.request_hash("POST", "/a?x=1", b"{ }")
    # length-prefixing: moving bytes between parts changes the hash
    assert idempotency.request_hash("POST", "/ab", b"c") != idempotency.request_hash("POST", "/a", b"bc")


def test_keys_are_scoped_by_tenant_and_subject() -> None:
    a = Principal("u1", frozenset({"advertiser"}), "advertiser", "adv-1")
    b = Principal("u1", frozenset({"advertiser"}), "advertiser", "adv-2")
    ops = Principal("u1", frozenset({"ops"}))
    assert len({idempotency.scope_of(a), idempotency.scope_of(b), idempotency.scope_of(ops)}) == 3


@pytest.mark.parametrize("key", ["", "x" * 256, "bad\nkey"])
def test_invalid_keys_are_a_400_naming_the_header(key: str) -> None:
    with pytest.raises(ApiError) as exc:
        idempotency._check_key(key)
    assert exc.value.status == 400
    assert exc.value.errors[0]["field"] == "header:Idempotency-Key"


def test_ddl_names_the_documented_columns() -> None:
    for column in ("key", "principal", "method", "path", "request_hash", "status", "response", "created_at", "completed_at"):
        assert f"\n    {column} " in idempotency.IDEMPOTENCY_DDL
