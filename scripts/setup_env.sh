#!/usr/bin/env bash
# Create .venv and install the package with its dev extras. torch==2.13.0 goes first so that pip takes the CPU wheel
# instead of resolving a bare `torch` to a multi-GB CUDA build. Skipped when .venv is current: a stamp holds the hash
# of the packaging files, so a second call costs nothing until setup.cfg or pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_VERSION=2.13.0
STAMP=.venv/.trace-setup-stamp
WANT=$(cat setup.cfg pyproject.toml scripts/setup_env.sh | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
quiet() { grep -v -e "^WARNING: Location" -e "^\s*$" || true; }
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | quiet
.venv/bin/python -m pip install -q "torch==$TORCH_VERSION" 2>&1 | quiet
# The editable install maps the import names trace_training / trace_datasets onto training/ / datasets_scripts/ with
# an import hook; setuptools' generic notice about editable installs is silenced (PYTHONWARNINGS reaches the backend).
PYTHONWARNINGS=ignore .venv/bin/python -m pip install -q -e ".[dev]" 2>&1 | quiet
echo "$WANT" > "$STAMP"
