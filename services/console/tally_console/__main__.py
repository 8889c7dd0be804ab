"""``python -m tally_console`` serves the console gateway; ``--validate`` checks the settings."""

from __future__ import annotations

import logging

from aiohttp import web

from tally_kit.auth import TokenVerifier
from tally_kit.logs import configure
from tally_kit.settings import validate_main

from .app import build_app
from .settings import SPEC

log = logging.getLogger("tally.console")


def main() -> None:
    settings = validate_main(SPEC)
    configure("console", settings.console_log_level)
    app = build_app(settings, TokenVerifier.from_env())
    if settings.console_demo:
        log.warning("demo mode is ON: /api/demo/users hands out tokens for every role; never use it in production")
    log.info("console listening", extra={"url": f"http://{settings.console_host}:{settings.console_port}/"})
    web.run_app(app, host=settings.console_host, port=settings.console_port, print=None, access_log=None,
               # a browser closing an event stream cancels the relay, which closes the upstream stream
               handler_cancellation=True)


if __name__ == "__main__":
    main()
