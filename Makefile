# Tally — `make help` lists the targets. Everything runs from a fresh machine:
# Python packages into .venv, Kafka's jars from Maven Central, PostgreSQL from Debian.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY := .venv/bin/python
STACK := deploy/bin/stack.sh
export TALLY_KAFKA_BOOTSTRAP ?= 127.0.0.1:9092
export TALLY_PG_PORT ?= 5433
PYTEST_ARGS ?=

.PHONY: help setup up down status logs lint test test-unit test-rules demo bench clean-state up-cluster down-cluster render-manifests up-secure down-secure

include services/console/Makefile.inc

help: ## list the targets
	@grep -hE '^[a-z][a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

.venv/.installed: requirements.txt constraints.txt libs/*/pyproject.toml $(wildcard services/*/pyproject.toml services/*/setup.py services/*/tally_*/*.c)
	@test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -c constraints.txt
	@touch $@

setup: .venv/.installed ## create .venv, install pinned packages, fetch Kafka's jars, make the local JWT secret
	@$(STACK) fetch
	@$(PY) -c "from tally_kit.auth import ensure_local_secret; ensure_local_secret()"

up: setup ## start Kafka (KRaft) and PostgreSQL, create topics, apply migrations, print endpoints
	@$(STACK) up
	@$(PY) deploy/bin/bootstrap.py
	@echo "Kafka       $(TALLY_KAFKA_BOOTSTRAP) (PLAINTEXT, KRaft)"
	@echo "PostgreSQL  127.0.0.1:$(TALLY_PG_PORT)  user tally / password tally  databases tally_contracts, tally_invoicing"
	@echo "logs        .state/logs/"

down: ## stop every process started by `make up` / `make demo` / `make up-cluster` / `make up-secure` (data is kept in .state/)
	@python3 deploy/bin/demo.py down
	@$(STACK) cluster-down
	@$(STACK) secure-down
	@$(STACK) down

# The three-broker cluster: its own ports and data (.state/cluster), beside the single broker.
CLUSTER_BOOTSTRAP := 127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094

up-cluster: setup ## start three KRaft brokers (RF 3, min.insync.replicas=2) on 19092-19094 beside `make up`'s
	@$(STACK) pg-up
	@$(STACK) cluster-up
	@TALLY_KAFKA_BOOTSTRAP=$(CLUSTER_BOOTSTRAP) TALLY_TOPIC_REPLICATION=3 TALLY_TOPIC_MIN_INSYNC_REPLICAS=2 \
		$(PY) deploy/bin/bootstrap.py
	@echo "Kafka       $(CLUSTER_BOOTSTRAP) (3 brokers, PLAINTEXT, KRaft): run a service with TALLY_KAFKA_BOOTSTRAP=$(CLUSTER_BOOTSTRAP)"

down-cluster: ## stop the three-broker cluster only (data is kept in .state/cluster)
	@$(STACK) cluster-down

# The secure broker: SASL/SCRAM-SHA-512 and ACLs, its own ports and data (.state/kafka-secure), beside `make up`'s.
SECURE_BOOTSTRAP := 127.0.0.1:29092

up-secure: setup ## start the secure broker (SASL/SCRAM, ACLs per service) on 29092 beside `make up`'s; users, ACLs, topics
	@$(STACK) pg-up
	@$(STACK) secure-up
	@$(PY) deploy/bin/secure_bootstrap.py
	@echo "Kafka       $(SECURE_BOOTSTRAP) (SASL_PLAINTEXT, SCRAM-SHA-512, StandardAuthorizer): run a service as its principal with"
	@echo "            eval \"\$$($(PY) deploy/bin/secure_bootstrap.py env SERVICE)\"   (SERVICE: contracts ingest attribution metering pacing invoicing)"

down-secure: ## stop the secure broker only (data and credentials are kept in .state/kafka-secure)
	@$(STACK) secure-down

# kustomize as a Go module (the Go module proxy serves it; no binary download).
KUSTOMIZE_VERSION := v5.7.1
KUSTOMIZE := .state/bin/kustomize

$(KUSTOMIZE):
	GOBIN=$(CURDIR)/.state/bin go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)

render-manifests: $(KUSTOMIZE) ## render deploy/k8s's overlays with kustomize (installed into .state/bin on first use)
	@for overlay in deploy/k8s/overlays/*/; do echo "kustomize build $$overlay"; $(KUSTOMIZE) build $$overlay >/dev/null || exit 1; done

status: ## what is running
	@$(STACK) status
	@$(STACK) cluster-status
	@$(STACK) secure-status
	@python3 deploy/bin/demo.py status

logs: ## follow the logs of everything (Ctrl-C to stop)
	@tail -n 50 -F .state/logs/*.log

# mypy runs per package: each library and service is its own top-level package.
MYPY_PACKAGES := libs/tally_billing/tally_billing libs/tally_streams/tally_streams libs/tally_kit/tally_kit $(filter-out %.egg-info,$(wildcard services/*/tally_*))

lint: setup ## ruff on everything, mypy on every library and service package
	$(PY) -m ruff check .
	@for p in $(MYPY_PACKAGES); do echo "mypy $$p"; $(PY) -m mypy $$p || exit 1; done

test-rules: ## promtool: the Prometheus config and a unit test of every alert rule (installs Debian's prometheus as root)
	deploy/prometheus/test.sh

test-unit: setup ## unit tests only (no Kafka, no PostgreSQL)
	$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

# The tests whose event times come from the clock (tests/clock.py) run once more as if it were the last
# seconds of October in New York, hours before its DST change; the full suite's summary stays last.
TEST_NOW_AT ?= 2026-11-01T03:59:30Z
CLOCK_TESTS := tests/integration/attribution tests/e2e/test_e2e_billing.py::test_a_month_of_simulated_traffic_invoices_to_the_cent

test: up lint console-setup ## the full suite against the real stack: lint, console + browser, unit, integration, end-to-end
	deploy/prometheus/test.sh
	services/console/bin/test.sh all
	TALLY_TEST_NOW=$(TEST_NOW_AT) TZ=America/New_York $(PY) -m pytest -q $(CLOCK_TESTS)
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: up console-setup ## run everything under a supervisor with simulated traffic; prints URLs and a token per role
	cd services/console/web && npm run build
	TALLY_DEMO_PACING=$${TALLY_DEMO_PACING:-true} $(PY) deploy/bin/demo.py up

BENCH_ARGS ?=
bench: up ## benchmarks: Tally beside Kafka's own perf tools and a Kafka Streams peer (~25 min; figures in results/)
	$(PY) bench/run.py $(BENCH_ARGS)

clean-state: down ## delete all local data (Kafka logs, PostgreSQL cluster)
	rm -rf .state
