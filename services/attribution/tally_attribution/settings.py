"""Every setting of the attribution service, validated up front (``python -m tally_attribution --validate``)."""

from __future__ import annotations

from tally_kit.settings import Setting, positive_int
from tally_kit.settings import port as port_number
from tally_streams import topics


def non_negative_int(raw: str) -> int:
    v = int(raw)
    if v < 0:
        raise ValueError("must be ≥ 0")
    return v


SPEC: tuple[Setting, ...] = (
    Setting("TALLY_KAFKA_BOOTSTRAP", "Kafka bootstrap servers", "127.0.0.1:9092"),
    Setting("TALLY_ATTRIBUTION_PORT", "HTTP port of the ingest API", "8082", port_number),
    Setting("TALLY_ATTRIBUTION_HOST", "HTTP bind address", "127.0.0.1"),
    Setting("TALLY_ATTRIBUTION_METRICS_PORT", "Prometheus port of a processor run alone (0 = none)", "9182", non_negative_int),
    Setting("TALLY_ATTRIBUTION_INGEST_PROCESSES",
            "HTTP ingest processes sharing the port (SO_REUSEPORT); each has its own producer, queue and /metrics",
            "1", positive_int),
    Setting("TALLY_ATTRIBUTION_MAX_EVENTS_PER_REQUEST", "most events one batch request may carry", "10000", positive_int),
    Setting("TALLY_ATTRIBUTION_MAX_BODY_BYTES", "largest request body accepted", str(16 * 1024 * 1024), positive_int),
    Setting("TALLY_ATTRIBUTION_PRODUCER_QUEUE_MAX", "records the ingest producer may hold unacknowledged (429 beyond)",
            "100000", positive_int),
    Setting("TALLY_ATTRIBUTION_RETRY_AFTER_S", "Retry-After seconds sent with a 429", "1", positive_int),
    Setting("TALLY_ATTRIBUTION_MAX_FUTURE_S", "how far in the future an event time may be (clock skew allowance)",
            "300", non_negative_int),
    Setting("TALLY_ATTRIBUTION_SETTLE_DELAY_MS", "hold each conversion this long after its arrival so late exposures count",
            "300000", non_negative_int),
    Setting("TALLY_ATTRIBUTION_GROUP", "consumer group of the processor", "tally-attribution"),
    Setting("TALLY_ATTRIBUTION_TRANSACTIONAL_ID", "transactional id of the processor (one active decider; a new one fences the old)",
            "tally-attribution"),
    Setting("TALLY_ATTRIBUTION_COMMIT_INTERVAL_MS", "longest time between two processor transactions", "200", positive_int),
    Setting("TALLY_ATTRIBUTION_MAX_EXPOSURES_PER_HOUSEHOLD", "exposures kept per household (oldest dropped first)", "64",
            positive_int),
    Setting("TALLY_ATTRIBUTION_DEDUPE_RETENTION_DAYS", "days a decided conversion id / order id is remembered", "400",
            positive_int),
    Setting("TALLY_ATTRIBUTION_LATE_ALLOWANCE_DAYS", "exposures are kept this much beyond the longest lookback in force",
            "1", non_negative_int),
    Setting("TALLY_ATTRIBUTION_PRECONTRACT_DAYS",
            "exposures of campaigns no CPA contract covers yet are kept this many days, for a contract published later",
            "7", positive_int),
    Setting("TALLY_ATTRIBUTION_TOPIC_IMPRESSIONS", "impressions topic", topics.IMPRESSIONS.name),
    Setting("TALLY_ATTRIBUTION_TOPIC_CONVERSIONS", "conversions topic", topics.CONVERSIONS.name),
    Setting("TALLY_ATTRIBUTION_TOPIC_IVT_REPORTS", "IVT reports of verification vendors (POST /v1/ivt-reports)", topics.IVT_REPORTS.name),
    Setting("TALLY_ATTRIBUTION_TOPIC_TERMS", "compacted contract terms topic", topics.CONTRACT_TERMS.name),
    Setting("TALLY_ATTRIBUTION_TOPIC_ATTRIBUTED", "attributed conversions topic", topics.ATTRIBUTED_CONVERSIONS.name),
    Setting("TALLY_ATTRIBUTION_TOPIC_OUTCOMES", "conversion outcomes topic", topics.CONVERSION_OUTCOMES.name),
    Setting("TALLY_ATTRIBUTION_TOPIC_DLQ_INGEST", "dead letters of the HTTP ingest", topics.DLQ_INGEST.name),
    Setting("TALLY_ATTRIBUTION_TOPIC_DLQ_IMPRESSIONS", "dead letters of the impressions topic", topics.DLQ_IMPRESSIONS.name),
    Setting("TALLY_ATTRIBUTION_TOPIC_DLQ_CONVERSIONS", "dead letters of the conversions topic", topics.DLQ_CONVERSIONS.name),
    Setting("TALLY_ATTRIBUTION_TOPIC_STATE", "compacted changelog of the processor state", "attribution.state-changelog"),
    Setting("TALLY_LOG_LEVEL", "log level", "INFO"),
)
