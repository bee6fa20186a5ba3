#!/usr/bin/env bash
# Runs every pushlab test: formatting, lints, the Rust unit and API tests, and
# the browser tests in headless Chromium.
#
# On a fresh Debian machine it first installs what the tests need (Debian's
# chromium, Node.js, npm and iproute2 for the browser tests; redis-server and
# nginx for the --redis tests; curl for the protocol walkthrough), then the
# npm packages from the
# committed lockfile. Nothing is downloaded outside the package managers.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
# The --redis tests start their own redis-server on a free port; the
# cluster tests put nginx in front of the nodes.
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
# The WebRTC browser tests make their own network namespace (unshare -n, as
# root) and need `ip` to give it a veth pair.
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
# The walkthrough test runs docs/protocol.md's curl examples as written.
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ "${#missing[@]}" -gt 0 ]; then
  step "installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi

node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "the browser tests need Node.js 20 or newer; this machine has $(node --version)" >&2
  exit 1
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (the product and the tool crates)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (unit, API and property tests; the tool crates' unit tests)"
cargo test --workspace --locked

step "building the release binary for the browser tests"
cargo build --release --locked

step "browser tests in headless Chromium"
cd tests/e2e
npm ci --no-audit --no-fund
npm test
