"""Drive a scenario through the real APIs and keep a record anyone can recompute from.

The record is JSON Lines: a header line (scenario, the contracts' real ids and terms) and then
every event exactly as sent, in sending order. ``tally_sim.expected.recompute`` turns it into
the invoice and payout totals Tally must produce.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tally_kit.auth import mint_token

from .client import ContractsClient, IngestClient
from .expected import LiveContract
from .scenario import Scenario

BATCH_MAX = 1000


@dataclass(frozen=True)
class Tokens:
    ops: str
    approver: str
    finance: str
    ingest: str
    secret: str  # to mint partner tokens for postbacks

    @classmethod
    def mint(cls, secret: str) -> Tokens:
        return cls(
            ops=mint_token(secret, "sim-ops", ["ops"]),
            approver=mint_token(secret, "sim-approver", ["approver"]),
            finance=mint_token(secret, "sim-finance", ["finance"]),
            ingest=mint_token(secret, "sim-ad-server", ["ingest"]),
            secret=secret,
        )

    def partner(self, partner_id: str) -> str:
        return mint_token(self.secret, f"{partner_id}-postback", ["partner"], tenant_type="partner", tenant_id=partner_id)


async def create_contracts(scenario: Scenario, contracts: ContractsClient, *, reuse: bool = False) -> list[LiveContract]:
    """Every contract of the scenario, approved; with ``reuse``, one already approved under the
    same name and advertiser for the scenario's month is taken instead of creating another."""
    live = []
    for c in scenario.contracts:
        cid = await contracts.find_approved(c.name, c.advertiser_id, scenario.month) if reuse else None
        if cid is None:
            cid = await contracts.create_approved(c.name, c.terms, c.partner_ids)
        live.append(LiveContract(cid, c.terms))
    for lc in live:
        await contracts.wait_in_force(lc.contract_id)
    return live


def write_header(path: Path, scenario: Scenario, live: Sequence[LiveContract], *, keep_same: bool = False) -> None:
    """Start the record with its header. With ``keep_same``, a record that already starts with
    this very header (a restarted demo simulator) is kept and appended to."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"header": {"seed": scenario.seed, "month": scenario.month.isoformat(), "run_id": scenario.run_id,
                         "contracts": [{"contract_id": c.contract_id, "terms": c.terms_json} for c in live]}}
    if keep_same and path.exists():
        with path.open() as f:
            first = f.readline()
        if first.strip() and json.loads(first) == header:
            return
    path.write_text(json.dumps(header) + "\n")


def read_record(path: Path) -> tuple[list[LiveContract], list[dict[str, Any]]]:
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])["header"]
    contracts = [LiveContract(c["contract_id"], c["terms"]) for c in header["contracts"]]
    return contracts, [json.loads(line) for line in lines[1:] if line.strip()]


def _chunks(events: Sequence[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
    """Consecutive batch events of the same kind, at most BATCH_MAX per chunk; a postback alone."""
    chunk: list[dict[str, Any]] = []
    for e in events:
        if chunk and (e["via"] == "postback" or e["kind"] != chunk[0]["kind"] or len(chunk) >= BATCH_MAX):
            yield chunk
            chunk = []
        if e["via"] == "postback":
            yield [e]
        else:
            chunk.append(e)
    if chunk:
        yield chunk


async def send(events: Sequence[dict[str, Any]], ingest: IngestClient, tokens: Tokens, *, record: Path | None = None,
               rate_per_s: float | None = None, progress: Callable[[int, int, float], None] | None = None) -> None:
    """Send every event in order (batches through the ingest API, postbacks one by one), at
    most ``rate_per_s`` events a second; append each chunk to the record once it was accepted."""
    started = time.monotonic()
    sent = 0
    out = record.open("a") if record is not None else None
    try:
        for chunk in _chunks(events):
            if chunk[0]["via"] == "postback":
                ev = chunk[0]["event"]
                await ingest.postback(ev, tokens.partner(ev["partner_id"]))
            else:
                await ingest.batch("impressions" if chunk[0]["kind"] == "impression" else "conversions", [e["event"] for e in chunk])
            if out is not None:
                out.write("".join(json.dumps(e) + "\n" for e in chunk))
                out.flush()
            sent += len(chunk)
            if progress is not None:
                progress(sent, len(events), time.monotonic() - started)
            if rate_per_s:
                ahead = sent / rate_per_s - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
    finally:
        if out is not None:
            out.close()


def summary(expected_invoices: Mapping[tuple[str, str, str], Any]) -> str:
    return "\n".join(f"  {adv:<28} {cur} {period}  {amount}" for (adv, cur, period), amount in sorted(expected_invoices.items()))
