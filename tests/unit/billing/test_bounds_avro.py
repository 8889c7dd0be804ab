"""Every field of every Avro schema has its limits in ``tally_billing.bounds``, and
``record_problem`` names the first field beyond them (what the consumers of ``ads.*`` dead-letter)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tally_billing import bounds

ROOT = Path(__file__).resolve().parents[3]
SCHEMAS = ROOT / "schemas"


def _latest(name: str) -> dict[str, Any]:
    files = sorted((SCHEMAS / name).glob("v*.avsc"), key=lambda f: int(f.stem[1:]))
    return json.loads(files[-1].read_text("utf-8"))


def _limited_paths(t: Any, path: str, named: dict[str, Any]) -> Iterator[str]:
    """The paths of ``t`` that need a limit: not enums, booleans or nulls; records and unions of
    records are containers (their fields are listed); arrays and maps need one and so do their items."""
    if isinstance(t, list):
        branches = [b for b in t if b != "null"]
        if len(branches) == 1:
            yield from _limited_paths(branches[0], path, named)
        else:
            for b in branches:
                yield from _limited_paths(b, path, named)
        return
    if isinstance(t, str):
        if t in named:
            yield from _limited_paths(named[t], path, named)
        elif t not in ("boolean", "null"):
            yield path
        return
    kind = t["type"]
    if kind == "record":
        named[t["name"]] = t
        for f in t["fields"]:
            yield from _limited_paths(f["type"], f"{path}.{f['name']}" if path else f["name"], named)
    elif kind == "enum":
        named[t["name"]] = t
    elif kind in ("array", "map"):
        yield path
        yield from _limited_paths(t["items" if kind == "array" else "values"], path + ("[]" if kind == "array" else "{}"), named)
    elif isinstance(kind, (dict, list)):
        yield from _limited_paths(kind, path, named)
    elif kind not in ("boolean", "null"):
        yield path


def _all_paths() -> list[tuple[str, str]]:
    out = []
    for d in sorted(p.name for p in SCHEMAS.iterdir() if p.is_dir()):
        out += [(d, p) for p in _limited_paths(_latest(d), "", {})]
    return out


def test_every_field_of_every_avro_schema_has_a_limit() -> None:
    paths = _all_paths()
    assert ("impression", "household_id") in paths and ("ivt_report", "entries[].count") in paths
    assert ("metering_period_state", "totals.cpa{}.amount_exact") in paths
    missing = [f"{s}.{p}" for s, p in paths if bounds.avro_limit(s, p) is None]
    assert missing == [], f"no limit in tally_billing.bounds for: {missing}"


def test_the_checker_finds_a_field_the_walk_misses_when_the_table_lacks_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bounds, "_AVRO_BY_NAME", {k: v for k, v in bounds._AVRO_BY_NAME.items() if k != "household_id"})
    assert [p for s, p in _all_paths() if bounds.avro_limit(s, p) is None] == ["household_id"] * 3


def test_the_billing_readme_shows_the_avro_limits() -> None:
    assert bounds.avro_markdown_table() in (ROOT / "libs/tally_billing/README.md").read_text("utf-8")


def _impression(**over: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "impression_id": "imp-1", "event_time": datetime(2026, 3, 1, 12, tzinfo=UTC), "advertiser_id": "adv-1",
        "campaign_id": "cmp-1", "partner_id": None, "household_id": "hh-1", "device_type": "ctv", "ivt": "none",
        "measurement_source": "first_party",
    }
    rec.update(over)
    return rec


def test_a_valid_impression_has_no_problem() -> None:
    assert bounds.record_problem("impression", _impression()) is None
    assert bounds.record_problem("impression", _impression(household_id="h" * 256, partner_id="ü·名")) is None


@pytest.mark.parametrize(("over", "field"), [
    ({"household_id": "h" * 300}, "household_id"),
    ({"household_id": ""}, "household_id"),
    ({"impression_id": "a\x00b"}, "impression_id"),
    ({"partner_id": "p\u0085"}, "partner_id"),
    ({"campaign_id": "c" * 257}, "campaign_id"),
    ({"event_time": datetime(1999, 12, 31, 23, 59, tzinfo=UTC)}, "event_time"),
    ({"event_time": datetime(2200, 1, 1, tzinfo=UTC)}, "event_time"),
])
def test_an_impression_beyond_a_limit_names_the_field(over: dict[str, Any], field: str) -> None:
    found = bounds.record_problem("impression", _impression(**over))
    assert found is not None and found[0] == field


def test_a_household_id_of_300_characters_says_how_long_it_may_be() -> None:
    assert bounds.record_problem("impression", _impression(household_id="h" * 300)) == (
        "household_id", "must have 1 to 256 characters (has 300)")


def _report(**entry: Any) -> dict[str, Any]:
    e = {"campaign_id": "cmp-1", "window_start": datetime(2026, 3, 1, tzinfo=UTC),
         "window_end": datetime(2026, 3, 1, 0, 15, tzinfo=UTC), "ivt_class": "givt",
         "measurement_source": "first_party", "count": 5}
    e.update(entry)
    return {"report_id": "r-1", "vendor": "vendor-1", "advertiser_id": "adv-1", "entries": [e, e],
            "received_at": datetime(2026, 3, 2, tzinfo=UTC)}


def test_an_ivt_report_is_checked_entry_by_entry() -> None:
    assert bounds.record_problem("ivt_report", _report()) is None
    assert bounds.record_problem("ivt_report", _report(count=0)) == ("entries[0].count", "must be an integer from 1 to 1000000000000")
    assert bounds.record_problem("ivt_report", _report(campaign_id="x" * 500))[0] == "entries[0].campaign_id"  # type: ignore[index]
    many = _report()
    many["entries"] = many["entries"] * 501
    assert bounds.record_problem("ivt_report", many) == ("entries", "must have 1 to 1000 entries")


def test_a_conversion_value_keeps_ingests_limits() -> None:
    conv = {"conversion_id": "c-1", "kind": "conversion", "order_id": None, "event_time": datetime(2026, 3, 1, tzinfo=UTC),
            "advertiser_id": "adv-1", "household_id": "hh-1", "event_type": "purchase", "value": Decimal("12.500000"),
            "currency": "EUR", "source": "api", "partner_id": None, "reverses_conversion_id": None, "reversal_amount": None}
    assert bounds.record_problem("conversion", conv) is None
    assert bounds.record_problem("conversion", {**conv, "value": Decimal("-1.000000")})[0] == "value"  # type: ignore[index]
    assert bounds.record_problem("conversion", {**conv, "value": Decimal(10) ** 12})[0] == "value"  # type: ignore[index]
    assert bounds.record_problem("conversion", {**conv, "currency": "euro"})[0] == "currency"  # type: ignore[index]
    assert bounds.record_problem("conversion", {**conv, "event_type": "e" * 65})[0] == "event_type"  # type: ignore[index]


def test_internal_state_keeps_instants_as_microseconds_and_amounts_as_strings() -> None:
    assert bounds.value_problem(bounds.avro_limit("metering_conversion_state", "event_us"), bounds.INSTANT_US_MAX) is None  # type: ignore[arg-type]
    assert bounds.value_problem(bounds.avro_limit("metering_conversion_state", "event_us"), bounds.INSTANT_US_MAX + 1)  # type: ignore[arg-type]
    assert bounds.value_problem(bounds.avro_limit("metering_conversion_state", "advertiser_amount"), "-12.5") is None  # type: ignore[arg-type]
    assert bounds.value_problem(bounds.avro_limit("metering_conversion_state", "advertiser_amount"), "1e13")  # type: ignore[arg-type]
    counts = bounds.record_problem("running_total", {"counts": {"billable": -1}})
    assert counts == ("counts.billable", f"must be an integer from 0 to {bounds.LONG_MAX}")


def test_lengths_only_sees_nothing_but_strings_beyond_their_maximum() -> None:
    short = _impression(household_id="", impression_id="a\x00b", event_time=datetime(1990, 1, 1, tzinfo=UTC))
    assert bounds.record_problem("impression", short) is not None
    assert bounds.record_problem("impression", short, lengths_only=True) is None
    assert bounds.record_problem("impression", _impression(household_id="h" * 300), lengths_only=True) == (
        "household_id", "must have 1 to 256 characters (has 300)")
    assert bounds.record_problem("ivt_report", _report(campaign_id="c" * 257), lengths_only=True)[0] == "entries[0].campaign_id"  # type: ignore[index]
