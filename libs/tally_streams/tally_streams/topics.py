"""The topic catalog: every topic Tally uses, in one place, created idempotently.

Partition counts are the local defaults; production sets replication factor 3 and
``min.insync.replicas=2`` (``deploy/README.md``) through ``TALLY_TOPIC_REPLICATION``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str  # what the record key is, in words
    value_schema: str  # catalog name of the value schema
    partitions: int = 4
    compacted: bool = False
    retention_ms: int = 7 * DAY_MS  # -1 keeps forever
    extra: dict[str, str] = field(default_factory=dict)

    def config(self, *, min_insync_replicas: int = 1) -> dict[str, str]:
        cfg = {
            "cleanup.policy": "compact" if self.compacted else "delete",
            "min.insync.replicas": str(min_insync_replicas),
            "unclean.leader.election.enable": "false",
        }
        if not self.compacted:
            cfg["retention.ms"] = str(self.retention_ms)
        cfg.update(self.extra)
        return cfg

    def renamed(self, name: str) -> TopicSpec:
        """The same spec under another name (tests use unique throwaway names)."""
        return TopicSpec(name, self.key, self.value_schema, self.partitions, self.compacted, self.retention_ms, dict(self.extra))


LONG = 400 * DAY_MS  # a year plus a quarter: audits of last year's invoices need last year's events

IMPRESSIONS = TopicSpec("ads.impressions", "household id", "impression", partitions=8, retention_ms=30 * DAY_MS)
CONVERSIONS = TopicSpec("ads.conversions", "household id", "conversion", partitions=8, retention_ms=30 * DAY_MS)
CONTRACT_EVENTS = TopicSpec("contracts.events", "contract id", "contract_event", retention_ms=LONG)
CONTRACT_TERMS = TopicSpec("contracts.terms", "contract id", "contract_terms", compacted=True)
ATTRIBUTED_CONVERSIONS = TopicSpec("billing.attributed_conversions", "contract id", "attributed_conversion", retention_ms=30 * DAY_MS)
CONVERSION_OUTCOMES = TopicSpec("billing.conversion_outcomes", "conversion id", "conversion_outcome", retention_ms=LONG)
RUNNING_TOTALS = TopicSpec("billing.running_totals", "contract id + period", "running_total", compacted=True)
PERIODS_CLOSED = TopicSpec("billing.periods_closed", "contract id", "period_closed", retention_ms=LONG)
ADJUSTMENTS = TopicSpec("billing.adjustments", "contract id", "adjustment", retention_ms=LONG)
BUDGET_ALERTS = TopicSpec("billing.budget_alerts", "contract id", "budget_alert", retention_ms=30 * DAY_MS)
#: the pacing service's alerts for ad servers: cap exhaustion projected, under-pacing, back on pace
PACING_ALERTS = TopicSpec("billing.pacing_alerts", "contract id", "pacing_alert", retention_ms=30 * DAY_MS)
#: a verification vendor's invalid-traffic reports (through the ingest API); metering applies each once
IVT_REPORTS = TopicSpec("ads.ivt_reports", "report id", "ivt_report", retention_ms=LONG)
IVT_REPORT_OUTCOMES = TopicSpec("billing.ivt_report_outcomes", "report id", "ivt_report_outcome", retention_ms=LONG)
DLQ_INGEST = TopicSpec("dlq.ingest", "as source", "dead_letter", retention_ms=LONG)
DLQ_IMPRESSIONS = TopicSpec("dlq.ads.impressions", "as source", "dead_letter", retention_ms=LONG)
DLQ_CONVERSIONS = TopicSpec("dlq.ads.conversions", "as source", "dead_letter", retention_ms=LONG)

CATALOG: tuple[TopicSpec, ...] = (
    IMPRESSIONS,
    CONVERSIONS,
    CONTRACT_EVENTS,
    CONTRACT_TERMS,
    ATTRIBUTED_CONVERSIONS,
    CONVERSION_OUTCOMES,
    RUNNING_TOTALS,
    PERIODS_CLOSED,
    ADJUSTMENTS,
    BUDGET_ALERTS,
    PACING_ALERTS,
    IVT_REPORTS,
    IVT_REPORT_OUTCOMES,
    DLQ_INGEST,
    DLQ_IMPRESSIONS,
    DLQ_CONVERSIONS,
)


def by_name(name: str) -> TopicSpec:
    for spec in CATALOG:
        if spec.name == name:
            return spec
    raise KeyError(f"topic {name!r} is not in the catalog")


def dead_letter_topic(source: str) -> str:
    """``dlq.<source>``: where records from ``source`` that cannot be processed are kept."""
    return f"dlq.{source}"
