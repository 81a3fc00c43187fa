#!/usr/bin/env bash
# Install fleetgate with its dev dependencies into ./.venv, then run everything CI runs:
# lint (ruff), types (mypy --strict), import contracts (import-linter) and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[dev]'
echo "== ruff"; .venv/bin/ruff check policies gateway controller fleetgate tests benchmarks
echo "== ruff format"; .venv/bin/ruff format --check policies gateway controller fleetgate tests benchmarks
echo "== mypy --strict"; .venv/bin/mypy
echo "== import contracts"; .venv/bin/lint-imports
echo "== pytest"; .venv/bin/python -m pytest -q -n "${FLEETGATE_TEST_WORKERS:-2}" "$@"
