"""One billing month through the whole system, as a user meets it: contracts through the API,
traffic through ingest, periods closed by the metering clock, invoices and statements finalized
through the invoicing API — then every total compared with the simulator's independent
recomputation, to the cent. ``chaos`` (optional) runs while traffic flows and is processed.

``late_io`` contracts are drafted before the traffic and approved once metering has counted
about half of it (their earlier usage waited in metering's ledger); ``ivt_reports`` vendors'
reports are posted once metering has counted all of it, and decided before the month closes
(so they lower the closing totals; after the close they would be ``ivt_credit`` adjustments on
the next period's invoice). The recomputation is made from the record, which holds both."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import aiohttp
from confluent_kafka import KafkaException

from tally_sim.client import ContractsClient, Http, IngestClient
from tally_sim.expected import Expected, recompute
from tally_sim.run import (
    Tokens,
    approve_late,
    create_contracts,
    plan_ivt_reports,
    post_ivt_reports,
    read_record,
    send,
    split_for_late_io,
    wait_metered,
    write_header,
)
from tally_sim.scenario import build, previous_month
from tally_sim.traffic import TrafficMix, generate, window
from tally_streams.avro import SchemaCatalog
from tally_streams.kafka import read_to_end
from tests import clock

from .e2e_stack import PORTS, PY, ROOT, Stack, wait_until

Chaos = Callable[[Stack, asyncio.Event], Awaitable[None]]


def read_topic(stack: Stack, topic: str, schema: str) -> list[dict[str, Any]]:
    """Every committed record of a topic, decoded (read_committed)."""
    codec = SchemaCatalog.load(ROOT / "schemas").codec(schema)
    return [codec.decode(m.value()) for m in read_to_end(stack.bootstrap, topic, client=stack.kafka)]


def start_processors(stack: Stack) -> subprocess.Popen[bytes]:
    """The stream processors start once the contracts' terms are on the topic: they read the
    terms to the end before their first event, as they would in production where contracts
    precede their traffic."""
    procfile = stack.tmp / "Procfile.processors"
    procfile.write_text(f"attribution: {stack.command('attribution', '-m tally_attribution processor')}\n"
                        f"metering: {stack.command('metering', '-m tally_metering worker')}\n")
    return subprocess.Popen([PY, str(ROOT / "deploy/bin/supervise.py"), str(procfile)], cwd=ROOT, env=stack.env(),
                            stdout=open(stack.tmp / "supervisor-processors.log", "ab"),
                            stderr=subprocess.STDOUT)


async def run_month(stack: Stack, *, impressions: int, seed: int, rate_per_s: float | None = None,
                    chaos: Chaos | None = None, late_io: int = 0, ivt_reports: int = 0) -> tuple[Expected, dict[str, Any]]:
    month = previous_month(clock.now().date())  # the test clock: TALLY_TEST_NOW can set the month
    _, end = window(build(seed, month, stack.run))
    stack.set_clock(end)  # metering's clock: after every event, before any period closes
    await stack.start()  # contracts, ingest, spend API, invoicing
    tokens = Tokens.mint(stack.secret)
    scenario = build(seed, month, stack.run)
    record = stack.tmp / "record.jsonl"
    processors: subprocess.Popen[bytes] | None = None
    stop_chaos = asyncio.Event()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            contracts = ContractsClient(Http(session, f"http://127.0.0.1:{PORTS['contracts']}", tokens.ops),
                                        tokens.approver, tokens.finance)
            live = await create_contracts(scenario, contracts, late_io=late_io)
            write_header(record, scenario, live)
            ids = {c.contract_id for c in live if not c.late_io}  # a late IO's terms come with its approval
            terms_topic = stack.topic["contracts.terms"]

            async def terms_published() -> bool:
                return ids <= {r["contract_id"] for r in read_topic(stack, terms_topic, "contract_terms")}

            await wait_until(terms_published, 60, "every contract's terms on contracts.terms")
            processors = start_processors(stack)

            events = generate(scenario, TrafficMix(impressions=impressions))
            chaos_task = asyncio.create_task(chaos(stack, stop_chaos)) if chaos else None
            ingest = IngestClient(Http(session, f"http://127.0.0.1:{PORTS['ingest']}", tokens.ingest))
            metering_inputs = [stack.topic["ads.impressions"], stack.topic["billing.attributed_conversions"],
                               stack.topic["ads.ivt_reports"], f"e2e-{stack.run}-metering.deltas"]

            async def metering_caught_up() -> bool:
                return stack.lag(f"e2e-{stack.run}-metering", metering_inputs) == 0

            before, after = split_for_late_io(events, live)
            await send(before, ingest, tokens, record=record, rate_per_s=rate_per_s)
            if after:
                # The first half is in metering's ledger, billed to no one yet, when the late IOs are approved.
                await wait_until(metering_caught_up, 300, "metering to count the traffic sent before the late IOs")
                await approve_late(live, contracts, record=record)
                await send(after, ingest, tokens, record=record, rate_per_s=rate_per_s)

            # Every conversion record gets exactly one outcome from attribution.
            n_conversion_records = sum(1 for e in events if e["kind"] == "conversion")

            async def all_decided() -> bool:
                try:
                    outcomes = read_topic(stack, stack.topic["billing.conversion_outcomes"], "conversion_outcome")
                except KafkaException:  # chaos is still running: a broker failing over answers nothing yet
                    return False
                return len({o["outcome_id"] for o in outcomes}) >= n_conversion_records

            await wait_until(all_decided, 300, "attribution to decide every conversion")
            if chaos_task is not None:
                stop_chaos.set()
                await chaos_task
                await stack.wait_ready()
            await wait_until(metering_caught_up, 300, "metering to consume every impression and conversion")

            reported: dict[str, tuple[str, int]] = {}
            if ivt_reports:
                reports = plan_ivt_reports(live, events, ivt_reports, seed=seed, run_id=stack.run)
                assert len(reports) == ivt_reports, reports
                # What `tally_sim run` waits for (the spend API) before posting; the lag above already holds.
                await wait_metered(Http(session, f"http://127.0.0.1:{PORTS['spend']}", tokens.ops), live, events,
                                   timeout_s=60)
                await post_ivt_reports(reports, ingest, record=record)
                report_ids = {r["report_id"] for r in reports}

                async def reports_decided() -> bool:
                    outcomes = read_topic(stack, stack.topic["billing.ivt_report_outcomes"], "ivt_report_outcome")
                    for o in outcomes:
                        reported.setdefault(o["report_id"], (o["status"], o["credited"]))
                    return report_ids <= set(reported)

                await wait_until(reports_decided, 120, "metering to decide every IVT report")
                await wait_until(metering_caught_up, 120, "metering to commit every IVT report")
            expected = recompute(*read_record(record))

            # Close the month: move metering's clock past every contract's period end + grace.
            stack.set_clock(end + timedelta(days=3))
            finance = Http(session, f"http://127.0.0.1:{PORTS['invoicing']}", tokens.finance)
            want_invoices = set(expected.invoices)
            want_statements = set(expected.payouts)

            seen: dict[str, Any] = {}

            async def documents_ready() -> bool:
                inv = await finance.call("GET", "/invoices?limit=200")
                st = await finance.call("GET", "/statements?limit=200")
                seen["invoices"] = {(i["advertiser_id"], i["currency"], i["period_key"]) for i in inv["items"]}
                seen["statements"] = {(s["partner_id"], s["currency"], s["period_key"]) for s in st["items"]}
                seen["closes"] = [c["close_id"] for c in read_topic(stack, stack.topic["billing.periods_closed"], "period_closed")]
                seen["rejected"] = (await finance.call("GET", "/rejected-records?limit=20")).get("items", [])[:3]
                seen["invoicing_lag"] = stack.lag(f"e2e-{stack.run}-invoicing", [stack.topic["billing.periods_closed"],
                                                                                  stack.topic["billing.adjustments"]])
                return want_invoices <= seen["invoices"] and want_statements <= seen["statements"] and \
                    len(seen["closes"]) >= len(live) and seen["invoicing_lag"] == 0

            try:
                await wait_until(documents_ready, 120, "draft invoices and statements for every closed period")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; wanted {want_invoices} and {want_statements}, last seen {seen}") from None
            actual = await finalize_all(finance)
            actual["ivt_reports"] = reported
            actual["record"] = record
            return expected, actual
    finally:
        stop_chaos.set()
        if processors is not None and processors.poll() is None:
            processors.terminate()
            try:
                processors.wait(timeout=40)
            except subprocess.TimeoutExpired:
                processors.kill()


async def finalize_all(finance: Http) -> dict[str, Any]:
    """Finalize every draft invoice and statement through the API; return their totals."""
    invoices: dict[tuple[str, str, str], Decimal] = {}
    statements: dict[tuple[str, str, str], Decimal] = {}
    numbers: list[str] = []
    for item in (await finance.call("GET", "/invoices?limit=200"))["items"]:
        doc = await finance.call("POST", f"/invoices/{item['id']}/finalize", {})
        numbers.append(doc["number"])
        assert doc["status"] == "finalized", doc
        key = (doc["advertiser_id"], doc["currency"], doc["period_key"])
        invoices[key] = invoices.get(key, Decimal(0)) + Decimal(str(doc["total"]))
    for item in (await finance.call("GET", "/statements?limit=200"))["items"]:
        doc = await finance.call("POST", f"/statements/{item['id']}/finalize", {})
        assert doc["status"] == "finalized", doc
        key = (doc["partner_id"], doc["currency"], doc["period_key"])
        statements[key] = statements.get(key, Decimal(0)) + Decimal(str(doc["lines_total"]))
    trial = await finance.call("GET", "/ledger/trial-balance")
    return {"invoices": invoices, "statements": statements, "numbers": numbers, "trial_balance": trial}


def describe(expected: Expected, actual: dict[str, Any]) -> str:
    return json.dumps({"expected_invoices": {str(k): str(v) for k, v in expected.invoices.items()},
                       "actual_invoices": {str(k): str(v) for k, v in actual["invoices"].items()},
                       "expected_payouts": {str(k): str(v) for k, v in expected.payouts.items()},
                       "actual_statements": {str(k): str(v) for k, v in actual["statements"].items()},
                       "expected_lines": {str(k): {n: str(a) for n, a in v.items()} for k, v in expected.lines.items()}},
                      indent=1)

