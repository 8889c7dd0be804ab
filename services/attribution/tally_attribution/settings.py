"""Every setting of the attribution service, validated up front (``python -m tally_attribution --validate``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from tally_kit.settings import KafkaSettings, Spec, int_between, non_negative_int, port, positive_int, setting
from tally_streams import topics
from tally_streams.security import KafkaSecurity

#: the most shards the processor may be split into (one lease partition, and one state
#: changelog partition at least, each)
MAX_SHARDS = 64


def shard_of(advertiser_id: str, shards: int) -> int:
    """The shard that decides the advertiser's conversions: the first 8 bytes of the BLAKE2b
    digest of its UTF-8 bytes, mod the shard count. Stable across processes and Python versions
    (unlike ``hash``), and well mixed: CRC-32 is linear, so its low bits put ids that differ in
    a last digit 0-3 (adv-0 … adv-3) on one shard of two."""
    digest = hashlib.blake2b(advertiser_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


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
    attribution_group: str = setting("TALLY_ATTRIBUTION_GROUP", "consumer group of the processor (shard k of several: <GROUP>-shard-<k>)",
                                     "tally-attribution")
    attribution_transactional_id: str = setting(
        "TALLY_ATTRIBUTION_TRANSACTIONAL_ID",
        "transactional id of the processor, the same for every replica (the lease holder decides; shard k of several: <ID>-shard-<k>)",
        "tally-attribution")
    attribution_shards: int = setting(
        "TALLY_ATTRIBUTION_SHARDS",
        "advertiser shards the decisions are split into, each decided by whichever replica holds its lease partition; fixed for the "
        f"life of the state (1-{MAX_SHARDS})", "1", int_between(1, MAX_SHARDS))
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
        "TALLY_ATTRIBUTION_TOPIC_LEASE",
        "topic of one partition per shard: whichever member of the group <GROUP>-lease is assigned partition k decides shard k",
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
        """Where this processor's exposure index lives (each shard's under it: ``shard_store_dir``)."""
        return Path(self.attribution_store_dir or Path(".state") / "attribution" / self.attribution_transactional_id)

    def shard_name(self, base: str, shard: int) -> str:
        """A group or transactional id of shard ``shard``: the name itself when there is one shard."""
        return base if self.attribution_shards == 1 else f"{base}-shard-{shard}"

    def shard_store_dir(self, shard: int) -> Path:
        return self.store_dir if self.attribution_shards == 1 else self.store_dir / f"shard-{shard}"


SPEC = Spec(AttributionSettings)
