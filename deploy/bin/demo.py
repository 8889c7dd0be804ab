"""``make demo`` and the supervisor half of ``make down``.

    python deploy/bin/demo.py up       # start deploy/Procfile.demo under the supervisor, wait, print
    python deploy/bin/demo.py status   # which demo processes run
    python deploy/bin/demo.py down     # stop the supervisor and every process it runs

``up`` expects Kafka and PostgreSQL up with topics and migrations (``make up``). It starts
``deploy/bin/supervise.py deploy/Procfile.demo`` in the background (it restarts any process that
exits), waits until every HTTP service answers ``/readyz`` and the simulator has its demo
contracts through the contracts API, then prints the URLs and a ready token per role (also
written to ``$TALLY_STATE_DIR/demo/tokens.env``) and returns; everything keeps running until
``make down``. Logs: ``$TALLY_STATE_DIR/logs/<process>.log``.

``down`` and ``status`` use only the standard library, so ``make down`` works without ``.venv``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("TALLY_STATE_DIR", ROOT / ".state"))
RUN, LOGS = STATE / "run", STATE / "logs"
PROCFILE = ROOT / "deploy" / "Procfile.demo"
#: pacing and Prometheus, added when TALLY_DEMO_PACING is true (`make demo` sets it); the processes
#: run are then those of RUN / "Procfile", written at `up`
EXTRAS = ROOT / "deploy" / "Procfile.demo-observability"

#: the HTTP processes: (Procfile name, what, port setting, default port)
HTTP = (
    ("console", "console (web app + API gateway)", "TALLY_CONSOLE_PORT", 8080),
    ("contracts", "contracts API", "TALLY_CONTRACTS_PORT", 8081),
    ("ingest", "attribution ingest API", "TALLY_ATTRIBUTION_PORT", 8082),
    ("spend", "metering spend API", "TALLY_METERING_PORT", 8083),
    ("invoicing", "invoicing API", "TALLY_INVOICING_PORT", 8084),
)
#: the HTTP process of the extras
PACING_HTTP = ("pacing", "pacing API (faust worker)", "TALLY_PACING_PORT", 8085)
#: settings the demo gives its processes unless the caller's environment sets them
DEFAULTS = {
    "TALLY_CONSOLE_DEMO": "true",  # the console's one-click users per role
    "TALLY_DEMO_RATE": "50",  # simulated impressions per second
    "TALLY_METERING_METRICS_PORT": "9183",  # the worker's own /metrics (the processor's is on 9182)
}
#: one ready token per role; the tenants are the demo data's (the simulator's `--run-id ''`)
ROLES: tuple[tuple[str, str, tuple[str, ...], str | None, str | None], ...] = (
    ("admin", "demo-admin", ("admin",), None, None),
    ("ops", "demo-ops", ("ops",), None, None),
    ("approver", "demo-approver", ("approver",), None, None),
    ("finance", "demo-finance", ("finance",), None, None),
    ("advertiser", "demo-acme", ("advertiser",), "advertiser", "adv-acme"),
    ("partner", "demo-streamly", ("partner",), "partner", "ptn-streamly"),
    ("ingest", "demo-ad-server", ("ingest",), None, None),
)
TOKEN_TTL_S = 12 * 3600
#: display names of the simulator's demo advertisers and partners (scenario.py, `--run-id ''`), named
#: through the contracts API's party registry so the console shows "Acme Corp (adv-acme)"
DEMO_PARTIES: tuple[tuple[str, str, str], ...] = (
    ("advertiser", "adv-acme", "Acme Corp"),
    ("advertiser", "adv-bier", "Bier & Co. Brauerei"),
    ("advertiser", "adv-kaze", "Kaze Electronics"),
    ("advertiser", "adv-globex", "Globex"),
    ("partner", "ptn-streamly", "Streamly"),
    ("partner", "ptn-castly", "Castly"),
)


def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def port(setting: str, default: int) -> int:
    return int(os.environ.get(setting, default))


def url(name: str) -> str:
    for n, _, setting, default in (*HTTP, PACING_HTTP):
        if n == name:
            return f"http://127.0.0.1:{port(setting, default)}"
    raise KeyError(name)


def read_pid(name: str) -> int | None:
    try:
        pid = int((RUN / f"{name}.pid").read_text())
    except (FileNotFoundError, ValueError):
        return None
    return pid if running(pid) else None


def running(pid: int) -> bool:
    """Alive and not a zombie (a detached supervisor's parent may be slow to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def with_extras() -> bool:
    return os.environ.get("TALLY_DEMO_PACING", "").strip().lower() in {"1", "true", "yes", "on"}


def active_procfile() -> Path:
    """The Procfile the supervisor runs: the demo's own, or the one `up` wrote with the extras."""
    written = RUN / "Procfile"
    return written if written.exists() else PROCFILE


def write_procfile() -> Path:
    if not with_extras():
        (RUN / "Procfile").unlink(missing_ok=True)
        return PROCFILE
    RUN.mkdir(parents=True, exist_ok=True)
    out = RUN / "Procfile"
    out.write_text(PROCFILE.read_text() + EXTRAS.read_text())
    return out


def http_processes() -> tuple[tuple[str, str, str, int], ...]:
    return (*HTTP, PACING_HTTP) if active_procfile() != PROCFILE else HTTP


def procfile_names() -> list[str]:
    return [line.split(":", 1)[0].strip() for line in active_procfile().read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


# ---------------------------------------------------------------------------------- down
def down(timeout_s: float = 60.0) -> int:
    """TERM the supervisor (it stops its children, TERM then KILL); then make sure no process it
    ran is left, e.g. when the supervisor itself had been killed."""
    sup = read_pid("supervisor")
    if sup is not None:
        say(f"stopping the supervisor (pid {sup}) and its processes")
        os.kill(sup, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while running(sup) and time.monotonic() < deadline:
            time.sleep(0.2)
        if running(sup):
            say("the supervisor did not stop in time; killing it")
            os.kill(sup, signal.SIGKILL)
            (RUN / "supervisor.pid").unlink(missing_ok=True)
    left = 0
    for name in procfile_names():
        pid = read_pid(name)
        if pid is None:
            (RUN / f"{name}.pid").unlink(missing_ok=True)
            continue
        left += 1
        say(f"{name} (pid {pid}) outlived its supervisor; killing its process group")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        (RUN / f"{name}.pid").unlink(missing_ok=True)
    (RUN / "Procfile").unlink(missing_ok=True)
    if sup is None and not left:
        say("no demo processes were running")
    return 0


def status() -> int:
    sup = read_pid("supervisor")
    print(f"supervisor   {'up    pid ' + str(sup) if sup else 'down'}")
    for name in procfile_names():
        pid = read_pid(name)
        print(f"{name:<12} {'up    pid ' + str(pid) if pid else 'down'}")
    return 0


# ---------------------------------------------------------------------------------- up
def _get(u: str, token: str | None = None, timeout: float = 3.0) -> tuple[int, Any]:
    req = urllib.request.Request(u, headers={"Authorization": f"Bearer {token}"} if token else {})  # noqa: S310 - local URLs we built
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - local URLs we built
            body = resp.read()
            return resp.status, json.loads(body) if body[:1] in (b"{", b"[") else body
    except urllib.error.HTTPError as err:
        return err.code, None
    except (OSError, ValueError):
        return 0, None


def _put(u: str, token: str, body: Any, timeout: float = 3.0) -> int:
    req = urllib.request.Request(u, data=json.dumps(body).encode(), method="PUT",  # noqa: S310 - local URLs we built
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - local URLs we built
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


def name_parties(admin_token: str) -> None:
    """Give the demo's advertisers and partners their display names (a PUT is safe to repeat)."""
    failed = [pid for kind, pid, name in DEMO_PARTIES
              if _put(f"{url('contracts')}/parties/{kind}/{pid}", admin_token, {"name": name}) not in (200, 201)]
    if failed:
        say(f"could not name the demo parties {', '.join(failed)}: the console shows their ids alone")


def _wait(what: str, check: Any, timeout_s: float, supervisor: subprocess.Popen[bytes]) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        if supervisor.poll() is not None:
            raise SystemExit(f"[demo] the supervisor exited ({supervisor.returncode}); see {LOGS}/supervisor.log")
        if time.monotonic() > deadline:
            raise SystemExit(f"[demo] gave up after {timeout_s:.0f}s waiting for {what}; logs in {LOGS}/ "
                             "(the demo keeps running: `make down` stops it)")
        time.sleep(0.5)


def tokens() -> dict[str, str]:
    from tally_kit.auth import ensure_local_secret, mint_token

    secret = os.environ.get("TALLY_JWT_SECRET") or ensure_local_secret()
    return {role: mint_token(secret, sub, roles, tenant_type=tt, tenant_id=tid, ttl_s=TOKEN_TTL_S)
            for role, sub, roles, tt, tid in ROLES}


def up(ready_timeout_s: float) -> int:
    if read_pid("supervisor") is not None:
        say("the demo is already running (`make down` stops it); here is how to reach it")
        return print_ready(tokens(), None)
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    # the console and the simulator follow the services' ports, whatever they are set to
    for console_name, proc in (("contracts", "contracts"), ("attribution", "ingest"), ("metering", "spend"),
                               ("invoicing", "invoicing"), ("pacing", "pacing")):
        os.environ.setdefault(f"TALLY_CONSOLE_{console_name.upper()}_URL", url(proc))
    os.environ.setdefault("TALLY_SIM_CONTRACTS_URL", url("contracts"))
    os.environ.setdefault("TALLY_SIM_INGEST_URL", url("ingest"))
    LOGS.mkdir(parents=True, exist_ok=True)
    procfile = write_procfile()
    say(f"starting {', '.join(procfile_names())} under deploy/bin/supervise.py")
    supervisor = subprocess.Popen(
        [sys.executable, str(ROOT / "deploy/bin/supervise.py"), str(procfile)], cwd=ROOT,
        stdout=(LOGS / "supervisor.log").open("ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,  # it outlives `make demo`; `make down` stops it
    )
    for name, what, _, _ in http_processes():
        _wait(f"{what} at {url(name)}/readyz", lambda n=name: _get(f"{url(n)}/readyz")[0] == 200, ready_timeout_s,
              supervisor)
        say(f"ready: {what} {url(name)}")
    toks = tokens()
    name_parties(toks["admin"])

    def seeded() -> list[dict[str, Any]] | None:
        code, page = _get(f"{url('contracts')}/contracts?limit=100&effective_on={time.strftime('%Y-%m-%d', time.gmtime())}",
                          toks["ops"])
        items = page.get("items", []) if code == 200 and isinstance(page, dict) else []
        demo = [c for c in items if c.get("advertiser_id", "").startswith("adv-") and c.get("status") == "active"]
        return demo if len(demo) >= 4 else None

    contracts = _wait("the simulator's demo contracts (drafted by ops, approved by an approver)", seeded,
                      ready_timeout_s, supervisor)
    say(f"demo data: {len(contracts)} active contracts; the simulator sends "
        f"~{os.environ['TALLY_DEMO_RATE']} impressions/s with conversions, duplicates and IVT")
    return print_ready(toks, contracts)


def print_ready(toks: dict[str, str], contracts: list[dict[str, Any]] | None) -> int:
    out = STATE / "demo" / "tokens.env"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"TALLY_TOKEN_{r.upper()}={t}\n" for r, t in toks.items()))
    out.chmod(0o600)
    lines = ["", "Tally is running (`make down` stops everything; `make logs` follows every log).", ""]
    lines += [f"  {what:<34} {url(name)}" for name, what, _, _ in http_processes()]
    lines += [f"  {'Kafka':<34} {os.environ.get('TALLY_KAFKA_BOOTSTRAP', '127.0.0.1:9092')}",
              f"  {'PostgreSQL':<34} 127.0.0.1:{os.environ.get('TALLY_PG_PORT', '5433')} (tally / tally)",
              f"  {'metrics':<34} each API's /metrics; attribution processor :9182, metering worker "
              f":{os.environ.get('TALLY_METERING_METRICS_PORT', '9183')}",
              f"  {'logs':<34} {LOGS}/<process>.log (supervisor.log: starts and restarts)", ""]
    if active_procfile() != PROCFILE:
        lines[-1:-1] = [f"  {'Prometheus (deploy/prometheus)':<34} "
                        f"http://127.0.0.1:{os.environ.get('TALLY_PROMETHEUS_PORT', '9090')}"]
    if contracts:
        lines += ["Demo contracts:"] + [f"  {c['id']}  {c['name']}  ({c['advertiser_id']})" for c in contracts] + [""]
    lines += [f"Sign in at {url('console')}/ with a one-click user, or use a ready token "
              f"(valid {TOKEN_TTL_S // 3600} h; also in {out}):", ""]
    for role, sub, _, _, tenant in ROLES:
        lines += [f"  {role} ({sub}{', ' + tenant if tenant else ''}):", f"    {toks[role]}"]
    lines += ["", "For example:",
              f"  curl -H \"Authorization: Bearer $(grep OPS= {out} | cut -d= -f2)\" {url('contracts')}/contracts", ""]
    print("\n".join(lines), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("command", choices=("up", "down", "status"), nargs="?", default="up")
    ap.add_argument("--ready-timeout", type=float, default=float(os.environ.get("TALLY_DEMO_READY_TIMEOUT_S", "180")))
    args = ap.parse_args(argv)
    if args.command == "down":
        return down()
    if args.command == "status":
        return status()
    return up(args.ready_timeout)


if __name__ == "__main__":
    sys.exit(main())
