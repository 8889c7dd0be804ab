"""8. Contracts API: reads (``GET /contracts/{id}``) and create -> submit -> approve flows.

One ``python -m tally_contracts serve`` process on a fresh database (migrated with
``python -m tally_contracts migrate``) and throwaway ``contracts.events`` / ``contracts.terms``
topics, the outbox relay and scheduler running inside it as they do by default. The load
generator (``tally_bench.loadgen``, a second process) first runs flows — every POST with its
own Idempotency-Key, approvals by users other than the author — then reads the contracts
those flows created.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from tally_streams.kafka import delete_topics, ensure_topics
from tally_streams.topics import CONTRACT_EVENTS, CONTRACT_TERMS

from .common import (
    BOOTSTRAP,
    ROOT,
    NotMeasured,
    Report,
    Service,
    free_port,
    migrate,
    module_available,
    pg_dsn,
    token,
    unique,
    validate_settings,
)
from .invoicing import _admin

MODULE = "tally_contracts"


def _loadgen(cfg: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(cfg, f)
        path = f.name
    try:
        res = subprocess.run([sys.executable, "-m", "tally_bench.loadgen", path],
                             env={**os.environ, "PYTHONPATH": str(ROOT / "bench")}, capture_output=True, text=True,
                             timeout=timeout_s, cwd=ROOT)
    finally:
        Path(path).unlink(missing_ok=True)
    if res.returncode != 0:
        raise NotMeasured(f"load generator failed: {res.stderr.strip().splitlines()[-2:]}")
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def measure(report: Report, args: Any) -> None:
    from tally_billing.examples import cpm_terms_json

    why = module_available(MODULE)
    if why:
        raise NotMeasured(why)
    db = f"bench_{uuid.uuid4().hex[:12]}"
    events, terms_topic = unique("contract-events"), unique("contract-terms")
    port = free_port()
    env = {"TALLY_CONTRACTS_DATABASE_URL": pg_dsn(db), "TALLY_CONTRACTS_PORT": str(port),
           "TALLY_CONTRACTS_EVENTS_TOPIC": events, "TALLY_CONTRACTS_TERMS_TOPIC": terms_topic, "TALLY_LOG_LEVEL": "WARNING"}
    svc: Service | None = None
    asyncio.run(_admin(f'CREATE DATABASE "{db}"'))
    try:
        ensure_topics(BOOTSTRAP, [CONTRACT_EVENTS.renamed(events), CONTRACT_TERMS.renamed(terms_topic)])
        why = validate_settings(MODULE, env)
        if why:
            raise NotMeasured(why)
        migrate(MODULE, env)
        svc = Service("contracts", MODULE, env, args=["serve"]).start()
        svc.wait_http(port, "/healthz", timeout_s=60)
        base = f"http://127.0.0.1:{port}"
        tokens = {"ops": token("bench-ops", ["ops"]), "approver": token("bench-approver", ["approver"]),
                  "finance": token("bench-finance", ["finance"])}
        created: list[str] = []
        for r in range(args.runs):
            out = _loadgen({"scenario": "flow", "base_url": base, "tokens": tokens, "terms": cpm_terms_json(),
                            "concurrency": 4, "warmup_s": 1, "duration_s": args.api_seconds}, args.api_seconds + 120)
            created.extend(out.pop("created"))
            print(f"  flows round {r + 1}: {out}", flush=True)
            if not out["flows"]:
                raise NotMeasured(f"no create -> submit -> approve flow completed: {out['failures']}")
            report.add("contracts.flows", out["flows_per_s"])
            report.add("contracts.flows_p99", out["p99_ms"])
        if not created:
            raise NotMeasured("no contract was created to read")
        urls = [f"{base}/contracts/{cid}" for cid in created[:2000]]
        for r in range(args.runs):
            out = _loadgen({"scenario": "get", "urls": urls, "token": token("bench-finance", ["finance"]),
                            "concurrency": 8, "warmup_s": 1, "duration_s": args.api_seconds}, args.api_seconds + 120)
            print(f"  reads round {r + 1}: {out}", flush=True)
            if not out["statuses"].get("200"):
                raise NotMeasured(f"no read answered 200: {out['statuses']}")
            report.add("contracts.reads", out["requests_per_s"])
            report.add("contracts.reads_p99", out["p99_ms"])
        report.figures["contracts.flows"].note = ("4 flows in flight; create (ops) -> submit (ops) -> approve (approver, "
                                                  "then finance while the policy asks), each POST with an Idempotency-Key")
        report.figures["contracts.reads"].note = f"8 requests in flight over {len(urls)} contracts, finance token"
    finally:
        if svc is not None:
            svc.stop()
        delete_topics(BOOTSTRAP, [events, terms_topic])
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
