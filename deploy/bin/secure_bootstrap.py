"""The secure broker's set-up (`make up-secure`): credentials, its config, then users, ACLs, topics.

    secure_bootstrap.py prepare   # before the broker starts: passwords and server.properties
    secure_bootstrap.py           # once it answers: the services' SCRAM users, their ACLs, the topics
    secure_bootstrap.py env SERVICE   # shell lines that run a service as its own principal

Passwords are generated once into ``.state/kafka-secure/credentials.json`` (mode 600, like the
local JWT secret; never committed, never printed except by ``env``, which a shell evaluates). The
admin (``tally_streams.acls.ADMIN_USER``) is the broker's super user; its SCRAM credential is
formatted into the metadata log (``--add-scram``), every service's is created here through the
admin API together with the ACLs derived from the topic catalog (``tally_streams.acls.acls``).
Idempotent: running it twice changes nothing the second time; a service's ACLs that the catalog
no longer derives are deleted."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import sys
from pathlib import Path

from confluent_kafka.admin import AdminClient

from tally_streams import acls, security, topics
from tally_streams.kafka import admin_config, ensure_topics, wait_for_broker

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("TALLY_STATE_DIR", ROOT / ".state"))
DIR = STATE / "kafka-secure"
CREDENTIALS = DIR / "credentials.json"
PORT = int(os.environ.get("TALLY_SECURE_KAFKA_PORT", "29092"))
CONTROLLER_PORT = int(os.environ.get("TALLY_SECURE_KAFKA_CONTROLLER_PORT", "29093"))
BOOTSTRAP = f"127.0.0.1:{PORT}"
MECHANISM = "SCRAM-SHA-512"


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def credentials() -> dict[str, str]:
    """username -> password of the admin and every service, generated on first use."""
    existing: dict[str, str] = json.loads(CREDENTIALS.read_text()) if CREDENTIALS.exists() else {}
    users = [acls.ADMIN_USER, *(acls.username(s) for s in topics.SERVICES)]
    missing = [u for u in users if u not in existing]
    if missing:
        existing.update({u: secrets.token_urlsafe(24) for u in missing})
        _write_private(CREDENTIALS, json.dumps(existing, indent=2, sort_keys=True) + "\n")
    return existing


def admin_security() -> security.KafkaSecurity:
    return security.sasl(acls.ADMIN_USER, credentials()[acls.ADMIN_USER], mechanism=MECHANISM)


def service_security(service: str) -> security.KafkaSecurity:
    user = acls.username(service)
    return security.sasl(user, credentials()[user], mechanism=MECHANISM)


def admin_client() -> AdminClient:
    return AdminClient(admin_config(BOOTSTRAP, **security.client_config(admin_security())))


def prepare() -> None:
    """The broker's server.properties and the admin's SCRAM credential for ``kafka-storage format``."""
    admin_password = credentials()[acls.ADMIN_USER]
    text = (ROOT / "deploy/kafka/server-secure.properties.in").read_text()
    for key, value in {"KAFKA_PORT": str(PORT), "CONTROLLER_PORT": str(CONTROLLER_PORT), "DATA_DIR": str(DIR / "data"),
                       "ADMIN_USER": acls.ADMIN_USER, "ADMIN_PASSWORD": admin_password}.items():
        text = text.replace(f"@{key}@", value)
    _write_private(DIR / "server.properties", text)
    _write_private(DIR / "format-scram", f"{MECHANISM}=[name={acls.ADMIN_USER},password={admin_password}]")


def bootstrap() -> None:
    """Users, ACLs and the catalog's topics on the running secure broker."""
    cfg = security.client_config(admin_security())
    wait_for_broker(BOOTSTRAP, timeout_s=120, client=cfg)
    admin = admin_client()
    creds = credentials()
    services = {acls.username(s): creds[acls.username(s)] for s in topics.SERVICES}
    acls.upsert_users(admin, services, mechanism=MECHANISM)
    wanted = acls.acls()
    created, deleted = acls.apply_acls(admin, wanted, [f"User:{u}" for u in services])
    made = ensure_topics(BOOTSTRAP, topics.CATALOG, client=cfg)
    print(f"[secure-bootstrap] kafka {BOOTSTRAP} (SASL_PLAINTEXT, {MECHANISM}): {len(services)} service users, "
          f"{len(wanted)} ACLs ({created} created, {deleted} deleted now), {len(topics.CATALOG)} catalog topics "
          f"({len(made)} created now); credentials in {CREDENTIALS}")


def env_lines(service: str) -> str:
    env = {**security.environment(service_security(service)), "TALLY_KAFKA_BOOTSTRAP": BOOTSTRAP}
    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items()))


def main(argv: list[str]) -> int:
    if argv[:1] == ["prepare"]:
        prepare()
    elif argv[:1] == ["env"] and len(argv) == 2 and argv[1] in topics.SERVICES:
        print(env_lines(argv[1]))
    elif not argv:
        bootstrap()
    else:
        print(f"usage: {sys.argv[0]} [prepare | env {{{'|'.join(topics.SERVICES)}}}]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
