"""A small process supervisor for `make demo` and the end-to-end tests.

It starts every process named in a Procfile (``name: command``; ``$VARS`` are expanded from the
environment and a leading ``python`` is the supervisor's own interpreter), writes each one's output to
``.state/logs/<name>.log`` and its pid to ``.state/run/<name>.pid``, and restarts any that exits
(after a short, growing back-off, capped). SIGTERM or SIGINT stops the children (TERM, then KILL
after a grace period) and then the supervisor. ``--once NAME`` style control is done through
signals and pid files, so a chaos driver can SIGKILL a service and watch it come back.

    python deploy/bin/supervise.py deploy/Procfile            # foreground
    python deploy/bin/supervise.py deploy/Procfile --only contracts metering
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("TALLY_STATE_DIR", ROOT / ".state"))
BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)
STOP_GRACE_S = 10.0


@dataclass
class Proc:
    name: str
    command: str
    restarts: int = 0
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    history: list[int] = field(default_factory=list)


def read_procfile(path: Path, only: list[str] | None) -> list[Proc]:
    procs = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, command = line.partition(":")
        name = name.strip()
        command = os.path.expandvars(command.strip())
        if command.split(maxsplit=1)[0] == "python":  # the supervisor's own interpreter (.venv's)
            command = shlex.join([sys.executable]) + command[len("python"):]
        if only and name not in only:
            continue
        procs.append(Proc(name, command.strip()))
    if only:
        missing = set(only) - {p.name for p in procs}
        if missing:
            raise SystemExit(f"not in {path}: {sorted(missing)}")
    return procs


def log_line(msg: str) -> None:
    print(f"[supervise {time.strftime('%H:%M:%S')}] {msg}", flush=True)


async def run_one(proc: Proc, stopping: asyncio.Event) -> None:
    logs = STATE / "logs"
    run = STATE / "run"
    logs.mkdir(parents=True, exist_ok=True)
    run.mkdir(parents=True, exist_ok=True)
    pidfile = run / f"{proc.name}.pid"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    while not stopping.is_set():
        with open(logs / f"{proc.name}.log", "ab") as out:
            proc.process = await asyncio.create_subprocess_exec(
                *shlex.split(proc.command), cwd=ROOT, env=env, stdout=out, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        proc.started_at = time.monotonic()
        pidfile.write_text(str(proc.process.pid))
        log_line(f"{proc.name} started (pid {proc.process.pid})")
        code = await proc.process.wait()
        proc.history.append(code)
        if stopping.is_set():
            break
        # A process that ran for a while gets a fresh back-off; a crash loop slows down.
        if time.monotonic() - proc.started_at > 30:
            proc.restarts = 0
        delay = BACKOFF_S[min(proc.restarts, len(BACKOFF_S) - 1)]
        proc.restarts += 1
        log_line(f"{proc.name} exited with {code}; restarting in {delay}s")
        try:
            await asyncio.wait_for(stopping.wait(), timeout=delay)
        except TimeoutError:
            pass
    pidfile.unlink(missing_ok=True)


async def stop_all(procs: list[Proc]) -> None:
    live = [p.process for p in procs if p.process is not None and p.process.returncode is None]
    for pr in live:
        try:
            os.killpg(pr.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + STOP_GRACE_S
    for pr in live:
        try:
            await asyncio.wait_for(pr.wait(), timeout=max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            try:
                os.killpg(pr.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await pr.wait()


async def main_async(procfile: Path, only: list[str] | None) -> int:
    procs = read_procfile(procfile, only)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    (STATE / "run").mkdir(parents=True, exist_ok=True)
    (STATE / "run" / "supervisor.pid").write_text(str(os.getpid()))
    tasks = [asyncio.create_task(run_one(p, stopping)) for p in procs]
    await stopping.wait()
    log_line("stopping")
    await stop_all(procs)
    await asyncio.gather(*tasks, return_exceptions=True)
    (STATE / "run" / "supervisor.pid").unlink(missing_ok=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("procfile", type=Path)
    ap.add_argument("--only", nargs="*", help="run only these process names")
    args = ap.parse_args()
    return asyncio.run(main_async(args.procfile, args.only))


if __name__ == "__main__":
    sys.exit(main())
