#!/usr/bin/env bash
# Create .venv and install the package with its dev extras. torch==2.13.0 goes first so that pip
# takes the CPU wheel instead of resolving a bare `torch` to a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[dev]"
