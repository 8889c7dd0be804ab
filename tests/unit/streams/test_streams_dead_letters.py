"""Dead letters say who refused a record (the consumer group), and the two consumers of
``ads.impressions`` (attribution's processor and metering's worker) give the same bytes the same
error kind: ``tally_streams.kafka.classify_rejection`` decides it for both."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME

from tally_attribution.fixtures import impression
from tally_attribution.processor import Processor
from tally_attribution.settings import SPEC as ATTRIBUTION_SPEC
from tally_billing.routing import to_micros
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
)

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


class _FixedClock:
    def now(self) -> datetime:
        return NOW


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
    proc = Processor(settings, catalog, clock=lambda: NOW)
    sink = _Sink()
    proc.producer = sink
    proc._in_txn = True
    for offset, value in enumerate(values):
        proc._on_impression(_Message(offset, value))
    codec = catalog.codec("dead_letter")
    return [codec.decode(v) for t, v in sink.sent if t == settings.attribution_topic_dlq_impressions]


def _metering_dead_letters(catalog: SchemaCatalog, values: list[bytes]) -> list[dict[str, Any]]:
    settings = load(METERING_SPEC, {"TALLY_METERING_TOPIC_IMPRESSIONS": TOPIC, "TALLY_METERING_GROUP": "meter-g"})
    worker = Worker(settings, _FixedClock(), catalog)
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
