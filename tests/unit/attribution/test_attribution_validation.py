"""Field-by-field checks of incoming JSON events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tally_attribution.validation import check_conversion, check_impression

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
SKEW = timedelta(minutes=5)


def imp(**over: object) -> dict[str, object]:
    base: dict[str, object] = {"impression_id": "i1", "event_time": "2026-06-15T11:00:00.000001Z", "advertiser_id": "a",
                               "campaign_id": "c", "household_id": "h"}
    base.update(over)
    return base


def conv(**over: object) -> dict[str, object]:
    base: dict[str, object] = {"conversion_id": "v1", "event_time": "2026-06-15T11:00:00+02:00", "advertiser_id": "a",
                               "household_id": "h", "event_type": "purchase"}
    base.update(over)
    return base


def fields(problems: list[tuple[str, str]]) -> set[str]:
    return {f for f, _ in problems}


def test_valid_impression_becomes_the_avro_record() -> None:
    c = check_impression(imp(partner_id="p"), now=NOW, max_future=SKEW)
    assert c.record is not None
    assert c.record["event_time"] == datetime(2026, 6, 15, 11, 0, 0, 1, tzinfo=UTC)
    assert (c.record["ivt"], c.record["device_type"], c.record["partner_id"]) == ("none", "other", "p")


def test_every_bad_field_is_named() -> None:
    c = check_impression(imp(impression_id="", event_time="2026-06-15T11:00:00", ivt="maybe", extra=1), now=NOW,
                         max_future=SKEW)
    assert c.record is None
    assert fields(c.problems) == {"impression_id", "event_time", "ivt", "extra"}


def test_future_time_beyond_the_skew_is_refused() -> None:
    ok = check_impression(imp(event_time="2026-06-15T12:05:00Z"), now=NOW, max_future=SKEW)
    late = check_impression(imp(event_time="2026-06-15T12:05:00.000001Z"), now=NOW, max_future=SKEW)
    assert ok.ok and not late.ok and fields(late.problems) == {"event_time"}


def test_amounts_are_decimal_strings_never_numbers() -> None:
    assert fields(check_conversion(conv(value=Decimal("1.5"), currency="USD"), now=NOW, max_future=SKEW).problems) == {"value"}
    assert fields(check_conversion(conv(value="1.1234567", currency="USD"), now=NOW, max_future=SKEW).problems) == {"value"}
    assert fields(check_conversion(conv(value="10.00"), now=NOW, max_future=SKEW).problems) == {"currency"}
    assert fields(check_conversion(conv(value="10.00", currency="XYZ"), now=NOW, max_future=SKEW).problems) == {"currency"}
    c = check_conversion(conv(value="10.25", currency="USD"), now=NOW, max_future=SKEW)
    assert c.record is not None and c.record["value"] == Decimal("10.25")


def test_reversal_shape() -> None:
    assert fields(check_conversion(conv(kind="reversal"), now=NOW, max_future=SKEW).problems) == {"reverses_conversion_id"}
    assert fields(check_conversion(conv(reverses_conversion_id="v0"), now=NOW, max_future=SKEW).problems) == {
        "reverses_conversion_id"}
    c = check_conversion(conv(kind="reversal", reverses_conversion_id="v0", reversal_amount="5"), now=NOW, max_future=SKEW)
    assert c.record is not None and c.record["reversal_amount"] == Decimal("5")


def test_postback_partner_comes_from_the_token_not_the_body() -> None:
    c = check_conversion(conv(partner_id="someone-else"), now=NOW, max_future=SKEW, source="postback",
                         partner_id="p-token", allowed_sources=("postback",))
    assert c.record is not None and c.record["partner_id"] == "p-token" and c.record["source"] == "postback"


def test_not_an_object() -> None:
    assert check_conversion([1], now=NOW, max_future=SKEW).problems == [("$", "an event must be a JSON object")]
