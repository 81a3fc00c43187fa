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
.venv/bin/mypy tests
.venv/bin/mypy benchmarks --exclude benchmarks/locustfile.py  # locust is the optional bench extra
echo "== import contracts"; .venv/bin/lint-imports
workers="${FLEETGATE_TEST_WORKERS:-2}"
echo "== pytest: policies (pure; gated at 100% line and branch coverage)"
.venv/bin/python -m pytest -q -n "$workers" tests/policies \
    --cov=policies --cov-branch --cov-report=term-missing:skip-covered --cov-fail-under=100
echo "== pytest: gateway, controller, CLI, end to end"
.venv/bin/python -m pytest -q -n "$workers" --ignore=tests/policies "$@"
