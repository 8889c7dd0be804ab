"""Checks an incoming JSON event and turns it into the Avro record, naming every bad field.

Pure: no I/O. Rules (README "Ingest"): unknown fields are refused (a typo never passes
silently); ids are non-empty strings of at most 256 characters; times are ISO 8601 with a
zone (``2026-03-01T12:00:00.000001Z``) and at most ``max_future`` ahead of the receiving
clock; amounts are decimal strings (never JSON numbers) with at most 6 decimals.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from tally_billing.money import UnknownCurrency, currency, parse_amount

MAX_ID_LEN = 256
#: Avro decimal(18, 6) of Conversion.value / reversal_amount
VALUE_SCALE = 6
VALUE_INTEGER_DIGITS = 12

IMPRESSION_FIELDS = frozenset({
    "impression_id", "event_time", "advertiser_id", "campaign_id", "partner_id", "household_id",
    "device_type", "ivt", "measurement_source",
})
CONVERSION_FIELDS = frozenset({
    "conversion_id", "kind", "order_id", "event_time", "advertiser_id", "household_id", "event_type",
    "value", "currency", "source", "partner_id", "reverses_conversion_id", "reversal_amount",
})
DEVICE_TYPES = ("ctv", "mobile", "desktop", "tablet", "other")
IVT_FLAGS = ("none", "givt", "sivt")
MEASUREMENT_SOURCES = ("first_party", "third_party")
CONVERSION_KINDS = ("conversion", "reversal")


@dataclass
class Checked:
    """The Avro record when valid, else the problems as (field, message)."""

    record: dict[str, Any] | None
    problems: list[tuple[str, str]]

    @property
    def ok(self) -> bool:
        return self.record is not None


class _Reader:
    def __init__(self, raw: Mapping[str, Any], now: datetime, max_future: timedelta) -> None:
        self.raw = raw
        self.now = now
        self.max_future = max_future
        self.problems: list[tuple[str, str]] = []

    def ident(self, name: str, *, required: bool = True) -> str | None:
        v = self.raw.get(name)
        if v is None:
            if required:
                self.problems.append((name, "is required"))
            return None
        if not isinstance(v, str) or not v.strip():
            self.problems.append((name, "must be a non-empty string"))
            return None
        if len(v) > MAX_ID_LEN:
            self.problems.append((name, f"must be at most {MAX_ID_LEN} characters"))
            return None
        return v

    def choice(self, name: str, allowed: tuple[str, ...], default: str) -> str:
        v = self.raw.get(name)
        if v is None:
            return default
        if v not in allowed:
            self.problems.append((name, "must be one of " + ", ".join(allowed)))
            return default
        return str(v)

    def instant(self, name: str) -> datetime | None:
        v = self.raw.get(name)
        if v is None:
            self.problems.append((name, "is required"))
            return None
        t = parse_instant(v)
        if t is None:
            self.problems.append((name, "must be an ISO 8601 time with a zone, e.g. 2026-03-01T12:00:00Z"))
            return None
        if t > self.now + self.max_future:
            self.problems.append((name, f"is in the future (more than {int(self.max_future.total_seconds())} s ahead)"))
            return None
        return t

    def value(self, name: str) -> Decimal | None:
        v = self.raw.get(name)
        if v is None:
            return None
        if not isinstance(v, str):
            self.problems.append((name, 'must be a decimal string such as "12.50" (never a JSON number)'))
            return None
        try:
            d = parse_amount(v)
        except ValueError:
            self.problems.append((name, 'must be a decimal string such as "12.50"'))
            return None
        if d < 0:
            self.problems.append((name, "must be ≥ 0"))
            return None
        sign_digits_exp = d.as_tuple()
        exp = int(sign_digits_exp.exponent)
        if -exp > VALUE_SCALE:
            self.problems.append((name, f"must have at most {VALUE_SCALE} decimals"))
            return None
        if d >= Decimal(10) ** VALUE_INTEGER_DIGITS:
            self.problems.append((name, f"must be below 10^{VALUE_INTEGER_DIGITS}"))
            return None
        return d.quantize(Decimal(1).scaleb(-VALUE_SCALE))

    def unknown(self, allowed: frozenset[str]) -> None:
        if self.raw.keys() <= allowed:  # the usual case, without building a set
            return
        for k in sorted(set(self.raw) - allowed, key=str):
            self.problems.append((str(k), "unknown field"))


def parse_instant(v: Any) -> datetime | None:
    """An aware UTC datetime from an ISO 8601 string with a zone; None when it is not one."""
    if not isinstance(v, str) or len(v) > 64:
        return None
    try:
        t = datetime.fromisoformat(v)
    except ValueError:
        return None
    if t.tzinfo is None or t.utcoffset() is None:
        return None
    return t.astimezone(UTC)


def check_impression(raw: Any, *, now: datetime, max_future: timedelta) -> Checked:
    if not isinstance(raw, Mapping):
        return Checked(None, [("$", "an event must be a JSON object")])
    r = _Reader(raw, now, max_future)
    r.unknown(IMPRESSION_FIELDS)
    rec = {
        "impression_id": r.ident("impression_id"),
        "event_time": r.instant("event_time"),
        "advertiser_id": r.ident("advertiser_id"),
        "campaign_id": r.ident("campaign_id"),
        "partner_id": r.ident("partner_id", required=False),
        "household_id": r.ident("household_id"),
        "device_type": r.choice("device_type", DEVICE_TYPES, "other"),
        "ivt": r.choice("ivt", IVT_FLAGS, "none"),
        "measurement_source": r.choice("measurement_source", MEASUREMENT_SOURCES, "first_party"),
    }
    return Checked(None if r.problems else rec, r.problems)


def check_conversion(
    raw: Any,
    *,
    now: datetime,
    max_future: timedelta,
    source: str = "api",
    partner_id: str | None = None,
    allowed_sources: tuple[str, ...] = ("api", "pixel"),
) -> Checked:
    """``partner_id`` (a postback's authenticated partner) overrides any partner in the body."""
    if not isinstance(raw, Mapping):
        return Checked(None, [("$", "an event must be a JSON object")])
    r = _Reader(raw, now, max_future)
    r.unknown(CONVERSION_FIELDS)
    kind = r.choice("kind", CONVERSION_KINDS, "conversion")
    src = r.choice("source", allowed_sources, source)
    value = r.value("value")
    cur = r.ident("currency", required=False)
    if cur is not None:
        try:
            currency(cur)
        except UnknownCurrency:
            r.problems.append(("currency", f"unknown ISO 4217 currency {cur!r}"))
    if value is not None and cur is None:
        r.problems.append(("currency", "is required when value is given"))
    reverses = r.ident("reverses_conversion_id", required=False)
    reversal_amount = r.value("reversal_amount")
    if kind == "reversal" and reverses is None:
        r.problems.append(("reverses_conversion_id", "is required for a reversal"))
    if kind == "conversion" and (reverses is not None or reversal_amount is not None):
        field = "reverses_conversion_id" if reverses is not None else "reversal_amount"
        r.problems.append((field, "only a reversal (kind=reversal) references an original conversion"))
    if reversal_amount is not None and reversal_amount == 0:
        r.problems.append(("reversal_amount", "must be > 0 (omit it to reverse the whole conversion)"))
    body_partner = r.ident("partner_id", required=False)
    rec = {
        "conversion_id": r.ident("conversion_id"),
        "kind": kind,
        "order_id": r.ident("order_id", required=False),
        "event_time": r.instant("event_time"),
        "advertiser_id": r.ident("advertiser_id"),
        "household_id": r.ident("household_id"),
        "event_type": r.ident("event_type"),
        "value": value,
        "currency": cur,
        "source": src,
        "partner_id": partner_id if partner_id is not None else body_partner,
        "reverses_conversion_id": reverses,
        "reversal_amount": reversal_amount,
    }
    return Checked(None if r.problems else rec, r.problems)


def event_id(kind: str, raw: Any) -> str | None:
    """The event's own id, when it has a readable one (for per-event answers)."""
    key = "impression_id" if kind == "impression" else "conversion_id"
    if isinstance(raw, Mapping) and isinstance(raw.get(key), str):
        return str(raw[key])
    return None
