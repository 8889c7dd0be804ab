"""Demo data: two approved contracts (CPM and CPA) created through the service layer, so every
step has its audit entry and outbox records like any real one."""

from __future__ import annotations

from tally_billing.examples import cpa_terms_json, cpm_terms_json
from tally_kit.auth import Principal
from tally_kit.db import create_pool
from tally_kit.settings import Settings
from tally_streams.avro import SchemaCatalog

from .clock import SystemClock
from .outbox import StepWriter
from .repo import ContractRepo
from .service import ContractService

OPS = Principal("seed-ops", frozenset({"ops"}))
APPROVER = Principal("seed-approver", frozenset({"approver"}))
FINANCE = Principal("seed-finance", frozenset({"finance"}))


async def seed(settings: Settings) -> list[str]:
    """Create and approve the demo contracts; returns one line per contract."""
    pool = await create_pool(settings.contracts_database_url, max_size=2)
    repo = ContractRepo()
    svc = ContractService(pool, SystemClock(), settings.contracts_approval_policy,
                          StepWriter(SchemaCatalog.load(), repo), repo)
    out: list[str] = []
    try:
        for name, terms, partners in (("Acme CTV 2026 (CPM)", cpm_terms_json(), []),
                                      ("Shop performance (CPA)", cpa_terms_json(), ["partner-tv1"])):
            contract, _ = await svc.create(OPS, {"name": name, "terms": terms, "partner_ids": partners})
            v = await svc.submit(OPS, contract["id"], 1, None)
            for approver in (APPROVER, FINANCE):
                if v["state"] == "submitted":
                    v = await svc.approve(approver, contract["id"], 1, {}, None)
            out.append(f"{contract['id']}  {name}  version 1 {v['state']}")
    finally:
        await pool.close()
    return out
