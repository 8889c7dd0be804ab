"""Every metric the attribution service exports, in one place (name, type, meaning)."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        #: events answered by the HTTP ingest; reason = the first offending field for rejections
        self.events = Counter(
            "tally_attribution_ingest_events_total", "Events received over HTTP by kind, result and reason",
            ["kind", "result", "reason"], registry=registry)
        #: requests refused with 429 because the producer queue was full
        self.throttled = Counter(
            "tally_attribution_ingest_throttled_total", "Requests answered 429 (producer queue full)", ["kind"],
            registry=registry)
        self.queue = Gauge(
            "tally_attribution_ingest_producer_queue", "Records waiting for the broker's acknowledgement", registry=registry)


class ProcessorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.outcomes = Counter(
            "tally_attribution_outcomes_total", "Conversion outcomes by kind, outcome and reason",
            ["kind", "outcome", "reason"], registry=registry)
        self.dead_letters = Counter(
            "tally_attribution_dead_letters_total", "Records dead-lettered by the processor, by source topic and error kind",
            ["topic", "error_kind"], registry=registry)
        #: outcome: exposure, uncovered (valid, no CPA contract covers its campaign yet: kept for the
        #: pre-contract window, never dead-lettered), duplicate, invalid_traffic, dead_letter
        self.impressions = Counter(
            "tally_attribution_impressions_total", "Impressions read by the processor, by outcome", ["outcome"],
            registry=registry)
        self.terms_ignored = Counter(
            "tally_attribution_terms_ignored_total", "contracts.terms records ignored (stale revision or invalid terms)",
            registry=registry)
        self.households = Gauge(
            "tally_attribution_exposure_households", "Households in the exposure index", registry=registry)
        self.exposures = Gauge(
            "tally_attribution_exposures", "Exposures in the exposure index", registry=registry)
        self.pending = Gauge(
            "tally_attribution_pending_conversions", "Conversions waiting for their settle delay", registry=registry)
        self.lag = Gauge(
            "tally_attribution_consumer_lag", "Records not yet read, by topic and partition", ["topic", "partition"],
            registry=registry)
        self.decision_latency = Histogram(
            "tally_attribution_decision_latency_seconds", "From a conversion's event time to its decision",
            registry=registry,
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 6 * 3600, 86400, 7 * 86400))
        self.transactions = Counter(
            "tally_attribution_transactions_total", "Kafka transactions committed by the processor", registry=registry)
        #: the shards this process holds the lease of and decides; 0 while it waits as a standby
        self.active = Gauge(
            "tally_attribution_processor_active", "Shards this process decides (0 = standby)",
            registry=registry)
        # The gauges above are the process's: the sums over the shards it runs (the lag: the
        # largest, every shard reading every partition).
        self._lock = threading.Lock()
        self._sizes: dict[int, tuple[int, int, int]] = {}
        self._lags: dict[int, dict[tuple[str, int], int]] = {}

    def shard_sizes(self, shard: int, households: int, exposures: int, pending: int) -> None:
        with self._lock:
            self._sizes[shard] = (households, exposures, pending)
            self._set_sizes()

    def shard_lag(self, shard: int, topic: str, partition: int, lag: int) -> None:
        with self._lock:
            self._lags.setdefault(shard, {})[(topic, partition)] = lag
            self.lag.labels(topic, str(partition)).set(max(lags.get((topic, partition), 0) for lags in self._lags.values()))

    def shard_gone(self, shard: int) -> None:
        """A shard stopped here (handed to another replica): its sizes leave the sums."""
        with self._lock:
            self._sizes.pop(shard, None)
            self._lags.pop(shard, None)
            self._set_sizes()

    def _set_sizes(self) -> None:
        sizes = list(self._sizes.values())
        self.households.set(sum(s[0] for s in sizes))
        self.exposures.set(sum(s[1] for s in sizes))
        self.pending.set(sum(s[2] for s in sizes))
