"""Drive a scenario through the real APIs and keep a record anyone can recompute from.

The record is JSON Lines: a header line (scenario, the contracts' real ids and terms) and then
every event exactly as sent, in sending order. ``tally_sim.expected.recompute`` turns it into
the invoice and payout totals Tally must produce.

Besides events, the record holds what else the simulator did, in order: ``contract_approved``
when a late IO (a contract drafted before its traffic, approved after about half of it) was
approved, and ``ivt_report`` for each verification vendor's report posted after the traffic.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from tally_billing.periods import PeriodKind, local_midnight, period_containing, zone
from tally_billing.versions import version_in_force
from tally_kit.auth import mint_token

from .client import ApiFailure, ContractsClient, Http, IngestClient
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


async def create_contracts(scenario: Scenario, contracts: ContractsClient, *, reuse: bool = False,
                           late_io: int = 0) -> list[LiveContract]:
    """Every contract of the scenario, approved; with ``reuse``, one already approved under the
    same name and advertiser in force on its first flight day is taken instead of creating another.

    ``late_io``: the scenario's first ``late_io`` CPM contracts are only drafted (``late_io`` set
    on them); ``approve_late`` approves them once part of the traffic was sent."""
    if reuse and late_io:
        raise ValueError("late IOs are drafted anew; they cannot reuse approved contracts")
    late = {c.key for c in [c for c in scenario.contracts if c.contract_type == "cpm"][:late_io]}
    live = []
    for c in scenario.contracts:
        if c.key in late:
            live.append(LiveContract(await contracts.create_draft(c.name, c.terms, c.partner_ids), c.terms, late_io=True))
            continue
        flight_start = date.fromisoformat(c.terms["common"]["flight_start"])
        cid = await contracts.find_approved(c.name, c.advertiser_id, flight_start) if reuse else None
        if cid is None:
            cid = await contracts.create_approved(c.name, c.terms, c.partner_ids)
        live.append(LiveContract(cid, c.terms))
    for lc in live:
        if not lc.late_io:
            await contracts.wait_in_force(lc.contract_id)
    return live


async def approve_late(live: Sequence[LiveContract], contracts: ContractsClient, *, record: Path | None = None) -> None:
    """Approve every late IO (drafted by ``create_contracts``), wait until its terms are on Kafka,
    and note each approval in the record (it changes nothing owed: usage is billed whichever came first)."""
    late = [lc for lc in live if lc.late_io]
    for lc in late:
        await contracts.approve(lc.contract_id)
    for lc in late:
        await contracts.wait_in_force(lc.contract_id)
    if record is not None and late:
        with record.open("a") as out:
            out.write("".join(json.dumps({"kind": "contract_approved", "via": "contracts_api",
                                          "event": {"contract_id": lc.contract_id}}) + "\n" for lc in late))


def split_for_late_io(events: Sequence[dict[str, Any]], live: Sequence[LiveContract]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The events to send before the late IOs are approved (about half) and after; with no late
    IO, everything comes first."""
    if not any(lc.late_io for lc in live):
        return list(events), []
    half = len(events) // 2
    return list(events[:half]), list(events[half:])


def write_header(path: Path, scenario: Scenario, live: Sequence[LiveContract], *, keep_same: bool = False) -> None:
    """Start the record with its header. With ``keep_same``, a record that already starts with
    this very header (a restarted demo simulator) is kept and appended to."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"header": {"seed": scenario.seed, "month": scenario.month.isoformat(), "run_id": scenario.run_id,
                         "contracts": [{"contract_id": c.contract_id, "terms": c.terms_json, **({"late_io": True} if c.late_io else {})}
                                       for c in live]}}
    if keep_same and path.exists():
        with path.open() as f:
            first = f.readline()
        if first.strip() and json.loads(first) == header:
            return
    path.write_text(json.dumps(header) + "\n")


def read_record(path: Path) -> tuple[list[LiveContract], list[dict[str, Any]]]:
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])["header"]
    contracts = [LiveContract(c["contract_id"], c["terms"], late_io=bool(c.get("late_io"))) for c in header["contracts"]]
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


# --------------------------------------------------------------------------- IVT reports


def plan_ivt_reports(live: Sequence[LiveContract], events: Sequence[Mapping[str, Any]], n: int, *, seed: int,
                     run_id: str) -> list[dict[str, Any]]:
    """Up to ``n`` verification vendors' IVT reports (ingest API bodies) for CPM campaign-days
    the traffic covers. Each has one entry: a local day of its contract's zone inside the flight
    (so inside one contract version and one billing period), crediting half (rounded down) of the
    valid first-party unique impressions sent for its campaign that day. The CPM contracts take
    turns; each (campaign, day) is reported once; days are drawn with a seeded generator, so
    the same traffic gives the same reports."""
    rng = random.Random(f"ivt:{seed}:{run_id}")
    prefix = run_id or "run"
    seen: set[str] = set()
    # (contract index, campaign, local day) -> valid first-party unique impressions
    held: Counter[tuple[int, str, date]] = Counter()
    cpm = [lc for lc in live if lc.terms.contract_type.value == "cpm"]
    commons = [lc.terms.common for lc in cpm]
    for e in events:
        if e["kind"] != "impression":
            continue
        imp = e["event"]
        if imp["impression_id"] in seen:
            continue
        seen.add(imp["impression_id"])
        if imp["ivt"] != "none" or imp.get("measurement_source", "first_party") != "first_party":
            continue
        at = datetime.fromisoformat(imp["event_time"].replace("Z", "+00:00"))
        for i, common in enumerate(commons):
            if imp["advertiser_id"] == common.advertiser_id and imp["campaign_id"] in common.campaign_ids:
                held[(i, imp["campaign_id"], at.astimezone(zone(common.time_zone)).date())] += 1
    candidates: list[list[tuple[str, date, int]]] = [[] for _ in cpm]
    for (i, campaign, day), k in sorted(held.items()):
        if k >= 2 and _one_version_and_period(cpm[i], day):
            candidates[i].append((campaign, day, k))
    reports: list[dict[str, Any]] = []
    turn = 0
    while len(reports) < n and any(candidates):
        i = turn % len(cpm)
        turn += 1
        if not candidates[i]:
            continue
        campaign, day, k = candidates[i].pop(rng.randrange(len(candidates[i])))
        common = cpm[i].terms.common
        reports.append({"report_id": f"{prefix}-ivt-{len(reports) + 1:03d}", "advertiser_id": common.advertiser_id,
                        "entries": [{"campaign_id": campaign, "ivt_class": ("givt", "sivt")[len(reports) % 2],
                                     "measurement_source": "first_party", "count": k // 2,
                                     "date": day.isoformat(), "time_zone": common.time_zone}]})
    return reports


def _one_version_and_period(lc: LiveContract, day: date) -> bool:
    """Whether the local ``day`` lies inside the flight, in one version and one billing period."""
    common = lc.terms.common
    if day < common.flight_start or (common.flight_end is not None and day > common.flight_end):
        return False
    start, end = local_midnight(day, common.time_zone), local_midnight(day + timedelta(days=1), common.time_zone)
    last = end - timedelta(microseconds=1)
    versions = lc.versions()
    kind = PeriodKind(common.billing_period.value)
    v0, v1 = version_in_force(versions, start), version_in_force(versions, last)
    return v0 is not None and v1 is not None and v0.version == v1.version and \
        period_containing(start, common.time_zone, kind) == period_containing(last, common.time_zone, kind)


async def wait_metered(spend: Http, live: Sequence[LiveContract], events: Sequence[Mapping[str, Any]], *,
                       timeout_s: float = 300.0) -> None:
    """Until metering's running totals (the spend API) have received every impression sent for
    each CPM contract's covered campaigns: a vendor reports on traffic Tally has counted (a report
    claiming more than metering counted for its window is refused whole)."""
    want: Counter[tuple[str, str]] = Counter()
    for lc in live:
        common = lc.terms.common
        if lc.terms.contract_type.value != "cpm":
            continue
        kind = PeriodKind(common.billing_period.value)
        versions = lc.versions()
        for e in events:
            imp = e["event"]
            if e["kind"] != "impression" or imp["advertiser_id"] != common.advertiser_id:
                continue
            at = datetime.fromisoformat(imp["event_time"].replace("Z", "+00:00"))
            v = version_in_force(versions, at)
            if v is not None and imp["campaign_id"] in v.terms.common.campaign_ids:
                want[(lc.contract_id, period_containing(at, common.time_zone, kind).key)] += 1
    deadline = time.monotonic() + timeout_s
    missing = dict(want)
    while missing:
        for (cid, key), n in list(missing.items()):
            page = await spend.call("GET", "/v1/spend?" + urlencode({"contract_id": cid, "period_key": key}))
            got = sum(int(item["counts"].get("received", 0)) for item in page.get("items", []))
            if got >= n:
                del missing[(cid, key)]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise ApiFailure(f"metering has not counted every impression sent after {timeout_s:.0f}s: missing {missing}")
        await asyncio.sleep(0.5)


async def post_ivt_reports(reports: Sequence[Mapping[str, Any]], ingest: IngestClient, *, record: Path | None = None) -> None:
    """Post each report through the ingest API and append it to the record once accepted."""
    for report in reports:
        await ingest.ivt_report(report)
        if record is not None:
            with record.open("a") as out:
                out.write(json.dumps({"kind": "ivt_report", "via": "ivt_report", "event": report}) + "\n")


def summary(expected_invoices: Mapping[tuple[str, str, str], Any]) -> str:
    return "\n".join(f"  {adv:<28} {cur} {period}  {amount}" for (adv, cur, period), amount in sorted(expected_invoices.items()))
