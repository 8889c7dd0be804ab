"""Settings of the contracts service (``python -m tally_contracts --settings`` lists them)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from tally_kit.settings import KafkaSettings, Spec, boolean, non_empty, port, positive_float, positive_int, setting
from tally_streams.security import KafkaSecurity

from .domain import DEFAULT_POLICY_JSON, ApprovalPolicy, parse_policy_text


@dataclass(frozen=True, kw_only=True)
class ContractsSettings(KafkaSecurity, KafkaSettings):
    contracts_database_url: str = setting(
        "TALLY_CONTRACTS_DATABASE_URL", "PostgreSQL DSN of the contracts database",
        f"postgresql://tally:tally@127.0.0.1:{os.environ.get('TALLY_PG_PORT', '5433')}/tally_contracts", non_empty, secret=True)
    contracts_host: str = setting("TALLY_CONTRACTS_HOST", "interface the API binds to", "127.0.0.1")
    contracts_port: int = setting("TALLY_CONTRACTS_PORT", "API port", "8081", port)
    contracts_events_topic: str = setting("TALLY_CONTRACTS_EVENTS_TOPIC", "topic of lifecycle events", "contracts.events", non_empty)
    contracts_terms_topic: str = setting("TALLY_CONTRACTS_TERMS_TOPIC", "compacted topic of effective-dated terms", "contracts.terms",
                                         non_empty)
    contracts_approval_policy: ApprovalPolicy = setting("TALLY_CONTRACTS_APPROVAL_POLICY", "approval policy as JSON (see README)",
                                                        json.dumps(DEFAULT_POLICY_JSON), parse_policy_text)
    contracts_run_scheduler: bool = setting("TALLY_CONTRACTS_RUN_SCHEDULER", "run the scheduler inside the API process", "true", boolean)
    contracts_run_relay: bool = setting("TALLY_CONTRACTS_RUN_RELAY", "run the outbox relay inside the API process", "true", boolean)
    contracts_scheduler_interval_s: float = setting("TALLY_CONTRACTS_SCHEDULER_INTERVAL_S", "seconds between scheduler ticks", "10",
                                                    positive_float)
    contracts_relay_batch: int = setting("TALLY_CONTRACTS_RELAY_BATCH", "outbox rows published per relay round", "200", positive_int)
    contracts_relay_idle_s: float = setting("TALLY_CONTRACTS_RELAY_IDLE_S", "relay poll interval when the outbox is empty", "0.2",
                                            positive_float)
    contracts_metrics_port: int = setting("TALLY_CONTRACTS_METRICS_PORT", "metrics port of the standalone relay/scheduler (0 = none)", "0",
                                          int)
    log_level: str = setting("TALLY_LOG_LEVEL", "log level", "INFO")


SPEC = Spec(ContractsSettings)
