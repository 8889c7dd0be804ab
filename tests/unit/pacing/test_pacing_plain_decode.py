"""The pacing worker reads running totals plain (``AvroCodec.decode_plain`` + ``TotalUpdate.from_plain``,
issue 17's hot path): the same update — amounts to the last digit, instants to the microsecond, the
hour — as the full decode through ``from_record``, and the same refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tally_billing.periods import PeriodKind, period_by_key
from tally_pacing.state import InvalidRecord, TotalUpdate
from tally_streams.avro import DecodeError, SchemaCatalog, plain_decimal

CODEC = SchemaCatalog.load().codec("running_total")
MARCH = period_by_key("2026-03", "America/New_York", PeriodKind.MONTH)
# the wire's decimal(38, 12): up to 26 digits before the point
amounts = st.decimals(min_value=Decimal("-99999999999999999999999999"), max_value=Decimal("99999999999999999999999999"),
                      places=12, allow_nan=False, allow_infinity=False)
instants = st.integers(min_value=0, max_value=4_102_444_800_000_000).map(
    lambda us: datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us))


def _record(amount: Decimal, cap: Decimal | None, minimum: Decimal | None, latest: datetime | None, updated: datetime,
            kind: str, billable: int, line_amount: Decimal) -> dict[str, Any]:
    counts = {"conversions_attributed" if kind == "cpa" else "billable": billable, "over_delivery": billable // 7}
    return {"total_id": "c-1/2026-03", "contract_id": "c-1", "advertiser_id": "adv-a", "contract_type": kind,
            "currency": "USD", "time_zone": MARCH.tz, "period_kind": "month", "period_key": "2026-03",
            "period_start": MARCH.start, "period_end": MARCH.end, "status": "open", "amount_exact": amount,
            "budget_cap_per_period": cap, "budget_cap_total": cap, "minimum_commitment": minimum,
            "lines": [{"line_type": "cpm_impressions" if kind == "cpm" else "cpa_conversions", "contract_version": 1,
                       "price_point": "band:0", "event_type": None if kind == "cpm" else "purchase", "quantity": billable,
                       "unit": "per_thousand" if kind == "cpm" else "per_unit", "unit_price": line_amount,
                       "amount_exact": line_amount}],
            "counts": counts, "latest_event_time": latest, "updated_at": updated}


@settings(max_examples=300, deadline=None)
@given(amounts, st.none() | amounts, st.none() | amounts, st.none() | instants, instants, st.sampled_from(["cpm", "cpa"]),
       st.integers(min_value=0, max_value=2**62), amounts)
def test_plain_reading_gives_the_same_update(amount: Decimal, cap: Decimal | None, minimum: Decimal | None,
                                             latest: datetime | None, updated: datetime, kind: str, billable: int,
                                             line_amount: Decimal) -> None:
    rec = _record(amount, cap, minimum, latest, updated, kind, billable, line_amount)
    data = CODEC.encode(rec)
    full = TotalUpdate.from_record(CODEC.decode(data))
    plain = TotalUpdate.from_plain(CODEC.decode_plain(data))
    assert plain == full
    assert plain.hour == full.hour and plain.hour.tzinfo is not None
    assert str(plain.amount) == str(full.amount)  # the same exponent too, not only the same value


def test_plain_decimal_is_exact_at_38_digits() -> None:
    n = -(10**38 - 1)
    assert plain_decimal(n.to_bytes(17, "big", signed=True), 12) == Decimal(n).scaleb(-12, __import__("decimal").Context(prec=38))


def test_plain_reading_refuses_what_the_full_one_refuses() -> None:
    rec = _record(Decimal(1), None, None, None, datetime(2026, 3, 2, tzinfo=UTC), "cpm", 1, Decimal(1))
    bad_period = dict(rec, period_end=MARCH.start)
    data = CODEC.encode(bad_period)
    for read in (lambda: TotalUpdate.from_record(CODEC.decode(data)), lambda: TotalUpdate.from_plain(CODEC.decode_plain(data))):
        with pytest.raises(InvalidRecord) as caught:
            read()
        assert caught.value.field == "period_end"
    empty_id = CODEC.encode(dict(rec, contract_id=""))
    with pytest.raises(InvalidRecord, match="contract_id"):
        TotalUpdate.from_plain(CODEC.decode_plain(empty_id))
    good = CODEC.encode(rec)
    for broken in (good[:-3], good[:12], good[:5], good + b"\x00", b"\x00" + good[1:]):
        with pytest.raises(DecodeError) as full:
            CODEC.decode(broken)
        with pytest.raises(DecodeError) as plain:
            CODEC.decode_plain(broken)
        assert (plain.value.kind, plain.value.reason) == (full.value.kind, full.value.reason)
