"""``AvroCodec.encode_many``: the same bytes (or the same refusal) as ``encode``, record by record,
whether the flat-record fast path or fastavro writes them."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from tally_streams.avro import EncodeError, SchemaCatalog

from .avro_samples import sample

ROOT = Path(__file__).resolve().parents[3]
SCHEMA_FILES = sorted((ROOT / "schemas").glob("*/v*.avsc"))


def _same_as_encode(codec: Any, records: list[Any]) -> list[bytes | EncodeError]:
    got = codec.encode_many(records)
    assert len(got) == len(records)
    for record, out in zip(records, got, strict=True):
        try:
            expected: bytes | None = codec.encode(record)
        except (EncodeError, OverflowError):  # encode_many turns fastavro's OverflowError into an EncodeError
            expected = None
        if expected is None:
            assert isinstance(out, EncodeError), f"encode refused {record!r}, encode_many wrote {out!r}"
        else:
            assert out == expected, f"different bytes for {record!r}"
    return got


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_schema_writes_the_bytes_encode_writes(path: Path, catalog: SchemaCatalog) -> None:
    name, version = path.parent.name, int(path.stem[1:])
    rng = random.Random(f"many-{name}-{version}")
    schema = json.loads(path.read_text())
    codec = catalog.codec(name, version)
    records = [sample(schema, rng) for _ in range(200)]
    assert all(isinstance(b, bytes) for b in _same_as_encode(codec, records))


def _impression(**over: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "impression_id": "imp-1", "event_time": datetime(2026, 3, 1, 12, 0, 0, 1, tzinfo=UTC), "advertiser_id": "adv",
        "campaign_id": "cmp", "partner_id": None, "household_id": "hh-1", "device_type": "ctv", "ivt": "none",
        "measurement_source": "first_party",
    }
    rec.update(over)
    return rec


def test_impression_edge_values_match_encode(catalog: SchemaCatalog) -> None:
    codec = catalog.codec("impression")
    missing = _impression()
    del missing["partner_id"]  # has a default: encode writes it
    unknown = _impression(colour="red")  # not in the schema: encode refuses it
    records: list[Any] = [
        _impression(),
        _impression(partner_id="p-ü", household_id="hh-日本", impression_id=""),
        _impression(impression_id="x" * 300),  # a multi-byte length prefix
        _impression(event_time=datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)),  # negative micros
        _impression(event_time=datetime(2026, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))),
        _impression(event_time=1_772_366_400_000_001),  # micros as an int
        _impression(event_time=2**63),  # out of range
        _impression(event_time="2026-03-01T12:00:00Z"),  # not a datetime
        _impression(device_type="smart-fridge"),  # not a symbol
        _impression(ivt=None),
        _impression(household_id=42),
        _impression(household_id=None),
        _impression(campaign_id="\ud800"),  # a lone surrogate cannot be UTF-8
        _impression(partner_id=b"bytes"),
        missing,
        unknown,
    ]
    got = _same_as_encode(codec, records)
    assert isinstance(got[0], bytes) and got[0][:10] == codec.schema.header
    assert isinstance(got[-1], EncodeError) and isinstance(got[7], EncodeError) and isinstance(got[8], EncodeError)
    assert isinstance(got[14], bytes)
    assert codec.decode(got[1])["household_id"] == "hh-日本"
    assert codec.decode(got[3])["event_time"] == datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)


def test_a_refused_record_leaves_its_neighbours_intact(catalog: SchemaCatalog) -> None:
    codec = catalog.codec("conversion")  # has decimals: the compiled writer takes it, fastavro refuses the bad one
    rng = random.Random(5)
    schema = json.loads((ROOT / "schemas" / "conversion" / "v1.avsc").read_text())
    good = [sample(schema, rng) for _ in range(3)]
    bad = {**good[0], "event_time": "yesterday"}
    got = _same_as_encode(codec, [good[0], bad, good[1], bad, good[2]])
    assert [type(g) for g in got] == [bytes, EncodeError, bytes, EncodeError, bytes]
    assert [codec.decode(g) for g in got if isinstance(g, bytes)] == [codec.decode(codec.encode(r)) for r in good]
