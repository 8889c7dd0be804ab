"""The exposure index's compiled impression reader (``_impression_reader.c``) against
``AvroCodec.decode``: on random records and on corrupted ones both paths give the same seven
fields, or the same DecodeError (kind and reason: the same dead letter); and the compiled reader
alone answers only for records fastavro reads without error, with fastavro's values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tally_attribution import impression_reader
from tally_attribution.impression_reader import FIELDS, ImpressionReader, _layout_matches
from tally_streams.avro import DecodeError, SchemaCatalog

T0 = datetime(2026, 3, 1, tzinfo=UTC)
ids = st.text(st.characters(blacklist_categories=["Cs"]), max_size=40)

impressions = st.fixed_dictionaries({
    "impression_id": ids, "event_time": st.integers(-10**15, 10**15).map(lambda us: T0 + timedelta(microseconds=us)),
    "advertiser_id": ids, "campaign_id": ids, "partner_id": st.none() | ids, "household_id": ids,
    "device_type": st.sampled_from(["ctv", "mobile", "desktop", "tablet", "other"]),
    "ivt": st.sampled_from(["none", "givt", "sivt"]), "measurement_source": st.sampled_from(["first_party", "third_party"]),
})


@pytest.fixture(scope="module")
def readers(catalog: SchemaCatalog) -> tuple[ImpressionReader, ImpressionReader]:
    fast, plain = ImpressionReader(catalog), ImpressionReader(catalog, compiled=False)
    assert fast.compiled, "the C reader was not built (pip install -e services/attribution needs gcc and Python headers)"
    assert not plain.compiled
    return fast, plain


def same(a: Any, b: Any) -> bool:
    if isinstance(a, DecodeError) or isinstance(b, DecodeError):
        return isinstance(a, DecodeError) and isinstance(b, DecodeError) and (a.kind, a.reason) == (b.kind, b.reason)
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
    assert got[0] == tuple(rec[f] if f != "event_time" else (rec[f] - datetime(1970, 1, 1, tzinfo=UTC))
                           // timedelta(microseconds=1) for f in FIELDS)


@st.composite
def corrupted(draw: st.DrawFn, catalog: SchemaCatalog) -> bytes | None:
    value = bytearray(catalog.codec("impression").encode(draw(impressions)))
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
        got, want = fast.read(values), plain.read(values)
        assert all(same(a, b) for a, b in zip(got, want, strict=True))
        # where the C reader answers on its own, fastavro reads the record to the same values
        for raw, w in zip(impression_reader._compiled.read_batch(values, fast._header, *fast._args), want, strict=True):
            assert raw is None or (not isinstance(w, DecodeError) and same(raw, w))

    check()
