"""The ACLs of the secure mode follow from the topic catalog (issue 16 item 10): who writes and
reads each topic is said once, in ``tally_streams.topics``; ``tally_streams.acls.acls`` derives
each principal's least-privilege bindings from it, and the README's topic map is the catalog's."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from tally_kit.settings import SettingsError
from tally_streams import acls, security, topics
from tally_streams.acls import CLUSTER, GROUP, LITERAL, TOPIC, TRANSACTIONAL_ID, Acl

ROOT = Path(__file__).resolve().parents[3]
ALL = (*topics.CATALOG, *topics.INTERNAL)


def writes(bindings: list[Acl], service: str) -> set[str]:
    return {a.name for a in bindings if a.principal == f"User:tally-{service}" and a.resource == TOPIC
            and a.operation == "Write"}


def test_the_readme_shows_the_catalogs_topic_map() -> None:
    assert topics.topic_map() in (ROOT / "README.md").read_text(), \
        "README.md's topic map differs from the catalog: paste tally_streams.topics.topic_map()"


def test_every_topic_has_a_writer_and_names_only_known_services() -> None:
    for spec in ALL:
        assert spec.producers, f"{spec.name}: nobody writes it"
        assert set(spec.producers) | set(spec.consumers) <= set(topics.SERVICES), spec.name
    names = [s.name for s in ALL]
    assert len(names) == len(set(names))


def test_a_renamed_spec_keeps_who_writes_and_reads_it() -> None:
    r = topics.CONTRACT_TERMS.renamed("x")
    assert (r.name, r.producers, r.consumers) == ("x", topics.CONTRACT_TERMS.producers, topics.CONTRACT_TERMS.consumers)


def test_only_the_owner_writes_each_family_of_topics() -> None:
    b = acls.acls()
    assert writes(b, "contracts") == {"contracts.events", "contracts.terms"}
    assert writes(b, "ingest") == {"ads.impressions", "ads.conversions", "ads.ivt_reports", "dlq.ingest"}
    assert writes(b, "attribution") == {"billing.attributed_conversions", "billing.conversion_outcomes",
                                        "dlq.ads.impressions", "dlq.ads.conversions", "attribution.state-changelog",
                                        "attribution.processor-lease"}  # the lease: created, never written
    assert writes(b, "metering") == {"billing.running_totals", "billing.periods_closed", "billing.adjustments",
                                     "billing.budget_alerts", "billing.ivt_report_outcomes", "dlq.ads.impressions",
                                     "dlq.billing.attributed_conversions", "metering.deltas",
                                     "metering.state-changelog", "metering.dedupe-changelog"}
    assert writes(b, "pacing") == {"billing.pacing_alerts", "dlq.billing.running_totals", "tally-pacing-"}  # its faust topics, by prefix
    assert writes(b, "invoicing") == set()
    for a in b:
        if a.resource == TOPIC and a.operation == "Write" and a.pattern == LITERAL:
            if a.name.startswith("contracts."):
                assert a.principal == "User:tally-contracts", a
            if a.name.startswith(("metering.", "billing.running_totals", "billing.periods_closed", "billing.adjustments")):
                assert a.principal == "User:tally-metering", a


def test_invoicing_only_reads() -> None:
    ops = {(a.resource, a.operation) for a in acls.acls() if a.principal == "User:tally-invoicing"}
    assert ops == {(TOPIC, "Read"), (TOPIC, "Describe"), (GROUP, "Read"), (GROUP, "Describe")}


def test_each_group_and_transactional_id_belongs_to_one_principal() -> None:
    owners: dict[tuple[str, str, str], set[str]] = {}
    for a in acls.acls():
        if a.resource in (GROUP, TRANSACTIONAL_ID):
            owners.setdefault((a.resource, a.name, a.pattern), set()).add(a.principal)
    assert owners and all(len(p) == 1 for p in owners.values()), owners
    tids = {(name, next(iter(p))) for (res, name, _), p in owners.items() if res == TRANSACTIONAL_ID}
    assert tids == {("tally-attribution", "User:tally-attribution"),
                    ("tally-metering-tally-metering-", "User:tally-metering")}
    assert {a.pattern for a in acls.acls() if a.resource == TRANSACTIONAL_ID} == {acls.PREFIX}


def test_nothing_is_granted_wholesale() -> None:
    for a in acls.acls():
        assert a.operation not in {"All", "Alter", "AlterConfigs", "Delete", "ClusterAction"}, a
        assert a.name not in {"*", ""}, a
        if a.resource == CLUSTER:
            assert a.operation == "IdempotentWrite", a
        if a.pattern != LITERAL:  # prefixes only for transactional ids, attribution's shard groups, pacing's faust topics
            assert (a.principal, a.name) in {("User:tally-metering", "tally-metering-tally-metering-"),
                                             ("User:tally-attribution", "tally-attribution"),
                                             ("User:tally-attribution", "tally-attribution-shard-"),
                                             ("User:tally-pacing", "tally-pacing-")}, a


def test_only_internal_topics_may_be_created_by_a_service() -> None:
    created = {a.name for a in acls.acls() if a.operation == "Create" and a.pattern == LITERAL}
    assert created == {s.name for s in topics.INTERNAL}


def test_the_clients_are_the_services_settings_defaults() -> None:
    def defaults(module: str) -> dict[str, str | None]:
        return {s.env: s.default for s in importlib.import_module(module).SPEC}

    att, met = defaults("tally_attribution.settings"), defaults("tally_metering.settings")
    pac, inv = defaults("tally_pacing.settings"), defaults("tally_invoicing.settings")
    clients = {c.service: c for c in acls.CLIENTS}
    group = att["TALLY_ATTRIBUTION_GROUP"]
    assert clients["attribution"].groups == (group, f"{group}-restore", f"{group}-terms", f"{group}-lease")
    assert clients["attribution"].group_prefixes == (f"{group}-shard-",)  # settings.shard_name
    assert clients["attribution"].transactional_prefixes == (att["TALLY_ATTRIBUTION_TRANSACTIONAL_ID"],)
    group = met["TALLY_METERING_GROUP"]
    assert clients["metering"].groups[:3] == (group, f"{group}-restore", f"{group}-terms")
    assert clients["metering"].transactional_prefixes == (f"tally-metering-{group}-",)
    assert clients["pacing"].groups == (pac["TALLY_PACING_APP_ID"],)
    assert clients["pacing"].own_topic_prefixes == (f"{pac['TALLY_PACING_APP_ID']}-",)
    assert clients["invoicing"].groups == (inv["TALLY_INVOICING_CONSUMER_GROUP"],)


def test_renamed_topics_and_clients_get_the_same_grants_under_the_new_names() -> None:
    prefix = "t-1-"
    specs = [s.renamed(prefix + s.name) for s in ALL]
    renamed = acls.acls(specs, [c.prefixed(prefix) for c in acls.CLIENTS],
                        internal={prefix + s.name for s in topics.INTERNAL})

    def unprefixed(a: Acl) -> Acl:
        return Acl(a.principal, a.resource, a.name.removeprefix(prefix), a.pattern, a.operation)

    assert sorted(unprefixed(a) for a in renamed) == acls.acls()


def test_an_unknown_service_in_the_catalog_is_an_error() -> None:
    with pytest.raises(ValueError, match="billing"):
        acls.acls([topics.TopicSpec("x", "k", "v", producers=("billing",))], [])


def test_the_acl_table_lists_every_binding() -> None:
    b = acls.acls()
    table = acls.markdown_table(b)
    assert table.count("\n") - 1 == len({(a.principal, a.resource, a.name, a.pattern) for a in b})


# ---------------------------------------------------------------------- client security settings


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    sec = security.load({})
    assert not sec.sasl and security.client_config(sec) == {}


def test_sasl_settings_become_librdkafka_settings() -> None:
    sec = security.load({"TALLY_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "TALLY_KAFKA_USERNAME": "tally-metering",
                         "TALLY_KAFKA_PASSWORD": "s3cret"})
    assert security.client_config(sec) == {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "SCRAM-SHA-512",
                                           "sasl.username": "tally-metering", "sasl.password": "s3cret"}
    assert "s3cret" not in repr(sec)
    assert security.load(security.environment(sec)) == sec


def test_security_problems_are_reported_together_and_the_password_never_shown() -> None:
    with pytest.raises(SettingsError) as info:
        security.load({"TALLY_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    assert [p.split(":")[0] for p in info.value.problems] == ["TALLY_KAFKA_USERNAME", "TALLY_KAFKA_PASSWORD"]
    with pytest.raises(SettingsError) as info:
        security.load({"TALLY_KAFKA_SECURITY_PROTOCOL": "SSL", "TALLY_KAFKA_SASL_MECHANISM": "MD5",
                       "TALLY_KAFKA_PASSWORD": "hunter2"})
    assert [p.split(":")[0] for p in info.value.problems] == ["TALLY_KAFKA_SECURITY_PROTOCOL",
                                                              "TALLY_KAFKA_SASL_MECHANISM"]
    assert "hunter2" not in str(info.value)


def test_the_kafka_helpers_carry_the_security_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from tally_streams.kafka import admin_config, consumer_config, producer_config

    monkeypatch.setenv("TALLY_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("TALLY_KAFKA_USERNAME", "tally-invoicing")
    monkeypatch.setenv("TALLY_KAFKA_PASSWORD", "pw")
    for cfg in (producer_config("b:1"), consumer_config("b:1", "g"), admin_config("b:1")):
        assert (cfg["security.protocol"], cfg["sasl.username"], cfg["sasl.password"]) == (
            "SASL_PLAINTEXT", "tally-invoicing", "pw")


def test_deploy_readme_shows_the_derived_acl_table() -> None:
    assert acls.markdown_table(acls.acls()) in (ROOT / "deploy/README.md").read_text(), \
        "deploy/README.md's ACL table differs: paste tally_streams.acls.markdown_table(acls.acls())"
