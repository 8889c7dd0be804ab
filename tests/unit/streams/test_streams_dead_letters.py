"""Dead letters say who refused a record (the consumer group), and the two consumers of
``ads.impressions`` (attribution's processor and metering's worker) give the same bytes the same
error kind: ``tally_streams.kafka.classify_rejection`` decides it for both."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME

from tally_attribution.processor import Processor
from tally_attribution.settings import SPEC as ATTRIBUTION_SPEC
from tally_billing.routing import to_micros
from tally_kit.clock import FixedClock
from tally_kit.settings import load
from tally_metering.settings import SPEC as METERING_SPEC
from tally_metering.state import DedupeStore
from tally_metering.worker import Worker
from tally_streams.avro import DecodeError, SchemaCatalog
from tally_streams.kafka import (
    FUTURE_EVENT_TIME,
    INVALID,
    STALE_EVENT_TIME,
    FailedRecord,
    classify_rejection,
    dead_letter_for,
    out_of_bounds,
)
from tests.attribution_builders import impression

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
TOPIC = "ads.impressions"


class _Message:
    def __init__(self, offset: int, value: bytes) -> None:
        self._o, self._v = offset, value

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes:
        return b"hh-1"

    def value(self) -> bytes:
        return self._v

    def timestamp(self) -> tuple[int, int]:
        return TIMESTAMP_CREATE_TIME, int(NOW.timestamp() * 1000)

    def error(self) -> None:
        return None


class _Sink:
    """Stands in for a producer: keeps what was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def produce(self, topic: str, value: bytes, key: Any = None, *_: Any, **__: Any) -> None:
        self.sent.append((topic, value))

    def begin_transaction(self) -> None:
        return None


def _bad_impressions(catalog: SchemaCatalog) -> list[bytes]:
    codec = catalog.codec("impression")
    return [
        b"not avro at all",  # not_single_object
        codec.encode(impression("i-future", "hh-1", NOW + timedelta(days=2), "adv", "c1")),  # ahead of both clocks
        catalog.codec("conversion").encode({  # decodes under the wrong schema: unreadable as an impression
            "conversion_id": "v", "kind": "conversion", "order_id": None, "event_time": NOW, "advertiser_id": "adv",
            "household_id": "hh-1", "event_type": "purchase", "value": None, "currency": None, "source": "api",
            "partner_id": None, "reverses_conversion_id": None, "reversal_amount": None}),
    ]


def _attribution_dead_letters(catalog: SchemaCatalog, values: list[bytes]) -> list[dict[str, Any]]:
    settings = load(ATTRIBUTION_SPEC, {"TALLY_ATTRIBUTION_TOPIC_IMPRESSIONS": TOPIC, "TALLY_ATTRIBUTION_GROUP": "attr-g"})
    proc = Processor(settings, catalog, clock=FixedClock(NOW))
    sink = _Sink()
    proc.producer = sink
    proc._in_txn = True
    for offset, value in enumerate(values):
        proc._on_impression(_Message(offset, value))
    codec = catalog.codec("dead_letter")
    return [codec.decode(v) for t, v in sink.sent if t == settings.attribution_topic_dlq_impressions]


def _metering_dead_letters(catalog: SchemaCatalog, values: list[bytes]) -> list[dict[str, Any]]:
    settings = load(METERING_SPEC, {"TALLY_METERING_TOPIC_IMPRESSIONS": TOPIC, "TALLY_METERING_GROUP": "meter-g"})
    worker = Worker(settings, FixedClock(NOW), catalog)
    worker.dedupe[0] = DedupeStore()
    sent: list[tuple[str, bytes]] = []
    worker._produce = lambda topic, value, key, partition=None: sent.append((topic, value))
    worker.stage_one_impressions([(0, [_Message(o, v) for o, v in enumerate(values)])], to_micros(NOW))
    codec = catalog.codec("dead_letter")
    return [codec.decode(v) for t, v in sent if t == settings.metering_topic_dlq_impressions]


def test_both_consumers_of_impressions_give_the_same_bad_bytes_the_same_kind_and_name_their_group(
        catalog: SchemaCatalog) -> None:
    values = _bad_impressions(catalog)
    attribution = _attribution_dead_letters(catalog, values)
    metering = _metering_dead_letters(catalog, values)
    assert [d["error_kind"] for d in attribution] == ["not_single_object", FUTURE_EVENT_TIME, "incompatible"]
    assert [(d["offset"], d["error_kind"]) for d in metering] == [(d["offset"], d["error_kind"]) for d in attribution]
    assert {d["consumer_group"] for d in attribution} == {"attr-g"}
    assert {d["consumer_group"] for d in metering} == {"meter-g"}
    assert all(d["value"] == values[d["offset"]] for d in attribution + metering)


@pytest.mark.parametrize(("args", "kind"), [
    ({"error": DecodeError("truncated", "short")}, "truncated"),
    ({"field": "event_time", "event_time": NOW + timedelta(seconds=1), "now": NOW}, FUTURE_EVENT_TIME),
    ({"field": "event_time", "event_time": NOW - timedelta(days=400), "now": NOW}, STALE_EVENT_TIME),
    ({"field": "currency"}, INVALID),
    ({}, INVALID),
])
def test_a_refused_record_is_classified_by_what_is_wrong_with_it(args: dict[str, Any], kind: str) -> None:
    assert classify_rejection(**args) == kind


def test_a_dead_letter_for_an_undecodable_record_names_the_refusing_group_and_old_ones_read_as_none(
        catalog: SchemaCatalog) -> None:
    failed = FailedRecord(TOPIC, 0, 7, b"k", b"junk", DecodeError("not_single_object", "no magic"))
    record = dead_letter_for(failed, consumer_group="tally-metering")
    assert (record["error_kind"], record["consumer_group"]) == ("not_single_object", "tally-metering")
    v1_bytes = catalog.codec("dead_letter", 1).encode({k: v for k, v in record.items() if k != "consumer_group"})
    assert catalog.codec("dead_letter").decode(v1_bytes)["consumer_group"] is None  # v1 data, v2 reader
    assert catalog.codec("dead_letter", 1).decode(catalog.codec("dead_letter").encode(record))["offset"] == 7  # and back


def test_both_consumers_refuse_an_impression_beyond_a_limit_alike_naming_the_field(catalog: SchemaCatalog) -> None:
    """An ad server's own producer (no ingest in between) writes an id that is empty, longer than 256
    characters or has a control character, or an event time outside 2000..2199."""
    codec = catalog.codec("impression")
    hour_ago = NOW - timedelta(hours=1)
    control = "must not contain control characters (NUL, newline, ...)"
    instants = "must be from 2000-01-01T00:00:00+00:00 to 2199-12-31T23:59:59.999999+00:00"
    values = [codec.encode(impression("i-long-hh", "h" * 300, hour_ago, "adv", "c1")),
              codec.encode({**impression("i-long-partner", "hh-1", hour_ago, "adv", "c1"), "partner_id": "ü" * 257}),
              codec.encode(impression("", "hh-1", hour_ago, "adv", "c1")),
              codec.encode(impression("i-nl", "hh-1", hour_ago, "adv", "c\n1")),
              codec.encode(impression("i-c1", "hh-1", hour_ago, "adv\x85", "c1")),
              codec.encode(impression("i-early", "hh-1", datetime(2000, 1, 1, tzinfo=UTC) - timedelta(microseconds=1),
                                      "adv", "c1")),
              codec.encode(impression("i-late", "hh-1", datetime(2200, 1, 1, tzinfo=UTC), "adv", "c1"))]
    attribution = _attribution_dead_letters(catalog, values)
    metering = _metering_dead_letters(catalog, values)
    seen = [(d["offset"], d["error_kind"], d["field"], d["reason"]) for d in metering]
    assert seen == [(0, INVALID, "household_id", "household_id must have 1 to 256 characters (has 300)"),
                    (1, INVALID, "partner_id", "partner_id must have 1 to 256 characters (has 257)"),
                    (2, INVALID, "impression_id", "impression_id must have 1 to 256 characters (has 0)"),
                    (3, INVALID, "campaign_id", f"campaign_id {control}"),
                    (4, INVALID, "advertiser_id", f"advertiser_id {control}"),
                    (5, STALE_EVENT_TIME, "event_time", f"event_time {instants}"),
                    (6, FUTURE_EVENT_TIME, "event_time", f"event_time {instants}")]
    assert [(d["offset"], d["error_kind"], d["field"], d["reason"]) for d in attribution] == seen


def test_out_of_bounds_classifies_like_every_other_refusal() -> None:
    rec = {"event_time": datetime(2200, 1, 1, tzinfo=UTC), "household_id": "h" * 300}
    ahead = out_of_bounds(("event_time", "must be from ..."), rec, NOW)
    assert (ahead.kind, ahead.field, ahead.reason) == (FUTURE_EVENT_TIME, "event_time", "event_time must be from ...")
    behind = out_of_bounds(("event_time", "must be from ..."), {"event_time": datetime(1999, 1, 1, tzinfo=UTC)}, NOW)
    assert behind.kind == STALE_EVENT_TIME
    assert out_of_bounds(("household_id", "is too long"), rec, NOW).kind == INVALID


def test_a_decode_error_keeps_its_field_across_processes_and_into_its_dead_letter() -> None:
    import pickle

    err = DecodeError(INVALID, "household_id is too long", field="household_id").located(TOPIC, 1, 9)
    back = pickle.loads(pickle.dumps(err))
    assert (back.kind, back.reason, back.field, back.offset) == (INVALID, "household_id is too long", "household_id", 9)
    assert dead_letter_for(FailedRecord(TOPIC, 1, 9, None, b"x", back))["field"] == "household_id"
