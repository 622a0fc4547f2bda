#!/usr/bin/env bash
# Browser tests: headless Debian Chromium (driven by playwright-core) against the release
# binary, a real PostgreSQL (127.0.0.1:5432 when it answers, else Latchkey's private cluster)
# and a real SMTP server. Screenshots and logs land in target/e2e/.
# Called by scripts/test; on its own: e2e/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

chromium=${LATCHKEY_E2E_CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "e2e: installing Debian's chromium and chromium-driver"
    apt-get update -q && apt-get install -y -q chromium chromium-driver
  else
    echo "e2e: $chromium is missing. Install Debian's browser first:" >&2
    echo "       sudo apt-get install -y chromium chromium-driver" >&2
    echo "     (or skip the browser tests with LATCHKEY_E2E=0)" >&2
    exit 1
  fi
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "e2e: Node.js 20+ and npm are needed (apt-get install -y nodejs npm)" >&2
  exit 1
fi
if ! command -v psql >/dev/null 2>&1; then
  echo "e2e: psql is needed (apt-get install -y postgresql-client)" >&2
  exit 1
fi

if [ -z "${LATCHKEY_BIN:-}" ]; then
  cargo build --release --locked --bin latchkey
fi

# Exactly what package-lock.json names; no browser is downloaded (playwright-core has none).
(cd e2e && npm ci --no-audit --no-fund --loglevel=error)

rm -rf target/e2e
mkdir -p target/e2e
started=$(date +%s)
status=0
(cd e2e && node --test --test-concurrency=1 --test-reporter=spec tests/) || status=$?
echo "e2e: $(( $(date +%s) - started )) s; screenshots and logs in target/e2e/"
exit "$status"
