"""The gateway as a real process (``python -m tally_console``): settings validation, health,
the built app, and demo mode off unless asked for."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _start(tmp_path: Path, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    (tmp_path / "index.html").write_text("<!doctype html><title>Tally console</title>")
    port = _free_port()
    full = {**os.environ, "TALLY_CONSOLE_PORT": str(port), "TALLY_CONSOLE_STATIC_DIR": str(tmp_path),
            "TALLY_JWT_SECRET": "process-test-secret-0123456789abcdef", "TALLY_CONSOLE_DEMO": "false", **env}
    proc = subprocess.Popen([sys.executable, "-m", "tally_console"], env=full, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if _get(f"{url}/healthz")[0] == 200:
                return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("the console did not answer /healthz within 20 s")


@pytest.mark.integration
def test_console_process_serves_the_app_and_keeps_demo_mode_off(tmp_path: Path) -> None:
    proc, url = _start(tmp_path)
    try:
        assert _get(f"{url}/readyz")[0] == 200
        status, body = _get(f"{url}/contracts/ctr_1")
        assert status == 200 and b"Tally console" in body
        assert _get(f"{url}/api/demo/users")[0] == 401
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.integration
def test_console_process_demo_mode_when_enabled(tmp_path: Path) -> None:
    proc, url = _start(tmp_path, TALLY_CONSOLE_DEMO="true")
    try:
        status, body = _get(f"{url}/api/demo/users")
        assert status == 200 and b'"token"' in body
    finally:
        proc.terminate()
        proc.wait(10)


def test_console_validate_reports_every_bad_setting() -> None:
    env = {**os.environ, "TALLY_CONSOLE_PORT": "0", "TALLY_CONSOLE_METERING_URL": "ftp://x", "TALLY_CONSOLE_DEMO": "maybe"}
    out = subprocess.run([sys.executable, "-m", "tally_console", "--validate"], env=env, capture_output=True, text=True)
    assert out.returncode == 2
    for name in ("TALLY_CONSOLE_PORT", "TALLY_CONSOLE_METERING_URL", "TALLY_CONSOLE_DEMO"):
        assert name in out.stderr
