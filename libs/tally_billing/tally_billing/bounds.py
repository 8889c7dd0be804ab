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
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

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
    "Limit",
    "id_problem",
    "markdown_table",
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
