"""Every metric the invoicing service exports, in one place (name, type, meaning).

They live in their own registry, served by ``/metrics`` beside the kit's HTTP metrics.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class InvoicingMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        #: consumed records by topic and outcome: applied, duplicate (replay, no effect), rejected, conflict
        self.records = Counter("tally_invoicing_records_total", "Consumed records by topic and outcome",
                               ["topic", "outcome"], registry=self.registry)
        #: seconds to apply one polled batch (database work, before the offset commit)
        self.batch_seconds = Histogram("tally_invoicing_batch_seconds", "Time to apply one consumed batch",
                                       registry=self.registry, buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 30))
        #: offset commits done after the database transactions committed
        self.commits = Counter("tally_invoicing_offset_commits_total", "Kafka offset commits", registry=self.registry)
        #: consumer loop errors (database or broker unavailable); the batch is retried, not committed
        self.consumer_errors = Counter("tally_invoicing_consumer_errors_total", "Consumer errors (batch retried)",
                                       registry=self.registry)
        #: document lifecycle transitions by document type and action
        self.transitions = Counter("tally_invoicing_transitions_total", "Lifecycle transitions",
                                   ["document", "action"], registry=self.registry)
        #: journal entries posted by source type
        self.journal_entries = Counter("tally_invoicing_journal_entries_total", "Journal entries posted",
                                       ["source_type"], registry=self.registry)
        #: 1 while the consumer loop is running
        self.consumer_up = Gauge("tally_invoicing_consumer_up", "1 while the consumer runs", registry=self.registry)


METRICS = InvoicingMetrics()
