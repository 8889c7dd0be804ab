#!/usr/bin/env bash
# Check Tally's Prometheus config and run the `promtool test rules` unit tests of every alert.
# promtool comes from Debian's prometheus package: installed when missing and we are root (as
# stack.sh installs PostgreSQL); otherwise the check is skipped with a note, never failed.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { echo "[promtool] $*" >&2; }

if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "promtool is missing: installing Debian's prometheus package"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null && apt-get install -y -qq prometheus >/dev/null
  else
    log "promtool is missing and cannot be installed here (not root, or no apt-get): skipping the rule tests"
    exit 0
  fi
fi
cd "$HERE"
promtool check config prometheus.yml
promtool test rules tests/*.yml
# the dashboards are JSON Grafana can import (a parse check: Grafana itself is not installed here)
for f in "$HERE"/../grafana/*.json; do python3 -m json.tool "$f" >/dev/null || { echo "[promtool] $f is not JSON" >&2; exit 1; }; done
