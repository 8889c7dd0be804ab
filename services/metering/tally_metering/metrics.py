"""Every metric the metering worker exports, in one place (name, type, meaning)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter("tally_metering_events_total",
                              "Input events by kind (impression, conversion, reversal) and outcome category",
                              ["kind", "outcome"], registry=r)
        self.batch_seconds = Histogram("tally_metering_batch_seconds", "Wall time of one transaction (consume to commit)",
                                       registry=r, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.event_to_total_seconds = Histogram(
            "tally_metering_event_to_total_seconds",
            "Event time to the moment its count is part of a committed total (clock minus the newest event time of a delta)",
            registry=r, buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 86400))
        self.lag = Gauge("tally_metering_consumer_lag", "Records not yet consumed, per input topic-partition",
                         ["topic", "partition"], registry=r)
        self.state_size = Gauge("tally_metering_state_entries",
                                "Entries held in memory: dedupe_ids, periods, conversions", ["kind"], registry=r)
        self.outputs = Counter("tally_metering_outputs_total",
                               "Records produced by kind (running_total, period_closed, adjustment, budget_alert, dead_letter)",
                               ["kind"], registry=r)
        self.period_close_overdue = Gauge(
            "tally_metering_period_close_overdue_seconds",
            "Seconds the clock is past the earliest close time (period end + grace) of a period this worker holds open "
            "(0 while every period closes on time; grows while the worker is stuck)", registry=r)
        self.restores = Counter("tally_metering_restores_total", "State restores from changelogs, by store", ["store"],
                                registry=r)
        self.store_opens = Counter(
            "tally_metering_store_opens_total",
            "On-disk stores opened on assignment, by store and outcome: trusted (checkpoint equals the committed offset), "
            "rebuilt (no checkpoint, or a stale one: wiped and restored from the changelog)", ["store", "outcome"], registry=r)
        self.store_memory = Gauge(
            "tally_metering_store_memory_bytes",
            "On-disk stores: bytes in their block caches (write buffers charged to them), and the bound (capacity)",
            ["store", "measure"], registry=r)
