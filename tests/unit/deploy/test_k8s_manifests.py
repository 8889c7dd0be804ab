"""The Kubernetes manifests (deploy/k8s) say what the rest of Tally says: a KafkaTopic for every
catalog topic with the production replication, every topic a service names either in the
catalog or created ahead of it, probes and budgets on every HTTP service, stable worker ids and
volumes on every stream worker, lag scaling on metering's real group and topic, and only settings
the services actually read. Each overlay is rendered with ``kustomize build`` when kustomize is
installed (`make render-manifests` installs it); without it the base's files are read as kustomize
would list them, and the same checks run on them."""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tally_streams import acls, security, topics

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "production")
SERVICE_SETTINGS = ("tally_contracts", "tally_attribution", "tally_metering", "tally_invoicing", "tally_console",
                    "tally_pacing")
#: read by the service kit and the supervisor rather than by one service's settings
KIT_ENV = {"TALLY_JWT_SECRET", "TALLY_STATE_DIR"}
#: read by tally_streams.kafka.topic_replication for the topics a service creates itself
TOPIC_ENV = {"TALLY_TOPIC_REPLICATION", "TALLY_TOPIC_MIN_INSYNC_REPLICAS"}
#: read by every Kafka client through tally_streams.security (its SPEC, part of each service's --validate)
SECURITY_ENV = {s.env for s in security.SPEC}
#: the workloads that talk to Kafka, and the service (principal) each runs as
KAFKA_WORKLOADS = {("Deployment", "contracts"): "contracts", ("Deployment", "ingest"): "ingest",
                   ("Deployment", "spend"): "metering", ("Deployment", "invoicing"): "invoicing",
                   ("StatefulSet", "attribution"): "attribution", ("StatefulSet", "metering"): "metering",
                   ("StatefulSet", "pacing"): "pacing"}
Doc = dict[str, Any]


def gen_topics() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_topics", K8S / "gen_topics.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def kustomize() -> str | None:
    for candidate in (shutil.which("kustomize"), ROOT / ".state" / "bin" / "kustomize",
                      Path(os.path.expanduser("~/go/bin/kustomize"))):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def base_docs() -> list[Doc]:
    """The base's resources, read as kustomize lists them (no transformers)."""
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    return [d for path in kustomization["resources"] for d in yaml.safe_load_all((K8S / "base" / path).read_text()) if d]


def rendered(overlay: str) -> list[Doc]:
    tool = kustomize()
    if tool is None:
        return base_docs()
    out = subprocess.run([tool, "build", str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module", params=OVERLAYS)
def docs(request: pytest.FixtureRequest) -> list[Doc]:
    return rendered(request.param)


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def containers(workload: Doc) -> list[Doc]:
    return list(workload["spec"]["template"]["spec"]["containers"])


def env_of(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


def settings_spec() -> Iterator[tuple[str, Any]]:
    for package in SERVICE_SETTINGS:
        for setting in importlib.import_module(f"{package}.settings").SPEC:
            yield package, setting


# ---------------------------------------------------------------------- topics


def test_the_kafka_topics_file_is_what_the_generator_writes_from_the_catalog() -> None:
    gen = gen_topics()
    assert gen.OUT.read_text() == gen.render(), "run .venv/bin/python deploy/k8s/gen_topics.py"


def test_every_catalog_topic_is_a_kafka_topic_with_three_replicas_and_two_in_sync() -> None:
    gen = gen_topics()
    manifests = {d["spec"]["topicName"]: d for d in yaml.safe_load_all(gen.OUT.read_text()) if d}
    wanted = {s.name: s for s in (*topics.CATALOG, *gen.OWN_TOPICS)}
    assert set(manifests) == set(wanted)
    for name, spec in wanted.items():
        doc = manifests[name]
        assert doc["kind"] == "KafkaTopic" and doc["apiVersion"] == "kafka.strimzi.io/v1"
        assert doc["spec"]["partitions"] == spec.partitions, name
        assert doc["spec"]["replicas"] == 3, name
        assert doc["spec"]["config"] == spec.config(min_insync_replicas=2), name
        assert doc["spec"]["config"]["min.insync.replicas"] == "2"
        assert doc["spec"]["config"]["unclean.leader.election.enable"] == "false"


def test_every_topic_a_service_names_is_in_the_catalog_or_has_a_kafka_topic_of_its_own() -> None:
    known = {s.name for s in topics.CATALOG} | {s.name for s in gen_topics().OWN_TOPICS}
    unknown = [(package, s.env, s.default) for package, s in settings_spec()
               if "TOPIC" in s.env and s.default and s.default not in known]
    assert unknown == [], "add them to OWN_TOPICS in deploy/k8s/gen_topics.py and run it"


def test_the_dedupe_changelog_is_partitioned_like_the_impressions() -> None:
    own = {s.name: s for s in gen_topics().OWN_TOPICS}
    assert own["metering.dedupe-changelog"].partitions == topics.IMPRESSIONS.partitions


# ---------------------------------------------------------------------- rendered overlays


def test_kafka_is_three_controllers_and_three_brokers_with_the_production_settings(docs: list[Doc]) -> None:
    (kafka,) = of_kind(docs, "Kafka")
    config = kafka["spec"]["kafka"]["config"]
    assert config["default.replication.factor"] == 3 and config["min.insync.replicas"] == 2
    assert config["offsets.topic.replication.factor"] == 3 and config["transaction.state.log.min.isr"] == 2
    assert config["unclean.leader.election.enable"] is False and config["auto.create.topics.enable"] is False
    pools = of_kind(docs, "KafkaNodePool")
    roles = sorted(tuple(p["spec"]["roles"]) for p in pools)
    assert roles == [("broker",), ("controller",)]
    for pool in pools:
        assert pool["spec"]["replicas"] == 3
        assert pool["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    for topic in of_kind(docs, "KafkaTopic"):
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    config_map = one(docs, "ConfigMap", "tally-config")
    (listener,) = kafka["spec"]["kafka"]["listeners"]
    assert config_map["data"]["TALLY_KAFKA_BOOTSTRAP"] == f"{kafka['metadata']['name']}-kafka-bootstrap:{listener['port']}"


def test_topics_the_services_create_themselves_are_replicated_like_the_cluster(docs: list[Doc]) -> None:
    from tally_streams.kafka import topic_replication

    config = one(docs, "ConfigMap", "tally-config")["data"]
    kafka = one(docs, "Kafka", "tally")["spec"]["kafka"]["config"]
    assert topic_replication(config) == (int(kafka["default.replication.factor"]), int(kafka["min.insync.replicas"])) == (3, 2)


def test_postgresql_is_a_cloudnativepg_cluster_holding_both_databases(docs: list[Doc]) -> None:
    (cluster,) = of_kind(docs, "Cluster")
    name = cluster["metadata"]["name"]
    databases = {cluster["spec"]["bootstrap"]["initdb"]["database"]}
    databases |= {d["spec"]["name"] for d in of_kind(docs, "Database") if d["spec"]["cluster"]["name"] == name}
    assert databases == {"tally_contracts", "tally_invoicing"}
    for deployment, database in (("contracts", "tally_contracts"), ("invoicing", "tally_invoicing")):
        (container,) = containers(one(docs, "Deployment", deployment))
        url = env_of(container)[f"TALLY_{deployment.upper()}_DATABASE_URL"]["value"]
        assert url.endswith(f"@{name}-rw:5432/{database}"), url


def test_every_http_service_has_probes_resources_a_service_and_a_disruption_budget(docs: list[Doc]) -> None:
    deployments = of_kind(docs, "Deployment")
    assert {d["metadata"]["name"] for d in deployments} >= {"contracts", "ingest", "spend", "invoicing", "console"}
    budgets = of_kind(docs, "PodDisruptionBudget")
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        for container in containers(deployment):
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
            assert "memory" in container["resources"]["limits"], name
        services = [s for s in of_kind(docs, "Service") if s["spec"]["selector"].items() <= labels.items()]
        assert services and all(p["name"] == "http" for s in services for p in s["spec"]["ports"]), name
        if budgets:  # the dev overlay drops them (one replica each)
            assert any(b["spec"]["selector"]["matchLabels"].items() <= labels.items() for b in budgets), name
            assert deployment["spec"]["replicas"] >= 2, name


@pytest.mark.parametrize(("worker", "id_env"), [("metering", "TALLY_METERING_WORKER_ID"),
                                                ("attribution", "TALLY_ATTRIBUTION_REPLICA_ID")])
def test_every_stream_worker_takes_its_id_from_the_pod_name_and_keeps_a_volume(docs: list[Doc], worker: str,
                                                                               id_env: str) -> None:
    statefulset = one(docs, "StatefulSet", worker)
    (container,) = containers(statefulset)
    env = env_of(container)
    if "valueFrom" in env[id_env]:
        assert env[id_env]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    else:  # the pod name under a prefix: "tally-attribution-$(POD_NAME)"
        ref = env[id_env]["value"].rsplit("$(", 1)[1].rstrip(")")
        assert env[ref]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert list(env).index(ref) < list(env).index(id_env)  # Kubernetes expands only earlier variables
    claims = {c["metadata"]["name"] for c in statefulset["spec"]["volumeClaimTemplates"]}
    assert claims and claims <= {m["name"] for m in container["volumeMounts"]}
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert statefulset["spec"]["serviceName"] in {s["metadata"]["name"] for s in of_kind(docs, "Service")
                                                  if s["spec"].get("clusterIP") == "None"}


def test_metering_scales_on_the_lag_of_its_own_group_on_the_impressions(docs: list[Doc]) -> None:
    from tally_metering.settings import SPEC

    group = next(s.default for s in SPEC if s.env == "TALLY_METERING_GROUP")
    scaled = one(docs, "ScaledObject", "metering")
    assert scaled["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "metering"}
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == group
    assert trigger["metadata"]["topic"] == topics.IMPRESSIONS.name
    assert trigger["metadata"]["bootstrapServers"] == one(docs, "ConfigMap", "tally-config")["data"]["TALLY_KAFKA_BOOTSTRAP"]
    assert (trigger["metadata"]["sasl"], trigger["metadata"]["tls"]) == ("scram_sha512", "enable")
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"] <= topics.IMPRESSIONS.partitions


def test_every_scaled_object_targets_a_workload_that_exists(docs: list[Doc]) -> None:
    for scaled in of_kind(docs, "ScaledObject"):
        ref = scaled["spec"]["scaleTargetRef"]
        one(docs, ref["kind"], ref["name"])


def test_service_monitors_scrape_every_service_on_a_port_it_has(docs: list[Doc]) -> None:
    services = of_kind(docs, "Service")
    scraped: set[str] = set()
    for monitor in of_kind(docs, "ServiceMonitor"):
        selected = [s for s in services
                    if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"].get("labels", {}).items()]
        assert selected, monitor["metadata"]["name"]
        for service in selected:
            ports = {p["name"] for p in service["spec"]["ports"]}
            assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports, service["metadata"]["name"]
            scraped.add(service["metadata"]["name"])
    assert scraped == {s["metadata"]["name"] for s in services}


def test_manifests_set_only_settings_the_services_read(docs: list[Doc]) -> None:
    known = {s.env for _, s in settings_spec()} | KIT_ENV | SECURITY_ENV | TOPIC_ENV
    used = set(one(docs, "ConfigMap", "tally-config")["data"])
    for workload in of_kind(docs, "Deployment") + of_kind(docs, "StatefulSet"):
        for container in containers(workload):
            used |= {name for name in env_of(container) if name.startswith("TALLY_")}
    assert sorted(used - known) == []


def test_every_container_runs_a_module_that_exists(docs: list[Doc]) -> None:
    for workload in of_kind(docs, "Deployment") + of_kind(docs, "StatefulSet"):
        for container in containers(workload):
            args = container["args"]
            assert args[:2] == ["python", "-m"], args
            assert importlib.util.find_spec(args[2]) is not None, args


# ---------------------------------------------------------------------- authentication and ACLs


def test_the_kafka_users_file_is_what_the_generator_writes_from_the_catalog() -> None:
    gen = gen_topics()
    assert gen.USERS_OUT.read_text() == gen.render_users(), "run .venv/bin/python deploy/k8s/gen_topics.py"


def test_every_service_is_a_scram_kafka_user_with_the_acls_derived_from_the_catalog(docs: list[Doc]) -> None:
    users = {u["metadata"]["name"]: u for u in of_kind(docs, "KafkaUser")}
    assert set(users) == {acls.username(s) for s in topics.SERVICES}
    (kafka,) = of_kind(docs, "Kafka")
    found = []
    for name, user in users.items():
        assert user["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
        assert user["spec"]["authentication"] == {"type": "scram-sha-512"}
        assert user["spec"]["authorization"]["type"] == "simple"
        for rule in user["spec"]["authorization"]["acls"]:
            res = rule["resource"]
            assert rule["host"] == "*" and rule.get("type", "allow") == "allow"
            for op in rule["operations"]:
                found.append(acls.Acl(f"User:{name}", res["type"], res.get("name", acls.CLUSTER_NAME),
                                      res.get("patternType", acls.LITERAL), op))
    assert sorted(found) == acls.acls()


def test_the_kafka_listener_authenticates_with_scram_over_tls_and_authorizes_with_acls(docs: list[Doc]) -> None:
    (kafka,) = of_kind(docs, "Kafka")
    listeners = kafka["spec"]["kafka"]["listeners"]
    assert listeners and all(lst["authentication"] == {"type": "scram-sha-512"} and lst["tls"] is True
                             for lst in listeners)
    assert kafka["spec"]["kafka"]["authorization"]["type"] == "simple"
    assert kafka["spec"]["entityOperator"]["userOperator"] is not None
    data = one(docs, "ConfigMap", "tally-config")["data"]
    assert (data["TALLY_KAFKA_SECURITY_PROTOCOL"], data["TALLY_KAFKA_SASL_MECHANISM"]) == ("SASL_SSL", "SCRAM-SHA-512")


def test_every_kafka_workload_runs_as_its_own_user_with_the_cluster_ca(docs: list[Doc]) -> None:
    ca_file = one(docs, "ConfigMap", "tally-config")["data"]["TALLY_KAFKA_SSL_CA_FILE"]
    users = {u["metadata"]["name"] for u in of_kind(docs, "KafkaUser")}
    for (kind, name), service in KAFKA_WORKLOADS.items():
        workload = one(docs, kind, name)
        (container,) = containers(workload)
        env = env_of(container)
        user = acls.username(service)
        assert env["TALLY_KAFKA_USERNAME"]["value"] == user and user in users, name
        assert env["TALLY_KAFKA_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": user, "key": "password"}, name
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        (mount,) = [m for m, path in mounts.items() if ca_file.startswith(path + "/")]
        assert volumes[mount]["secret"]["secretName"] == f"{one(docs, 'Kafka', 'tally')['metadata']['name']}-cluster-ca-cert"


def test_the_stream_workers_transactional_ids_are_granted_to_them() -> None:
    """attribution's transactional id on Kubernetes is tally-attribution for every replica (shard
    k's tally-attribution-shard-<k>), metering's tally-metering-<group>-<pod>: both under the
    prefix their KafkaUser may use."""
    docs = base_docs()
    granted = {(a.principal, a.name) for a in acls.acls() if a.resource == acls.TRANSACTIONAL_ID}
    (att,) = containers(one(docs, "StatefulSet", "attribution"))
    tid = env_of(att)["TALLY_ATTRIBUTION_TRANSACTIONAL_ID"]["value"]
    # one transactional id per shard, whichever replica decides it: a takeover fences the old one
    assert "$(" not in tid, tid
    shards = int(env_of(att)["TALLY_ATTRIBUTION_SHARDS"]["value"])
    assert shards == gen_topics().ATTRIBUTION_SHARDS > 1
    own = {s.name: s for s in gen_topics().OWN_TOPICS}
    assert own["attribution.processor-lease"].partitions == shards  # one lease per shard, exactly
    assert own["attribution.state-changelog"].partitions >= shards  # a changelog partition per shard
    scaled = one(docs, "ScaledObject", "attribution")["spec"]
    assert 2 <= one(docs, "StatefulSet", "attribution")["spec"]["replicas"] == scaled["minReplicaCount"]
    assert scaled["maxReplicaCount"] == shards  # a replica more would hold no shard
    (trigger,) = scaled["triggers"]
    assert trigger["metadata"]["consumerGroup"] == f"{tid}-shard-0"
    assert any(p == "User:tally-attribution" and tid.startswith(prefix) for p, prefix in granted), tid
    from tally_metering.settings import SPEC

    group = next(s.default for s in SPEC if s.env == "TALLY_METERING_GROUP")
    tid = f"tally-metering-{group}-metering-0"  # the worker's (tally_metering.worker) with its pod name as worker id
    assert any(p == "User:tally-metering" and tid.startswith(prefix) for p, prefix in granted), tid


def test_every_kafka_scaler_authenticates_as_its_worker(docs: list[Doc]) -> None:
    auths = {a["metadata"]["name"]: a for a in of_kind(docs, "TriggerAuthentication")}
    for scaled in of_kind(docs, "ScaledObject"):
        ref = scaled["spec"]["scaleTargetRef"]
        (container,) = containers(one(docs, ref["kind"], ref["name"]))
        for trigger in scaled["spec"]["triggers"]:
            auth = auths[trigger["authenticationRef"]["name"]]["spec"]
            params = {e["parameter"]: e for e in auth["env"]}
            assert set(params) == {"username", "password"}
            for e in params.values():
                assert e["containerName"] == container["name"] and e["name"] in env_of(container)
            assert {s["parameter"] for s in auth["secretTargetRef"]} == {"ca"}
