"""Checks an incoming JSON event and turns it into the Avro record, naming every bad field.

Pure: no I/O. Rules (README "Ingest"): unknown fields are refused (a typo never passes
silently); ids are non-empty strings of at most 256 characters (64 for an event type) with no
control character (no NUL); times are ISO 8601 with
a zone (``2026-03-01T12:00:00.000001Z``), between 2000 and 2199 and at most ``max_future``
ahead of the receiving clock; amounts are decimal strings (never JSON numbers) with at most 6 decimals.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from tally_billing import bounds
from tally_billing.money import UnknownCurrency, currency, parse_amount
from tally_billing.periods import local_midnight, zone
from tally_billing.usage import is_bucket_boundary

MAX_ID_LEN = bounds.ID_LEN_MAX
MAX_EVENT_TYPE_LEN = 64
#: event ids come from other systems, so any Unicode text is an id, but no control character
#: (a lone surrogate cannot be UTF-8: the Avro encoder refuses the event, field "$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: event times Tally accepts (``tally_billing.bounds``): far from datetime's ends, whatever the zone
INSTANT_MIN = datetime.combine(bounds.DATE_MIN, time(), UTC)
INSTANT_MAX = datetime.combine(bounds.DATE_MAX, time.max, UTC)
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
        max_len = MAX_EVENT_TYPE_LEN if name == "event_type" else MAX_ID_LEN
        if len(v) > max_len:
            self.problems.append((name, f"must be at most {max_len} characters"))
            return None
        if _CONTROL.search(v) is not None:
            self.problems.append((name, "must not contain control characters (NUL, newline, ...)"))
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
        if not INSTANT_MIN <= t <= INSTANT_MAX:
            self.problems.append((name, f"must be from {INSTANT_MIN.isoformat()} to {INSTANT_MAX.isoformat()}"))
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
        if t.tzinfo is UTC:  # "Z" and "+00:00": already the answer
            return t
        if t.tzinfo is None or t.utcoffset() is None:
            return None
        return t.astimezone(UTC)
    except (ValueError, OverflowError):  # 0001-01-01T00:00:00+14:00 lies before datetime.min in UTC
        return None


def check_impression(raw: Any, *, now: datetime, max_future: timedelta) -> Checked:
    """The impression's Avro record, or every bad field.

    A valid impression is recognised by ``_impression_if_valid`` (the same rules, in one pass,
    without collecting problems); anything it does not accept is checked by the plain path below,
    which names every bad field.
    """
    rec = _impression_if_valid(raw, now + max_future)
    if rec is not None:
        return Checked(rec, [])
    return _check_impression_plain(raw, now=now, max_future=max_future)


def _impression_if_valid(raw: Any, latest: datetime) -> dict[str, Any] | None:
    """The record of a valid impression (the plain path's, key for key), or None: the plain path
    then decides. ``latest`` = now + max_future."""
    if type(raw) is not dict or not raw.keys() <= IMPRESSION_FIELDS:
        return None
    get = raw.get
    iid, adv, cmp, hh, partner = (get("impression_id"), get("advertiser_id"), get("campaign_id"),
                                  get("household_id"), get("partner_id"))
    ids = (iid, adv, cmp, hh) if partner is None else (iid, adv, cmp, hh, partner)
    for v in ids:
        if type(v) is not str or not v or len(v) > MAX_ID_LEN or v.isspace():
            return None
    if _CONTROL.search("".join(ids)) is not None:  # type: ignore[arg-type]  # every one is a str here
        return None
    t = parse_instant(get("event_time"))
    if t is None or not INSTANT_MIN <= t <= INSTANT_MAX or t > latest:
        return None
    # a JSON null is not ``get``'s default: it is no choice here, and the plain path reads it as absent
    device, ivt, source = get("device_type", "other"), get("ivt", "none"), get("measurement_source", "first_party")
    if device not in DEVICE_TYPES or ivt not in IVT_FLAGS or source not in MEASUREMENT_SOURCES:
        return None
    return {"impression_id": iid, "event_time": t, "advertiser_id": adv, "campaign_id": cmp, "partner_id": partner,
            "household_id": hh, "device_type": device, "ivt": ivt, "measurement_source": source}


def _check_impression_plain(raw: Any, *, now: datetime, max_future: timedelta) -> Checked:
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
    if (type(raw) is dict or isinstance(raw, Mapping)) and isinstance(raw.get(key), str):  # dict: spares the ABC check
        return str(raw[key])
    return None


# --------------------------------------------------------------------------- IVT reports

#: most entries one IVT report may carry
MAX_IVT_ENTRIES = 1000
#: largest count of one entry (an Avro long holds more; no window ever held this many impressions)
MAX_IVT_COUNT = 10**12
#: longest window of one entry
MAX_IVT_SPAN = timedelta(days=31)
IVT_CLASSES = ("givt", "sivt")
IVT_REPORT_FIELDS = frozenset({"report_id", "advertiser_id", "entries"})
IVT_ENTRY_FIELDS = frozenset({
    "campaign_id", "ivt_class", "measurement_source", "count", "window_start", "window_end", "date", "time_zone",
})
#: longer than any IANA zone name (the longest, America/Argentina/ComodRivadavia, has 32 characters)
MAX_TZ_LEN = 64
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def check_ivt_report(raw: Any, *, now: datetime, max_future: timedelta, vendor: str) -> Checked:
    """A verification vendor's report as the ``ivt_report`` Avro record, or every bad field by
    JSON path (``entries[2].window_start``). ``vendor`` is the caller's token subject; the report
    is accepted or refused whole."""
    if not isinstance(raw, Mapping):
        return Checked(None, [("$", "an IVT report must be a JSON object")])
    r = _Reader(raw, now, max_future)
    r.unknown(IVT_REPORT_FIELDS)
    report_id = r.ident("report_id")
    advertiser_id = r.ident("advertiser_id")
    entries: list[dict[str, Any]] = []
    items = raw.get("entries")
    if items is None:
        r.problems.append(("entries", "is required"))
    elif not isinstance(items, list) or not items:
        r.problems.append(("entries", "must be a non-empty array of entries"))
    elif len(items) > MAX_IVT_ENTRIES:
        # the entries are not read one by one: the answer stays small, and the report is refused anyway
        r.problems.append(("entries", f"at most {MAX_IVT_ENTRIES} entries per report (got {len(items)}); split the report"))
    else:
        for i, item in enumerate(items):
            entry, problems = _check_ivt_entry(item, now=now, max_future=max_future)
            path = f"entries[{i}]"
            r.problems.extend((path if f == "$" else f"{path}.{f}", m) for f, m in problems)
            if entry is not None:
                entries.append(entry)
    if r.problems:
        return Checked(None, r.problems)
    rec = {"report_id": report_id, "vendor": vendor, "advertiser_id": advertiser_id, "entries": entries,
           "received_at": now.astimezone(UTC)}
    return Checked(rec, [])


def _check_ivt_entry(raw: Any, *, now: datetime, max_future: timedelta) -> tuple[dict[str, Any] | None, list[tuple[str, str]]]:
    """One entry: its Avro record, or its problems with paths relative to the entry."""
    if not isinstance(raw, Mapping):
        return None, [("$", "an entry must be a JSON object")]
    r = _Reader(raw, now, max_future)
    r.unknown(IVT_ENTRY_FIELDS)
    campaign_id = r.ident("campaign_id")
    ivt_class = raw.get("ivt_class")
    if ivt_class is None:
        r.problems.append(("ivt_class", "is required"))
    elif ivt_class not in IVT_CLASSES:
        r.problems.append(("ivt_class", "must be one of " + ", ".join(IVT_CLASSES)))
    source = r.choice("measurement_source", MEASUREMENT_SOURCES, "first_party")
    count = _count(r, "count")
    window = _window(r)
    if r.problems or window is None:
        return None, r.problems
    start, end = window
    return {"campaign_id": campaign_id, "window_start": start, "window_end": end, "ivt_class": ivt_class,
            "measurement_source": source, "count": count}, []


def _count(r: _Reader, name: str) -> int | None:
    v = r.raw.get(name)
    if v is None:
        r.problems.append((name, "is required"))
        return None
    if isinstance(v, bool) or not isinstance(v, int):  # JSON true is no count; 5.0 parses as a Decimal
        r.problems.append((name, "must be a JSON integer"))
        return None
    if not 0 < v <= MAX_IVT_COUNT:
        r.problems.append((name, f"must be > 0 and at most 10^{len(str(MAX_IVT_COUNT)) - 1}"))
        return None
    return v


def _window(r: _Reader) -> tuple[datetime, datetime] | None:
    """The entry's window in UTC: ``window_start`` + ``window_end`` (15-minute boundaries), or
    ``date`` + ``time_zone`` (that local day, from one local midnight to the next)."""
    instants = [k for k in ("window_start", "window_end") if k in r.raw]
    local = [k for k in ("date", "time_zone") if k in r.raw]
    if instants and local:
        for k in local:
            r.problems.append((k, "give the window either as window_start and window_end or as date and time_zone, not both"))
        return None
    if not instants and not local:
        r.problems.append(("$", "a window is required: window_start and window_end, or date and time_zone"))
        return None
    if local:
        return _local_day(r)
    start = _boundary(r, "window_start")
    end = _boundary(r, "window_end")
    if start is None or end is None:
        return None
    if end <= start:
        r.problems.append(("window_end", "must be after window_start"))
        return None
    if end - start > MAX_IVT_SPAN:
        r.problems.append(("window_end", f"the window may span at most {MAX_IVT_SPAN.days} days"))
        return None
    return start, end


def _boundary(r: _Reader, name: str) -> datetime | None:
    t = r.instant(name)  # required, with a zone, not in the future
    if t is not None and not is_bucket_boundary(t):
        r.problems.append((name, "must be on a 15-minute boundary of UTC (e.g. 12:00, 12:15, 12:30, 12:45)"))
        return None
    return t


def _local_day(r: _Reader) -> tuple[datetime, datetime] | None:
    raw_day, tz = r.raw.get("date"), r.raw.get("time_zone")
    day: date | None = None
    if raw_day is None:
        r.problems.append(("date", "is required with time_zone"))
    elif not isinstance(raw_day, str) or not _DATE.fullmatch(raw_day):
        r.problems.append(("date", "must be a date YYYY-MM-DD"))
    else:
        try:
            day = date.fromisoformat(raw_day)
        except ValueError:
            r.problems.append(("date", "must be a date YYYY-MM-DD"))
        if day is not None and not bounds.DATE_MIN <= day <= bounds.DATE_MAX:
            r.problems.append(("date", f"must be from {bounds.DATE_MIN.isoformat()} to {bounds.DATE_MAX.isoformat()}"))
            day = None
    zone_ok = False
    if tz is None:
        r.problems.append(("time_zone", "is required with date"))
    else:
        try:
            if not isinstance(tz, str) or len(tz) > MAX_TZ_LEN:  # zone() would ask the file system for any name
                raise ValueError(tz)
            zone(tz)
            zone_ok = True
        except (ValueError, OSError):
            r.problems.append(("time_zone", "must be an IANA time zone such as America/New_York"))
    if day is None or not zone_ok:
        return None
    try:
        start, end = local_midnight(day, tz), local_midnight(day + timedelta(days=1), tz)
    except (ValueError, OverflowError):
        r.problems.append(("date", "is out of range"))
        return None
    if not (is_bucket_boundary(start) and is_bucket_boundary(end)):  # only before standard time (local mean time)
        r.problems.append(("date", f"its local midnights in {tz} are not on 15-minute boundaries of UTC"))
        return None
    if end > r.now + r.max_future:
        r.problems.append(("date", "the day has not ended yet (its window would reach into the future)"))
        return None
    return start, end
