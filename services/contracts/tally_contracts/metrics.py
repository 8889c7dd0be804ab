"""The contracts service's metric catalogue (beside the kit's HTTP metrics), in one place."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ContractMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.lifecycle_steps = Counter(
            "tally_contracts_lifecycle_steps_total", "Lifecycle steps recorded (audit + outbox), by event type",
            ["event_type"], registry=registry)
        self.scheduler_actions = Counter(
            "tally_contracts_scheduler_actions_total", "Time-driven steps taken by the scheduler, by event type",
            ["event_type"], registry=registry)
        self.scheduler_failures = Counter(
            "tally_contracts_scheduler_failures_total",
            "Contracts a scheduler tick could not handle (logged with the contract id; retried next tick)",
            registry=registry)
        self.scheduler_tick_seconds = Histogram(
            "tally_contracts_scheduler_tick_seconds", "Duration of one scheduler tick", registry=registry)
        self.relay_published = Counter(
            "tally_contracts_relay_published_total", "Outbox records the relay published and the broker acked, by topic",
            ["topic"], registry=registry)
        self.relay_pending = Gauge(
            "tally_contracts_outbox_pending", "Outbox records not yet published (as of the relay's last round)",
            registry=registry)
        self.relay_errors = Counter(
            "tally_contracts_relay_errors_total", "Relay rounds that failed and will be retried", registry=registry)
