"""The invoicing service's settings (environment variables), validated all at once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from decimal import Decimal

from tally_billing.money import parse_amount
from tally_kit.settings import Setting, Settings, boolean, load, non_empty, port, positive_int


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


def amount_for(amounts: Mapping[str, Decimal], currency_code: str) -> Decimal:
    return amounts.get(currency_code, amounts["*"])


SPEC: tuple[Setting, ...] = (
    Setting("TALLY_INVOICING_DATABASE_URL", "PostgreSQL DSN of the invoicing database",
            f"postgresql://tally:tally@127.0.0.1:{os.environ.get('TALLY_PG_PORT', '5433')}/tally_invoicing", non_empty),
    Setting("TALLY_INVOICING_HOST", "HTTP bind address", "127.0.0.1", non_empty),
    Setting("TALLY_INVOICING_PORT", "HTTP port", "8084", port),
    Setting("TALLY_KAFKA_BOOTSTRAP", "Kafka bootstrap servers", "127.0.0.1:9092", non_empty),
    Setting("TALLY_INVOICING_PERIODS_CLOSED_TOPIC", "topic of closed periods (consumed)", "billing.periods_closed", non_empty),
    Setting("TALLY_INVOICING_ADJUSTMENTS_TOPIC", "topic of adjustments (consumed)", "billing.adjustments", non_empty),
    Setting("TALLY_INVOICING_TERMS_TOPIC", "compacted contract terms topic (replay)", "contracts.terms", non_empty),
    Setting("TALLY_INVOICING_IMPRESSIONS_TOPIC", "raw impressions topic (replay)", "ads.impressions", non_empty),
    Setting("TALLY_INVOICING_ATTRIBUTED_TOPIC", "attributed conversions topic (replay)",
            "billing.attributed_conversions", non_empty),
    Setting("TALLY_INVOICING_CONSUMER_GROUP", "Kafka consumer group", "tally-invoicing", non_empty),
    Setting("TALLY_INVOICING_CONSUME", "serve also runs the Kafka consumer", "true", boolean),
    Setting("TALLY_INVOICING_BATCH_MAX", "records per consumer poll (bounded)", "200", positive_int),
    Setting("TALLY_INVOICING_FOUR_EYES_THRESHOLD",
            "finalizing a document whose absolute total exceeds this needs a second finance user "
            "(CODE=amount list, '*' for the rest)", "*=10000", amount_map),
    Setting("TALLY_INVOICING_MINIMUM_PAYOUT",
            "a partner balance below this is carried forward, not paid (CODE=amount list, '*' for the rest)",
            "JPY=5000,*=50", amount_map),
    Setting("TALLY_INVOICING_LOG_LEVEL", "log level", "INFO", non_empty),
)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    return load(SPEC, environ)
