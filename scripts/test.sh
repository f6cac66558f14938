#!/usr/bin/env bash
# Set up a virtual environment from nothing (if needed), lint, run the test suite, then check the wheel on its own.
# Usage: bash scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/python -m ruff check .
.venv/bin/python -m pytest tests -n 2 --dist loadfile -q "$@"
bash scripts/check_wheel.sh
