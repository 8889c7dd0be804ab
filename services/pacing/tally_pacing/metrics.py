"""Every metric the pacing service exports, in one place (name, type, meaning). Served at /metrics
beside the HTTP metrics of ``tally_kit.web``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class PacingMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.records = Counter("tally_pacing_records_total",
                               "Input records by topic kind (running_total, budget_alert, terms) and outcome "
                               "(applied, stale, dead_letter)", ["kind", "outcome"], registry=r)
        self.alerts = Counter("tally_pacing_alerts_total", "Pacing alerts emitted, by new state", ["state"], registry=r)
        self.update_seconds = Histogram(
            "tally_pacing_update_seconds",
            "From a running total's updated_at (metering's clock) to its pacing state written here (this clock)",
            registry=r, buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300))
        self.lag = Gauge("tally_pacing_consumer_lag", "Records not yet processed, per input topic-partition",
                         ["topic", "partition"], registry=r)
        self.entries = Gauge("tally_pacing_table_entries", "Keys held per table (hourly, periods, budget, flights)",
                             ["table"], registry=r)
