#!/usr/bin/env bash
# Set up a virtual environment from nothing (if needed) and run the test suite.
# Usage: bash scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m pytest tests -n 2 --dist loadfile -q "$@"
