#!/usr/bin/env bash
# The console's checks, in the order `make test` should run them:
#   npm ci → lint → typecheck → unit tests (Vitest) → build → browser tests (Playwright + Debian's Chromium).
# Usage: services/console/bin/test.sh [unit|e2e|all]   (default: all)
# The browser tests start the whole stack themselves (tally_console.devstack): Kafka and
# PostgreSQL must be up (`make up`). Chromium comes from Debian: apt-get install -y chromium.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
web="$here/web"
what="${1:-all}"
cd "$web"

if [[ ! -d node_modules ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund
fi
npm run lint
npm run typecheck
npm test
npm run build

if [[ "$what" == "all" || "$what" == "e2e" ]]; then
  if [[ ! -x "${TALLY_CHROMIUM:-/usr/bin/chromium}" ]]; then
    echo "Chromium is missing: apt-get install -y chromium (Debian's package; no browser download)" >&2
    exit 1
  fi
  npm run e2e
fi
