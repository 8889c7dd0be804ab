"""Demo data: two approved contracts (CPM and CPA) and the names of their parties, created through
the service layer, so every step has its audit entry and outbox records like any real one."""

from __future__ import annotations

from tally_billing.examples import cpa_terms_json, cpm_terms_json
from tally_kit.auth import Principal
from tally_kit.clock import WallClock
from tally_kit.db import create_pool
from tally_streams.avro import SchemaCatalog

from . import commands
from .bootstrap import bootstrap
from .settings import ContractsSettings

OPS = Principal("seed-ops", frozenset({"ops"}))
APPROVER = Principal("seed-approver", frozenset({"approver"}))
FINANCE = Principal("seed-finance", frozenset({"finance"}))
ADMIN = Principal("seed-admin", frozenset({"admin"}))
#: the display names of the examples' parties (tally_billing.examples)
PARTIES = (("advertiser", "adv-acme", "Acme Corp"), ("advertiser", "adv-shop", "Shop Inc."),
           ("partner", "partner-tv1", "TV One"))


async def seed(settings: ContractsSettings) -> list[str]:
    """Create and approve the demo contracts; returns one line per contract."""
    pool = await create_pool(settings.contracts_database_url, max_size=2)
    bus = bootstrap(pool, WallClock(), settings.contracts_approval_policy, SchemaCatalog.load())
    out: list[str] = []
    try:
        for name, terms, partners in (("Acme CTV 2026 (CPM)", cpm_terms_json(), []),
                                      ("Shop performance (CPA)", cpa_terms_json(), ["partner-tv1"])):
            contract, _ = await bus.handle(commands.create_contract(
                OPS, {"name": name, "terms": terms, "partner_ids": partners}))
            v = await bus.handle(commands.Submit(principal=OPS, contract_id=contract["id"], version=1, if_match=None))
            for approver in (APPROVER, FINANCE):
                if v["state"] == "submitted":
                    v = await bus.handle(commands.approve(approver, contract["id"], 1, {}, None))
            out.append(f"{contract['id']}  {name}  version 1 {v['state']}")
        for kind, party_id, party_name in PARTIES:
            await bus.handle(commands.name_party(ADMIN, kind, party_id, {"name": party_name}))
            out.append(f"{kind} {party_id}  {party_name}")
    finally:
        await pool.close()
    return out
