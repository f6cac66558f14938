"""Stage 1 entry point: a real 2-process (gloo) run, and resume reaching the same weights as an unbroken run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO_ROOT


def free_port() -> int:
    """A TCP port free right now, so that concurrent runs of the suite on one machine do not collide."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


QUICK = str(REPO_ROOT / "configuration/recipes/pretrain-quick.yaml")


@pytest.fixture(scope="module")
def pretrain_data(tmp_path_factory):
    """Real Time-MMD windows (Health_US, univariate OT), saved once as a DatasetDict."""
    from datasets import DatasetDict

    from trace_datasets import timemmd

    folder = tmp_path_factory.mktemp("data") / "health"
    train = timemmd.build("forecasting", domains=["Health_US"], input_length=48, horizon=12, stride=4)["train"]
    DatasetDict(train=train).save_to_disk(str(folder))
    return str(folder)


def start(args, processes=1):
    """Launch training/pretrain.py with the quick recipe and `args`, without waiting for it."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    if processes > 1:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                   str(REPO_ROOT / "configuration/accelerate/cpu_2proc.yaml"), "--main_process_port", str(free_port())]
    else:
        command = [sys.executable]
    return subprocess.Popen(command + ["-m", "trace_training.pretrain", "--config", QUICK, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT, env=env)


def finish(process, timeout=240):
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    assert process.returncode == 0, stderr[-4000:]


def run(args, processes=1, timeout=240):
    finish(start(args, processes), timeout)


def test_two_process_pretraining(pretrain_data, tmp_path):
    from transformers import AutoModelForPreTraining

    from trace_training.loops import read_log

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
    for checkpoint in (out / "checkpoints").iterdir():  # safetensors + JSON only (no pickle), one RNG file per rank
        assert sorted(p.name for p in checkpoint.iterdir()) == [
            "model.safetensors", "optimizer.safetensors", "rng_state_0.json", "rng_state_1.json", "trainer_state.json"]


def test_resume_reaches_the_unbroken_weights_bit_identically(pretrain_data, tmp_path):
    from trace_training.loops import read_log

    common = ["--dataset", "disk", "--dataset_config", f"{{path: {pretrain_data}}}", "--max_samples", "null",
              "--max_steps", "8", "--save_steps", "3", "--logging_steps", "1", "--global_batch_size", "16",
              "--report_to", "jsonl", "--model_overrides", "{num_input_channels: 1, channel_names: null, context_length: 48}"]
    unbroken, broken = tmp_path / "unbroken", tmp_path / "broken"
    run(common + ["--output_dir", str(unbroken), "--save_total_limit", "10"])
    # A run broken off after step 3 leaves exactly its step-3 checkpoint; the unbroken run wrote that same state
    # (save_steps 3), so it is copied into a fresh output folder instead of paying for a third interpreter start.
    (broken / "checkpoints").mkdir(parents=True)
    shutil.copytree(unbroken / "checkpoints" / "step_000003", broken / "checkpoints" / "step_000003")
    stopped_at = load_file(str(broken / "checkpoints" / "step_000003" / "model.safetensors"))
    run(common + ["--output_dir", str(broken), "--resume"])
    a = load_file(str(unbroken / "final" / "model.safetensors"))
    b = load_file(str(broken / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name  # bit-identical, not merely close
    # the resumed steps changed the weights (the comparison is not between two copies of the step-3 state)
    assert any(not torch.equal(stopped_at[n], a[n]) for n in stopped_at)
    resumed_log = [r["step"] for r in read_log(broken)]
    assert resumed_log and min(resumed_log) == 4, resumed_log  # it started after step 3, not from scratch
