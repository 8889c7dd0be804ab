"""``python -m tally_metering [worker|api]``: the metering worker, the spend API, or both (default).

``python -m tally_metering replay --contract C --period P``: recompute a closed period from the
raw topics and compare it with its closed lines plus adjustments (exit 0 when equal).
``--validate`` checks the settings and exits; ``--settings`` lists them.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

from tally_kit import logs
from tally_kit.clock import clock_from_setting
from tally_kit.settings import validate_main

from .settings import SPEC, MeteringSettings


def run_worker(settings: MeteringSettings, stop: threading.Event) -> None:
    from prometheus_client import start_http_server

    from .metrics import WorkerMetrics
    from .worker import Worker

    metrics = WorkerMetrics()
    if settings.metering_metrics_port:
        start_http_server(settings.metering_metrics_port, addr=settings.metering_host, registry=metrics.registry)
    Worker(settings, clock_from_setting(settings.metering_clock_file or None), metrics=metrics).run(stop)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["replay"]:
        import argparse

        from .replay import run_replay

        ap = argparse.ArgumentParser(prog="tally_metering replay", description="recompute a closed period from the raw topics")
        ap.add_argument("--contract", required=True)
        ap.add_argument("--period", required=True, help="period key, e.g. 2026-03 or 2026-W10")
        ns = ap.parse_args(args[1:])
        replay_settings = validate_main(SPEC, [])
        raise SystemExit(run_replay(replay_settings, ns.contract, ns.period))
    settings = validate_main(SPEC, args)
    mode = next((a for a in args if not a.startswith("-")), "all")
    if mode not in {"worker", "api", "all"}:
        print(f"unknown mode {mode!r}: use worker, api or all", file=sys.stderr)
        raise SystemExit(2)
    logs.configure("metering")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if mode == "worker":
        run_worker(settings, stop)
        return
    from .api import serve

    worker: threading.Thread | None = None
    if mode == "all":
        worker = threading.Thread(target=run_worker, args=(settings, stop), name="metering-worker", daemon=True)
        worker.start()
    serve(settings, stop)
    stop.set()
    if worker is not None:
        worker.join(30)


if __name__ == "__main__":
    main()
