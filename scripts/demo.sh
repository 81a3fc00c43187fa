#!/usr/bin/env bash
# Install fleetgate into ./.venv and run the demo: three member clusters on loopback behind one gateway.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e .
exec .venv/bin/fleetgate demo "$@"
