"""Masked-reconstruction pretraining learns on real data (ETTh1: 7 channels, like the trace-tiny preset)."""

import numpy as np
import pandas as pd
import torch

from modeling_trace import TraceForPretraining
from modeling_trace.presets import load_preset


def random_windows(array, count, length, rng):
    starts = rng.integers(0, len(array) - length, count)
    return torch.from_numpy(np.stack([array[s : s + length] for s in starts]))


def test_pretraining_reduces_masked_mse_on_real_windows(data_dir):
    frame = pd.read_csv(data_dir / "ett" / "ETTh1.csv")
    values = frame.drop(columns=["date"]).to_numpy(np.float32)
    train, held_out = values[:8640], values[8640 : 8640 + 2880]  # standard 12 / 4 month boundary

    torch.manual_seed(0)
    config = load_preset("trace-tiny")
    model = TraceForPretraining(config)
    length = config.context_length
    rng = np.random.default_rng(0)
    held_out_batch = random_windows(held_out, 128, length, np.random.default_rng(1))

    def held_out_loss():
        model.eval()
        with torch.no_grad():  # the same masked patches every time
            return model(held_out_batch, mask_patches=True, generator=torch.Generator().manual_seed(0)).loss.item()

    before = held_out_loss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(400):
        loss = model(random_windows(train, 32, length, rng)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = held_out_loss()
    # Measured on this setup: 1.03 -> 0.52 (predicting the normalised mean scores ~1.0). Assert a 20 % drop.
    assert after < 0.8 * before, (before, after)
