"""Metering settings (environment variables), validated together by ``--validate``."""

from __future__ import annotations

import socket

from tally_kit.settings import Setting, boolean, non_empty, port, positive_int
from tally_streams import topics


def _non_negative(raw: str) -> int:
    v = int(raw)
    if v < 0:
        raise ValueError("must be ≥ 0")
    return v


SPEC: tuple[Setting, ...] = (
    Setting("TALLY_KAFKA_BOOTSTRAP", "Kafka bootstrap servers", "127.0.0.1:9092", non_empty),
    Setting("TALLY_METERING_WORKER_ID", "Stable id of this worker process: its transactional.id and static group member id",
            f"metering-{socket.gethostname()}", non_empty),
    Setting("TALLY_METERING_STATIC_MEMBERSHIP", "Join the group as a static member (a restart gets its partitions back at once)",
            "true", boolean),
    Setting("TALLY_METERING_GROUP", "Consumer group of the metering workers", "tally-metering", non_empty),
    Setting("TALLY_METERING_TOPIC_IMPRESSIONS", "Impressions topic", topics.IMPRESSIONS.name, non_empty),
    Setting("TALLY_METERING_TOPIC_ATTRIBUTED", "Attributed conversions topic", topics.ATTRIBUTED_CONVERSIONS.name, non_empty),
    Setting("TALLY_METERING_TOPIC_IVT_REPORTS", "Verification vendors' IVT reports (input; created if missing)",
            topics.IVT_REPORTS.name, non_empty),
    Setting("TALLY_METERING_TOPIC_IVT_OUTCOMES", "What metering decided for each IVT report (output; created if missing)",
            topics.IVT_REPORT_OUTCOMES.name, non_empty),
    Setting("TALLY_METERING_TOPIC_TERMS", "Compacted contract terms topic", topics.CONTRACT_TERMS.name, non_empty),
    Setting("TALLY_METERING_TOPIC_RUNNING_TOTALS", "Compacted running totals topic (output)", topics.RUNNING_TOTALS.name, non_empty),
    Setting("TALLY_METERING_TOPIC_PERIODS_CLOSED", "Closed periods topic (output)", topics.PERIODS_CLOSED.name, non_empty),
    Setting("TALLY_METERING_TOPIC_ADJUSTMENTS", "Adjustments topic (output)", topics.ADJUSTMENTS.name, non_empty),
    Setting("TALLY_METERING_TOPIC_BUDGET_ALERTS", "Budget alerts topic (output)", topics.BUDGET_ALERTS.name, non_empty),
    Setting("TALLY_METERING_TOPIC_DLQ_IMPRESSIONS", "Dead letters of impressions", topics.DLQ_IMPRESSIONS.name, non_empty),
    Setting("TALLY_METERING_TOPIC_DLQ_ATTRIBUTED", "Dead letters of attributed conversions",
            "dlq." + topics.ATTRIBUTED_CONVERSIONS.name, non_empty),
    Setting("TALLY_METERING_TOPIC_DELTAS", "Internal: per-batch usage and conversion deltas, partitioned by advertiser",
            "metering.deltas", non_empty),
    Setting("TALLY_METERING_TOPIC_STATE", "Internal: compacted changelog of period state (aligned with deltas)",
            "metering.state-changelog", non_empty),
    Setting("TALLY_METERING_TOPIC_DEDUPE", "Internal: impression-id changelog (aligned with impressions)",
            "metering.dedupe-changelog", non_empty),
    Setting("TALLY_METERING_DELTA_PARTITIONS", "Partitions of the deltas and state topics (created if missing)", "4", positive_int),
    Setting("TALLY_METERING_GRACE_SECONDS", "Grace after a period's end before it closes", "7200", _non_negative),
    Setting("TALLY_METERING_CLOCK_FILE", "Tests: a file holding the current instant (ISO 8601); empty = wall clock", ""),
    Setting("TALLY_METERING_BATCH_MAX", "Records consumed per transaction at most (a backlog is read in batches this "
            "large: fewer, larger usage deltas and commits)", "20000", positive_int),
    Setting("TALLY_METERING_BATCH_WAIT_MS", "Longest wait for BATCH_MAX records before the batch is processed and committed "
            "(each of the two stages adds up to this to an event's latency)", "50", positive_int),
    Setting("TALLY_METERING_DEDUPE_HORIZON_DAYS", "Impression ids are remembered this long (event time); older events are refused",
            "62", positive_int),
    Setting("TALLY_METERING_RERATE_HORIZON_DAYS", "Usage stays in the ledger and periods stay re-rateable this long "
            "(event time); an older period is locked", "400", positive_int),
    Setting("TALLY_METERING_MAX_FUTURE_SECONDS", "Events further than this ahead of the clock are dead-lettered", "3600",
            _non_negative),
    Setting("TALLY_METERING_TOTALS_INTERVAL_MS", "At most one running-total update per key per this interval", "1000",
            positive_int),
    Setting("TALLY_METERING_TXN_TIMEOUT_MS", "Kafka transaction timeout (a dead worker's open transaction aborts after it)",
            "30000", positive_int),
    Setting("TALLY_METERING_METRICS_PORT", "Worker Prometheus port (0 = off; the API serves its own /metrics)", "0", _non_negative),
    Setting("TALLY_METERING_PORT", "Spend API port", "8083", port),
    Setting("TALLY_METERING_HOST", "Spend API bind address", "127.0.0.1", non_empty),
)
