"""``python -m tally_attribution [ingest|processor|all] [--validate|--settings]``.

``ingest`` serves the HTTP API on ``TALLY_ATTRIBUTION_PORT``; ``processor`` runs the
attribution processor (metrics on ``TALLY_ATTRIBUTION_METRICS_PORT``); ``all`` (the default)
runs both in one process, the processor on a thread, with one ``/metrics``.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from prometheus_client import CollectorRegistry, start_http_server

from tally_kit import logs
from tally_kit.settings import validate_main
from tally_streams.avro import SchemaCatalog

from .ingest import create_ingest_app
from .processor import Processor
from .settings import SPEC


class PathOnlyAccessLogger(AbstractAccessLogger):
    """Access log without query strings: a postback's ``token`` parameter never reaches a log."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(f"{request.method} {request.path} {response.status}",
                         extra={"status": response.status, "duration_s": round(time, 6)})


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    mode = next((a for a in args if not a.startswith("-")), "all")
    if mode not in {"ingest", "processor", "all"}:
        print(f"unknown mode {mode!r}: use ingest, processor or all", file=sys.stderr)
        return 2
    settings = validate_main(SPEC, [a for a in args if a.startswith("-")])
    assert settings is not None
    logs.configure("attribution", settings.log_level)
    catalog = SchemaCatalog.load()
    registry = CollectorRegistry()
    stop = threading.Event()
    failed: list[BaseException] = []

    def run_processor() -> None:
        try:
            Processor(settings, catalog, registry=registry).run(stop)
        except BaseException as exc:
            failed.append(exc)
            raise

    if mode == "processor":
        if settings.attribution_metrics_port:
            start_http_server(settings.attribution_metrics_port, addr=settings.attribution_host, registry=registry)

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        run_processor()
        return 0
    thread = None
    if mode == "all":
        thread = threading.Thread(target=run_processor, name="attribution-processor", daemon=True)
        thread.start()
    app = create_ingest_app(settings, catalog, registry=registry)
    try:
        web.run_app(app, host=settings.attribution_host, port=settings.attribution_port, print=None,
                    access_log_class=PathOnlyAccessLogger)
    finally:
        stop.set()
        if thread is not None:
            thread.join(30)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
