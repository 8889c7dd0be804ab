"""The secure broker refuses who it should and lets each service do exactly its work (issue 16
item 10): an anonymous PLAINTEXT client and a wrong password are refused; a service principal
cannot write a topic the catalog does not give it, nor use another service's consumer group or
transactional id; and each principal can do what its service needs — write and read its topics,
create its internal ones, commit in its groups, run its transactions.

The grants on the real catalog names are `make up-secure`'s (``deploy/bin/secure_bootstrap.py``);
the rest runs on throwaway names (``sec-<uuid>-``) with the ACLs the same function derives for
them, granted for this module only and revoked afterwards, so nothing is written into the real
topics."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from tally_streams import acls, topics
from tally_streams.kafka import admin_config, consumer_config, delete_topics, ensure_topics, producer_config
from tally_streams.topics import TopicSpec

from .secure import SecureBroker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DELIVERY_TIMEOUT_MS = 10_000


@dataclass(frozen=True)
class Names:
    """The throwaway world of this module: the catalog and the services' clients under one prefix."""

    prefix: str
    specs: tuple[TopicSpec, ...]
    clients: dict[str, acls.Clients]

    def topic(self, name: str) -> str:
        return self.prefix + name


@pytest.fixture(scope="module")
def names(secure: SecureBroker) -> Iterator[Names]:
    prefix = f"sec-{uuid.uuid4().hex[:8]}-"
    specs = tuple(s.renamed(prefix + s.name) for s in (*topics.CATALOG, *topics.INTERNAL))
    clients = {c.service: c.prefixed(prefix) for c in acls.CLIENTS}
    # the cluster's IdempotentWrite is the same binding under any names: the real ones stay
    bindings = sorted(set(acls.acls(specs, clients.values(), internal={prefix + s.name for s in topics.INTERNAL}))
                      - set(acls.acls()))
    admin = secure.admin()
    catalog = [s for s in specs if s.name.removeprefix(prefix) in {c.name for c in topics.CATALOG}]
    ensure_topics(secure.bootstrap, catalog, client=secure.client())
    acls.grant(admin, bindings)
    try:
        yield Names(prefix, specs, clients)
    finally:
        acls.revoke(admin, bindings)
        md = admin.list_topics(timeout=10)
        delete_topics(secure.bootstrap, [t for t in md.topics if t.startswith(prefix)], client=secure.client())


def produce_all(secure: SecureBroker, service: str | None, targets: list[str], **extra: Any) -> dict[str, KafkaError | None]:
    """One record to each topic as ``service`` (None: the admin); the broker's answer per topic.
    A service whose producer is not idempotent (``Clients.idempotent``) writes as it does, without."""
    idempotent = service is None or next(c for c in acls.CLIENTS if c.service == service).idempotent
    p = Producer(producer_config(secure.bootstrap, f"sec-test-{service}", **secure.client(service),
                                 **{"message.timeout.ms": DELIVERY_TIMEOUT_MS, "enable.idempotence": idempotent,
                                    "log_level": 2, **extra}))
    answers: dict[str, KafkaError | None] = {}

    def ack(err: KafkaError | None, msg: Any) -> None:
        answers[msg.topic()] = err

    for t in targets:
        p.produce(t, b"value", key=b"key", on_delivery=ack)
    assert p.flush(DELIVERY_TIMEOUT_MS / 1000 + 5) == 0
    assert set(answers) == set(targets)
    return answers


def refused_codes(answers: dict[str, KafkaError | None]) -> dict[str, str]:
    return {t: (err.name() if err is not None else "DELIVERED") for t, err in answers.items()}


# ---------------------------------------------------------------------- who is refused at the door


def test_an_anonymous_plaintext_client_is_refused(secure: SecureBroker) -> None:
    admin = AdminClient({"bootstrap.servers": secure.bootstrap, "log_level": 2})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)
    answers = produce_all_plaintext(secure.bootstrap)
    assert answers is not None, "an anonymous producer's record was acknowledged"


def produce_all_plaintext(bootstrap: str) -> KafkaError | None:
    p = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 4000, "log_level": 2})
    errors: list[KafkaError | None] = []
    p.produce(topics.CONTRACT_TERMS.name, b"v", key=b"k", on_delivery=lambda err, _m: errors.append(err))
    p.flush(10)
    return errors[0] if errors else None


def refusal(bootstrap: str, cfg: dict[str, Any]) -> list[KafkaError]:
    """Ask for metadata with ``cfg``: it must fail; the client errors reported meanwhile."""
    seen: list[KafkaError] = []
    admin = AdminClient(admin_config(bootstrap, **cfg, **{"log_level": 2, "error_cb": seen.append}))
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=10)
    admin.poll(0.5)
    return seen


def test_a_wrong_password_or_user_is_refused_and_the_right_one_is_not(secure: SecureBroker) -> None:
    for wrong in ({"sasl.password": "not-the-password"}, {"sasl.username": "tally-nobody"}):
        errors = refusal(secure.bootstrap, {**secure.client("contracts"), **wrong})
        assert KafkaError._AUTHENTICATION in {e.code() for e in errors}, (wrong.keys(), errors)
    md = AdminClient(admin_config(secure.bootstrap, **secure.client("contracts"))).list_topics(timeout=10)
    assert topics.CONTRACT_TERMS.name in md.topics  # it writes it: Describe comes with Write
    assert topics.RUNNING_TOTALS.name not in md.topics  # not even listed: no Describe


# ---------------------------------------------------------------------- writing: only the owners


@pytest.mark.parametrize(("service", "topic"), [
    ("attribution", topics.CONTRACT_TERMS.name),
    ("ingest", topics.RUNNING_TOTALS.name),
    ("invoicing", topics.PERIODS_CLOSED.name),
    ("pacing", topics.RUNNING_TOTALS.name),
    ("metering", topics.CONTRACT_EVENTS.name),
    ("contracts", topics.IMPRESSIONS.name),
])
def test_a_service_cannot_write_a_real_topic_it_does_not_own(secure: SecureBroker, service: str, topic: str) -> None:
    assert service not in topics.by_name(topic).producers
    answers = produce_all(secure, service, [topic])
    assert refused_codes(answers) == {topic: "TOPIC_AUTHORIZATION_FAILED"}


def test_no_service_writes_a_topic_the_catalog_does_not_give_it(secure: SecureBroker, names: Names) -> None:
    for service in topics.SERVICES:
        others = [s.name for s in names.specs if service not in s.producers
                  and s.name.removeprefix(names.prefix) in {c.name for c in topics.CATALOG}]
        answers = produce_all(secure, service, others)
        assert set(refused_codes(answers).values()) == {"TOPIC_AUTHORIZATION_FAILED"}, (service, refused_codes(answers))


def test_every_producer_writes_its_topics_and_creates_its_internal_ones(secure: SecureBroker, names: Names) -> None:
    internal = {names.topic(s.name) for s in topics.INTERNAL}
    for service in topics.SERVICES:
        own = [s for s in names.specs if service in s.producers]
        mine_internal = [s for s in own if s.name in internal]
        # created by the service itself, as it does at start (ensure_topics), where not yet there
        ensure_topics(secure.bootstrap, mine_internal, client=secure.client(service))
        answers = produce_all(secure, service, [s.name for s in own])
        assert set(refused_codes(answers).values()) <= {"DELIVERED"}, (service, refused_codes(answers))


def test_a_service_cannot_create_a_topic_it_does_not_own(secure: SecureBroker, names: Names) -> None:
    spec = TopicSpec(names.topic("tally-pacing-hourly-changelog-x"), "k", "v", partitions=1)
    with pytest.raises(KafkaException) as info:
        ensure_topics(secure.bootstrap, [spec], client=secure.client("attribution"), timeout_s=10)
    assert info.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_pacing_owns_the_topics_under_its_app_id(secure: SecureBroker, names: Names) -> None:
    (prefix,) = names.clients["pacing"].own_topic_prefixes
    spec = TopicSpec(prefix + "hourly-changelog", "k", "v", partitions=1, compacted=True)
    ensure_topics(secure.bootstrap, [spec], client=secure.client("pacing"))
    assert refused_codes(produce_all(secure, "pacing", [spec.name])) == {spec.name: "DELIVERED"}


def test_invoicing_only_reads_it_has_no_idempotent_producer(secure: SecureBroker) -> None:
    # Kafka implies IdempotentWrite from Write on any topic; invoicing writes none
    p = Producer(producer_config(secure.bootstrap, "sec-test-invoicing", **secure.client("invoicing"),
                                 **{"message.timeout.ms": 5000, "log_level": 0}))
    p.produce(topics.PERIODS_CLOSED.name, b"v", key=b"k")
    with pytest.raises(KafkaException) as info:  # the fatal error, raised by the poll that serves it
        for _ in range(50):
            p.poll(0.2)
    assert info.value.args[0].fatal() and info.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED


# ---------------------------------------------------------------------- reading: own topics, own groups


def read_one_each(secure: SecureBroker, service: str, group: str, targets: list[str]) -> set[str]:
    """The topics of ``targets`` ``service`` read a record from, committed in ``group``."""
    c = Consumer(consumer_config(secure.bootstrap, group, **secure.client(service), **{"log_level": 2}))
    try:
        c.assign([TopicPartition(t, 0, 0) for t in targets])
        seen: set[str] = set()
        for _ in range(60):
            for m in c.consume(100, 0.5):
                if m.error() is None:
                    seen.add(str(m.topic()))
            if seen == set(targets):
                break
        c.commit(offsets=[TopicPartition(t, 0, 1) for t in sorted(seen)], asynchronous=False)
        return seen
    finally:
        c.close()


@pytest.fixture(scope="module")
def filled(secure: SecureBroker, names: Names) -> list[str]:
    """A record in partition 0 of every throwaway catalog topic (written by the admin)."""
    catalog = [names.topic(s.name) for s in topics.CATALOG]
    p = Producer(producer_config(secure.bootstrap, "sec-test-admin", **secure.client()))
    for t in catalog:
        p.produce(t, b"value", key=b"key", partition=0)
    assert p.flush(30) == 0
    return catalog


def test_every_consumer_reads_its_topics_in_its_own_group(secure: SecureBroker, names: Names, filled: list[str]) -> None:
    for service in topics.SERVICES:
        reads = [names.topic(s.name) for s in topics.CATALOG if service in s.consumers]
        if not reads:
            continue
        group = names.clients[service].groups[0]
        assert read_one_each(secure, service, group, reads) == set(reads), service


def test_a_consumer_group_is_used_only_by_its_own_service(secure: SecureBroker, names: Names, filled: list[str]) -> None:
    # invoicing may read contracts.terms, but not in metering's (or attribution's) group
    terms = names.topic(topics.CONTRACT_TERMS.name)
    for service, other in (("invoicing", "metering"), ("metering", "attribution"), ("pacing", "invoicing"),
                           ("attribution", "pacing")):
        group = names.clients[other].groups[0]
        c = Consumer(consumer_config(secure.bootstrap, group, **secure.client(service), **{"log_level": 2}))
        try:
            c.subscribe([terms])
            errors: list[KafkaError] = []
            for _ in range(40):  # the refusal comes as a consumer error (FindCoordinator needs Describe on the group)
                errors = [e for e in (m.error() for m in c.consume(10, 0.5)) if e is not None]
                if errors:
                    break
            assert [e.code() for e in errors][:1] == [KafkaError.GROUP_AUTHORIZATION_FAILED], (service, other, errors)
        finally:
            c.close()


def test_a_service_cannot_read_a_topic_it_does_not_consume(secure: SecureBroker, names: Names, filled: list[str]) -> None:
    # ingest consumes nothing; invoicing does not read the running totals
    for service, topic in (("ingest", topics.IMPRESSIONS.name), ("invoicing", topics.RUNNING_TOTALS.name)):
        group = (names.clients[service].groups or (f"{names.prefix}nobody",))[0]
        c = Consumer(consumer_config(secure.bootstrap, group, **secure.client(service), **{"log_level": 2}))
        try:
            # not even described (invoicing), or described because it writes it (ingest) but not fetched
            md = c.list_topics(names.topic(topic), timeout=10).topics[names.topic(topic)]
            codes = {md.error.code()} if md.error is not None else set()
            c.assign([TopicPartition(names.topic(topic), 0, 0)])
            records = 0
            for _ in range(10):  # the record the admin wrote is there; none comes through
                for m in c.consume(10, 0.5):
                    err = m.error()
                    records += err is None
                    codes |= {err.code()} if err is not None else set()
                if KafkaError.TOPIC_AUTHORIZATION_FAILED in codes:
                    break
            assert records == 0 and KafkaError.TOPIC_AUTHORIZATION_FAILED in codes, (service, topic, records, codes)
        finally:
            c.close()


# ---------------------------------------------------------------------- transactions of the EOS workers


def transact(secure: SecureBroker, service: str, transactional_id: str, group: str, out: str, source: str) -> None:
    """One exactly-once step as ``service``: a record to ``out`` and ``source``'s offset in ``group``."""
    p = Producer(producer_config(secure.bootstrap, f"sec-test-{service}", **secure.client(service),
                                 **{"transactional.id": transactional_id, "log_level": 2}))
    c = Consumer(consumer_config(secure.bootstrap, group, **secure.client(service), **{"log_level": 2}))
    try:
        p.init_transactions(30)
        p.begin_transaction()
        p.produce(out, b"value", key=b"key")
        p.send_offsets_to_transaction([TopicPartition(source, 0, 1)], c.consumer_group_metadata(), 30)
        p.commit_transaction(30)
    finally:
        c.close()


def test_the_eos_workers_run_their_transactions(secure: SecureBroker, names: Names, filled: list[str]) -> None:
    att, met = names.clients["attribution"], names.clients["metering"]
    transact(secure, "attribution", att.transactional_prefixes[0], att.groups[0],
             names.topic(topics.ATTRIBUTED_CONVERSIONS.name), names.topic(topics.IMPRESSIONS.name))
    # metering's transactional ids are tally-metering-<group>-<worker id>: granted by prefix
    transact(secure, "metering", met.transactional_prefixes[0] + "worker-1", met.groups[0],
             names.topic(topics.RUNNING_TOTALS.name), names.topic(topics.IMPRESSIONS.name))


@pytest.mark.parametrize(("service", "owner"), [("ingest", "attribution"), ("metering", "attribution"),
                                                ("attribution", "metering")])
def test_a_transactional_id_is_used_only_by_its_own_service(secure: SecureBroker, names: Names, service: str,
                                                            owner: str) -> None:
    c = names.clients[owner]
    tid = c.transactional_prefixes[0] + "-0"
    p = Producer(producer_config(secure.bootstrap, f"sec-test-{service}", **secure.client(service),
                                 **{"transactional.id": tid, "log_level": 2}))
    with pytest.raises(KafkaException) as info:
        p.init_transactions(20)
    assert info.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED


async def test_pacings_faust_transport_authenticates_as_pacing(secure: SecureBroker, names: Names,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """faust (aiokafka) takes the same settings through tally_pacing.transport: it writes the pacing
    alerts as tally-pacing and is refused the running totals."""
    import faust
    from aiokafka.errors import TopicAuthorizationFailedError

    import tally_pacing.app  # noqa: F401  (registers the tallykafka:// transport)

    for name, value in secure.env("pacing").items():
        monkeypatch.setenv(name, value)
    app = faust.App(f"{names.prefix}faust-probe", broker=f"tallykafka://{secure.bootstrap}", autodiscover=False,
                    web_enabled=False)
    producer = app.producer
    await producer.start()
    try:
        sent = await producer.send_and_wait(names.topic(topics.PACING_ALERTS.name), key=b"k", value=b"v",
                                            partition=None, timestamp=None, headers=None)
        assert sent.offset >= 0
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait(names.topic(topics.RUNNING_TOTALS.name), key=b"k", value=b"v",
                                         partition=None, timestamp=None, headers=None)
    finally:
        await producer.stop()
