"""Kafka ACLs, derived from the topic catalog: each service its own principal, least privilege.

The catalog (``tally_streams.topics``) says which services write and read each topic; ``CLIENTS``
says which consumer groups and transactional ids each service uses (the defaults of its
settings). ``acls`` turns the two into the ACL bindings of every principal — one pure function,
so the local secure broker (``deploy/bin/secure_bootstrap.py``), the Strimzi ``KafkaUser``s
(``deploy/k8s/gen_topics.py``) and the tests all grant exactly the same thing:

* a producer of a topic may ``Write`` and ``Describe`` it; a consumer may ``Read`` and ``Describe`` it;
* a service may ``Create`` the internal topics it writes (``topics.INTERNAL``), and owns the topics
  under its ``own_topic_prefixes`` (pacing's faust changelogs);
* a consumer group may be used only by its own service (``Read`` on the group);
* a transactional id (attribution's processor, metering's workers; by prefix) only by its own service;
* every service whose producer is idempotent (confluent-kafka's, ``kafka.producer_config``) has
  ``IdempotentWrite`` on the cluster.

Resource types, pattern types and operation names are Strimzi's (``KafkaUser`` ``simple``
authorization), which are Kafka's own names.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from . import topics
from .topics import TopicSpec

TOPIC, GROUP, TRANSACTIONAL_ID, CLUSTER = "topic", "group", "transactionalId", "cluster"
LITERAL, PREFIX = "literal", "prefix"
CLUSTER_NAME = "kafka-cluster"  # Kafka's name of the one cluster resource


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW binding: ``principal`` may do ``operation`` on the resource (host ``*``)."""

    principal: str  # "User:tally-metering"
    resource: str  # TOPIC | GROUP | TRANSACTIONAL_ID | CLUSTER
    name: str
    pattern: str  # LITERAL | PREFIX
    operation: str  # Kafka's name: Read, Write, Describe, Create, IdempotentWrite, DescribeConfigs


@dataclass(frozen=True)
class Clients:
    """What a service names in Kafka besides topics (the defaults of its settings)."""

    service: str
    groups: tuple[str, ...] = ()
    #: consumer groups by name prefix (attribution's shards: ``<GROUP>-shard-<k>`` and its readers)
    group_prefixes: tuple[str, ...] = ()
    transactional_ids: tuple[str, ...] = ()
    transactional_prefixes: tuple[str, ...] = ()
    #: topics the service creates and owns by name prefix (faust's table changelogs and leader topic)
    own_topic_prefixes: tuple[str, ...] = ()
    #: its producer is confluent-kafka's idempotent one (``kafka.producer_config``)
    idempotent: bool = True

    def prefixed(self, prefix: str) -> Clients:
        """The same clients with every name under ``prefix`` (tests run on throwaway names)."""
        return replace(self, groups=tuple(prefix + g for g in self.groups),
                       group_prefixes=tuple(prefix + g for g in self.group_prefixes),
                       transactional_ids=tuple(prefix + t for t in self.transactional_ids),
                       transactional_prefixes=tuple(prefix + t for t in self.transactional_prefixes),
                       own_topic_prefixes=tuple(prefix + t for t in self.own_topic_prefixes))


#: The services' consumer groups and transactional ids, as their settings name them by default:
#: attribution's processor (``TALLY_ATTRIBUTION_GROUP`` and its ``-restore``/``-terms`` readers and ``-lease``;
#: with several shards ``<GROUP>-shard-<k>`` and its readers, by prefix;
#: ``TALLY_ATTRIBUTION_TRANSACTIONAL_ID`` by prefix: ``tally-attribution`` locally,
#: ``tally-attribution-<pod>`` on Kubernetes), metering's workers (``TALLY_METERING_GROUP``, the
#: transactional id ``tally-metering-<group>-<worker id>``) and spend API (``tally-metering-api``),
#: pacing's faust app (``TALLY_PACING_APP_ID``: its group and the prefix of its topics), invoicing
#: (``TALLY_INVOICING_CONSUMER_GROUP``). contracts' relay and the ingest API consume nothing.
CLIENTS: tuple[Clients, ...] = (
    Clients("contracts"),
    Clients("ingest"),
    Clients("attribution", groups=("tally-attribution", "tally-attribution-restore", "tally-attribution-terms",
                                   "tally-attribution-lease"),
            group_prefixes=("tally-attribution-shard-",), transactional_prefixes=("tally-attribution",)),
    Clients("metering", groups=("tally-metering", "tally-metering-restore", "tally-metering-terms", "tally-metering-api"),
            transactional_prefixes=("tally-metering-tally-metering-",)),
    Clients("pacing", groups=("tally-pacing",), own_topic_prefixes=("tally-pacing-",), idempotent=False),
    Clients("invoicing", groups=("tally-invoicing",), idempotent=False),
)

#: the broker's and the operator's principal: a super user, no ACLs needed
ADMIN_USER = "tally-admin"


def username(service: str) -> str:
    """The SCRAM user (and ``User:`` principal) of ``service``."""
    return f"tally-{service}"


def acls(specs: Iterable[TopicSpec] = (*topics.CATALOG, *topics.INTERNAL), clients: Iterable[Clients] = CLIENTS,
         *, internal: Iterable[str] | None = None, user: Callable[[str], str] = username) -> list[Acl]:
    """Every ALLOW binding of every service principal, sorted, without duplicates.

    ``internal``: the names of the topics their producers may also create (default: those of
    ``topics.INTERNAL``; pass the renamed ones with renamed specs)."""
    specs = list(specs)
    creatable = {s.name for s in topics.INTERNAL} if internal is None else set(internal)
    known = set(topics.SERVICES)
    out: set[Acl] = set()

    def allow(service: str, resource: str, name: str, pattern: str, *operations: str) -> None:
        if service not in known:
            raise ValueError(f"{name}: {service!r} is not one of topics.SERVICES {topics.SERVICES}")
        for op in operations:
            out.add(Acl(f"User:{user(service)}", resource, name, pattern, op))

    for spec in specs:
        for service in spec.producers:
            allow(service, TOPIC, spec.name, LITERAL, "Write", "Describe")
            if spec.name in creatable:
                allow(service, TOPIC, spec.name, LITERAL, "Create")
        for service in spec.consumers:
            allow(service, TOPIC, spec.name, LITERAL, "Read", "Describe")
    for c in clients:
        for group in c.groups:
            allow(c.service, GROUP, group, LITERAL, "Read", "Describe")
        for prefix in c.group_prefixes:
            allow(c.service, GROUP, prefix, PREFIX, "Read", "Describe")
        for tid in c.transactional_ids:
            allow(c.service, TRANSACTIONAL_ID, tid, LITERAL, "Write", "Describe")
        for prefix in c.transactional_prefixes:
            allow(c.service, TRANSACTIONAL_ID, prefix, PREFIX, "Write", "Describe")
        for prefix in c.own_topic_prefixes:
            allow(c.service, TOPIC, prefix, PREFIX, "Create", "Read", "Write", "Describe", "DescribeConfigs")
        if c.idempotent:
            allow(c.service, CLUSTER, CLUSTER_NAME, LITERAL, "IdempotentWrite")
    return sorted(out)


def by_principal(bindings: Iterable[Acl]) -> dict[str, list[Acl]]:
    out: dict[str, list[Acl]] = {}
    for a in bindings:
        out.setdefault(a.principal, []).append(a)
    return out


def markdown_table(bindings: Iterable[Acl]) -> str:
    """The ACLs as a Markdown table, one row per principal and resource (for deploy/README.md)."""
    rows: dict[tuple[str, str, str, str], list[str]] = {}
    for a in bindings:
        rows.setdefault((a.principal, a.resource, a.name, a.pattern), []).append(a.operation)
    lines = ["| principal | resource | name | pattern | operations |", "|---|---|---|---|---|"]
    for (principal, resource, name, pattern), ops in sorted(rows.items()):
        lines.append(f"| `{principal}` | {resource} | `{name}` | {pattern} | {', '.join(sorted(ops))} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------- applying them (I/O)
# The functions below talk to a broker through an AdminClient of the super user; ``acls`` above stays pure.

_RESOURCE = {TOPIC: "TOPIC", GROUP: "GROUP", TRANSACTIONAL_ID: "TRANSACTIONAL_ID", CLUSTER: "BROKER"}
_PATTERN = {LITERAL: "LITERAL", PREFIX: "PREFIXED"}
_OPERATION = {"Read": "READ", "Write": "WRITE", "Describe": "DESCRIBE", "Create": "CREATE",
              "IdempotentWrite": "IDEMPOTENT_WRITE", "DescribeConfigs": "DESCRIBE_CONFIGS"}


def binding(a: Acl) -> Any:
    """``a`` as confluent-kafka's ``AclBinding`` (ALLOW, any host)."""
    from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, ResourcePatternType, ResourceType

    return AclBinding(ResourceType[_RESOURCE[a.resource]], a.name, ResourcePatternType[_PATTERN[a.pattern]],
                      a.principal, "*", AclOperation[_OPERATION[a.operation]], AclPermissionType.ALLOW)


def upsert_users(admin: Any, passwords: Mapping[str, str], *, mechanism: str = "SCRAM-SHA-512",
                 iterations: int = 8192, timeout_s: float = 30.0) -> None:
    """Create or replace the SCRAM credential of each user (a new password is a rotation)."""
    from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

    info = ScramCredentialInfo(ScramMechanism[mechanism.replace("-", "_")], iterations)
    futures = admin.alter_user_scram_credentials(
        [UserScramCredentialUpsertion(user, info, password.encode()) for user, password in passwords.items()])
    for fut in futures.values():
        fut.result(timeout=timeout_s)


def _present(admin: Any, principals: Iterable[str], timeout_s: float) -> set[Any]:
    from confluent_kafka.admin import AclBindingFilter, AclOperation, AclPermissionType, ResourcePatternType, ResourceType

    out: set[Any] = set()
    for principal in principals:
        flt = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, principal, None,  # type: ignore[arg-type]
                               AclOperation.ANY, AclPermissionType.ANY)
        out |= set(admin.describe_acls(flt, request_timeout=timeout_s).result(timeout=timeout_s))
    return out


def grant(admin: Any, bindings: Iterable[Acl], *, timeout_s: float = 30.0) -> None:
    """Create the ALLOW bindings (creating one that exists changes nothing); returns once the
    broker's authorizer answers with all of them (ACLs reach it through the metadata log)."""
    wanted = {binding(a) for a in bindings}
    if not wanted:
        return
    for fut in admin.create_acls(sorted(wanted), request_timeout=timeout_s).values():
        fut.result(timeout=timeout_s)
    principals = {b.principal for b in wanted}
    deadline = time.monotonic() + timeout_s
    while not wanted <= _present(admin, principals, timeout_s):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the broker did not show the {len(wanted)} new ACLs within {timeout_s}s")
        time.sleep(0.1)


def revoke(admin: Any, bindings: Iterable[Any], *, timeout_s: float = 30.0) -> None:
    """Delete exactly these bindings (``Acl`` or confluent-kafka ``AclBinding``)."""
    from confluent_kafka.admin import AclBindingFilter

    exact = [binding(b) if isinstance(b, Acl) else b for b in bindings]
    if exact:
        filters = [AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation,
                                    b.permission_type) for b in exact]
        for fut in admin.delete_acls(filters, request_timeout=timeout_s).values():
            fut.result(timeout=timeout_s)


def apply_acls(admin: Any, wanted: Iterable[Acl], principals: Iterable[str], *, timeout_s: float = 30.0) -> tuple[int, int]:
    """Make the ALLOW bindings of ``principals`` exactly ``wanted``: create the missing ones,
    delete the others (a topic a service no longer writes loses its grant). Idempotent; returns
    (created, deleted)."""
    wanted = list(wanted)
    wanted_bindings = {binding(a) for a in wanted}
    present = _present(admin, principals, timeout_s)
    missing = [a for a in wanted if binding(a) not in present]
    stale = [b for b in present if b not in wanted_bindings]
    grant(admin, missing, timeout_s=timeout_s)
    revoke(admin, stale, timeout_s=timeout_s)
    return len(missing), len(stale)
