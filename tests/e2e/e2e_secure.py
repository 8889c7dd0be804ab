"""The end-to-end stack in secure mode: the same flow against the secure broker (`make up-secure`,
SASL/SCRAM, ACLs), every service as its own principal with the grants ``tally_streams.acls``
derives from the topic catalog for this run's names — so a service that needs a grant the
catalog does not give it fails the flow. The test's own clients (topic set-up, lag, reading
outputs, the replay) are the admin's."""

from __future__ import annotations

from dataclasses import dataclass, field

from tally_streams import acls, topics
from tally_streams.topics import TopicSpec
from tests.integration.security.secure import SecureBroker

from .e2e_stack import PY, ROOT, Stack


@dataclass
class SecureStack(Stack):
    broker: SecureBroker | None = None
    granted: list[acls.Acl] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        assert self.broker is not None
        self.kafka = self.broker.client()

    def env(self) -> dict[str, str]:
        assert self.broker is not None
        env = {**super().env(), **self.broker.env_of_admin()}
        for service in topics.SERVICES:
            sec = self.broker.security(service)
            env[f"TALLY_E2E_KAFKA_{service.upper()}_USERNAME"] = sec.kafka_username
            env[f"TALLY_E2E_KAFKA_{service.upper()}_PASSWORD"] = sec.kafka_password
        return env

    def command(self, service: str, args: str) -> str:
        return f"{PY} {ROOT / 'tests/e2e/run_as.py'} {service} {args}"

    def bindings(self) -> list[acls.Acl]:
        """This run's grants: the catalog's ACLs under the names the stack gives its services."""
        env = super().env()
        internal = {"metering.deltas": env["TALLY_METERING_TOPIC_DELTAS"],
                    "metering.state-changelog": env["TALLY_METERING_TOPIC_STATE"],
                    "metering.dedupe-changelog": env["TALLY_METERING_TOPIC_DEDUPE"],
                    "dlq.billing.attributed_conversions": env["TALLY_METERING_TOPIC_DLQ_ATTRIBUTED"],
                    "attribution.state-changelog": env["TALLY_ATTRIBUTION_TOPIC_STATE"],
                    "attribution.processor-lease": env["TALLY_ATTRIBUTION_TOPIC_LEASE"]}
        specs: list[TopicSpec] = [s.renamed(self.topic[s.name]) for s in topics.CATALOG]
        specs += [s.renamed(internal[s.name]) for s in topics.INTERNAL if s.name in internal]
        att, met = env["TALLY_ATTRIBUTION_GROUP"], env["TALLY_METERING_GROUP"]
        clients = [
            acls.Clients("contracts"), acls.Clients("ingest"),
            acls.Clients("attribution", groups=(att, f"{att}-restore", f"{att}-terms", f"{att}-lease"),
                         transactional_prefixes=(env["TALLY_ATTRIBUTION_TRANSACTIONAL_ID"],)),
            acls.Clients("metering", groups=(met, f"{met}-restore", f"{met}-terms"),
                         transactional_prefixes=(f"tally-metering-{met}-",)),
            acls.Clients("invoicing", groups=(env["TALLY_INVOICING_CONSUMER_GROUP"],), idempotent=False),
        ]
        # what `make up-secure` granted already (IdempotentWrite, the spend API's group) stays as it is
        return sorted(set(acls.acls(specs, clients, internal=set(internal.values()))) - set(acls.acls()))

    async def create(self) -> None:
        assert self.broker is not None
        self.granted = self.bindings()
        acls.grant(self.broker.admin(), self.granted)
        await super().create()

    async def destroy(self) -> None:
        try:
            await super().destroy()
        finally:
            if self.broker is not None and self.granted:
                acls.revoke(self.broker.admin(), self.granted)
