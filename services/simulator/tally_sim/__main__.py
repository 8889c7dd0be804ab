"""Tally's traffic simulator.

    python -m tally_sim run --impressions 20000 --rate 5000          # a past month, then the expected totals
    python -m tally_sim run --late-io 1 --ivt-reports 4              # ... with a late IO and vendors' IVT reports
    python -m tally_sim live --rate 200                               # traffic now, until stopped
    python -m tally_sim live --run-id '' --rate 50                   # the demo's: reuses its contracts after a restart
    python -m tally_sim expected --record .state/sim/record.jsonl     # recompute what should be billed

Contracts are created through the contracts API (drafted by an ops user, approved by a different
approver, plus finance when the policy asks); events go through the ingest API (batches and
partner postbacks). Every event sent is appended to the record, and so are a late IO's approval
and every IVT report posted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import aiohttp

from tally_kit.auth import ensure_local_secret
from tally_kit.clock import wait_or_stop

from .client import ContractsClient, Http, IngestClient
from .expected import recompute
from .run import (
    Tokens,
    approve_late,
    create_contracts,
    plan_ivt_reports,
    post_ivt_reports,
    read_record,
    send,
    split_for_late_io,
    summary,
    wait_metered,
    write_header,
)
from .scenario import build, live_scenario, previous_month
from .traffic import LiveTraffic, TrafficMix, generate


def _progress(sent: int, total: int, elapsed: float) -> None:
    rate = sent / elapsed if elapsed > 0 else 0
    bar = "#" * int(30 * sent / max(total, 1))
    print(f"\r[{bar:<30}] {sent}/{total} events  {rate:,.0f}/s", end="", flush=True, file=sys.stderr)


async def cmd_run(args: argparse.Namespace) -> int:
    tokens = Tokens.mint(os.environ.get("TALLY_JWT_SECRET") or ensure_local_secret())
    month = date.fromisoformat(args.month + "-01") if args.month else previous_month(datetime.now(UTC).date())
    scenario = build(args.seed, month, args.run_id or f"sim{uuid.uuid4().hex[:6]}")
    events = generate(scenario, TrafficMix(impressions=args.impressions))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        contracts = ContractsClient(Http(session, args.contracts_url, tokens.ops), tokens.approver, tokens.finance)
        live = await create_contracts(scenario, contracts, late_io=args.late_io)
        write_header(args.record, scenario, live)
        late = [lc.contract_id for lc in live if lc.late_io]
        print(f"created {len(live)} contracts for {month:%Y-%m} (run {scenario.run_id}); sending {len(events)} events"
              + (f"; {', '.join(late)} drafted, approved after about half of them" if late else ""), file=sys.stderr)
        ingest = IngestClient(Http(session, args.ingest_url, tokens.ingest))
        before, after = split_for_late_io(events, live)
        await send(before, ingest, tokens, record=args.record, rate_per_s=args.rate, progress=_progress)
        if late:
            await approve_late(live, contracts, record=args.record)
            print(f"\napproved {', '.join(late)}", file=sys.stderr)
            await send(after, ingest, tokens, record=args.record, rate_per_s=args.rate, progress=_progress)
        if args.ivt_reports:
            reports = plan_ivt_reports(live, events, args.ivt_reports, seed=scenario.seed, run_id=scenario.run_id)
            print(f"\nwaiting for metering to count the traffic, then posting {len(reports)} IVT reports", file=sys.stderr)
            await wait_metered(Http(session, args.spend_url, tokens.ops), live, events)
            await post_ivt_reports(reports, ingest, record=args.record)
    print(file=sys.stderr)
    exp = recompute(*read_record(args.record))
    print(f"record: {args.record}\nexpected invoices (advertiser, currency, period, total):\n{summary(exp.invoices)}")
    return 0


async def cmd_live(args: argparse.Namespace) -> int:
    tokens = Tokens.mint(os.environ.get("TALLY_JWT_SECRET") or ensure_local_secret())
    run_id = f"live{uuid.uuid4().hex[:6]}" if args.run_id is None else args.run_id
    scenario = live_scenario(args.seed, datetime.now(UTC), run_id)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        contracts = ContractsClient(Http(session, args.contracts_url, tokens.ops), tokens.approver, tokens.finance)
        await contracts.http.call("GET", "/readyz", attempts=240)  # under a supervisor, it may start first
        live = await create_contracts(scenario, contracts, reuse=True)
        write_header(args.record, scenario, live, keep_same=True)
        print(f"live traffic for {len(live)} contracts (run {scenario.run_id or 'demo'}) at ~{args.rate}/s", flush=True)
        for c, lc in zip(scenario.contracts, live, strict=True):
            print(f"  {lc.contract_id}  {c.name}  ({c.advertiser_id})", flush=True)
        ingest = IngestClient(Http(session, args.ingest_url, tokens.ingest))
        traffic = LiveTraffic(scenario, TrafficMix(), session=uuid.uuid4().hex[:8])
        sent = 0
        while not stop.is_set():
            started = time.monotonic()
            events = traffic.tick(max(1, args.rate), datetime.now(UTC))
            await send(events, ingest, tokens, record=args.record)
            sent += len(events)
            if sent % (args.rate * 30) < len(events):
                print(f"sent {sent} events", flush=True)
            await wait_or_stop(stop, max(0.0, 1.0 - (time.monotonic() - started)))
    return 0


def cmd_expected(args: argparse.Namespace) -> int:
    contracts, events = read_record(args.record)
    exp = recompute(contracts, events)
    print(f"invoices:\n{summary(exp.invoices)}\npayouts:\n{summary(exp.payouts)}")
    return 0


def _count(raw: str) -> int:
    n = int(raw)
    if n < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tally_sim", description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("run", "live"):
        p = sub.add_parser(name)
        p.add_argument("--contracts-url", default=os.environ.get("TALLY_SIM_CONTRACTS_URL", "http://127.0.0.1:8081"))
        p.add_argument("--ingest-url", default=os.environ.get("TALLY_SIM_INGEST_URL", "http://127.0.0.1:8082"))
        p.add_argument("--seed", type=int, default=7)
        p.add_argument("--run-id", default=None,
                       help="prefix of every id (default: random; '' = none, as the demo: the console's tenants)")
        p.add_argument("--record", type=Path, default=Path(os.environ.get("TALLY_STATE_DIR", ".state")) / "sim" / f"{name}.jsonl")
    run = sub.choices["run"]
    run.add_argument("--month", help="YYYY-MM of the simulated billing month (default: last month)")
    run.add_argument("--impressions", type=int, default=20_000)
    run.add_argument("--rate", type=float, default=None, help="events per second (default: as fast as accepted)")
    run.add_argument("--late-io", type=_count, default=0, metavar="N",
                     help="the first N CPM contracts are drafted first and approved after about half of the traffic")
    run.add_argument("--ivt-reports", type=_count, default=0, metavar="N",
                     help="after the traffic, post N IVT reports (CPM campaign-days, half of a day's valid impressions)")
    run.add_argument("--spend-url", default=os.environ.get("TALLY_SIM_SPEND_URL", "http://127.0.0.1:8083"),
                     help="the spend API, read before IVT reports (they must not precede what they report on)")
    sub.choices["live"].add_argument("--rate", type=int, default=100, help="impressions per second")
    exp = sub.add_parser("expected")
    exp.add_argument("--record", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.cmd == "expected":
        return cmd_expected(args)
    return asyncio.run(cmd_run(args) if args.cmd == "run" else cmd_live(args))


if __name__ == "__main__":
    sys.exit(main())
