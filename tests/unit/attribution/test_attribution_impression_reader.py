"""The exposure index's compiled impression reader (``_impression_reader.c``) against
``AvroCodec.decode``: on random records, on corrupted ones and on values at and beyond every
limit (``tally_billing.bounds``) both paths give the same seven fields, or the same DecodeError
(kind, reason and field: the same dead letter); and the compiled reader alone answers only for
records fastavro reads without error and whose values are inside their limits, with fastavro's
values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tally_attribution import impression_reader
from tally_attribution.impression_reader import FIELDS, ImpressionReader, _layout_matches
from tally_billing.bounds import ID_LEN_MAX, INSTANT_US_MAX, INSTANT_US_MIN
from tally_streams.avro import DecodeError, SchemaCatalog
from tally_streams.kafka import FUTURE_EVENT_TIME, STALE_EVENT_TIME

T0 = datetime(2026, 3, 1, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ID_FIELDS = ("impression_id", "advertiser_id", "campaign_id", "partner_id", "household_id")
#: ids inside their limit (1..256 characters, no C0, DEL or C1 control character)
ids = st.text(st.characters(blacklist_categories=["Cs", "Cc"]), min_size=1, max_size=40)
#: any text, empty and with control characters too
any_text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=40)


def _impressions(text: st.SearchStrategy[str], us: st.SearchStrategy[int]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({
        "impression_id": text, "event_time": us.map(lambda t: EPOCH + timedelta(microseconds=t)),
        "advertiser_id": text, "campaign_id": text, "partner_id": st.none() | text, "household_id": text,
        "device_type": st.sampled_from(["ctv", "mobile", "desktop", "tablet", "other"]),
        "ivt": st.sampled_from(["none", "givt", "sivt"]), "measurement_source": st.sampled_from(["first_party", "third_party"]),
    })


#: records inside every limit, and any records (ids and times beyond their limits too)
impressions = _impressions(ids, st.integers(INSTANT_US_MIN, INSTANT_US_MAX))
anything = _impressions(any_text, st.integers(INSTANT_US_MIN - 10**15, INSTANT_US_MAX + 10**15))


@pytest.fixture(scope="module")
def readers(catalog: SchemaCatalog) -> tuple[ImpressionReader, ImpressionReader]:
    fast, plain = ImpressionReader(catalog), ImpressionReader(catalog, compiled=False)
    assert fast.compiled, "the C reader was not built (pip install -e services/attribution needs gcc and Python headers)"
    assert not plain.compiled
    return fast, plain


def same(a: Any, b: Any) -> bool:
    if isinstance(a, DecodeError) or isinstance(b, DecodeError):
        return (isinstance(a, DecodeError) and isinstance(b, DecodeError)
                and (a.kind, a.reason, a.field) == (b.kind, b.reason, b.field))
    return a == b and [type(x) for x in a] == [type(x) for x in b]


def test_the_layout_check_refuses_a_schema_it_was_not_written_for(catalog: SchemaCatalog) -> None:
    schema = catalog.latest("impression").schema
    assert _layout_matches(schema)
    assert not _layout_matches({**schema, "fields": [*schema["fields"], {"name": "score", "type": "double"}]})
    swapped = [schema["fields"][2], schema["fields"][1], *schema["fields"][2:]]
    assert not _layout_matches({**schema, "fields": swapped})


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(impressions, min_size=1, max_size=20))
def test_random_records_read_alike(readers: tuple[ImpressionReader, ImpressionReader], catalog: SchemaCatalog,
                                   recs: list[dict[str, Any]]) -> None:
    fast, plain = readers
    values: list[bytes | None] = [catalog.codec("impression").encode(r) for r in recs]
    got, want = fast.read(values), plain.read(values)
    assert all(same(a, b) for a, b in zip(got, want, strict=True))
    assert None not in impression_reader._compiled.read_batch(values, fast._header, *fast._args)  # no fallback needed
    rec = recs[0]
    assert got[0] == tuple(rec[f] if f != "event_time" else (rec[f] - EPOCH) // timedelta(microseconds=1) for f in FIELDS)


def _read_alike(fast: ImpressionReader, plain: ImpressionReader, values: list[bytes | None]) -> list[Any]:
    """Both paths agree; where the C reader answers on its own, fastavro reads the record without
    error and inside every limit to the same values. Returns what the fastavro path gives."""
    got, want = fast.read(values), plain.read(values)
    assert all(same(a, b) for a, b in zip(got, want, strict=True))
    for raw, w in zip(impression_reader._compiled.read_batch(values, fast._header, *fast._args), want, strict=True):
        assert raw is None or (not isinstance(w, DecodeError) and same(raw, w))
    return want


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(anything, min_size=1, max_size=20))
def test_records_beyond_their_limits_read_alike(readers: tuple[ImpressionReader, ImpressionReader],
                                                catalog: SchemaCatalog, recs: list[dict[str, Any]]) -> None:
    _read_alike(*readers, [catalog.codec("impression").encode(r) for r in recs])


_BASE = {"impression_id": "i-1", "event_time": T0, "advertiser_id": "adv", "campaign_id": "c1", "partner_id": "p1",
         "household_id": "hh-1", "device_type": "ctv", "ivt": "none", "measurement_source": "first_party"}
#: (value, inside its limit): lengths in code points of one to four UTF-8 bytes, every kind of control character
_ID_VALUES = [
    ("", False), ("a", True), ("a" * ID_LEN_MAX, True), ("a" * (ID_LEN_MAX + 1), False),
    ("é" * ID_LEN_MAX, True), ("é" * (ID_LEN_MAX + 1), False), ("€" * ID_LEN_MAX, True), ("€" * (ID_LEN_MAX + 1), False),
    ("😀" * ID_LEN_MAX, True), ("😀" * (ID_LEN_MAX + 1), False), ("😀" * 64, True), ("😀" * 65 + "a" * 191, True),
    ("a\x00b", False), ("\x1f", False), ("tab\there", False), ("a\x7f", False), ("\x80", False), ("x\x85y", False),
    ("\x9f", False), ("\xa0", True), ("\xc2", True), ("\u0100\u0080", False), ("\u2028", True),
]
_TIMES = [(INSTANT_US_MIN - 1, False), (INSTANT_US_MIN, True), (INSTANT_US_MAX, True), (INSTANT_US_MAX + 1, False)]


@pytest.mark.parametrize("field", ID_FIELDS)
def test_ids_at_and_beyond_their_limits_read_alike_and_dead_letter_naming_the_field(
        readers: tuple[ImpressionReader, ImpressionReader], catalog: SchemaCatalog, field: str) -> None:
    codec = catalog.codec("impression")
    values: list[bytes | None] = [codec.encode({**_BASE, field: v}) for v, _ in _ID_VALUES]
    want = _read_alike(*readers, values)
    fast = impression_reader._compiled.read_batch(values, readers[0]._header, *readers[0]._args)
    for (v, inside), w, raw in zip(_ID_VALUES, want, fast, strict=True):
        if inside:
            assert raw is not None and raw[FIELDS.index(field)] == v, (field, v)
        else:
            assert raw is None and isinstance(w, DecodeError) and w.field == field, (field, v, w)


def test_event_times_at_and_beyond_their_limits_read_alike(readers: tuple[ImpressionReader, ImpressionReader],
                                                            catalog: SchemaCatalog) -> None:
    codec = catalog.codec("impression")
    values: list[bytes | None] = [codec.encode({**_BASE, "event_time": EPOCH + timedelta(microseconds=us)})
                                  for us, _ in _TIMES]
    want = _read_alike(*readers, values)
    fast = impression_reader._compiled.read_batch(values, readers[0]._header, *readers[0]._args)
    assert [raw is not None and raw[1] == us for (us, _), raw in zip(_TIMES, fast, strict=True)] == [ok for _, ok in _TIMES]
    assert [(w.kind, w.field) for w in want if isinstance(w, DecodeError)] == [
        (STALE_EVENT_TIME, "event_time"), (FUTURE_EVENT_TIME, "event_time")]


@st.composite
def corrupted(draw: st.DrawFn, catalog: SchemaCatalog) -> bytes | None:
    value = bytearray(catalog.codec("impression").encode(draw(impressions | anything)))
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["cut", "poke", "append", "body", "splice", "header", "none"]))
        at = draw(st.integers(0, max(0, len(value) - 1)))
        if how == "cut":
            del value[at:]
        elif how == "poke" and value:
            value[at] = draw(st.integers(0, 255))
        elif how == "append":
            value += draw(st.binary(min_size=1, max_size=4))
        elif how == "body":
            value[10:] = draw(st.binary(max_size=80))
        elif how == "splice":  # over-long varints, negative lengths, bad UTF-8 in any slot
            value[at:at + 1] = draw(st.sampled_from([b"\xff", b"\x01", b"\xff" * 11, b"\x80" * 10 + b"\x02", b"\xed\xa0\x80"]))
        elif how == "header" and len(value) >= 10:
            value[draw(st.integers(0, 9))] ^= 1 << draw(st.integers(0, 7))
        elif how == "none":
            return None
    return bytes(value)


def test_corrupted_records_dead_letter_alike(readers: tuple[ImpressionReader, ImpressionReader],
                                             catalog: SchemaCatalog) -> None:
    fast, plain = readers

    @settings(max_examples=2000, deadline=None)
    @given(st.lists(corrupted(catalog), min_size=1, max_size=10))
    def check(values: list[bytes | None]) -> None:
        _read_alike(fast, plain, values)

    check()
