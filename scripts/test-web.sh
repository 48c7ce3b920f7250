#!/usr/bin/env bash
# Browser tests of the tracking page and the dispatch board: a real
# `doorcode serve` driven by headless Debian Chromium through playwright-core.
# Installs what a fresh machine lacks (Debian chromium via apt, the pinned
# npm packages via `npm ci`), builds the binary, runs `node --test`.
# Idempotent; quick once installed. UPDATE_SCREENSHOTS=1 refreshes
# docs/screenshots/ from the run's artifacts (web-tests/artifacts/).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

if [ ! -x /usr/bin/chromium ]; then
    step "installing Debian chromium"
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y chromium chromium-driver
fi
command -v node >/dev/null || { echo "node (v18+) is required for the browser tests" >&2; exit 1; }

step "web-tests: npm ci (playwright-core, pinned)"
if [ ! -f web-tests/node_modules/playwright-core/package.json ] \
    || [ web-tests/package-lock.json -nt web-tests/node_modules/.package-lock.json ]; then
    (cd web-tests && npm ci --no-audit --no-fund)
fi

step "building doorcode"
# The same feature set as `cargo test --workspace --all-targets` (scripts/test.sh):
# after that run this builds nothing; a `-p` build would rebuild ~30 crates.
cargo build --workspace --all-targets --locked

step "browser tests (headless Chromium)"
cd web-tests
mkdir -p artifacts
status=0
node --test --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination=artifacts/results.tap || status=$?
passed=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' artifacts/results.tap | tail -1)
failed=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' artifacts/results.tap | tail -1)
echo "${passed:-0} passed, ${failed:-0} failed"
if [ "$status" != 0 ] || [ "${passed:-0}" = 0 ] || [ "${failed:-1}" != 0 ]; then
    exit 1
fi
