#!/usr/bin/env bash
# `make demo`'s Prometheus (deploy/Procfile.demo): Debian's prometheus package, installed when
# missing and we are root (as stack.sh installs PostgreSQL), scraping every service with the
# rules of deploy/prometheus/rules/. Data in $TALLY_STATE_DIR/prometheus; UI on 127.0.0.1:9090.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="${TALLY_STATE_DIR:-$HERE/../../.state}"
PORT="${TALLY_PROMETHEUS_PORT:-9090}"
if ! command -v prometheus >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[prometheus] missing: installing Debian's prometheus package" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null && apt-get install -y -qq prometheus >/dev/null
  else
    echo "[prometheus] not installed and cannot be installed here (not root): apt-get install prometheus" >&2
    exit 1
  fi
fi
mkdir -p "$STATE/prometheus"
exec prometheus --config.file="$HERE/prometheus.yml" --storage.tsdb.path="$STATE/prometheus" \
  --web.listen-address="127.0.0.1:$PORT" --storage.tsdb.retention.time=7d
