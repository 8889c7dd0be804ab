"""The topic catalog: every topic Tally uses, in one place, created idempotently.

Partition counts are the local defaults; production sets replication factor 3 and
``min.insync.replicas=2`` (``deploy/README.md``) through ``TALLY_TOPIC_REPLICATION``.

Each topic also says which services write it (``producers``) and read it (``consumers``): the
Kafka ACLs are derived from that (``tally_streams.acls``), and so is the README's topic map.
``INTERNAL`` lists the topics the services create for themselves (changelogs, deltas, their own
dead letters) under their settings' default names.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

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
    #: the services (``SERVICES``) that write this topic, and those that read it
    producers: tuple[str, ...] = ()
    consumers: tuple[str, ...] = ()

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
        return replace(self, name=name, extra=dict(self.extra))


#: Tally's services as Kafka sees them: each is its own principal (``tally_streams.acls``).
#: ``ingest`` is attribution's HTTP ingest (``python -m tally_attribution ingest``), ``attribution``
#: its processor; ``metering`` is the worker and the spend API.
SERVICES: tuple[str, ...] = ("contracts", "ingest", "attribution", "metering", "pacing", "invoicing")


LONG = 400 * DAY_MS  # a year plus a quarter: audits of last year's invoices need last year's events

IMPRESSIONS = TopicSpec("ads.impressions", "household id", "impression", partitions=8, retention_ms=30 * DAY_MS,
                        producers=("ingest",), consumers=("attribution", "metering", "invoicing"))
CONVERSIONS = TopicSpec("ads.conversions", "household id", "conversion", partitions=8, retention_ms=30 * DAY_MS,
                        producers=("ingest",), consumers=("attribution",))
#: the relay of the contracts service's outbox
CONTRACT_EVENTS = TopicSpec("contracts.events", "contract id", "contract_event", retention_ms=LONG,
                            producers=("contracts",))
CONTRACT_TERMS = TopicSpec("contracts.terms", "contract id", "contract_terms", compacted=True,
                           producers=("contracts",), consumers=("attribution", "metering", "pacing", "invoicing"))
ATTRIBUTED_CONVERSIONS = TopicSpec("billing.attributed_conversions", "contract id", "attributed_conversion",
                                   retention_ms=30 * DAY_MS, producers=("attribution",),
                                   consumers=("metering", "invoicing"))
CONVERSION_OUTCOMES = TopicSpec("billing.conversion_outcomes", "conversion id", "conversion_outcome", retention_ms=LONG,
                                producers=("attribution",))
RUNNING_TOTALS = TopicSpec("billing.running_totals", "contract id + period", "running_total", compacted=True,
                           producers=("metering",), consumers=("metering", "pacing"))
PERIODS_CLOSED = TopicSpec("billing.periods_closed", "contract id", "period_closed", retention_ms=LONG,
                           producers=("metering",), consumers=("invoicing",))
ADJUSTMENTS = TopicSpec("billing.adjustments", "contract id", "adjustment", retention_ms=LONG,
                        producers=("metering",), consumers=("invoicing",))
BUDGET_ALERTS = TopicSpec("billing.budget_alerts", "contract id", "budget_alert", retention_ms=30 * DAY_MS,
                          producers=("metering",), consumers=("pacing",))
#: the pacing service's alerts for ad servers: cap exhaustion projected, under-pacing, back on pace
PACING_ALERTS = TopicSpec("billing.pacing_alerts", "contract id", "pacing_alert", retention_ms=30 * DAY_MS,
                          producers=("pacing",))
#: a verification vendor's invalid-traffic reports (through the ingest API); metering applies each once
IVT_REPORTS = TopicSpec("ads.ivt_reports", "report id", "ivt_report", retention_ms=LONG,
                        producers=("ingest",), consumers=("metering",))
IVT_REPORT_OUTCOMES = TopicSpec("billing.ivt_report_outcomes", "report id", "ivt_report_outcome", retention_ms=LONG,
                                producers=("metering",), consumers=("metering",))
DLQ_INGEST = TopicSpec("dlq.ingest", "as source", "dead_letter", retention_ms=LONG, producers=("ingest",))
DLQ_IMPRESSIONS = TopicSpec("dlq.ads.impressions", "as source", "dead_letter", retention_ms=LONG,
                            producers=("attribution", "metering"))
DLQ_CONVERSIONS = TopicSpec("dlq.ads.conversions", "as source", "dead_letter", retention_ms=LONG,
                            producers=("attribution",))

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


#: Topics the services create for themselves, as they create them (the default names of their
#: settings; partitions and retention as in metering's ``ensure_internal_topics``, attribution's
#: ``state_topic_spec`` and pacing's dead letters). pacing's faust also keeps its table changelogs
#: under its app id (``tally_streams.acls.OWN_PREFIXES``).
INTERNAL: tuple[TopicSpec, ...] = (
    TopicSpec("metering.deltas", "contract id", "internal-json", partitions=4, retention_ms=7 * DAY_MS,
              producers=("metering",), consumers=("metering",)),
    TopicSpec("metering.state-changelog", "state key", "internal-json", partitions=4, compacted=True,
              producers=("metering",), consumers=("metering",)),
    # aligned with ads.impressions: the dedupe horizon (62 days) plus a week
    TopicSpec("metering.dedupe-changelog", "event day", "internal-ids", partitions=IMPRESSIONS.partitions,
              retention_ms=(62 + 7) * DAY_MS, producers=("metering",), consumers=("metering",)),
    TopicSpec("dlq.billing.attributed_conversions", "as source", "dead_letter", partitions=1, retention_ms=-1,
              producers=("metering",)),
    TopicSpec("attribution.state-changelog", "state key", "none (JSON state values)", partitions=4, compacted=True,
              producers=("attribution",), consumers=("attribution",)),
    # its one partition's owner in the group tally-attribution-lease is the active processor
    TopicSpec("attribution.processor-lease", "none (never written)", "none", partitions=1, retention_ms=60_000,
              producers=("attribution",), consumers=("attribution",)),
    TopicSpec("dlq.billing.running_totals", "as source", "dead_letter", partitions=1, retention_ms=-1,
              producers=("pacing",)),
)


def by_name(name: str) -> TopicSpec:
    for spec in CATALOG:
        if spec.name == name:
            return spec
    raise KeyError(f"topic {name!r} is not in the catalog")


def dead_letter_topic(source: str) -> str:
    """``dlq.<source>``: where records from ``source`` that cannot be processed are kept."""
    return f"dlq.{source}"


def topic_map(specs: tuple[TopicSpec, ...] = (*CATALOG, *INTERNAL)) -> str:
    """The README's topic map, producer -> topic -> consumers, as a Markdown table."""
    lines = ["| producers | topic | consumers |", "|---|---|---|"]
    for s in specs:
        lines.append(f"| {', '.join(s.producers) or '—'} | `{s.name}` | {', '.join(s.consumers) or '— (outside Tally)'} |")
    return "\n".join(lines)
