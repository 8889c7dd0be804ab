"""How every Tally Kafka client authenticates: one settings spec, validated together.

``TALLY_KAFKA_SECURITY_PROTOCOL`` is ``PLAINTEXT`` by default (``make up`` / ``make demo``);
``SASL_PLAINTEXT`` is the local secure broker (``make up-secure``, loopback only) and ``SASL_SSL``
production (``deploy/README.md``). With SASL, ``TALLY_KAFKA_USERNAME`` / ``TALLY_KAFKA_PASSWORD``
are the service's own principal (``tally_streams.acls``) and ``TALLY_KAFKA_SASL_MECHANISM`` its
mechanism (SCRAM-SHA-512 by default). The password is a secret: never printed, not in ``repr``.

``kafka.producer_config``, ``kafka.consumer_config`` and ``kafka.admin_config`` add
``client_config()`` to every confluent-kafka client; pacing's faust transport takes
``faust_credentials()``. A service includes ``SPEC`` in its settings spec for ``--validate``, and
``load()`` adds the checks across settings (a SASL protocol needs a user and a password).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tally_kit.settings import Spec, setting
from tally_kit.settings import load as load_settings

PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


def _one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return raw
    return parse


@dataclass(frozen=True, kw_only=True)
class KafkaSecurity:
    """The security settings of a Kafka client (a settings group, like ``tally_kit.settings.KafkaSettings``)."""

    kafka_security_protocol: str = setting(
        "TALLY_KAFKA_SECURITY_PROTOCOL", "Kafka security protocol: PLAINTEXT (local default), SASL_PLAINTEXT "
        "(`make up-secure`, loopback) or SASL_SSL (production)", "PLAINTEXT", _one_of(PROTOCOLS))
    kafka_sasl_mechanism: str = setting("TALLY_KAFKA_SASL_MECHANISM", "SASL mechanism with a SASL protocol",
                                        "SCRAM-SHA-512", _one_of(MECHANISMS))
    kafka_username: str = setting("TALLY_KAFKA_USERNAME",
                                  "the service's Kafka principal (SASL only; deploy/README.md lists them)", "")
    kafka_password: str = setting("TALLY_KAFKA_PASSWORD", "its password (SASL only; a secret)", "", secret=True)
    kafka_ssl_ca_file: str = setting("TALLY_KAFKA_SSL_CA_FILE",
                                     "CA bundle of the brokers' certificates (SASL_SSL; empty = the system's)", "")

    @property
    def sasl(self) -> bool:
        return self.kafka_security_protocol.startswith("SASL_")

    def problems(self) -> list[str]:
        """What is wrong across the settings (each one alone parsed)."""
        out = []
        for env, value in (("TALLY_KAFKA_USERNAME", self.kafka_username), ("TALLY_KAFKA_PASSWORD", self.kafka_password)):
            if self.sasl and not value:
                out.append(f"{env}: required with TALLY_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol}")
        return out


SPEC = Spec(KafkaSecurity)


def load(environ: Mapping[str, str] | None = None) -> KafkaSecurity:
    """The security settings of ``environ`` (default ``os.environ``); ``SettingsError`` lists every
    problem at once, the password never shown."""
    return load_settings(SPEC, os.environ if environ is None else environ)  # runs problems() too


def sasl(username: str, password: str, *, protocol: str = "SASL_PLAINTEXT",
         mechanism: str = "SCRAM-SHA-512") -> KafkaSecurity:
    """The settings of one principal (tests, the bootstrap)."""
    return KafkaSecurity(kafka_security_protocol=protocol, kafka_sasl_mechanism=mechanism, kafka_username=username,
                         kafka_password=password, kafka_ssl_ca_file="")


def client_config(security: KafkaSecurity | None = None) -> dict[str, Any]:
    """librdkafka's settings for ``security`` (default: ``load()``); empty for PLAINTEXT."""
    sec = load() if security is None else security
    if not sec.sasl:
        return {}
    cfg: dict[str, Any] = {"security.protocol": sec.kafka_security_protocol, "sasl.mechanisms": sec.kafka_sasl_mechanism,
                           "sasl.username": sec.kafka_username, "sasl.password": sec.kafka_password}
    if sec.kafka_security_protocol == "SASL_SSL" and sec.kafka_ssl_ca_file:
        cfg["ssl.ca.location"] = sec.kafka_ssl_ca_file
    return cfg


def environment(sec: KafkaSecurity) -> dict[str, str]:
    """``sec`` as environment variables (to start a service as that principal)."""
    return {s.env: str(getattr(sec, s.key)) for s in SPEC}


def faust_credentials(security: KafkaSecurity | None = None) -> Any:
    """faust's ``broker_credentials`` for ``security`` (default: ``load()``); None for PLAINTEXT."""
    sec = load() if security is None else security
    if not sec.sasl:
        return None
    import faust  # only pacing runs faust; tally_streams does not depend on it

    context = None
    if sec.kafka_security_protocol == "SASL_SSL":
        context = ssl.create_default_context(cafile=sec.kafka_ssl_ca_file or None)
    return faust.SASLCredentials(username=sec.kafka_username, password=sec.kafka_password,
                                 mechanism=sec.kafka_sasl_mechanism, ssl_context=context)
