"""Run a Tally service as its own Kafka principal (the secure end-to-end variant).

    python tests/e2e/run_as.py SERVICE -m tally_metering worker

The secure stack's environment carries each service's user and password as
``TALLY_E2E_KAFKA_<SERVICE>_USERNAME`` / ``_PASSWORD``; this sets ``TALLY_KAFKA_USERNAME`` /
``TALLY_KAFKA_PASSWORD`` from the service's pair, removes every pair (a service sees only its own
password, and none appears on a command line), and becomes ``python ARGS`` (same pid)."""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> None:
    service, args = argv[0], argv[1:]
    key = f"TALLY_E2E_KAFKA_{service.upper()}_"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_E2E_KAFKA_")}
    env["TALLY_KAFKA_USERNAME"] = os.environ[key + "USERNAME"]
    env["TALLY_KAFKA_PASSWORD"] = os.environ[key + "PASSWORD"]
    os.execve(sys.executable, [sys.executable, *args], env)


if __name__ == "__main__":
    main(sys.argv[1:])
