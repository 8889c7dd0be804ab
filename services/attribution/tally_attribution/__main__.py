"""``python -m tally_attribution [ingest|processor|all] [--validate|--settings]``.

``ingest`` serves the HTTP API on ``TALLY_ATTRIBUTION_PORT``; ``processor`` runs the
attribution processor (metrics on ``TALLY_ATTRIBUTION_METRICS_PORT``); ``all`` (the default)
runs both in one process, the processor on a thread, with one ``/metrics``.

With ``TALLY_ATTRIBUTION_INGEST_PROCESSES`` > 1 the process also starts that many minus one
ingest-only children (``ingest --reuse-port``); all bind the port with ``SO_REUSEPORT`` and the
kernel spreads connections over them. The API is stateless, so any process can answer any
request. A child that dies (exit code other than 0) is restarted; the children end with the
parent (also on SIGKILL: ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
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
from .replica import Replica
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
    logs.configure("attribution", settings.log_level)
    catalog = SchemaCatalog.load()
    registry = CollectorRegistry()
    stop = threading.Event()
    failed: list[BaseException] = []

    def run_processor() -> None:
        try:
            Replica(settings, catalog, registry=registry).run(stop)
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
    child_of = _parent_pid(args)
    if child_of is not None:
        _die_with_parent(child_of)
    extra = settings.attribution_ingest_processes - 1 if child_of is None else 0
    children = _IngestChildren(extra) if extra > 0 else None
    app = create_ingest_app(settings, catalog, registry=registry)
    try:
        if children is not None:
            children.start()
        web.run_app(app, host=settings.attribution_host, port=settings.attribution_port, print=None,
                    access_log_class=PathOnlyAccessLogger, reuse_port=children is not None or child_of is not None)
    finally:
        stop.set()
        if children is not None:
            children.stop()
        if thread is not None:
            thread.join(30)
    return 1 if failed else 0


def _parent_pid(args: list[str]) -> int | None:
    """``--reuse-port=<pid>``: this process is an extra ingest process of ``pid``."""
    for a in args:
        if a.startswith("--reuse-port="):
            return int(a.split("=", 1)[1])
    return None


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: SIGTERM when the parent dies, even by SIGKILL
    if os.getppid() != parent:  # it died before prctl took effect
        raise SystemExit(1)


class _IngestChildren:
    """The extra ingest processes: started, restarted when one dies, stopped with the parent."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.procs: list[subprocess.Popen[bytes]] = []
        self._stopping = threading.Event()
        self._log = logging.getLogger("tally.attribution.ingest")

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "tally_attribution", "ingest", f"--reuse-port={os.getpid()}"])

    def start(self) -> None:
        self.procs = [self._spawn() for _ in range(self.count)]
        threading.Thread(target=self._watch, name="ingest-children", daemon=True).start()

    def _watch(self) -> None:
        while not self._stopping.wait(1.0):
            for i, p in enumerate(self.procs):
                # exit code 0: it was asked to stop (SIGTERM/SIGINT, e.g. Ctrl-C reaching the whole group)
                if p.poll() not in (None, 0) and not self._stopping.is_set():
                    self._log.error("ingest process died; restarting it", extra={"pid": p.pid, "code": p.returncode})
                    self.procs[i] = self._spawn()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stopping.set()
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


if __name__ == "__main__":
    sys.exit(main())
