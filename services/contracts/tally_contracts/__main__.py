"""``python -m tally_contracts [serve|relay|scheduler|migrate|token|seed] [--validate|--settings]``.

- ``serve`` (default): the API on TALLY_CONTRACTS_PORT, with the scheduler and the relay as
  background tasks unless TALLY_CONTRACTS_RUN_SCHEDULER / _RUN_RELAY are false;
- ``relay``: the outbox relay alone (run one or more; one leads, the others stand by);
- ``scheduler``: the scheduler alone (several replicas are safe);
- ``migrate``: apply services/contracts/migrations to the database;
- ``token``: mint a local token (same flags as ``python -m tally_kit.auth mint``);
- ``seed``: create a few demo contracts through the service layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, start_http_server

from tally_kit import logs
from tally_kit.migrations import migrate
from tally_kit.settings import validate_main

from .settings import SPEC, ContractsSettings

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"
COMMANDS = ("serve", "relay", "scheduler", "migrate", "token", "seed")


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)


async def _relay(settings: ContractsSettings) -> None:
    from .metrics import ContractMetrics
    from .relay import Relay

    registry = CollectorRegistry()
    metrics = ContractMetrics(registry)
    if settings.contracts_metrics_port:
        start_http_server(settings.contracts_metrics_port, addr="127.0.0.1", registry=registry)
    stop = asyncio.Event()
    _stop_on_signals(stop)
    await Relay.from_settings(settings, metrics).run(stop)


async def _scheduler(settings: ContractsSettings) -> None:
    from tally_kit.clock import WallClock
    from tally_kit.db import create_pool
    from tally_streams.avro import SchemaCatalog

    from .bootstrap import bootstrap
    from .metrics import ContractMetrics
    from .scheduler import run_scheduler

    registry = CollectorRegistry()
    metrics = ContractMetrics(registry)
    if settings.contracts_metrics_port:
        start_http_server(settings.contracts_metrics_port, addr="127.0.0.1", registry=registry)
    pool = await create_pool(settings.contracts_database_url, max_size=4)
    service = bootstrap(pool, WallClock(), settings.contracts_approval_policy, SchemaCatalog.load(), metrics)
    stop = asyncio.Event()
    _stop_on_signals(stop)
    try:
        await run_scheduler(service, settings.contracts_scheduler_interval_s, stop)
    finally:
        await pool.close()


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args.pop(0) if args and args[0] in COMMANDS else "serve"
    if command == "token":
        from tally_kit.auth import main as token_main

        return token_main(["mint", *args])
    settings = validate_main(SPEC, args)
    logs.configure("contracts", settings.log_level)
    if command == "migrate":
        applied = asyncio.run(migrate(settings.contracts_database_url, MIGRATIONS))
        print(f"contracts: applied {len(applied)} migration(s)")
        return 0
    if command == "relay":
        asyncio.run(_relay(settings))
        return 0
    if command == "scheduler":
        asyncio.run(_scheduler(settings))
        return 0
    if command == "seed":
        from .seed import seed

        print("\n".join(asyncio.run(seed(settings))))
        return 0
    from .api import build_app

    web.run_app(build_app(settings), host=settings.contracts_host, port=settings.contracts_port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
