"""The Avro layer: single-object encoding, fingerprints, evolution, and typed decode errors."""

from __future__ import annotations

import json
import random
from decimal import Decimal
from pathlib import Path

import fastavro
import pytest
from fastavro.schema import to_parsing_canonical_form

from tally_streams.avro import MAGIC, DecodeError, EncodeError, SchemaCatalog, rabin_fingerprint

from .avro_samples import sample

ROOT = Path(__file__).resolve().parents[3]
SCHEMA_FILES = sorted((ROOT / "schemas").glob("*/v*.avsc"))


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _table_rabin(canonical_form: str) -> int:
    """CRC-64-AVRO by the table the codec used before it took fastavro's (the Avro spec's reference code)."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in canonical_form.encode("utf-8"):
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def test_fingerprint_and_header_match_the_table_implementation_on_every_schema(catalog: SchemaCatalog) -> None:
    checked = 0
    for name in catalog.names():
        for v in catalog.versions(name):
            old = _table_rabin(to_parsing_canonical_form(v.schema))
            assert v.fingerprint == old, v.full_name
            assert v.header == MAGIC + old.to_bytes(8, "little"), v.full_name
            checked += 1
    assert checked == len(SCHEMA_FILES)


def test_fingerprint_of_the_avro_spec_null_schema() -> None:
    # Avro's own test vector (share/test/data/schema-tests.txt): "null" -> 7195948357588979594.
    assert rabin_fingerprint('"null"') == 7195948357588979594


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_schema_file_is_documented_and_float_free(path: Path) -> None:
    schema = _load(path)
    text = path.read_text()
    assert '"float"' not in text and '"double"' not in text, "money and counts are never floats"

    def walk(s: object, where: str) -> None:
        if isinstance(s, dict) and s.get("type") == "record":
            assert s.get("doc"), f"{where}: record {s['name']} has no doc"
            for f in s["fields"]:
                assert f.get("doc"), f"{where}.{f['name']}: field has no doc"
                walk(f["type"], f"{where}.{f['name']}")
        elif isinstance(s, dict) and s.get("type") == "array":
            walk(s["items"], where)
        elif isinstance(s, dict) and s.get("type") == "map":
            walk(s["values"], where)
        elif isinstance(s, list):
            for branch in s:
                walk(branch, where)

    walk(schema, path.parent.name)


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_schema_version_reads_the_previous_and_is_read_by_it(path: Path, catalog: SchemaCatalog) -> None:
    """Each version round-trips its own data; from v2 on, new readers read old data and old
    readers read new data (full compatibility)."""
    name, version = path.parent.name, int(path.stem[1:])
    rng = random.Random(f"{name}-{version}")
    current = catalog.get(name, version)
    for _ in range(50):
        record = sample(_load(path), rng)
        data = catalog.codec(name, version).encode(record)
        assert data[:2] == MAGIC and data[2:10] == current.fingerprint.to_bytes(8, "little")
        assert catalog.codec(name, version).decode(data) == fastavro_roundtrip(current.schema, record)
        if version > 1:
            previous = catalog.get(name, version - 1)
            old = sample(_load(path.with_name(f"v{version - 1}.avsc")), rng)
            old_bytes = catalog.codec(name, version - 1).encode(old)
            catalog.codec(name, version).decode(old_bytes)  # new reader, old data
            catalog.codec(name, version - 1).decode(data)  # old reader, new data
            assert previous.fingerprint != current.fingerprint


def fastavro_roundtrip(schema: object, record: dict) -> dict:
    import io

    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, record)
    buf.seek(0)
    return fastavro.schemaless_reader(buf, schema)


@pytest.fixture
def evolving_catalog(tmp_path: Path) -> SchemaCatalog:
    v1 = {"type": "record", "name": "Thing", "namespace": "t", "doc": "d",
          "fields": [{"name": "id", "type": "string", "doc": "d"},
                     {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 6}, "doc": "d"}]}
    v2 = json.loads(json.dumps(v1))
    v2["fields"].append({"name": "note", "type": ["null", "string"], "default": None, "doc": "added in v2"})
    (tmp_path / "thing").mkdir()
    (tmp_path / "thing" / "v1.avsc").write_text(json.dumps(v1))
    (tmp_path / "thing" / "v2.avsc").write_text(json.dumps(v2))
    return SchemaCatalog.load(tmp_path)


def test_new_reader_reads_old_data_with_the_default(evolving_catalog: SchemaCatalog) -> None:
    old = evolving_catalog.codec("thing", 1).encode({"id": "a", "amount": Decimal("1.25")})
    assert evolving_catalog.codec("thing").decode(old) == {"id": "a", "amount": Decimal("1.250000"), "note": None}


def test_old_reader_reads_new_data_ignoring_the_new_field(evolving_catalog: SchemaCatalog) -> None:
    new = evolving_catalog.codec("thing").encode({"id": "b", "amount": Decimal("2"), "note": "hi"})
    assert evolving_catalog.codec("thing", 1).decode(new) == {"id": "b", "amount": Decimal("2.000000")}


def test_latest_version_is_the_default_writer(evolving_catalog: SchemaCatalog) -> None:
    assert evolving_catalog.codec("thing").schema.version == 2


@pytest.mark.parametrize(
    ("mutate", "kind"),
    [
        (lambda b: b[:5], "truncated"),
        (lambda b: b"", "truncated"),
        (lambda b: b"\x00\x01" + b[2:], "not_single_object"),
        (lambda b: b[:2] + bytes(8) + b[10:], "unknown_schema"),
        (lambda b: b[:10] + b"\xfe\xff\xff\xff\x0f", "truncated"),
        (lambda b: b[:10] + b"\x04\xff\xfe" + b[13:], "corrupt"),
        (lambda b: b + b"\x00\x00", "corrupt"),
        (lambda b: b[:-3], "truncated"),
    ],
    ids=["short-header", "empty", "bad-magic", "unknown-fingerprint", "huge-length", "invalid-utf8", "trailing-bytes", "truncated-body"],
)
def test_corrupt_input_gives_a_typed_decode_error(catalog: SchemaCatalog, mutate, kind: str) -> None:
    codec = catalog.codec("impression")
    good = codec.encode(sample(_load(ROOT / "schemas/impression/v1.avsc"), random.Random(1)))
    with pytest.raises(DecodeError) as err:
        codec.decode(mutate(good))
    assert err.value.kind == kind
    located = err.value.located("ads.impressions", 3, 42)
    assert (located.topic, located.partition, located.offset, located.kind) == ("ads.impressions", 3, 42, kind)
    assert "ads.impressions[3]@42" in str(located)


def test_a_record_of_another_schema_is_refused(catalog: SchemaCatalog) -> None:
    conv = catalog.codec("conversion").encode(sample(_load(ROOT / "schemas/conversion/v1.avsc"), random.Random(2)))
    with pytest.raises(DecodeError) as err:
        catalog.codec("impression").decode(conv)
    assert err.value.kind == "incompatible"


def test_encoding_a_bad_value_names_the_schema_and_refuses(catalog: SchemaCatalog) -> None:
    with pytest.raises(EncodeError, match="impression"):
        catalog.codec("impression").encode({"impression_id": "x"})
    rec = sample(_load(ROOT / "schemas/conversion/v1.avsc"), random.Random(3))
    rec["value"] = Decimal("1.0000001")  # more digits than the schema's scale: refused, not rounded
    with pytest.raises(EncodeError):
        catalog.codec("conversion").encode(rec)
