"""The compiled impression reader (``_fastavro_fields.c``) against the pure-Python path (fastavro).

Both paths of ``ImpressionDecoder.decode_fields`` must give identical results on the real schema:
the same five fields for a valid record and the same ``DecodeError`` (kind and reason, hence the
same dead letter) for a malformed one. The compiled reader on its own may only ever answer for a
record fastavro reads without error, with fastavro's values.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tally_billing import bounds
from tally_metering import codec
from tally_metering.codec import ImpressionDecoder, field_program, reader_limits
from tally_streams.avro import DecodeError, SchemaCatalog

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _records(catalog: SchemaCatalog, n: int, rng: random.Random) -> list[bytes]:
    """Valid impressions, every field inside its limits (``tally_billing.bounds``)."""
    enc = catalog.codec("impression")
    out = []
    for i in range(n):
        out.append(enc.encode({
            "impression_id": f"imp-{i}-" + "é" * rng.randrange(3) + "x" * rng.randrange(200),
            "event_time": T0 + timedelta(microseconds=rng.randrange(-10**14, 10**14)),
            "advertiser_id": f"adv-{rng.randrange(10)}", "campaign_id": f"cmp-{rng.randrange(100)}",
            "partner_id": rng.choice([None, "p", "p-1", "πartner"]), "household_id": f"hh-{rng.randrange(10**6)}",
            "device_type": rng.choice(["ctv", "mobile", "desktop", "tablet", "other"]),
            "ivt": rng.choice(["none", "givt", "sivt"]), "measurement_source": rng.choice(["first_party", "third_party"]),
        }))
    return out


def _mutants(valid: list[bytes], rng: random.Random, n: int) -> list[bytes | None]:
    out: list[bytes | None] = [None, b"", b"\xc3", b"\xc3\x01", valid[0][:10], b"\x00" * 40, valid[0][:2] + b"\x00" * 8]
    for _ in range(n):
        v = bytearray(rng.choice(valid))
        how = rng.randrange(6)
        if how == 0:  # flip bytes of the body
            for _ in range(rng.randrange(1, 4)):
                v[rng.randrange(10, len(v))] = rng.randrange(256)
        elif how == 1:  # truncate
            v = v[:rng.randrange(len(v))]
        elif how == 2:  # trailing bytes
            v += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
        elif how == 3:  # garbage body
            v = v[:10] + bytes(rng.randrange(256) for _ in range(rng.randrange(0, 80)))
        elif how == 4:  # invalid UTF-8 / over-long varint / negative lengths in a string slot
            i = rng.randrange(10, len(v))
            v[i:i + 1] = rng.choice([b"\xff", b"\x01", b"\xff" * 11, b"\x80" * 10 + b"\x02", b"\xed\xa0\x80"])
        else:  # a header flipped (fingerprint or magic)
            v[rng.randrange(0, 10)] ^= 1 << rng.randrange(8)
        out.append(bytes(v))
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, DecodeError) or isinstance(b, DecodeError):
        return isinstance(a, DecodeError) and isinstance(b, DecodeError) and (a.kind, a.reason) == (b.kind, b.reason)
    return bool(a == b) and [type(x) for x in a] == [type(x) for x in b]


@pytest.fixture(scope="module")
def decoders(catalog: SchemaCatalog) -> tuple[ImpressionDecoder, ImpressionDecoder]:
    fast, slow = ImpressionDecoder(catalog), ImpressionDecoder(catalog, compiled=False)
    assert fast.compiled, "the C reader was not built (pip install -e services/metering needs gcc and Python headers)"
    assert not slow.compiled
    return fast, slow


def test_program_covers_the_real_schema(catalog: SchemaCatalog) -> None:
    from tally_metering.codec import _unparsed, strip_logical_types

    schema = strip_logical_types(_unparsed(catalog.latest("impression").schema))
    program = field_program(schema, ImpressionDecoder.FIELDS, reader_limits("impression", schema))
    assert program is not None
    assert [w for w, _, _, _ in program].count(True) == 6
    limits = {name: limit for (_, _, _, limit), name in zip(program, [f["name"] for f in schema["fields"]], strict=True)}
    assert limits["household_id"] == (1, 256) and limits["partner_id"] == (1, 256) and limits["ivt"] is None
    assert limits["event_time"] == (bounds.INSTANT_US_MIN, bounds.INSTANT_US_MAX)
    # a type the C reader does not know disables it instead of guessing
    odd = {**schema, "fields": [*schema["fields"], {"name": "score", "type": "double"}]}
    assert field_program(odd, ImpressionDecoder.FIELDS) is None


def test_valid_records_decode_identically(decoders: tuple[ImpressionDecoder, ImpressionDecoder],
                                          catalog: SchemaCatalog) -> None:
    fast, slow = decoders
    rng = random.Random(7)
    values: list[bytes | None] = list(_records(catalog, 2000, rng))
    got, want = fast.decode_fields(values), slow.decode_fields(values)
    assert all(isinstance(r, tuple) for r in want)
    assert all(_same(a, b) for a, b in zip(got, want, strict=True))
    # and the C reader answered every one of them itself (no fallback)
    raw = codec._fastavro_fields.decode_batch(values, fast._header, fast._program)
    assert None not in raw
    first = slow.decode(values[0])
    assert got[0] == tuple(first[f] for f in ImpressionDecoder.FIELDS)
    assert isinstance(got[0][1], int)  # event time as integer microseconds


def test_malformed_records_dead_letter_identically(decoders: tuple[ImpressionDecoder, ImpressionDecoder],
                                                   catalog: SchemaCatalog) -> None:
    fast, slow = decoders
    rng = random.Random(11)
    valid = _records(catalog, 300, rng)
    values = _mutants(valid, rng, 20_000)
    got, want = fast.decode_fields(values), slow.decode_fields(values)
    assert all(_same(a, b) for a, b in zip(got, want, strict=True))
    errors = [r for r in want if isinstance(r, DecodeError)]
    assert {e.kind for e in errors} >= {"truncated", "not_single_object", "unknown_schema", "corrupt"}
    # Where the C reader answers on its own, fastavro reads the record without error to the same values.
    raw = codec._fastavro_fields.decode_batch(values, fast._header, fast._program)
    answered = [(r, w) for r, w in zip(raw, want, strict=True) if r is not None]
    assert answered
    assert all(not isinstance(w, DecodeError) and _same(r, w) for r, w in answered)


def _impression(catalog: SchemaCatalog, **over: Any) -> bytes:
    rec: dict[str, Any] = {"impression_id": "imp-1", "event_time": T0, "advertiser_id": "adv-1", "campaign_id": "cmp-1",
                           "partner_id": None, "household_id": "hh-1", "device_type": "ctv", "ivt": "none",
                           "measurement_source": "first_party"}
    return catalog.codec("impression").encode({**rec, **over})


BEYOND = [
    ({"household_id": "h" * 300}, "household_id", "invalid"),  # a field metering does not even keep
    ({"household_id": "é" * 257}, "household_id", "invalid"),  # characters, not bytes
    ({"impression_id": ""}, "impression_id", "invalid"),
    ({"campaign_id": "c\x00"}, "campaign_id", "invalid"),
    ({"advertiser_id": "a\x85"}, "advertiser_id", "invalid"),  # a C1 control character
    ({"partner_id": ""}, "partner_id", "invalid"),
    ({"partner_id": "p" * 257}, "partner_id", "invalid"),
    ({"event_time": datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)}, "event_time", "stale_event_time"),
    ({"event_time": datetime(2200, 1, 1, tzinfo=UTC)}, "event_time", "future_event_time"),
]


@pytest.mark.parametrize(("over", "field", "kind"), BEYOND)
def test_a_value_beyond_its_limit_is_refused_naming_the_field_by_both_paths(
        decoders: tuple[ImpressionDecoder, ImpressionDecoder], catalog: SchemaCatalog,
        over: dict[str, Any], field: str, kind: str) -> None:
    fast, slow = decoders
    value = _impression(catalog, **over)
    now_us = (T0 - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    assert codec._fastavro_fields.decode_batch([value], fast._header, fast._program) == [None]  # the C reader falls back
    got, want = fast.decode_fields([value], now_us)[0], slow.decode_fields([value], now_us)[0]
    assert isinstance(got, DecodeError) and _same(got, want)
    assert (got.kind, got.field) == (kind, field) and got.reason.startswith(field)


def test_values_at_their_limits_are_read_by_the_compiled_reader(
        decoders: tuple[ImpressionDecoder, ImpressionDecoder], catalog: SchemaCatalog) -> None:
    fast, _ = decoders
    values: list[bytes | None] = [
        _impression(catalog, household_id="h" * 256, partner_id="é" * 256, impression_id="名" * 256),
        _impression(catalog, event_time=datetime(2000, 1, 1, tzinfo=UTC)),
        _impression(catalog, event_time=datetime(2199, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    ]
    assert None not in codec._fastavro_fields.decode_batch(values, fast._header, fast._program)


def test_a_foreign_record_beyond_a_limit_gets_the_kind_attribution_gives_it(catalog: SchemaCatalog) -> None:
    """Both consumers call tally_billing.bounds.record_problem and tally_streams.kafka.out_of_bounds."""
    from tally_streams.kafka import out_of_bounds

    value = _impression(catalog, household_id="h" * 300)
    rec = catalog.codec("impression").decode(value)
    problem = bounds.record_problem("impression", rec)
    assert problem is not None
    theirs = out_of_bounds(problem, rec, T0)
    ours = ImpressionDecoder(catalog).decode_fields([value])[0]
    assert isinstance(ours, DecodeError) and (ours.kind, ours.reason, ours.field) == (theirs.kind, theirs.reason, theirs.field)
