"""Every setting of the attribution service, validated up front (``python -m tally_attribution --validate``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tally_kit.settings import KafkaSettings, Spec, non_negative_int, port, positive_int, setting
from tally_streams import topics
from tally_streams.security import KafkaSecurity


@dataclass(frozen=True, kw_only=True)
class AttributionSettings(KafkaSecurity, KafkaSettings):
    attribution_port: int = setting("TALLY_ATTRIBUTION_PORT", "HTTP port of the ingest API", "8082", port)
    attribution_host: str = setting("TALLY_ATTRIBUTION_HOST", "HTTP bind address", "127.0.0.1")
    attribution_metrics_port: int = setting("TALLY_ATTRIBUTION_METRICS_PORT", "Prometheus port of a processor run alone (0 = none)",
                                            "9182", non_negative_int)
    attribution_ingest_processes: int = setting(
        "TALLY_ATTRIBUTION_INGEST_PROCESSES",
        "HTTP ingest processes sharing the port (SO_REUSEPORT); each has its own producer, queue and /metrics", "1", positive_int)
    attribution_max_events_per_request: int = setting("TALLY_ATTRIBUTION_MAX_EVENTS_PER_REQUEST", "most events one batch request may carry",
                                                      "10000", positive_int)
    attribution_max_body_bytes: int = setting("TALLY_ATTRIBUTION_MAX_BODY_BYTES", "largest request body accepted", str(16 * 1024 * 1024),
                                              positive_int)
    attribution_producer_queue_max: int = setting(
        "TALLY_ATTRIBUTION_PRODUCER_QUEUE_MAX", "records the ingest producer may hold unacknowledged (429 beyond)", "100000", positive_int)
    attribution_retry_after_s: int = setting("TALLY_ATTRIBUTION_RETRY_AFTER_S", "Retry-After seconds sent with a 429", "1", positive_int)
    attribution_max_future_s: int = setting(
        "TALLY_ATTRIBUTION_MAX_FUTURE_S", "how far in the future an event time may be (clock skew allowance)", "300", non_negative_int)
    attribution_settle_delay_ms: int = setting(
        "TALLY_ATTRIBUTION_SETTLE_DELAY_MS", "hold each conversion this long after its arrival so late exposures count", "300000",
        non_negative_int)
    attribution_group: str = setting("TALLY_ATTRIBUTION_GROUP", "consumer group of the processor", "tally-attribution")
    attribution_transactional_id: str = setting(
        "TALLY_ATTRIBUTION_TRANSACTIONAL_ID", "transactional id of the processor, the same for every replica (the lease holder decides)",
        "tally-attribution")
    attribution_commit_interval_ms: int = setting("TALLY_ATTRIBUTION_COMMIT_INTERVAL_MS", "longest time between two processor transactions",
                                                  "200", positive_int)
    attribution_max_exposures_per_household: int = setting(
        "TALLY_ATTRIBUTION_MAX_EXPOSURES_PER_HOUSEHOLD", "exposures kept per household (oldest dropped first)", "64", positive_int)
    attribution_dedupe_retention_days: int = setting(
        "TALLY_ATTRIBUTION_DEDUPE_RETENTION_DAYS", "days a decided conversion id / order id is remembered", "400", positive_int)
    attribution_late_allowance_days: int = setting(
        "TALLY_ATTRIBUTION_LATE_ALLOWANCE_DAYS", "exposures are kept this much beyond the longest lookback in force", "1", non_negative_int)
    attribution_precontract_days: int = setting(
        "TALLY_ATTRIBUTION_PRECONTRACT_DAYS",
        "exposures of campaigns no CPA contract covers yet are kept this many days, for a contract published later", "7", positive_int)
    attribution_topic_impressions: str = setting("TALLY_ATTRIBUTION_TOPIC_IMPRESSIONS", "impressions topic", topics.IMPRESSIONS.name)
    attribution_topic_conversions: str = setting("TALLY_ATTRIBUTION_TOPIC_CONVERSIONS", "conversions topic", topics.CONVERSIONS.name)
    attribution_topic_ivt_reports: str = setting(
        "TALLY_ATTRIBUTION_TOPIC_IVT_REPORTS", "IVT reports of verification vendors (POST /v1/ivt-reports)", topics.IVT_REPORTS.name)
    attribution_topic_terms: str = setting("TALLY_ATTRIBUTION_TOPIC_TERMS", "compacted contract terms topic", topics.CONTRACT_TERMS.name)
    attribution_topic_attributed: str = setting("TALLY_ATTRIBUTION_TOPIC_ATTRIBUTED", "attributed conversions topic",
                                                topics.ATTRIBUTED_CONVERSIONS.name)
    attribution_topic_outcomes: str = setting("TALLY_ATTRIBUTION_TOPIC_OUTCOMES", "conversion outcomes topic",
                                              topics.CONVERSION_OUTCOMES.name)
    attribution_topic_dlq_ingest: str = setting("TALLY_ATTRIBUTION_TOPIC_DLQ_INGEST", "dead letters of the HTTP ingest",
                                                topics.DLQ_INGEST.name)
    attribution_topic_dlq_impressions: str = setting("TALLY_ATTRIBUTION_TOPIC_DLQ_IMPRESSIONS", "dead letters of the impressions topic",
                                                     topics.DLQ_IMPRESSIONS.name)
    attribution_topic_dlq_conversions: str = setting("TALLY_ATTRIBUTION_TOPIC_DLQ_CONVERSIONS", "dead letters of the conversions topic",
                                                     topics.DLQ_CONVERSIONS.name)
    attribution_topic_state: str = setting("TALLY_ATTRIBUTION_TOPIC_STATE", "compacted changelog of the processor state",
                                           "attribution.state-changelog")
    attribution_replica_id: str = setting(
        "TALLY_ATTRIBUTION_REPLICA_ID",
        "this replica's static member id in the lease group (its pod name); empty = the transactional id", "")
    attribution_topic_lease: str = setting(
        "TALLY_ATTRIBUTION_TOPIC_LEASE", "one-partition topic whose assignment in the group <GROUP>-lease makes a processor the active one",
        "attribution.processor-lease")
    attribution_store_dir: str = setting(
        "TALLY_ATTRIBUTION_STORE_DIR",
        "Directory of the processor's on-disk exposure index (RocksDB); empty = .state/attribution/<TRANSACTIONAL_ID>", "")
    attribution_store_memory_mb: int = setting(
        "TALLY_ATTRIBUTION_STORE_MEMORY_MB",
        "Memory the exposure index store may use (block cache, with its write buffers charged to it), in MiB", "128", positive_int)
    log_level: str = setting("TALLY_LOG_LEVEL", "log level", "INFO")

    @property
    def store_dir(self) -> Path:
        """Where this processor's exposure index lives."""
        return Path(self.attribution_store_dir or Path(".state") / "attribution" / self.attribution_transactional_id)


SPEC = Spec(AttributionSettings)
