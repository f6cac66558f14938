#!/usr/bin/env bash
# Trains the shipped trace-mini checkpoint from the recipes in configuration/recipes (issue 15):
# stage 1 (pretrain-mini.yaml) then stage 2 (align-mini.yaml), each with a held-out curve in its train_log.jsonl.
# Usage: bash scripts/train_mini.sh   (set-up included; ~1 h on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
PY=.venv/bin/python
/usr/bin/time -v $PY -m trace_training.pretrain --config configuration/recipes/pretrain-mini.yaml "$@"
/usr/bin/time -v $PY -m trace_training.align --config configuration/recipes/align-mini.yaml "$@"
# Evaluate on the test split and write the repository's checkpoint (tower referenced, not stored).
/usr/bin/time -v $PY -m trace_training.ship --run runs/align-mini --pretrain-run runs/pretrain-mini \
    --output checkpoints/trace-mini-noaa
# Its Hub-side code is the library's own files: links, so the repository holds one copy and they cannot drift.
for name in configuration_trace.py modeling_trace.py processing_trace.py; do
    ln -sf "../../modeling_trace/$name" "checkpoints/trace-mini-noaa/$name"
done
