"""Settings of the contracts service (``python -m tally_contracts --settings`` lists them)."""

from __future__ import annotations

import json
import os

from tally_kit.settings import Setting, boolean, non_empty, port, positive_int

from .domain import DEFAULT_POLICY_JSON, ApprovalPolicy, parse_policy_text


def policy(raw: str) -> ApprovalPolicy:
    return parse_policy_text(raw)


def positive_float(raw: str) -> float:
    v = float(raw)
    if v <= 0:
        raise ValueError("must be > 0")
    return v


SPEC = (
    Setting("TALLY_CONTRACTS_DATABASE_URL", "PostgreSQL DSN of the contracts database",
            f"postgresql://tally:tally@127.0.0.1:{os.environ.get('TALLY_PG_PORT', '5433')}/tally_contracts", non_empty, secret=True),
    Setting("TALLY_CONTRACTS_HOST", "interface the API binds to", "127.0.0.1"),
    Setting("TALLY_CONTRACTS_PORT", "API port", "8081", port),
    Setting("TALLY_KAFKA_BOOTSTRAP", "Kafka bootstrap servers", "127.0.0.1:9092", non_empty),
    Setting("TALLY_CONTRACTS_EVENTS_TOPIC", "topic of lifecycle events", "contracts.events", non_empty),
    Setting("TALLY_CONTRACTS_TERMS_TOPIC", "compacted topic of effective-dated terms", "contracts.terms", non_empty),
    Setting("TALLY_CONTRACTS_APPROVAL_POLICY", "approval policy as JSON (see README)",
            json.dumps(DEFAULT_POLICY_JSON), policy),
    Setting("TALLY_CONTRACTS_RUN_SCHEDULER", "run the scheduler inside the API process", "true", boolean),
    Setting("TALLY_CONTRACTS_RUN_RELAY", "run the outbox relay inside the API process", "true", boolean),
    Setting("TALLY_CONTRACTS_SCHEDULER_INTERVAL_S", "seconds between scheduler ticks", "10", positive_float),
    Setting("TALLY_CONTRACTS_RELAY_BATCH", "outbox rows published per relay round", "200", positive_int),
    Setting("TALLY_CONTRACTS_RELAY_IDLE_S", "relay poll interval when the outbox is empty", "0.2", positive_float),
    Setting("TALLY_CONTRACTS_METRICS_PORT", "metrics port of the standalone relay/scheduler (0 = none)", "0", int),
    Setting("TALLY_LOG_LEVEL", "log level", "INFO"),
)
