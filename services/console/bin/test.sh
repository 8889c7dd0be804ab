#!/usr/bin/env bash
# The console's checks, in the order `make test` should run them:
#   npm ci → API types up to date → lint → typecheck → unit tests (Vitest) → build → browser tests (Playwright + Debian's Chromium).
# Usage: services/console/bin/test.sh [unit|e2e|all]   (default: all)
# The browser tests start the whole stack themselves (deploy/bin/devstack.py): Kafka and
# PostgreSQL must be up (`make up`). Chromium comes from Debian: apt-get install -y chromium.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
web="$here/web"
what="${1:-all}"
cd "$web"

if [[ ! -d node_modules ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund
fi
# the API types are generated from the services' OpenAPI documents: regenerating must change nothing
npm run check:api
npm run lint
npm run typecheck
npm test
# The unit tests again with the clock at awkward instants (each as TALLY_TEST_NOW and TZ): the last
# seconds of a month in New York (already the 1st in UTC), New Year in Berlin, the end of 29 February,
# and the last seconds before the spring-forward jump in New York and in Berlin.
for at in "2026-12-01T04:59:30Z America/New_York" "2027-01-01T00:00:30+01:00 Europe/Berlin" \
          "2028-02-29T23:59:30-05:00 America/New_York" "2026-03-08T06:59:30Z America/New_York" \
          "2026-03-29T00:59:30Z Europe/Berlin"; do
  read -r instant zone <<<"$at"
  echo "unit tests at $instant ($zone)"
  TALLY_TEST_NOW="$instant" TZ="$zone" npx vitest run --reporter=dot
done
npm run build

if [[ "$what" == "all" || "$what" == "e2e" ]]; then
  if [[ ! -x "${TALLY_CHROMIUM:-/usr/bin/chromium}" ]]; then
    echo "Chromium is missing: apt-get install -y chromium (Debian's package; no browser download)" >&2
    exit 1
  fi
  npm run e2e
fi
