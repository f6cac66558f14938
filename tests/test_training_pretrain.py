"""Stage 1 entry point: a real 2-process (gloo) run, and resume reaching the same weights as an unbroken run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO_ROOT

QUICK = str(REPO_ROOT / "configuration/recipes/pretrain-quick.yaml")


@pytest.fixture(scope="module")
def pretrain_data(tmp_path_factory):
    """Real Time-MMD windows (Health_US, univariate OT), saved once as a DatasetDict."""
    from datasets import DatasetDict

    from datasets_scripts import timemmd

    folder = tmp_path_factory.mktemp("data") / "health"
    train = timemmd.build("forecasting", domains=["Health_US"], input_length=48, horizon=12, stride=4)["train"]
    DatasetDict(train=train).save_to_disk(str(folder))
    return str(folder)


def run(args, processes=1, port=29620, timeout=240):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    if processes > 1:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                   str(REPO_ROOT / "configuration/accelerate/cpu_2proc.yaml"), "--main_process_port", str(port)]
    else:
        command = [sys.executable]
    result = subprocess.run(command + [str(REPO_ROOT / "training/pretrain.py"), "--config", QUICK, *args],
                            capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def test_two_process_pretraining(pretrain_data, tmp_path):
    from modeling_trace.training.loops import read_log
    from transformers import AutoModelForPreTraining

    out = tmp_path / "run"
    run(["--output_dir", str(out), "--dataset", "disk", "--dataset_config", f"{{path: {pretrain_data}}}",
         "--max_samples", "null", "--max_steps", "24", "--logging_steps", "4", "--save_steps", "12",
         "--global_batch_size", "32", "--report_to", "jsonl"], processes=2)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["completed"]
    digests = summary["weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]  # both ranks hold identical weights
    losses = [r["loss"] for r in read_log(out)]
    assert len(losses) == 6
    assert sum(losses[-2:]) / 2 < 0.9 * sum(losses[:2]) / 2, losses
    model = AutoModelForPreTraining.from_pretrained(out / "final")
    assert type(model).__name__ == "TraceForPretraining"
    saved = load_file(str(out / "final" / "model.safetensors"))
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, saved[name], rtol=0, atol=0)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_000012", "step_000024"]


def test_resume_reaches_the_unbroken_weights_bit_identically(pretrain_data, tmp_path):
    common = ["--dataset", "disk", "--dataset_config", f"{{path: {pretrain_data}}}", "--max_samples", "null",
              "--max_steps", "8", "--save_steps", "3", "--logging_steps", "1", "--global_batch_size", "16",
              "--report_to", "jsonl", "--model_overrides", "{num_input_channels: 1, channel_names: null, context_length: 48}"]
    unbroken, broken = tmp_path / "unbroken", tmp_path / "broken"
    run(common + ["--output_dir", str(unbroken)])
    run(common + ["--output_dir", str(broken), "--stop_at_step", "3"])
    assert not (broken / "final").exists() and (broken / "checkpoints" / "step_000003").is_dir()
    stopped_at = load_file(str(broken / "checkpoints" / "step_000003" / "model.safetensors"))
    run(common + ["--output_dir", str(broken), "--resume"])
    a = load_file(str(unbroken / "final" / "model.safetensors"))
    b = load_file(str(broken / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name  # bit-identical, not merely close
    # the resumed steps changed the weights (the comparison is not between two copies of the step-3 state)
    assert any(not torch.equal(stopped_at[n], a[n]) for n in stopped_at)
