"""The limits of every value Tally's APIs accept, in one table (TIGER_STYLE: a limit on everything).

Each service validates against these constants and names the field it refuses (422, nothing
written); the READMEs show the table rendered by :func:`markdown_table` (a unit test keeps
them equal). A limit is chosen so that every value inside it is cheap to handle: dates stay
far from ``datetime``'s range ends, a flight spans a bounded number of billing periods, an
amount times any count stays inside the 38 digits of the money context.

Pure: standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

__all__ = [
    "AMOUNT_MAX",
    "DATE_MAX",
    "DATE_MIN",
    "DECIMAL_PLACES_MAX",
    "FLIGHT_DAYS_MAX",
    "ID_CHARSET",
    "ID_LEN_MAX",
    "ID_PATTERN",
    "LIMITS",
    "VERSION_MAX",
    "AvroLimit",
    "Limit",
    "avro_limit",
    "avro_markdown_table",
    "id_problem",
    "markdown_table",
    "record_problem",
    "value_problem",
]

#: earliest and latest calendar date any API accepts (flights, effective dates, event times)
DATE_MIN = date(2000, 1, 1)
DATE_MAX = date(2199, 12, 31)
#: longest flight (flight_start to flight_end, inclusive): ten years of 366 days
FLIGHT_DAYS_MAX = 3660
#: version numbers, sequence numbers and counts that PostgreSQL stores as ``integer``
VERSION_MAX = 2**31 - 1
#: ids: advertiser, partner, campaign, contract, event, household, order ids
ID_LEN_MAX = 256
ID_CHARSET = "A-Z a-z 0-9 and . _ : @ ~ + = / -"
ID_PATTERN = re.compile(r"[A-Za-z0-9._:@~+=/-]{1,256}")
#: the largest amount, rate, cap or commitment (in contract currency)
AMOUNT_MAX = Decimal(10) ** 12
#: the most decimals an amount or rate may carry
DECIMAL_PLACES_MAX = 12


@dataclass(frozen=True)
class Limit:
    """One row of the table: ``field`` as the APIs name it, its kind and inclusive bounds."""

    field: str
    kind: str
    minimum: str
    maximum: str
    where: str
    note: str = ""

    @property
    def max_int(self) -> int:
        return int(self.maximum)

    @property
    def min_int(self) -> int:
        return int(self.minimum)


_ROWS: tuple[Limit, ...] = (
    # --- common to every request
    Limit("(any text)", "string", "", "", "every API", "no NUL character, no lone surrogate (422; 404 for an id in a path)"),
    Limit("(JSON body)", "nesting depth", "", "32", "every API", "deeper, or a duplicate key, or NaN/Infinity: 422"),
    Limit("(request body)", "bytes", "", "1 MiB", "contracts", "413 beyond (ingest: TALLY_ATTRIBUTION_MAX_BODY_BYTES)"),
    Limit("(JSON body) Content-Type", "media type", "", "", "every API", "application/json (or */*+json), else 415"),
    Limit("(ids)", "string", "1", str(ID_LEN_MAX), "every API",
          f"characters {ID_CHARSET} (ingest's event ids: any text without control characters)"),
    Limit("version", "integer", "1", str(VERSION_MAX), "contracts", "path, diff from/to: beyond is 404 / 422"),
    Limit("Idempotency-Key", "header", "1", "255", "every POST", "printable characters, else 400"),
    Limit("limit", "integer", "1", "200", "every list", ""),
    Limit("cursor", "string", "1", "1024", "every list", "only cursors the API returned"),
    Limit("q", "string", "1", "200", "contracts list", "name contains"),
    # --- contracts: request fields
    Limit("name", "string", "1", "200", "contracts", "contract name"),
    Limit("comment / reason", "string", "1", "2000", "contracts, invoicing", ""),
    Limit("partner_ids", "list of ids", "0", "100", "contracts", ""),
    Limit("effective_from / effective_date", "date", DATE_MIN.isoformat(), DATE_MAX.isoformat(), "contracts", ""),
    # --- terms.common
    Limit("common.flight_start / flight_end", "date", DATE_MIN.isoformat(), DATE_MAX.isoformat(), "terms", ""),
    Limit("flight length", "days", "1", str(FLIGHT_DAYS_MAX), "terms", "flight_end - flight_start + 1 (ten years)"),
    Limit("common.campaign_ids", "list of ids", "1", "1000", "terms", ""),
    Limit("common.payment_terms_days", "integer", "0", "365", "terms", ""),
    Limit("common.notice_period_days", "integer", "0", "365", "terms", ""),
    Limit("common.renewal_term_months", "integer", "1", "120", "terms", ""),
    Limit("common.escalator_pct", "decimal", "0", "100", "terms", ""),
    Limit("common.po_reference", "string", "1", "100", "terms", ""),
    Limit("common.time_zone", "string", "1", "64", "terms", "an IANA zone"),
    Limit("(amounts, rates, caps, commitments)", "decimal string", "0", str(AMOUNT_MAX), "terms, invoicing",
          f"at most {DECIMAL_PLACES_MAX} decimals (money: the currency's minor unit)"),
    Limit("(percentages)", "decimal string", "0", "100", "terms", ""),
    # --- terms.cpm
    Limit("cpm.rate_card.bands", "list", "1", "20", "terms", ""),
    Limit("bands[].from_impressions", "integer", "0", str(10**15), "terms", ""),
    # --- terms.cpa
    Limit("cpa.payouts", "list", "1", "20", "terms", ""),
    Limit("payouts[].tiers", "list", "0", "10", "terms", ""),
    Limit("tiers[].from_conversions", "integer", "1", str(10**12), "terms", ""),
    Limit("cpa.partner_overrides", "list", "0", "200", "terms", ""),
    Limit("event_type (and map keys by event type)", "id", "1", "64", "terms, ingest", ""),
    Limit("*_by_event_type", "object", "0", "50", "terms", "entries"),
    Limit("lookback_days (and overrides')", "integer", "1", "365", "terms", ""),
    Limit("household_window_days_by_event_type values", "integer", "1", "365", "terms", ""),
    Limit("attribution.min_delay_seconds", "integer", "0", "lookback", "terms", "shorter than the lookback window"),
    Limit("reversal_lock_days", "integer", "1", "365", "terms", ""),
    Limit("max_conversions_per_period", "integer", "1", str(10**12), "terms", ""),
    # --- ingest, spend, invoicing
    Limit("event_time (ingest)", "instant", "2000-01-01T00:00:00Z", "2199-12-31T23:59:59Z", "ingest",
          "and at most the configured max_future ahead"),
    Limit("(ingest events per request)", "list", "1", "TALLY_ATTRIBUTION_MAX_EVENTS_PER_REQUEST", "ingest",
          "413 beyond; one bad NDJSON line fails only that line"),
    Limit("spend filters (contract_id, advertiser_id, period_key)", "id", "1", str(ID_LEN_MAX), "spend", ""),
    Limit("earnings filters (contract_id, partner_id)", "id", "1", str(ID_LEN_MAX), "spend", "GET /v1/earnings"),
    Limit("earnings period_key", "string", "7", "8", "spend", "GET /v1/earnings: a month (2026-03) or an ISO week (2026-W10)"),
    Limit("manual credit amount", "decimal string", "> 0", str(AMOUNT_MAX), "invoicing",
          "at most the currency's minor unit decimals"),
)

#: the table, keyed by field
LIMITS: dict[str, Limit] = {row.field: row for row in _ROWS}


def limit(field: str) -> Limit:
    return LIMITS[field]


def markdown_table(where: str | None = None) -> str:
    """The table (or the rows whose ``where`` mentions ``where``) as Markdown, for the READMEs."""
    rows = [r for r in _ROWS if where is None or where in r.where or r.where.startswith("every ")]
    out = ["| field | kind | min | max | where | note |", "| --- | --- | --- | --- | --- | --- |"]
    out += [f"| `{r.field}` | {r.kind} | {r.minimum} | {r.maximum} | {r.where} | {r.note} |" for r in rows]
    return "\n".join(out)


def id_problem(v: object, max_len: int = ID_LEN_MAX) -> str | None:
    """Why ``v`` is not an id (1..max_len characters of :data:`ID_CHARSET`), or None."""
    if not isinstance(v, str) or not v:
        return "must be a non-empty string"
    if len(v) > max_len:
        return f"must be at most {max_len} characters"
    if ID_PATTERN.fullmatch(v) is None:
        return f"must use only the characters {ID_CHARSET}"
    return None


# --------------------------------------------------------------------------- Avro records

#: the most entries in one IVT report (ingest refuses more; a foreign producer's report too)
IVT_ENTRIES_MAX = 1000
#: the largest invalid-impression count of one IVT report entry
IVT_COUNT_MAX = 10**12
#: event types (the keys of the payout tables)
EVENT_TYPE_LEN_MAX = 64
#: a quantity of impressions or conversions, signed in adjustments
QUANTITY_MAX = 10**15
#: Avro ``long`` (offsets, revisions, counters)
LONG_MAX = 2**63 - 1
#: an Avro ``bytes`` payload: Kafka's default largest message
BYTES_MAX = 2**20
#: ``value`` and ``reversal_amount`` of a conversion stay below this: Avro decimal(18, 6), never negative
CONVERSION_VALUE_MAX = Decimal(10) ** 12
CONVERSION_VALUE_PLACES = 6

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CURRENCY = re.compile(r"[A-Z]{3}")
_INSTANT_MIN = datetime.combine(DATE_MIN, time(), UTC)
_INSTANT_MAX = datetime.combine(DATE_MAX, time.max, UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: DATE_MIN..DATE_MAX in µs since the epoch (instants the hot paths keep as integers)
INSTANT_US_MIN = (_INSTANT_MIN - _EPOCH) // timedelta(microseconds=1)
INSTANT_US_MAX = (_INSTANT_MAX - _EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True)
class AvroLimit:
    """The limits of one Avro field (``kind`` says how ``minimum``/``maximum`` apply).

    ``id``: 1..maximum characters, no control character (C0, DEL, C1) — ingest's rule for event
    ids, which come from other systems; ``text``: minimum..maximum characters; ``code``: a
    three-letter ISO 4217 code; ``instant``: DATE_MIN..DATE_MAX (a ``datetime``, or µs since the
    epoch where a schema keeps the integer); ``integer``: minimum..maximum; ``decimal``:
    minimum..maximum with at most ``places`` decimals (a ``Decimal``, or a decimal string in
    metering's internal state); ``list``/``map``/``bytes``: minimum..maximum items, entries or bytes.
    """

    kind: str
    minimum: int | Decimal = 0
    maximum: int | Decimal = 0
    places: int = DECIMAL_PLACES_MAX
    note: str = ""

    def describe(self) -> tuple[str, str]:
        if self.kind == "code":
            return "", ""
        if self.kind == "instant":
            return DATE_MIN.isoformat(), DATE_MAX.isoformat()
        return str(self.minimum), str(self.maximum)


_ID = AvroLimit("id", 1, ID_LEN_MAX)
_KEY = AvroLimit("id", 1, 4 * ID_LEN_MAX, note="made of ids joined by /")
_EVENT_TYPE = AvroLimit("id", 1, EVENT_TYPE_LEN_MAX)
_CODE = AvroLimit("code", note="three capital letters (ISO 4217)")
_INSTANT = AvroLimit("instant")
_INSTANT_US = AvroLimit("instant", note="µs since the epoch")
_SHORT = AvroLimit("text", 1, 32, note="a word from a short list")
_PERIOD_KEY = AvroLimit("text", 1, 16, note="2026-03 or 2026-W10")
_ZONE = AvroLimit("text", 1, 64, note="an IANA zone")
_REASON = AvroLimit("text", 0, 2000)
_TOPIC = AvroLimit("text", 1, 249, note="a Kafka topic name")
_JSON = AvroLimit("text", 1, BYTES_MAX, note="a JSON document")
_VERSION = AvroLimit("integer", 1, VERSION_MAX)
_PARTITION = AvroLimit("integer", 0, VERSION_MAX)
_OFFSET = AvroLimit("integer", 0, LONG_MAX)
_QUANTITY = AvroLimit("integer", -QUANTITY_MAX, QUANTITY_MAX, note="signed in adjustments")
_COUNT = AvroLimit("integer", 0, LONG_MAX)
_AMOUNT = AvroLimit("decimal", -AMOUNT_MAX, AMOUNT_MAX, note="negative for reversals, credits and clawbacks")
_PCT = AvroLimit("integer", 1, 100)
_LINES = AvroLimit("list", 0, 10_000)
_ENTRIES = AvroLimit("map", 0, 10_000)
_BYTES = AvroLimit("bytes", 0, BYTES_MAX)
_CONVERSION_VALUE = AvroLimit("decimal", 0, CONVERSION_VALUE_MAX - Decimal(1).scaleb(-CONVERSION_VALUE_PLACES),
                              CONVERSION_VALUE_PLACES, "Avro decimal(18, 6), as ingest takes it")

#: limits by field name, the same in every schema that has the field ...
_AVRO_BY_NAME: dict[str, AvroLimit] = {
    **dict.fromkeys(("adjustment_id", "advertiser_id", "campaign_id", "contract_id", "conversion_id", "event_id",
                     "exposure_id", "first_impression_id", "household_id", "impression_id", "order_id",
                     "original_conversion_id", "partner_id", "report_id", "reverses_conversion_id",
                     "source_event_id", "vendor", "actor", "consumer_group"), _ID),
    **dict.fromkeys(("alert_id", "close_id", "outcome_id", "total_id"), _KEY),
    "event_type": _EVENT_TYPE,
    "currency": _CODE,
    **dict.fromkeys(("event_time", "original_event_time", "exposure_time", "decided_at", "created_at", "emitted_at",
                     "latest_event_time", "occurred_at", "effective_at", "terminated_at", "effective_from",
                     "effective_to", "approved_at", "received_at", "window_start", "window_end", "failed_at",
                     "projected_cap_at", "as_of", "period_start", "period_end", "closed_at", "updated_at"), _INSTANT),
    **dict.fromkeys(("event_us", "max_event_us", "closed_at_us"), _INSTANT_US),
    **dict.fromkeys(("status", "contract_type", "version_kind", "period_kind", "line_type", "error_kind"), _SHORT),
    **dict.fromkeys(("period_key", "corrects_period_key", "applies_to_period_key"), _PERIOD_KEY),
    "time_zone": _ZONE,
    "po_reference": AvroLimit("text", 1, 100, note="as common.po_reference"),
    **dict.fromkeys(("reason", "detail", "comment"), _REASON),
    "rule": AvroLimit("text", 1, 2 * ID_LEN_MAX, note="rule/window and any override id"),
    "price_point": AvroLimit("text", 1, 2 * EVENT_TYPE_LEN_MAX, note="band:0, over_delivery, event:<event type>"),
    "ledger_class": AvroLimit("text", 1, EVENT_TYPE_LEN_MAX),
    "field": AvroLimit("text", 1, ID_LEN_MAX, note="a field or JSON path"),
    **dict.fromkeys(("source", "source_topic", "topic"), _TOPIC),
    "details_json": _JSON,
    "terms_json": _JSON,
    **dict.fromkeys(("version", "contract_version", "decided_version"), _VERSION),
    **dict.fromkeys(("partition", "source_partition"), _PARTITION),
    **dict.fromkeys(("offset", "source_offset", "first_offset", "last_offset", "revision"), _OFFSET),
    **dict.fromkeys(("quantity", "impressions"), _QUANTITY),
    "credited": AvroLimit("integer", 0, IVT_ENTRIES_MAX * IVT_COUNT_MAX),
    "threshold_pct": _PCT,
    "payment_terms_days": AvroLimit("integer", 0, 365),
    "tier_position": AvroLimit("integer", 0, QUANTITY_MAX),
    "day": AvroLimit("integer", (DATE_MIN - date(1970, 1, 1)).days, (DATE_MAX - date(1970, 1, 1)).days,
                     note="days since 1970-01-01"),
    **dict.fromkeys(("unit_price", "amount_exact", "partner_payout_exact", "advertiser_amount", "partner_payout",
                     "cap", "spent_exact", "order_value", "minimum_commitment", "spend_exact", "budget",
                     "expected_spend", "pace_pct", "projected_spend", "budget_cap_per_period", "budget_cap_total",
                     "reversed_amount", "reversed_payout", "decided_amount", "decided_payout"), _AMOUNT),
    **dict.fromkeys(("lines", "payouts", "source_offsets", "billed"), _LINES),
    "versions": AvroLimit("list", 0, 1000),
    "entries": AvroLimit("list", 1, IVT_ENTRIES_MAX),
    "campaigns": AvroLimit("list", 0, 1000),
    "campaigns[]": _ID,
    "ledger_classes": AvroLimit("list", 0, 64),
    "ledger_classes[]": AvroLimit("text", 1, EVENT_TYPE_LEN_MAX),
    "classes": AvroLimit("list", 0, 64),
    "impression_ids": AvroLimit("list", 0, 10**7),
    "impression_ids[]": _ID,
    "in_scope_by_version": AvroLimit("list", 0, 1000),
    "alerts": AvroLimit("list", 0, 1000),
    "alerts[]": _KEY,
    "total_alerts": AvroLimit("list", 0, 3),
    "total_alerts[]": _PCT,
    "counts": AvroLimit("map", 0, 64, note="values: 0.." + str(LONG_MAX)),
    "counts{}": _COUNT,
    "offsets": _ENTRIES,
    "offsets{}": _OFFSET,
    "cpa": _ENTRIES,
    **dict.fromkeys(("key", "value", "groups", "buckets"), _BYTES),
}
#: ... unless a schema gives one of its fields (by path: ``entries[].count``) its own
_AVRO_BY_PATH: dict[str, AvroLimit] = {
    "conversion.value": _CONVERSION_VALUE,
    "conversion.reversal_amount": _CONVERSION_VALUE,
    "ivt_report.entries[].count": AvroLimit("integer", 1, IVT_COUNT_MAX),
    "metering_conversion_state.quantity": AvroLimit("integer", -1, 1, note="net conversions it contributes"),
    "metering_conversion_state.decided_version": AvroLimit("integer", 0, VERSION_MAX, note="0: not decided"),
    "metering_conversion_state.event_us": AvroLimit("integer", 0, INSTANT_US_MAX, note="µs since the epoch, 0: unknown"),
    "metering_delta.body.counts": _BYTES,
    "metering_ledger_day.classes[].counts": _BYTES,
    "metering_period_state.totals.payouts": _ENTRIES,
}


def avro_limit(schema: str, path: str) -> AvroLimit | None:
    """The limit of field ``path`` (``entries[].count``) of schema ``schema``; None if it has none."""
    found = _AVRO_BY_PATH.get(f"{schema}.{path}")
    if found is not None:
        return found
    leaf = path.rsplit(".", 1)[-1]
    return _AVRO_BY_NAME.get(leaf)


def avro_markdown_table() -> str:
    """The Avro field limits as Markdown, fields sharing a limit on one row (the billing README
    shows it; a unit test keeps them equal)."""
    groups: dict[int, tuple[AvroLimit, list[str]]] = {}
    for name, lim in [*_AVRO_BY_NAME.items(), *((f"{p}", lim) for p, lim in _AVRO_BY_PATH.items())]:
        groups.setdefault(id(lim), (lim, []))[1].append(f"`{name}`")
    out = ["| Avro fields (`schema.path`: that schema only) | kind | min | max | note |", "| --- | --- | --- | --- | --- |"]
    for lim, names in groups.values():
        lo, hi = lim.describe()
        out.append(f"| {', '.join(names)} | {lim.kind} | {lo} | {hi} | {lim.note} |")
    return "\n".join(out)


def value_problem(lim: AvroLimit, v: object) -> str | None:
    """Why ``v`` (as ``AvroCodec.decode`` returns it) is beyond ``lim``, or None."""
    kind = lim.kind
    if v is None:
        return None  # nullability is the schema's business
    if kind in ("id", "text"):
        if not isinstance(v, str):
            return "must be a string"
        if not lim.minimum <= len(v) <= lim.maximum:
            return f"must have {lim.minimum} to {lim.maximum} characters (has {len(v)})"
        if kind == "id" and _CONTROL_CHARS.search(v) is not None:
            return "must not contain control characters (NUL, newline, ...)"
        return None
    if kind == "code":
        return None if isinstance(v, str) and _CURRENCY.fullmatch(v) else "must be three capital letters (ISO 4217)"
    if kind == "instant":
        if isinstance(v, datetime):
            ok = v.tzinfo is not None and _INSTANT_MIN <= v <= _INSTANT_MAX
        else:
            ok = type(v) is int and INSTANT_US_MIN <= v <= INSTANT_US_MAX
        return None if ok else f"must be from {_INSTANT_MIN.isoformat()} to {_INSTANT_MAX.isoformat()}"
    if kind == "integer":
        if type(v) is not int or not lim.minimum <= v <= lim.maximum:
            return f"must be an integer from {lim.minimum} to {lim.maximum}"
        return None
    if kind == "decimal":
        try:
            d = v if isinstance(v, Decimal) else Decimal(v) if isinstance(v, str) else None
        except ArithmeticError:
            d = None
        if d is None or not d.is_finite():
            return "must be a decimal"
        if not lim.minimum <= d <= lim.maximum:
            return f"must be from {lim.minimum} to {lim.maximum}"
        exponent = d.as_tuple().exponent
        if isinstance(exponent, int) and -exponent > lim.places and d != d.quantize(Decimal(1).scaleb(-lim.places)):
            return f"must have at most {lim.places} decimals"
        return None
    if kind in ("list", "map", "bytes"):
        n = len(v) if isinstance(v, (list, dict, bytes)) else -1
        if not lim.minimum <= n <= lim.maximum:
            return f"must have {lim.minimum} to {lim.maximum} {'bytes' if kind == 'bytes' else 'entries'}"
        return None
    return None


def record_problem(schema: str, record: Mapping[str, Any], *, lengths_only: bool = False) -> tuple[str, str] | None:
    """The first field of ``record`` (a decoded record of catalog schema ``schema``) beyond its
    limit, as (field path, reason), or None. For records from outside Tally (``ads.*`` topics):
    the consumers dead-letter such a record naming the field. Enums and booleans have no limit.

    ``lengths_only``: only strings longer than their maximum — for a reader whose fast path
    sees no other limit (attribution's compiled impression reader), so that both its paths agree.
    """
    return _walk(schema, "", record, _length_problem if lengths_only else value_problem)


def _length_problem(lim: AvroLimit, v: object) -> str | None:
    if lim.kind in ("id", "text") and isinstance(v, str) and len(v) > lim.maximum:
        return value_problem(lim, v)
    return None


_Check = Callable[[AvroLimit, object], "str | None"]


def _walk(schema: str, prefix: str, record: Mapping[str, Any], check: _Check) -> tuple[str, str] | None:
    for name, v in record.items():
        path = prefix + name
        lim = avro_limit(schema, path)
        if lim is not None:
            why = check(lim, v)
            if why is not None:
                return path, why
        if isinstance(v, list) and v:
            item = avro_limit(schema, path + "[]")
            for i, x in enumerate(v):
                if isinstance(x, Mapping):
                    found = _walk(schema, f"{path}[].", x, check)
                    if found is not None:
                        return found[0].replace(f"{path}[]", f"{path}[{i}]", 1), found[1]
                elif item is not None:
                    why = check(item, x)
                    if why is not None:
                        return f"{path}[{i}]", why
        elif isinstance(v, Mapping) and lim is not None and lim.kind == "map":
            item = avro_limit(schema, path + "{}")
            for k, x in v.items():
                if isinstance(x, Mapping):
                    found = _walk(schema, f"{path}{{}}.", x, check)
                    if found is not None:
                        return found[0].replace(f"{path}{{}}", f"{path}.{k}", 1), found[1]
                elif item is not None:
                    why = check(item, x)
                    if why is not None:
                        return f"{path}.{k}", why
        elif isinstance(v, Mapping):
            found = _walk(schema, path + ".", v, check)
            if found is not None:
                return found
    return None
