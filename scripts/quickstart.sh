#!/usr/bin/env bash
# One command on a fresh machine: create .venv with the package and its extras (scripts/setup_env.sh), then run the
# TRACE quickstart: evaluate the shipped checkpoint (checkpoints/trace-mini-noaa) on its real test windows against
# the baselines, or with --train the whole pipeline (datasets -> pretrain -> align -> index -> evaluation ->
# Hub-ready model folder, figures, table).
# Usage: bash scripts/quickstart.sh [--train | --model DIR] [--output-dir DIR] [--data-dir DIR] [--smoke] [--seed N]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export HF_HUB_DISABLE_TELEMETRY=1
exec .venv/bin/python -m trace_training.quickstart "$@"
