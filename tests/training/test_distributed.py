"""Gathered negatives: a 2-process alignment step gives the loss and gradients of one process on the global batch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch

from tests.conftest import REPO_ROOT
from trace_training import gather_with_grad


def free_port() -> int:
    """A TCP port free right now, so that concurrent runs of the suite on one machine do not collide."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

# Builds the same tiny dual encoder and the same global batch in every process (seeded), so the test can compare a
# DDP run over 2 processes with 1 process holding all 8 samples.
SETUP = """
import torch
from modeling_trace import TraceModel
from tests.conftest import tiny_config

def setup():
    torch.manual_seed(0)
    model = TraceModel(tiny_config(num_hard_negatives=3, channel_loss_weight=0.7))
    model.time_series_model.embeddings.mask_token.requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    batch = {
        "past_values": torch.randn(8, 48, 3, generator=g),
        "text_embeds": torch.nn.functional.normalize(torch.randn(8, 32, generator=g), dim=-1),
        "channel_text_embeds": torch.nn.functional.normalize(torch.randn(8, 3, 32, generator=g), dim=-1),
        "channel_text_mask": torch.rand(8, 3, generator=g) > 0.25,
    }
    return model, batch
"""

WORKER = SETUP + """
import sys
from accelerate import Accelerator
from trace_training.loops import alignment_loss, use_cpu_processes

accelerator = Accelerator(cpu=use_cpu_processes())
assert accelerator.num_processes == 2, accelerator.state
model, batch = setup()
model = accelerator.prepare(model)
rank = accelerator.process_index
local = {k: v[rank * 4:(rank + 1) * 4] for k, v in batch.items()}
outputs = model(**local, return_loss=False)
loss, sample_loss, channel_loss = alignment_loss(accelerator.unwrap_model(model), outputs, local["channel_text_mask"])
accelerator.backward(loss)
grads = {n: p.grad.clone() for n, p in accelerator.unwrap_model(model).named_parameters() if p.grad is not None}
torch.save({"loss": loss.detach(), "sample_loss": sample_loss.detach(), "channel_loss": channel_loss.detach(), "grads": grads},
           f"{sys.argv[1]}/rank{rank}.pt")
"""


def test_gather_with_grad_is_identity_in_one_process():
    x = torch.randn(3, 4, requires_grad=True)
    assert gather_with_grad(x) is x


def test_two_process_loss_and_gradients_equal_one_process_on_the_global_batch(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
         str(REPO_ROOT / "configuration/accelerate/cpu_2proc.yaml"), "--main_process_port", str(free_port()), str(script), str(tmp_path)],
        capture_output=True, text=True, timeout=240, cwd=REPO_ROOT, env=env,
    )
    assert result.returncode == 0, result.stderr[-4000:]

    namespace = {}
    exec(textwrap.dedent(SETUP), namespace)
    model, batch = namespace["setup"]()
    from trace_training.loops import alignment_loss

    outputs = model(**batch, return_loss=False)
    loss, sample_loss, channel_loss = alignment_loss(model, outputs, batch["channel_text_mask"])
    loss.backward()
    reference = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for run in ranks:
        # every process computes the global loss over all 8 samples and 8 x 3 channel pairs
        torch.testing.assert_close(run["loss"], loss.detach(), rtol=0, atol=1e-6)
        torch.testing.assert_close(run["sample_loss"], sample_loss.detach(), rtol=0, atol=1e-6)
        torch.testing.assert_close(run["channel_loss"], channel_loss.detach(), rtol=0, atol=1e-6)
        assert set(run["grads"]) == set(reference)
        for name, grad in reference.items():
            # after DDP's averaging, the gradient is the 1-process gradient (not half of it, not the local one)
            torch.testing.assert_close(run["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
    assert reference["logit_scale"].abs() > 0 and reference["time_series_model.embeddings.patch_embedding.weight"].abs().sum() > 0
