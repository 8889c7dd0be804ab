"""The invoicing service's settings (environment variables), validated all at once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from tally_billing.money import parse_amount
from tally_kit.settings import KafkaSettings, Spec, boolean, load, non_empty, port, positive_int, setting
from tally_streams.security import KafkaSecurity


def amount_map(raw: str) -> dict[str, Decimal]:
    """``"USD=10000,JPY=1500000,*=10000"``: an amount per currency, ``*`` for every other one."""
    out: dict[str, Decimal] = {}
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        code, sep, amount = part.partition("=")
        if not sep or not code.strip():
            raise ValueError(f"{part!r} is not CODE=amount")
        value = parse_amount(amount.strip())
        if value < 0:
            raise ValueError(f"{part!r}: the amount must be ≥ 0")
        out[code.strip().upper()] = value
    if "*" not in out:
        raise ValueError("needs a '*=amount' default for currencies not listed")
    return out


@dataclass(frozen=True, kw_only=True)
class InvoicingSettings(KafkaSecurity, KafkaSettings):
    invoicing_database_url: str = setting(
        "TALLY_INVOICING_DATABASE_URL", "PostgreSQL DSN of the invoicing database",
        f"postgresql://tally:tally@127.0.0.1:{os.environ.get('TALLY_PG_PORT', '5433')}/tally_invoicing", non_empty)
    invoicing_host: str = setting("TALLY_INVOICING_HOST", "HTTP bind address", "127.0.0.1", non_empty)
    invoicing_port: int = setting("TALLY_INVOICING_PORT", "HTTP port", "8084", port)
    invoicing_periods_closed_topic: str = setting("TALLY_INVOICING_PERIODS_CLOSED_TOPIC", "topic of closed periods (consumed)",
                                                  "billing.periods_closed", non_empty)
    invoicing_adjustments_topic: str = setting("TALLY_INVOICING_ADJUSTMENTS_TOPIC", "topic of adjustments (consumed)",
                                               "billing.adjustments", non_empty)
    invoicing_terms_topic: str = setting("TALLY_INVOICING_TERMS_TOPIC", "compacted contract terms topic (replay)", "contracts.terms",
                                         non_empty)
    invoicing_impressions_topic: str = setting("TALLY_INVOICING_IMPRESSIONS_TOPIC", "raw impressions topic (replay)", "ads.impressions",
                                               non_empty)
    invoicing_attributed_topic: str = setting("TALLY_INVOICING_ATTRIBUTED_TOPIC", "attributed conversions topic (replay)",
                                              "billing.attributed_conversions", non_empty)
    invoicing_consumer_group: str = setting("TALLY_INVOICING_CONSUMER_GROUP", "Kafka consumer group", "tally-invoicing", non_empty)
    invoicing_consume: bool = setting("TALLY_INVOICING_CONSUME", "serve also runs the Kafka consumer", "true", boolean)
    invoicing_batch_max: int = setting("TALLY_INVOICING_BATCH_MAX", "records per consumer poll (bounded)", "200", positive_int)
    invoicing_four_eyes_threshold: dict[str, Decimal] = setting(
        "TALLY_INVOICING_FOUR_EYES_THRESHOLD",
        "finalizing a document whose absolute total exceeds this needs a second finance user (CODE=amount list, '*' for the rest)",
        "*=10000", amount_map)
    invoicing_minimum_payout: dict[str, Decimal] = setting(
        "TALLY_INVOICING_MINIMUM_PAYOUT",
        "a partner balance below this is carried forward, not paid (CODE=amount list, '*' for the rest)", "JPY=5000,*=50", amount_map)
    invoicing_log_level: str = setting("TALLY_INVOICING_LOG_LEVEL", "log level", "INFO", non_empty)


SPEC = Spec(InvoicingSettings)


def load_settings(environ: Mapping[str, str] | None = None) -> InvoicingSettings:
    return load(SPEC, environ)
