"""Metering settings (environment variables), validated together by ``--validate``."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from tally_kit.settings import KafkaSettings, Spec, boolean, non_empty, non_negative_int, port, positive_int, setting
from tally_streams import topics
from tally_streams.security import KafkaSecurity


@dataclass(frozen=True, kw_only=True)
class MeteringSettings(KafkaSecurity, KafkaSettings):
    metering_worker_id: str = setting(
        "TALLY_METERING_WORKER_ID", "Stable id of this worker process: its transactional.id and static group member id",
        f"metering-{socket.gethostname()}", non_empty)
    metering_static_membership: bool = setting(
        "TALLY_METERING_STATIC_MEMBERSHIP", "Join the group as a static member (a restart gets its partitions back at once)", "true",
        boolean)
    metering_group: str = setting("TALLY_METERING_GROUP", "Consumer group of the metering workers", "tally-metering", non_empty)
    metering_topic_impressions: str = setting("TALLY_METERING_TOPIC_IMPRESSIONS", "Impressions topic", topics.IMPRESSIONS.name, non_empty)
    metering_topic_attributed: str = setting("TALLY_METERING_TOPIC_ATTRIBUTED", "Attributed conversions topic",
                                             topics.ATTRIBUTED_CONVERSIONS.name, non_empty)
    metering_topic_ivt_reports: str = setting(
        "TALLY_METERING_TOPIC_IVT_REPORTS", "Verification vendors' IVT reports (input; created if missing)", topics.IVT_REPORTS.name,
        non_empty)
    metering_topic_ivt_outcomes: str = setting(
        "TALLY_METERING_TOPIC_IVT_OUTCOMES", "What metering decided for each IVT report (output; created if missing)",
        topics.IVT_REPORT_OUTCOMES.name, non_empty)
    metering_topic_terms: str = setting("TALLY_METERING_TOPIC_TERMS", "Compacted contract terms topic", topics.CONTRACT_TERMS.name,
                                        non_empty)
    metering_topic_running_totals: str = setting("TALLY_METERING_TOPIC_RUNNING_TOTALS", "Compacted running totals topic (output)",
                                                 topics.RUNNING_TOTALS.name, non_empty)
    metering_topic_periods_closed: str = setting("TALLY_METERING_TOPIC_PERIODS_CLOSED", "Closed periods topic (output)",
                                                 topics.PERIODS_CLOSED.name, non_empty)
    metering_topic_adjustments: str = setting("TALLY_METERING_TOPIC_ADJUSTMENTS", "Adjustments topic (output)", topics.ADJUSTMENTS.name,
                                              non_empty)
    metering_topic_budget_alerts: str = setting("TALLY_METERING_TOPIC_BUDGET_ALERTS", "Budget alerts topic (output)",
                                                topics.BUDGET_ALERTS.name, non_empty)
    metering_topic_dlq_impressions: str = setting("TALLY_METERING_TOPIC_DLQ_IMPRESSIONS", "Dead letters of impressions",
                                                  topics.DLQ_IMPRESSIONS.name, non_empty)
    metering_topic_dlq_attributed: str = setting("TALLY_METERING_TOPIC_DLQ_ATTRIBUTED", "Dead letters of attributed conversions",
                                                 "dlq." + topics.ATTRIBUTED_CONVERSIONS.name, non_empty)
    metering_topic_deltas: str = setting(
        "TALLY_METERING_TOPIC_DELTAS", "Internal: per-batch usage and conversion deltas, partitioned by advertiser", "metering.deltas",
        non_empty)
    metering_topic_state: str = setting(
        "TALLY_METERING_TOPIC_STATE", "Internal: compacted changelog of period state (aligned with deltas)", "metering.state-changelog",
        non_empty)
    metering_topic_dedupe: str = setting(
        "TALLY_METERING_TOPIC_DEDUPE", "Internal: impression-id changelog (aligned with impressions)", "metering.dedupe-changelog",
        non_empty)
    metering_delta_partitions: int = setting(
        "TALLY_METERING_DELTA_PARTITIONS", "Partitions of the deltas and state topics (created if missing)", "4", positive_int)
    metering_grace_seconds: int = setting("TALLY_METERING_GRACE_SECONDS", "Grace after a period's end before it closes", "7200",
                                          non_negative_int)
    metering_clock_file: str = setting("TALLY_METERING_CLOCK_FILE",
                                       "Tests: a file holding the current instant (ISO 8601); empty = wall clock", "")
    metering_batch_max: int = setting(
        "TALLY_METERING_BATCH_MAX",
        "Records consumed per transaction at most (a backlog is read in batches this large: fewer, larger usage deltas and commits)",
        "20000", positive_int)
    metering_batch_wait_ms: int = setting(
        "TALLY_METERING_BATCH_WAIT_MS",
        "Longest wait for BATCH_MAX records before the batch is processed and committed "
        "(each of the two stages adds up to this to an event's latency)", "50", positive_int)
    metering_dedupe_horizon_days: int = setting(
        "TALLY_METERING_DEDUPE_HORIZON_DAYS", "Impression ids are remembered this long (event time); older events are refused", "62",
        positive_int)
    metering_rerate_horizon_days: int = setting(
        "TALLY_METERING_RERATE_HORIZON_DAYS",
        "Usage stays in the ledger and periods stay re-rateable this long (event time); an older period is locked", "400", positive_int)
    metering_store_dir: str = setting(
        "TALLY_METERING_STORE_DIR",
        "Directory of the on-disk state stores (RocksDB: the dedupe set per impressions partition, the usage ledger per "
        "deltas partition); empty = .state/metering/<WORKER_ID>", "")
    metering_store_memory_mb: int = setting(
        "TALLY_METERING_STORE_MEMORY_MB",
        "Memory each on-disk dedupe store may use (block cache, with its write buffers charged to it), in MiB", "64", positive_int)
    metering_ledger_memory_mb: int = setting(
        "TALLY_METERING_LEDGER_MEMORY_MB",
        "Memory each on-disk usage ledger (one per deltas partition) may use, in MiB: half for its cache of decoded "
        "days, half for RocksDB (block cache and write buffers)", "32", positive_int)
    metering_max_future_seconds: int = setting(
        "TALLY_METERING_MAX_FUTURE_SECONDS", "Events further than this ahead of the clock are dead-lettered", "3600", non_negative_int)
    metering_totals_interval_ms: int = setting(
        "TALLY_METERING_TOTALS_INTERVAL_MS", "At most one running-total update per key per this interval", "1000", positive_int)
    metering_txn_timeout_ms: int = setting(
        "TALLY_METERING_TXN_TIMEOUT_MS", "Kafka transaction timeout (a dead worker's open transaction aborts after it)", "30000",
        positive_int)
    metering_metrics_port: int = setting(
        "TALLY_METERING_METRICS_PORT", "Worker Prometheus port (0 = off; the API serves its own /metrics)", "0", non_negative_int)
    metering_port: int = setting("TALLY_METERING_PORT", "Spend API port", "8083", port)
    metering_host: str = setting("TALLY_METERING_HOST", "Spend API bind address", "127.0.0.1", non_empty)


    @property
    def store_dir(self) -> Path:
        """Where this worker's on-disk stores live."""
        return Path(self.metering_store_dir or Path(".state") / "metering" / self.metering_worker_id)


SPEC = Spec(MeteringSettings)
