#!/usr/bin/env bash
# The local stack: Apache Kafka (KRaft, from Maven-resolved jars) and a PostgreSQL cluster
# the project owns. Usage: deploy/bin/stack.sh {up|down|status|kafka-up|kafka-down|pg-up|pg-down|fetch}
# The three-broker cluster (production replication, beside the single broker):
#   deploy/bin/stack.sh {cluster-up|cluster-down|cluster-status|cluster-bootstrap|cluster-config N|
#                        cluster-node-up N|cluster-node-kill N|cluster-reassign PLAN.json}
# The secure broker (SASL/SCRAM, ACLs; beside the others): deploy/bin/stack.sh {secure-up|secure-down|secure-status}
# Every wait polls a real answer (no fixed sleeps) and gives up after a bounded time.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE="${TALLY_STATE_DIR:-$ROOT/.state}"
LOGS="$STATE/logs"
KAFKA_PORT="${TALLY_KAFKA_PORT:-9092}"
CONTROLLER_PORT="${TALLY_KAFKA_CONTROLLER_PORT:-9093}"
PG_PORT="${TALLY_PG_PORT:-5433}"
KAFKA_LIBS="$ROOT/deploy/kafka/libs"
KAFKA_DIR="$STATE/kafka"
PG_DIR="$STATE/postgres"
PG_DATA="$PG_DIR/data"
PG_RUN="$PG_DIR/run"
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"

mkdir -p "$LOGS"
log() { printf '[stack] %s\n' "$*"; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # wait_for <description> <seconds> <command...>
  local what="$1" limit="$2"; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null; do
    if ((SECONDS >= deadline)); then log "gave up waiting for $what after ${limit}s"; return 1; fi
    sleep 0.2
  done
}

# ---------------------------------------------------------------- Kafka
kafka_fetch() {
  if [ -f "$KAFKA_LIBS/.complete" ] && [ "$KAFKA_LIBS/.complete" -nt "$ROOT/deploy/kafka/pom.xml" ]; then return 0; fi
  log "resolving Apache Kafka jars from Maven Central (deploy/kafka/pom.xml)"
  rm -rf "$KAFKA_LIBS"
  mvn -q -B -f "$ROOT/deploy/kafka/pom.xml" dependency:copy-dependencies
  touch "$KAFKA_LIBS/.complete"
}

kafka_pid() { [ -f "$KAFKA_DIR/kafka.pid" ] && kill -0 "$(cat "$KAFKA_DIR/kafka.pid")" 2>/dev/null && cat "$KAFKA_DIR/kafka.pid"; }

kafka_java() { "$JAVA" -Xms512m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
  -Dlog4j2.configurationFile="$ROOT/deploy/kafka/log4j2.properties" -cp "$KAFKA_LIBS/*" "$@"; }

start_broker() { # start_broker <dir> <log> [heap]: run kafka.Kafka on <dir>/server.properties in the
  # background (heap "min max", default "512m 1g"), its pid in <dir>/kafka.pid; does not wait
  local dir="$1" out="$2" heap_min heap_max
  read -r heap_min heap_max <<< "${3:-512m 1g}"
  nohup "$JAVA" -Xms"$heap_min" -Xmx"$heap_max" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$ROOT/deploy/kafka/log4j2.properties" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$dir/server.properties" >> "$out" 2>&1 &
  echo $! > "$dir/kafka.pid"
}

kafka_up() {
  kafka_fetch
  if kafka_pid >/dev/null; then log "kafka already running (pid $(kafka_pid))"; return 0; fi
  mkdir -p "$KAFKA_DIR/data"
  sed -e "s#@KAFKA_PORT@#$KAFKA_PORT#g" -e "s#@CONTROLLER_PORT@#$CONTROLLER_PORT#g" \
      -e "s#@DATA_DIR@#$KAFKA_DIR/data#g" "$ROOT/deploy/kafka/server.properties.in" > "$KAFKA_DIR/server.properties"
  if [ ! -f "$KAFKA_DIR/data/meta.properties" ]; then
    local cluster_id
    cluster_id="$(kafka_java kafka.tools.StorageTool random-uuid | tail -n 1)"
    log "formatting KRaft storage (cluster id $cluster_id)"
    kafka_java kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_DIR/server.properties" >> "$LOGS/kafka.log" 2>&1
  fi
  if port_open "$KAFKA_PORT"; then log "port $KAFKA_PORT is taken by another process; set TALLY_KAFKA_PORT"; return 1; fi
  log "starting Apache Kafka on 127.0.0.1:$KAFKA_PORT"
  start_broker "$KAFKA_DIR" "$LOGS/kafka.log"
  wait_for "kafka port $KAFKA_PORT" 120 kafka_answers || { tail -n 40 "$LOGS/kafka.log"; return 1; }
}

kafka_answers() {
  # Our broker process is alive and its port accepts connections (fail fast if it died).
  kafka_pid >/dev/null || { log "kafka exited during start-up" >&2; tail -n 40 "$LOGS/kafka.log" >&2; exit 1; }
  port_open "$KAFKA_PORT"
}

stop_broker() { # stop_broker <name> <pid or empty> <pid file>
  local what="$1" pid="$2"
  if [ -z "$pid" ]; then log "$what not running"; return 0; fi
  log "stopping $what (pid $pid)"
  kill -TERM "$pid"
  # A controlled shutdown flushes every log; wait for it rather than killing.
  local deadline=$((SECONDS + 90))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then log "$what did not stop in 90s; killing"; kill -KILL "$pid"; break; fi
    sleep 0.2
  done
  rm -f "$3"
}

kafka_down() { stop_broker kafka "$(kafka_pid || true)" "$KAFKA_DIR/kafka.pid"; }

# ---------------------------------------------------------------- PostgreSQL
pg_bin() {
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -z "$d" ]; then
    log "PostgreSQL is missing: installing Debian's postgresql package"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null && apt-get install -y -qq postgresql >/dev/null
    d="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
  fi
  echo "$d"
}

# PostgreSQL refuses to run as root; the cluster belongs to the system user 'postgres'.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

pg_up() {
  local bin; bin="$(pg_bin)"
  mkdir -p "$PG_DIR" "$PG_RUN"
  if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$PG_DIR" "$PG_RUN"; fi
  if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    log "initialising PostgreSQL cluster in $PG_DATA"
    as_pg "$bin/initdb" -D "$PG_DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      -E UTF8 --locale=C.UTF-8 >> "$LOGS/postgres.log" 2>&1
    cat >> "$PG_DATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_RUN'
max_connections = 300
shared_buffers = 256MB
fsync = on
log_min_messages = warning
CONF
  fi
  if as_pg "$bin/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then log "postgres already running"; else
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    as_pg "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_DIR/server.log" -w -t 60 start >/dev/null
  fi
  ln -sf "$PG_DIR/server.log" "$LOGS/postgres-server.log"
  wait_for "postgres" 60 as_pg "$bin/pg_isready" -h "$PG_RUN" -p "$PG_PORT"
  # The application role and databases (idempotent).
  as_pg "$bin/psql" -h "$PG_RUN" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -q <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tally') THEN
    CREATE ROLE tally LOGIN CREATEDB PASSWORD 'tally';
  END IF;
END $$;
SQL
  local db
  for db in ${TALLY_PG_DATABASES:-tally_contracts tally_invoicing}; do
    if [ "$(as_pg "$bin/psql" -h "$PG_RUN" -p "$PG_PORT" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$db'")" != 1 ]; then
      as_pg "$bin/createdb" -h "$PG_RUN" -p "$PG_PORT" -U postgres -O tally "$db"
    fi
  done
}

pg_down() {
  local bin; bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  [ -n "$bin" ] && [ -f "$PG_DATA/PG_VERSION" ] || { log "postgres not set up"; return 0; }
  if as_pg "$bin/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
    log "stopping postgres"
    as_pg "$bin/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null
  else log "postgres not running"; fi
}

# ---------------------------------------------------------------- three-broker cluster
# Three KRaft nodes on loopback, each broker+controller, forming a three-voter quorum: the
# production replication settings of deploy/README.md (RF 3, min.insync.replicas=2, no unclean
# election) on one machine. Its own ports and data (.state/cluster), so it runs beside the
# single broker on 9092. Node N listens on CLUSTER_PORT_BASE+N-1 (19092..19094) and its
# controller on CLUSTER_CONTROLLER_PORT_BASE+N-1 (19192..19194).
CLUSTER_DIR="$STATE/cluster"
CLUSTER_NODES=(1 2 3)
CLUSTER_PORT_BASE="${TALLY_CLUSTER_PORT_BASE:-19092}"
CLUSTER_CONTROLLER_PORT_BASE="${TALLY_CLUSTER_CONTROLLER_PORT_BASE:-19192}"

cluster_port() { echo $((CLUSTER_PORT_BASE + $1 - 1)); }
cluster_controller_port() { echo $((CLUSTER_CONTROLLER_PORT_BASE + $1 - 1)); }
cluster_bootstrap() {
  local n out=""
  for n in "${CLUSTER_NODES[@]}"; do out="${out:+$out,}127.0.0.1:$(cluster_port "$n")"; done
  echo "$out"
}
cluster_voters() {
  local n out=""
  for n in "${CLUSTER_NODES[@]}"; do out="${out:+$out,}$n@127.0.0.1:$(cluster_controller_port "$n")"; done
  echo "$out"
}
cluster_node_pid() {
  local f="$CLUSTER_DIR/node-$1/kafka.pid"
  [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && cat "$f"
}

cluster_node_config() { # the server.properties of node $1
  local n="$1" dir="$CLUSTER_DIR/node-$1"
  cat <<PROPS
# Generated by deploy/bin/stack.sh (cluster node $n); edit the script, not this file.
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$(cluster_voters)
listeners=PLAINTEXT://127.0.0.1:$(cluster_port "$n"),CONTROLLER://127.0.0.1:$(cluster_controller_port "$n")
advertised.listeners=PLAINTEXT://127.0.0.1:$(cluster_port "$n")
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=4
# The production settings (deploy/README.md): three copies, two acknowledged, no unclean election.
default.replication.factor=3
min.insync.replicas=2
unclean.leader.election.enable=false
offsets.topic.replication.factor=3
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
transaction.state.log.num.partitions=8
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
log.retention.hours=168
log.segment.bytes=268435456
message.max.bytes=4194304
# A follower that stops fetching leaves the ISR after 10 s (the default is 30 s): a killed broker
# is noticed sooner, which keeps the broker-failure test inside its bound.
replica.lag.time.max.ms=10000
PROPS
}

cluster_node_up() { # start node $1 (formatting its storage on first use); does not wait
  local n="$1" dir="$CLUSTER_DIR/node-$1"
  if cluster_node_pid "$n" >/dev/null; then log "cluster node $n already running (pid $(cluster_node_pid "$n"))"; return 0; fi
  if port_open "$(cluster_port "$n")"; then log "port $(cluster_port "$n") is taken by another process; set TALLY_CLUSTER_PORT_BASE"; return 1; fi
  mkdir -p "$dir/data"
  cluster_node_config "$n" > "$dir/server.properties"
  if [ ! -f "$CLUSTER_DIR/cluster.id" ]; then
    kafka_java kafka.tools.StorageTool random-uuid | tail -n 1 > "$CLUSTER_DIR/cluster.id"
  fi
  if [ ! -f "$dir/data/meta.properties" ]; then
    log "formatting KRaft storage of cluster node $n (cluster id $(cat "$CLUSTER_DIR/cluster.id"))"
    kafka_java kafka.tools.StorageTool format -t "$(cat "$CLUSTER_DIR/cluster.id")" -c "$dir/server.properties" \
      >> "$LOGS/cluster-$n.log" 2>&1
  fi
  log "starting cluster node $n on 127.0.0.1:$(cluster_port "$n") (controller $(cluster_controller_port "$n"))"
  # Smaller heaps than the single broker: three of them share the machine.
  start_broker "$dir" "$LOGS/cluster-$n.log" "256m 768m"
}

cluster_node_answers() {
  cluster_node_pid "$1" >/dev/null || { log "cluster node $1 exited during start-up" >&2; tail -n 40 "$LOGS/cluster-$1.log" >&2; exit 1; }
  port_open "$(cluster_port "$1")"
}

cluster_node_wait() { wait_for "cluster node $1 (port $(cluster_port "$1"))" 180 cluster_node_answers "$1"; }

cluster_node_kill() { # SIGKILL node $1: a broker failure, nothing flushed (the broker-failure test)
  local pid; pid="$(cluster_node_pid "$1" || true)"
  if [ -z "$pid" ]; then log "cluster node $1 not running"; return 0; fi
  log "killing cluster node $1 (pid $pid)"
  kill -KILL "$pid"
  wait_for "cluster node $1 to exit" 30 bash -c "! kill -0 $pid 2>/dev/null"
  rm -f "$CLUSTER_DIR/node-$1/kafka.pid"
}

cluster_up() {
  kafka_fetch
  mkdir -p "$CLUSTER_DIR"
  local n
  # All three start together: a node waits for a quorum of controllers before it serves.
  for n in "${CLUSTER_NODES[@]}"; do cluster_node_up "$n"; done
  for n in "${CLUSTER_NODES[@]}"; do cluster_node_wait "$n"; done
  log "cluster up: bootstrap $(cluster_bootstrap)"
}

cluster_down() {
  local n pid pids=()
  for n in "${CLUSTER_NODES[@]}"; do
    pid="$(cluster_node_pid "$n" || true)"
    if [ -n "$pid" ]; then pids+=("$pid"); log "stopping cluster node $n (pid $pid)"; kill -TERM "$pid"; fi
  done
  if [ ${#pids[@]} = 0 ]; then log "cluster not running"; return 0; fi
  # Stopped together, so the quorum lasts while each flushes; the last ones may wait on a quorum
  # that is gone, hence the bounded wait and then KILL.
  local deadline=$((SECONDS + 90))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null; do
      if ((SECONDS >= deadline)); then log "cluster pid $pid did not stop in 90s; killing"; kill -KILL "$pid"; break; fi
      sleep 0.2
    done
  done
  for n in "${CLUSTER_NODES[@]}"; do rm -f "$CLUSTER_DIR/node-$n/kafka.pid"; done
}

cluster_reassign() { # apply a partition reassignment plan (JSON, Kafka's format) to the cluster
  log "reassigning partitions as $1 says (the tool's output: $LOGS/cluster-tools.log)"
  kafka_java org.apache.kafka.tools.reassign.ReassignPartitionsCommand --bootstrap-server "$(cluster_bootstrap)" \
    --reassignment-json-file "$1" --execute >> "$LOGS/cluster-tools.log" 2>&1
}

# ---------------------------------------------------------------- secure broker
# One KRaft node with SASL/SCRAM-SHA-512 on loopback and the StandardAuthorizer (no ACL, no access),
# beside the PLAINTEXT broker: its own ports (29092 clients, 29093 controller) and data
# (.state/kafka-secure). deploy/bin/secure_bootstrap.py writes its config and the admin's
# credential first, and afterwards creates the services' users, their ACLs and the topics.
SECURE_DIR="$STATE/kafka-secure"
SECURE_PORT="${TALLY_SECURE_KAFKA_PORT:-29092}"
SECURE_CONTROLLER_PORT="${TALLY_SECURE_KAFKA_CONTROLLER_PORT:-29093}"
PY="$ROOT/.venv/bin/python"

secure_pid() { [ -f "$SECURE_DIR/kafka.pid" ] && kill -0 "$(cat "$SECURE_DIR/kafka.pid")" 2>/dev/null && cat "$SECURE_DIR/kafka.pid"; }

secure_answers() {
  secure_pid >/dev/null || { log "secure kafka exited during start-up" >&2; tail -n 40 "$LOGS/kafka-secure.log" >&2; exit 1; }
  port_open "$SECURE_PORT"
}

secure_up() {
  kafka_fetch
  if secure_pid >/dev/null; then log "secure kafka already running (pid $(secure_pid))"; return 0; fi
  if port_open "$SECURE_PORT"; then log "port $SECURE_PORT is taken by another process; set TALLY_SECURE_KAFKA_PORT"; return 1; fi
  mkdir -p "$SECURE_DIR/data"
  TALLY_STATE_DIR="$STATE" TALLY_SECURE_KAFKA_PORT="$SECURE_PORT" TALLY_SECURE_KAFKA_CONTROLLER_PORT="$SECURE_CONTROLLER_PORT" \
    "$PY" "$ROOT/deploy/bin/secure_bootstrap.py" prepare
  if [ ! -f "$SECURE_DIR/data/meta.properties" ]; then
    local cluster_id
    cluster_id="$(kafka_java kafka.tools.StorageTool random-uuid | tail -n 1)"
    log "formatting the secure broker's KRaft storage (cluster id $cluster_id) with the admin's SCRAM credential"
    kafka_java kafka.tools.StorageTool format -t "$cluster_id" -c "$SECURE_DIR/server.properties" \
      --add-scram "$(cat "$SECURE_DIR/format-scram")" >> "$LOGS/kafka-secure.log" 2>&1
  fi
  rm -f "$SECURE_DIR/format-scram"
  log "starting the secure Apache Kafka on 127.0.0.1:$SECURE_PORT (SASL_PLAINTEXT, SCRAM-SHA-512, ACLs)"
  start_broker "$SECURE_DIR" "$LOGS/kafka-secure.log" "256m 768m"
  wait_for "secure kafka port $SECURE_PORT" 120 secure_answers || { tail -n 40 "$LOGS/kafka-secure.log"; return 1; }
}

secure_down() { stop_broker "secure kafka" "$(secure_pid || true)" "$SECURE_DIR/kafka.pid"; }

secure_status() {
  if secure_pid >/dev/null && port_open "$SECURE_PORT"; then echo "kafka-secure up  127.0.0.1:$SECURE_PORT SASL_PLAINTEXT (pid $(secure_pid))"; else echo "kafka-secure down"; fi
}

cluster_status() {
  local n
  for n in "${CLUSTER_NODES[@]}"; do
    if cluster_node_pid "$n" >/dev/null && port_open "$(cluster_port "$n")"; then
      echo "cluster-$n up    127.0.0.1:$(cluster_port "$n") (pid $(cluster_node_pid "$n"))"
    else echo "cluster-$n down"; fi
  done
}

status() {
  if kafka_pid >/dev/null && port_open "$KAFKA_PORT"; then echo "kafka     up    127.0.0.1:$KAFKA_PORT (pid $(kafka_pid))"; else echo "kafka     down"; fi
  if port_open "$PG_PORT"; then echo "postgres  up    127.0.0.1:$PG_PORT"; else echo "postgres  down"; fi
}

case "${1:-}" in
  fetch) kafka_fetch ;;
  kafka-up) kafka_up ;;
  kafka-down) kafka_down ;;
  pg-up) pg_up ;;
  pg-down) pg_down ;;
  up) pg_up; kafka_up ;;
  down) kafka_down; pg_down ;;
  status) status ;;
  cluster-up) cluster_up ;;
  cluster-down) cluster_down ;;
  cluster-status) cluster_status ;;
  cluster-bootstrap) cluster_bootstrap ;;
  cluster-config) cluster_node_config "${2:?node 1..3}" ;;
  cluster-node-up) cluster_node_up "${2:?node 1..3}"; cluster_node_wait "$2" ;;
  cluster-node-kill) cluster_node_kill "${2:?node 1..3}" ;;
  cluster-reassign) cluster_reassign "${2:?reassignment JSON file}" ;;
  secure-up) secure_up ;;
  secure-down) secure_down ;;
  secure-status) secure_status ;;
  *) echo "usage: $0 {up|down|status|kafka-up|kafka-down|pg-up|pg-down|fetch|cluster-up|cluster-down|cluster-status|cluster-bootstrap|cluster-config N|cluster-node-up N|cluster-node-kill N|cluster-reassign PLAN.json|secure-up|secure-down|secure-status}" >&2; exit 2 ;;
esac
