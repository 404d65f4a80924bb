#!/usr/bin/env bash
# The official Authing and GenAuth Python SDKs (PyPI) against the simulator
# the exporter's demo serves on loopback: keeps the simulator, and so `demo`
# and every test built on it, speaking the real protocol. The SDKs import
# `websockets` without declaring it.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/sdk-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check \
  authing==5.1.0 genauth==5.1.0 websockets==17.4
cargo build --locked -q --bin webhook-log-exporter
timeout 120 "$venv/bin/python" scripts/sdk_contract.py target/debug/webhook-log-exporter
