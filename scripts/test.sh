#!/usr/bin/env bash
# Runs every test of the project: unit tests, integration tests against the
# real server and the simulator on loopback, the alert-rule and dashboard
# tests (promtool, amtool), the end-to-end test with a real Prometheus and
# Alertmanager (Debian's packages, installed here when missing), the official
# Authing/GenAuth SDKs against the simulator (PyPI, in a venv under target/)
# and the status page in headless Chromium (Debian's chromium, installed by
# browser-test.sh when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for bin in promtool amtool prometheus; do
  command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
done
# Debian installs Alertmanager as prometheus-alertmanager.
command -v prometheus-alertmanager >/dev/null 2>&1 || command -v alertmanager >/dev/null 2>&1 \
  || missing+=(alertmanager)
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing prometheus and prometheus-alertmanager (missing: ${missing[*]})" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager >/dev/null
  else
    echo "missing ${missing[*]}: install Debian's prometheus and prometheus-alertmanager packages" >&2
    exit 1
  fi
fi

cargo test --locked --all-targets "$@"

# The official SDKs against the simulator.
bash scripts/sdk-contract.sh

# The status page in headless Chromium, against /metrics.
bash scripts/browser-test.sh
