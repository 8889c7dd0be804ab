"""Unit tests for tally_kit.audit's canonical JSON and entry hashing (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from tally_kit import audit

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _hash(**over: object) -> str:
    fields: dict[str, object] = dict(seq=1, entity_type="contract", entity_id="c-1", action="created", actor="alice",
                                     tenant_type=None, tenant_id=None, before=None, after={"a": 1}, at=AT,
                                     prev_hash=audit.GENESIS_HASH)
    fields.update(over)
    return audit.entry_hash(**fields)


def test_canonical_json_sorts_keys_and_writes_decimals_as_strings() -> None:
    assert audit.canonical_json({"b": Decimal("1.10"), "a": [1, "x"]}) == '{"a":[1,"x"],"b":"1.10"}'


def test_canonical_json_refuses_floats_naming_the_path() -> None:
    with pytest.raises(TypeError, match=r"\$\.amount"):
        audit.canonical_json({"amount": 1.5})


def test_hash_is_stable_across_key_order_and_timezone_of_the_same_instant() -> None:
    other_zone = AT.astimezone(timezone(timedelta(hours=5)))
    assert _hash(after={"x": 1, "y": 2}) == _hash(after={"y": 2, "x": 1}, at=other_zone)


@pytest.mark.parametrize("change", [
    {"seq": 2}, {"entity_id": "c-2"}, {"action": "approved"}, {"actor": "bob"}, {"tenant_id": "adv-1"},
    {"before": {"a": 0}}, {"after": {"a": 2}}, {"at": AT + timedelta(microseconds=1)}, {"prev_hash": "1" * 64},
])
def test_every_field_is_covered_by_the_hash(change: dict[str, object]) -> None:
    assert _hash(**change) != _hash()


def test_decimal_and_its_string_hash_the_same_because_jsonb_stores_the_string() -> None:
    assert _hash(after={"v": Decimal("12.50")}) == _hash(after={"v": "12.50"})


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        _hash(at=datetime(2026, 1, 1))


def test_broken_link_reads_well() -> None:
    assert str(audit.BrokenLink(7, "edited")) == "audit chain broken at seq 7: edited"
