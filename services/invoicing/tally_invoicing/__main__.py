"""``python -m tally_invoicing [serve|consume|verify-audit|migrate] [--validate|--settings]``.

- ``serve`` (default): the HTTP API on TALLY_INVOICING_PORT, plus the consumer unless
  TALLY_INVOICING_CONSUME=false;
- ``consume``: the Kafka consumer alone (what the SIGKILL test runs);
- ``verify-audit``: walk the hash-chained audit log (exit 1 at the first broken link);
- ``migrate``: apply the migrations.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from aiohttp import web

from tally_kit import logs
from tally_kit.audit import main as audit_main
from tally_kit.db import create_pool
from tally_kit.migrations import migrate
from tally_kit.settings import validate_main

from .app import MIGRATIONS, build_app, make_consumer
from .settings import SPEC, InvoicingSettings


async def _consume(settings: InvoicingSettings) -> int:
    await migrate(settings.invoicing_database_url, MIGRATIONS)
    pool = await create_pool(settings.invoicing_database_url, max_size=2)
    consumer = make_consumer(settings, pool)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, consumer.stop)
    try:
        await consumer.run()
    finally:
        await pool.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    settings = validate_main(SPEC, args_in)
    logs.configure("invoicing", settings.invoicing_log_level)
    parser = argparse.ArgumentParser(prog="tally_invoicing", description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="cmd")
    sub.add_parser("serve", help="HTTP API (and the consumer unless TALLY_INVOICING_CONSUME=false)")
    sub.add_parser("consume", help="the Kafka consumer alone")
    sub.add_parser("migrate", help="apply the migrations")
    sub.add_parser("verify-audit", help="verify the audit chain")
    args = parser.parse_args(args_in)
    if args.cmd == "consume":
        return asyncio.run(_consume(settings))
    if args.cmd == "migrate":
        applied = asyncio.run(migrate(settings.invoicing_database_url, MIGRATIONS))
        print(f"applied {len(applied)} migration(s)")
        return 0
    if args.cmd == "verify-audit":
        return audit_main(["verify", "--dsn", settings.invoicing_database_url])
    web.run_app(build_app(settings), host=settings.invoicing_host, port=settings.invoicing_port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
