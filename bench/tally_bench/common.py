"""What every benchmark shares: figures and their statistics, the machine, service processes.

A figure is a list of per-run values (at least three for a real measurement); the table shows
the median with the min and max. A figure that could not be measured carries the reason
instead of values, and the table says "not measured: <reason>" — never a number.
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results"
LOGS = RESULTS / "logs"
BOOTSTRAP = os.environ.get("TALLY_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
PG_PORT = os.environ.get("TALLY_PG_PORT", "5433")
BENCH_PREFIX = "bench-"


class NotMeasured(Exception):
    """A benchmark that cannot run here and now; the message is the reason the table prints."""


@dataclass
class Target:
    """A target a figure's median must meet: ``op`` is ``>=`` or ``<``."""

    op: str
    value: float
    text: str

    def met(self, median: float) -> bool:
        return median >= self.value if self.op == ">=" else median < self.value


@dataclass
class Figure:
    key: str
    section: str
    label: str
    unit: str
    values: list[float] = field(default_factory=list)
    target: Target | None = None
    note: str = ""
    not_measured: str | None = None

    @property
    def measured(self) -> bool:
        return self.not_measured is None and bool(self.values)

    def summary(self) -> dict[str, float] | None:
        if not self.measured:
            return None
        return {"median": statistics.median(self.values), "min": min(self.values), "max": max(self.values)}

    def to_json(self) -> dict[str, Any]:
        s = self.summary()
        out: dict[str, Any] = {
            "key": self.key, "section": self.section, "label": self.label, "unit": self.unit,
            "runs": self.values, "note": self.note,
        }
        if s is None:
            out["not_measured"] = self.not_measured or "no run completed"
        else:
            out.update(s)
        if self.target is not None:
            out["target"] = self.target.text
            out["target_met"] = None if s is None else self.target.met(s["median"])
        return out


class Report:
    """Every figure of one ``make bench`` run, in the order they were declared."""

    def __init__(self) -> None:
        self.figures: dict[str, Figure] = {}
        self.profiles: dict[str, str] = {}
        self.started = datetime.now(UTC)
        self.load_at_start = [round(x, 2) for x in os.getloadavg()]

    def figure(self, key: str, section: str, label: str, unit: str, *, target: Target | None = None, note: str = "") -> Figure:
        if key not in self.figures:
            self.figures[key] = Figure(key, section, label, unit, target=target, note=note)
        return self.figures[key]

    def add(self, key: str, value: float) -> None:
        f = self.figures[key]
        if f.not_measured is not None:  # an earlier run failed, a later one worked: keep why in the note
            f.note = (f.note + "; " if f.note else "") + f"a run failed: {f.not_measured}"
            f.not_measured = None
        f.values.append(value)

    def not_measured(self, keys: Sequence[str], reason: str) -> None:
        for k in keys:
            f = self.figures[k]
            if not f.values:
                f.not_measured = reason
            elif len(f.values) < 3 and f.not_measured is None:
                f.note = (f.note + "; " if f.note else "") + f"only {len(f.values)} run(s): {reason}"

    def to_json(self, config: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "started": self.started.isoformat(), "finished": datetime.now(UTC).isoformat(),
            "machine": {**machine(), "loadavg_at_start": self.load_at_start}, "config": dict(config),
            "caveat": "the machine is shared: other processes (other engineers' tests, the broker, PostgreSQL) may have "
                      "been running; load averages at start and end are recorded",
            "figures": [f.to_json() for f in self.figures.values()],
            "profiles": self.profiles,
        }


def fmt(value: float, unit: str) -> str:
    if unit in ("records/s", "events/s", "impressions/s", "conversions/s", "requests/s", "flows/s", "MB/s"):
        return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"
    if unit == "ratio":
        return f"{value:.2f}x"
    if unit in ("ms",):
        return f"{value:,.1f}"
    if unit in ("s",):
        return f"{value:,.2f}"
    if unit in ("MiB",):
        return f"{value:,.2f}"
    return f"{value:,.1f}"


def table(report: Report) -> str:
    lines: list[str] = []
    section = ""
    head = f"{'figure':<58} {'median':>14} {'min':>12} {'max':>12}  {'unit':<14} target"
    lines.append(head)
    lines.append("-" * len(head))
    for f in report.figures.values():
        if f.section != section:
            section = f.section
            lines.append(f"[{section}]")
        s = f.summary()
        label = f"  {f.label}"
        if s is None:
            lines.append(f"{label:<58} not measured: {f.not_measured or 'no run completed'}")
            continue
        target = ""
        if f.target is not None:
            target = f"{f.target.text} {'MET' if f.target.met(s['median']) else 'MISSED'}"
        runs = f" (n={len(f.values)})" if len(f.values) != 3 else ""
        lines.append(f"{label:<58} {fmt(s['median'], f.unit):>14} {fmt(s['min'], f.unit):>12} "
                     f"{fmt(s['max'], f.unit):>12}  {f.unit + runs:<14} {target}")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    load = os.getloadavg()
    return {
        "nproc": os.cpu_count(), "cpu_model": model, "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(), "kernel": platform.release(),
        "loadavg_at_end": [round(x, 2) for x in load],
    }


def unique(name: str) -> str:
    return f"{BENCH_PREFIX}{uuid.uuid4().hex[:10]}-{name}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, min(len(sorted_values), int(-(-pct * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


def wait_until(what: str, check: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout_s:.0f}s")
        time.sleep(interval_s)


def bench_secret() -> str:
    """One JWT secret for every service this run starts (never the developer's local one)."""
    global _SECRET
    if _SECRET is None:
        _SECRET = secrets.token_hex(32)
    return _SECRET


_SECRET: str | None = None


def token(sub: str, roles: Sequence[str], tenant_type: str | None = None, tenant_id: str | None = None) -> str:
    from tally_kit.auth import mint_token

    return mint_token(bench_secret(), sub, list(roles), tenant_type=tenant_type, tenant_id=tenant_id)


def module_available(module: str) -> str | None:
    """None when ``python -m module`` can run, else why not."""
    probe = subprocess.run([sys.executable, "-c", f"import importlib.util as u, sys; sys.exit(0 if u.find_spec({module!r}) else 3)"],
                           capture_output=True, text=True, timeout=60, cwd=ROOT)
    if probe.returncode == 3:
        return f"{module} is not on main yet (python -m {module} cannot be found)"
    if probe.returncode != 0:
        return f"{module} does not import: {probe.stderr.strip().splitlines()[-1:]}"
    return None


def validate_settings(module: str, env: Mapping[str, str]) -> str | None:
    """Run ``python -m module --validate`` with ``env``; None when the settings are accepted."""
    full = {**os.environ, **env}
    try:
        res = subprocess.run([sys.executable, "-m", module, "--validate"], env=full, capture_output=True, text=True,
                             timeout=60, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return f"{module} --validate did not answer within 60 s"
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
        return f"{module} --validate failed: {' | '.join(tail)}"
    return None


def migrate(module: str, env: Mapping[str, str]) -> None:
    """Run ``python -m module migrate`` with ``env`` (the kit's migrations, then the service's); NotMeasured if it fails."""
    res = subprocess.run([sys.executable, "-m", module, "migrate"], env={**os.environ, **env}, capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    if res.returncode != 0:
        raise NotMeasured(f"{module} migrate failed: {(res.stderr or res.stdout).strip().splitlines()[-1:]}")


class Service:
    """``python -m <module>`` as a child process with its settings in the environment."""

    def __init__(self, name: str, module: str, env: Mapping[str, str], *, args: Sequence[str] = ()) -> None:
        self.name = name
        self.module = module
        self.env = {**os.environ, "TALLY_JWT_SECRET": bench_secret(), "TALLY_KAFKA_BOOTSTRAP": BOOTSTRAP,
                    "PYTHONUNBUFFERED": "1", **env}
        self.args = list(args)
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log_path = LOGS / f"{name}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:4]}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", self.module, *self.args], env=self.env, cwd=ROOT,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(t[-300:] for t in text[-lines:])

    def wait_http(self, port: int, path: str, timeout_s: float = 60.0, expect: int = 200) -> None:
        """Poll ``http://127.0.0.1:<port><path>`` until it answers ``expect``; fail early if the process died."""
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            if not self.alive():
                raise NotMeasured(f"{self.module} exited with {self.proc.returncode if self.proc else '?'} "
                                  f"during start-up: {self.log_tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", path)
                status = conn.getresponse().status
                conn.close()
                if status == expect:
                    return
                last = f"HTTP {status}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise NotMeasured(f"{self.module} not ready at 127.0.0.1:{port}{path} within {timeout_s:.0f}s ({last}): "
                          f"{self.log_tail()}")

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def pg_dsn(database: str) -> str:
    return f"postgresql://tally:tally@127.0.0.1:{PG_PORT}/{database}"


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


class Profiler:
    """``py-spy record`` attached to a running process; ``summary()`` lists where the samples fell.

    Used by ``--profile`` runs only (py-spy is a tool, not an import: ``pip install py-spy``).
    Raw (collapsed-stack) output goes to ``results/profiles/<name>.txt``.
    """

    def __init__(self, pid: int, name: str, seconds: float) -> None:
        exe = Path(sys.executable).with_name("py-spy")
        self.path = RESULTS / "profiles" / f"{name}-{datetime.now(UTC):%Y%m%dT%H%M%S}.txt"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        if not exe.exists():
            self.error = "py-spy is not installed in .venv (pip install py-spy)"
            return
        self.error = ""
        self.proc = subprocess.Popen([str(exe), "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200",
                                      "--nonblocking", "--format", "raw", "--output", str(self.path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def finish(self, timeout_s: float = 60) -> None:
        if self.proc is None:
            return
        try:
            _, err = self.proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGINT)
            _, err = self.proc.communicate(timeout=30)
        if not self.path.exists():
            self.error = f"py-spy wrote nothing: {err.decode(errors='replace').strip()[-300:]}"

    def summary(self, top: int = 12) -> str:
        if self.error:
            return self.error
        self_time: dict[str, int] = {}
        inclusive: dict[str, int] = {}
        total = 0
        for line in self.path.read_text(errors="replace").splitlines():
            stack, _, n = line.rpartition(" ")
            if not stack or not n.isdigit():
                continue
            count = int(n)
            total += count
            frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")" if " (" in f else f
                      for f in stack.split(";")]
            self_time[frames[-1]] = self_time.get(frames[-1], 0) + count
            for f in set(frames):
                inclusive[f] = inclusive.get(f, 0) + count
        if not total:
            return "no samples"
        lines = [f"{total} samples; self time (where the CPU was):"]
        lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in sorted(self_time.items(), key=lambda x: -x[1])[:top]]
        lines.append("inclusive (a function and what it calls):")
        lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in sorted(inclusive.items(), key=lambda x: -x[1])[:top]
                  if not f.startswith(("<module>", "_run_module_as_main", "_run_code", "run (threading", "_bootstrap"))]
        return "\n".join(lines)


def markdown(data: dict[str, Any]) -> str:
    """The figures of a results file as a Markdown table (for the README)."""
    m = data["machine"]
    out = [f"Run started {data['started'][:16].replace('T', ' ')} UTC on {m['nproc']} cores ({m['cpu_model']}), "
           f"{m['memory_gib']} GiB, Python {m['python']}; load average {m.get('loadavg_at_start')} at start, "
           f"{m['loadavg_at_end']} at the end; {data['config'].get('wall_s', '?')} s in all.",
           "", "| figure | median | min | max | unit | target |", "| --- | ---: | ---: | ---: | --- | --- |"]
    section = ""
    for f in data["figures"]:
        if f["section"] != section:
            section = f["section"]
            out.append(f"| **{section}** | | | | | |")
        if "median" not in f:
            out.append(f"| {f['label']} | not measured: {f['not_measured']} | | | | {f.get('target', '')} |")
            continue
        met = f.get("target_met")
        target = f"{f['target']} {'met' if met else '**missed**'}" if "target" in f else ""
        out.append(f"| {f['label']} | {fmt(f['median'], f['unit'])} | {fmt(f['min'], f['unit'])} | "
                   f"{fmt(f['max'], f['unit'])} | {f['unit']} | {target} |")
    return "\n".join(out)


# --- readers of a bench-run process: its /metrics, its RSS and its CPU seconds

def metric(port: int, name: str, labels: str = "") -> float | None:
    """The sum of the samples of ``name`` on ``/metrics`` whose labels include ``labels`` (e.g.
    ``outcome="uncovered"``); None while the endpoint does not answer. Event counts, not money."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
    except OSError:
        return None
    want = dict(kv.split("=", 1) for kv in labels.split(",") if kv)
    values = [s.value for family in text_string_to_metric_families(text) for s in family.samples
              if s.name == name and all(f'"{s.labels.get(k)}"' == v for k, v in want.items())]
    return sum(values) if values else None


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise NotMeasured("no VmRSS in /proc/<pid>/status")


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread) the process has used: with the wall-clock rate
    it gives a rate per CPU-second, which the other loads of a shared machine do not move."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS
