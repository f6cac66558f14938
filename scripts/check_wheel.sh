#!/usr/bin/env bash
# Build the wheel from this checkout, install it (not editable) into a fresh venv, and use it from a folder outside
# the checkout: every preset loads, a tiny pretraining run from a shipped recipe trains and saves, its model card
# renders, and the generic names `training` / `datasets_scripts` are not importable.
# Usage: bash scripts/check_wheel.sh   (needs .venv from scripts/setup_env.sh for the build; data in ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1
.venv/bin/python -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/dist" . 2>&1 | grep -v "^WARNING: Location" || true
rm -rf build  # setuptools leaves its build tree in the checkout
WHEEL=$(ls "$WORK"/dist/trace_ts-*.whl)
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
"$WORK/venv/bin/python" -m pip install -q "$WHEEL[train]" 2>&1 | grep -v "^WARNING: Location" || true
mkdir -p "$WORK/outside"
cd "$WORK/outside"
export TRACE_DATA_DIR=${TRACE_DATA_DIR:-$ROOT/../shared/data}
export HF_HUB_OFFLINE=1 TQDM_DISABLE=1
"$WORK/venv/bin/python" - <<'PY'
import importlib.util
import subprocess
import sys
from pathlib import Path

import modeling_trace
from modeling_trace.presets import available_presets, load_preset
from modeling_trace.resources import configuration_dir

here = Path.cwd()
assert "site-packages" in modeling_trace.__file__, f"modeling_trace came from {modeling_trace.__file__}, not the wheel"
for name in ("training", "datasets_scripts"):
    assert importlib.util.find_spec(name) is None, f"the wheel installs the generic import name {name!r}"
presets = available_presets()
assert {"trace-tiny", "trace-small"} <= set(presets), presets
for name in presets:
    load_preset(name)
recipe = configuration_dir("recipes") / "pretrain-quick.yaml"
run = here / "run"
subprocess.run(
    [sys.executable, "-m", "trace_training.pretrain", "--config", str(recipe), "--output_dir", str(run),
     "--max_steps", "4", "--max_samples", "64", "--save_steps", "null", "--report_to", "jsonl",
     "--logging_steps", "2"],
    check=True,
)
card = (run / "final" / "README.md").read_text()
assert card.startswith("---") and "TRACE" in card, card[:200]
from huggingface_hub import ModelCard

ModelCard.load(run / "final" / "README.md")
print(f"wheel check: {len(presets)} presets load, pretraining from {recipe.name} saved {run / 'final'}, card renders")
PY
