"""The ingest's fast paths against the plain ones they stand in front of, on random and corrupted input:

- ``_impression_if_valid`` accepts an impression only when the plain check accepts it, with the
  same record, key for key (otherwise the plain check answers, naming every bad field);
- ``_loads_flat_batch`` (orjson) returns a batch only when ``loads_strict`` returns the same
  one (numbers aside: see below); a duplicate key, a nesting, a lone surrogate or a bracket or comma inside a string sends
  the body to ``loads_strict``.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tally_attribution.ingest import _loads_flat_batch
from tally_attribution.validation import _check_impression_plain, _impression_if_valid, check_impression
from tally_kit.inputs import JsonRefused, loads_strict

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MAX_FUTURE = timedelta(seconds=300)


def good(i: int = 1) -> dict[str, Any]:
    return {"impression_id": f"imp-{i}", "event_time": "2026-03-01T11:00:00.123456Z", "advertiser_id": "adv-1",
            "campaign_id": "cmp-1", "household_id": f"hh-{i}", "device_type": "ctv", "ivt": "none",
            "measurement_source": "first_party"}


#: values a field may be given: good ones, bad ones and odd ones
ODD_VALUES: list[Any] = [
    None, "", " ", "\u2003", "x", "a" * 256, "a" * 257, "id\x00", "id\n", "id\x85", "\ud800", "ünï", 0, 1.5, True,
    [], {}, ["ctv"], "ctv", "mobile", "other", "CTV", "none", "givt", "sivt", "first_party", "third_party",
    "2026-03-01T11:00:00Z", "2026-03-01T12:05:00Z", "2026-03-01T12:05:01Z", "2026-03-01T11:00:00", "2026-03-01",
    "2026-03-01T11:00:00+14:00", "2026-03-01T11:00:00-12:00", "1999-12-31T23:59:59Z", "2200-01-01T00:00:00Z",
    "2000-01-01T00:00:00+01:00", "2026-02-30T00:00:00Z", "x" * 70, "2026-03-01 11:00:00Z",
]
FIELDS = ["impression_id", "event_time", "advertiser_id", "campaign_id", "partner_id", "household_id",
          "device_type", "ivt", "measurement_source", "unknown", "impression_Id"]


def mutate(rng: random.Random) -> dict[str, Any]:
    raw = good(rng.randrange(100))
    for _ in range(rng.randrange(4)):
        name = rng.choice(FIELDS)
        if rng.random() < 0.2:
            raw.pop(name, None)
        else:
            raw[name] = rng.choice(ODD_VALUES)
    return raw


def test_the_fast_impression_check_agrees_with_the_plain_one_on_random_events() -> None:
    rng = random.Random(20)
    accepted = 0
    for _ in range(20_000):
        raw = mutate(rng)
        plain = _check_impression_plain(raw, now=NOW, max_future=MAX_FUTURE)
        fast = _impression_if_valid(raw, NOW + MAX_FUTURE)
        if fast is not None:
            accepted += 1
            assert plain.record is not None, raw
            assert list(fast.items()) == list(plain.record.items()), raw
        assert check_impression(raw, now=NOW, max_future=MAX_FUTURE) == plain
    assert accepted > 1000  # the fast path is taken, not only bypassed


def test_the_fast_path_leaves_every_bad_event_to_the_plain_check() -> None:
    assert _impression_if_valid(good(), NOW + MAX_FUTURE) is not None
    for name, value in [("device_type", None), ("ivt", "maybe"), ("event_time", "2026-03-01T12:06:00Z"),
                        ("household_id", " "), ("partner_id", "p\x00"), ("campaign_id", 7), ("extra", "x")]:
        raw = {**good(), name: value}
        assert _impression_if_valid(raw, NOW + MAX_FUTURE) is None
        checked = check_impression(raw, now=NOW, max_future=MAX_FUTURE)
        assert checked == _check_impression_plain(raw, now=NOW, max_future=MAX_FUTURE)
    # a JSON null is "absent" on the plain path: accepted there, with the default
    assert check_impression({**good(), "device_type": None}, now=NOW, max_future=MAX_FUTURE).record is not None


def strict(body: bytes) -> Any:
    try:
        return loads_strict(body, text=False)
    except JsonRefused as exc:
        return exc


def test_orjson_batches_only_where_loads_strict_agrees() -> None:
    batch = [good(i) for i in range(50)]
    body = json.dumps(batch).encode()
    assert _loads_flat_batch(body) == batch == strict(body)
    assert _loads_flat_batch(json.dumps(batch, indent=2).encode()) == batch  # whitespace is fine
    refused = [
        b'[{"a": 1, "a": 2}]',                       # duplicate key
        b'[{"a": 1, "a" : 2}]',                      # duplicate key, spaced
        b'[{"a": {"b": 1}}]', b'[{"a": [1]}]',        # nested
        b'[{"a": "x,y"}]', b'[{"a": "[x"}]',          # a comma or bracket inside a string: plain path
        b'[{"a": "\\ud800"}]',                        # lone surrogate
        b'[{"a": NaN}]', b'[1, 2]', b'{"a": 1}', b"[]", b"[{}]", b"not json", b'[{"a": 1}',
        b"[" + b"[" * 40 + b"]" * 40 + b"]",
    ]
    for body in refused:
        assert _loads_flat_batch(body) is None, body
    # numbers are orjson's (float, not Decimal; an integer beyond 64 bits too): no accepted event
    # holds one, and a batch with a rejected event is read again by loads_strict (_checked_events)
    assert _loads_flat_batch(b'[{"a": 1.50}]') == [{"a": 1.5}]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["a", "b", "c", "impression_id"]),
                                st.one_of(st.text(max_size=6), st.integers(-5, 5), st.none(), st.booleans()),
                                min_size=1, max_size=4), min_size=1, max_size=5),
       st.lists(st.tuples(st.integers(0, 200), st.sampled_from([b",", b'"', b"{", b"[", b":", b" ", b'"a":1,',
                                                                b'\\u0000', b"\\", b"}"])), max_size=3))
def test_orjson_batches_equal_strict_ones_on_random_and_corrupted_bodies(
        batch: list[dict[str, Any]], cuts: list[tuple[int, bytes]]) -> None:
    body = json.dumps(batch).encode()
    for at, piece in cuts:  # insert bytes anywhere: duplicate keys, broken strings, stray brackets
        at = min(at, len(body))
        body = body[:at] + piece + body[at:]
    fast = _loads_flat_batch(body)
    if fast is not None:
        assert fast == strict(body)
        assert [list(d) for d in fast] == [list(d) for d in strict(body)]
