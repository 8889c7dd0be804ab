"""Pacing settings (environment variables), validated together by ``--validate``."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from tally_billing.pacing import Curve, parse_curve
from tally_kit.settings import KafkaSettings, Spec, non_empty, non_negative_int, port, positive_int, setting
from tally_streams import topics
from tally_streams.security import KafkaSecurity


def percentage(raw: str) -> Decimal:
    try:
        v = Decimal(raw.strip())
    except InvalidOperation:
        raise ValueError("must be a decimal number of percent") from None
    if not v.is_finite() or not Decimal(0) <= v <= Decimal(100):
        raise ValueError("must be from 0 to 100")
    return v


@dataclass(frozen=True, kw_only=True)
class PacingSettings(KafkaSecurity, KafkaSettings):
    pacing_app_id: str = setting("TALLY_PACING_APP_ID", "faust app id: the consumer group and the prefix of the table changelog topics",
                                 "tally-pacing", non_empty)
    pacing_topic_running_totals: str = setting("TALLY_PACING_TOPIC_RUNNING_TOTALS", "Compacted running totals (input)",
                                               topics.RUNNING_TOTALS.name, non_empty)
    pacing_topic_budget_alerts: str = setting("TALLY_PACING_TOPIC_BUDGET_ALERTS", "Budget alerts (input)", topics.BUDGET_ALERTS.name,
                                              non_empty)
    pacing_topic_terms: str = setting("TALLY_PACING_TOPIC_TERMS", "Compacted contract terms (input: each contract's flight)",
                                      topics.CONTRACT_TERMS.name, non_empty)
    pacing_topic_pacing_alerts: str = setting("TALLY_PACING_TOPIC_PACING_ALERTS", "Pacing alerts (output)", topics.PACING_ALERTS.name,
                                              non_empty)
    pacing_topic_dlq: str = setting("TALLY_PACING_TOPIC_DLQ", "Dead letters of undecodable input records",
                                    topics.dead_letter_topic(topics.RUNNING_TOTALS.name), non_empty)
    pacing_partitions: int = setting("TALLY_PACING_PARTITIONS", "Partitions of the table changelogs; must equal the input topics' (4)",
                                     "4", positive_int)
    pacing_curve: Curve = setting(
        "TALLY_PACING_CURVE",
        "Expected share of the budget over the window: even, front_loaded, back_loaded or breakpoints '0:0,0.5:0.6,1:1'", "even",
        parse_curve)
    pacing_tolerance_pct: Decimal = setting(
        "TALLY_PACING_TOLERANCE_PCT", "On pace while spend is within this many percent of the expected spend", "10", percentage)
    pacing_under_alert_pct: Decimal = setting(
        "TALLY_PACING_UNDER_ALERT_PCT", "Alert under_pacing when spend is more than this many percent below expected", "20", percentage)
    pacing_alert_min_elapsed_pct: Decimal = setting(
        "TALLY_PACING_ALERT_MIN_ELAPSED_PCT",
        "No alert before this share of the window has passed (the first hours of a period say little about its pace)", "5", percentage)
    pacing_session_timeout_s: int = setting(
        "TALLY_PACING_SESSION_TIMEOUT_S",
        "Consumer group session timeout: how long a killed worker's partitions wait before another worker (or its restart) takes them",
        "10", positive_int)
    pacing_alert_interval_s: int = setting(
        "TALLY_PACING_ALERT_INTERVAL_S",
        "Evaluate a period's alert state at most once per this many seconds of its totals' updated_at (0 = on every total)", "30",
        non_negative_int)
    pacing_clock_file: str = setting("TALLY_PACING_CLOCK_FILE", "Tests: a file holding the current instant (ISO 8601); empty = wall clock",
                                     "")
    pacing_datadir: str = setting(
        "TALLY_PACING_DATADIR", "faust's data folder (the tables themselves are in memory, rebuilt from the changelogs at start)",
        ".state/pacing", non_empty)
    pacing_port: int = setting("TALLY_PACING_PORT", "Pacing API port (also /metrics)", "8085", port)
    pacing_host: str = setting("TALLY_PACING_HOST", "Pacing API bind address", "127.0.0.1", non_empty)


SPEC = Spec(PacingSettings)
