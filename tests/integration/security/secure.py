"""The secure broker for the tests (`make up-secure`'s, started here when it is not running):
SASL/SCRAM-SHA-512 on 127.0.0.1:29092, the StandardAuthorizer, a user per service with the ACLs
derived from the topic catalog. Shared by the security tests and the secure end-to-end test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from tally_streams import acls, security
from tally_streams.kafka import admin_config

ROOT = Path(__file__).resolve().parents[3]
STACK_SH = ROOT / "deploy/bin/stack.sh"
STATE = Path(os.environ.get("TALLY_STATE_DIR", ROOT / ".state"))
BOOTSTRAP = f"127.0.0.1:{os.environ.get('TALLY_SECURE_KAFKA_PORT', '29092')}"


@dataclass(frozen=True)
class SecureBroker:
    bootstrap: str
    passwords: dict[str, str]  # username -> password

    def security(self, service: str | None = None) -> security.KafkaSecurity:
        """A service's principal, or the admin (super user) for None."""
        user = acls.ADMIN_USER if service is None else acls.username(service)
        return security.sasl(user, self.passwords[user])

    def client(self, service: str | None = None, **overrides: Any) -> dict[str, Any]:
        """librdkafka settings of that principal (merge into a producer/consumer/admin config)."""
        return {**security.client_config(self.security(service)), **overrides}

    def admin(self) -> AdminClient:
        return AdminClient(admin_config(self.bootstrap, **self.client()))

    def env(self, service: str) -> dict[str, str]:
        """The environment that runs ``service`` as its own principal against this broker."""
        return {**security.environment(self.security(service)), "TALLY_KAFKA_BOOTSTRAP": self.bootstrap}

    def env_of_admin(self) -> dict[str, str]:
        """The same for the admin (the operator: topic set-up, replay)."""
        return {**security.environment(self.security()), "TALLY_KAFKA_BOOTSTRAP": self.bootstrap}


def running() -> bool:
    out = subprocess.run([str(STACK_SH), "secure-status"], capture_output=True, text=True, check=True).stdout
    return " up " in out


@contextmanager
def secure_broker() -> Iterator[SecureBroker]:
    """The secure broker, its users and ACLs (idempotent set-up); stopped afterwards only if started here."""
    was_running = running()
    started = time.monotonic()
    subprocess.run([str(STACK_SH), "secure-up"], check=True, timeout=300, stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, str(ROOT / "deploy/bin/secure_bootstrap.py")], check=True, timeout=300,
                   stdout=subprocess.DEVNULL)
    print(f"secure broker ready in {time.monotonic() - started:.1f}s (was running: {was_running})")
    passwords = json.loads((STATE / "kafka-secure" / "credentials.json").read_text())
    try:
        yield SecureBroker(BOOTSTRAP, passwords)
    finally:
        if not was_running:
            subprocess.run([str(STACK_SH), "secure-down"], check=True, timeout=300, stdout=subprocess.DEVNULL)
