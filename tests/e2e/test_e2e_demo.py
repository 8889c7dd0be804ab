"""`make demo`'s own script (deploy/bin/demo.py) on throwaway topics, databases and ports: every
process starts under the supervisor, the simulator seeds contracts through the API and traffic
reaches the running totals, the ready tokens work per role, crashed processes come back (the
simulator reusing its contracts), and `down` leaves nothing running."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest

from .e2e_stack import PORTS, PY, ROOT, Stack, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

DEMO = ROOT / "deploy" / "bin" / "demo.py"
CONSOLE_PORT = 18080
PROCESSES = ("contracts", "ingest", "attribution", "metering", "spend", "invoicing", "console", "simulator")


def demo_env(stack: Stack) -> dict[str, str]:
    static = stack.tmp / "console-dist"
    static.mkdir(exist_ok=True)
    (static / "index.html").write_text("<!doctype html><title>Tally</title>")
    return {**stack.env(), "TALLY_CONSOLE_PORT": str(CONSOLE_PORT), "TALLY_CONSOLE_STATIC_DIR": str(static),
            "TALLY_METERING_CLOCK_FILE": "",  # the demo runs on the wall clock
            "TALLY_DEMO_RATE": "40", "TALLY_DEMO_READY_TIMEOUT_S": "150"}


def demo(env: dict[str, str], command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, str(DEMO), command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


def _load_demo_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tally_demo_script", DEMO)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: running and not a zombie waiting for its parent (the detached supervisor's is init)
alive = _load_demo_script().running


async def test_make_demo_runs_everything_supervised_with_traffic_and_stops_clean(stack: Stack) -> None:
    env = demo_env(stack)
    try:
        started = demo(env, "up")
        assert started.returncode == 0, started.stdout + started.stderr
        tokens = dict(line.split("=", 1) for line in (stack.state / "demo" / "tokens.env").read_text().split())
        assert set(tokens) == {f"TALLY_TOKEN_{r}" for r in ("ADMIN", "OPS", "APPROVER", "FINANCE", "ADVERTISER",
                                                            "PARTNER", "INGEST")}
        for name, port in (("console", CONSOLE_PORT), *((n, p) for n, p in PORTS.items())):
            assert f"http://127.0.0.1:{port}" in started.stdout, name
        assert tokens["TALLY_TOKEN_OPS"] in started.stdout

        contracts_url = f"http://127.0.0.1:{PORTS['contracts']}"
        spend_url = f"http://127.0.0.1:{PORTS['spend']}"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            async def get(url: str, role: str) -> Any:
                async with http.get(url, headers={"Authorization": f"Bearer {tokens['TALLY_TOKEN_' + role]}"}) as r:
                    assert r.status == 200, (url, role, r.status, await r.text())
                    return await r.json()

            seeded = (await get(f"{contracts_url}/contracts", "OPS"))["items"]
            assert len(seeded) == 4 and {c["status"] for c in seeded} == {"active"}
            mine = (await get(f"{contracts_url}/contracts", "ADVERTISER"))["items"]
            assert [c["advertiser_id"] for c in mine] == ["adv-acme"]  # the advertiser token sees its own only
            acme = mine[0]["id"]

            async def billable() -> int:
                try:
                    items = (await get(f"{spend_url}/v1/spend?contract_id={acme}", "ADVERTISER"))["items"]
                except AssertionError:
                    return 0
                return sum(int(i["counts"]["billable"]) for i in items)  # every period (a flight starts yesterday)

            await wait_until(lambda: _more_than(billable, 0), 90, "simulated impressions in the running totals")

            # crash the simulator and the metering worker: both come back, traffic keeps counting
            before = {p: int((stack.state / "run" / f"{p}.pid").read_text()) for p in ("simulator", "metering")}
            for pid in before.values():
                os.killpg(pid, signal.SIGKILL)
            now = await billable()

            async def restarted() -> bool:
                pids = {p: (stack.state / "run" / f"{p}.pid").read_text() for p in before}
                return all(pids[p] and int(pids[p]) != before[p] for p in before)

            await wait_until(restarted, 30, "the supervisor to restart the simulator and the metering worker")
            await wait_until(lambda: _more_than(billable, now), 90, "traffic counted after the restarts")
            again = (await get(f"{contracts_url}/contracts", "OPS"))["items"]
            assert sorted(c["id"] for c in again) == sorted(c["id"] for c in seeded), "the restart reused its contracts"

        rerun = demo(env, "up")
        assert rerun.returncode == 0 and "already running" in rerun.stdout
    finally:
        pids = {p: int(f.read_text()) for p in ("supervisor", *PROCESSES)
                if (f := stack.state / "run" / f"{p}.pid").exists()}
        stopped = demo(env, "down")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert set(pids) == {"supervisor", *PROCESSES}
    assert [p for p, pid in pids.items() if alive(pid)] == []
    assert not any(Path(stack.state / "run").glob("*.pid"))


async def _more_than(count: Any, floor: int) -> bool:
    return bool(await count() > floor)
