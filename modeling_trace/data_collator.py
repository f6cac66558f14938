"""Collate rows of the shared dataset schema (`datasets_scripts/schema.py`) into model inputs."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .modeling_trace import pad_or_truncate_series


def _as_2d(values, what: str, index) -> np.ndarray:
    array = np.asarray(values if values is not None else [], dtype=np.float32)
    if array.size == 0:
        return np.zeros((0, 0), dtype=np.float32)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"Row {index}: {what} must be (length, channels), got shape {array.shape}.")
    return array


@dataclass
class TraceDataCollator:
    """Turn schema rows into `past_values`, `past_observed_mask` and, when present, `future_values` / `labels`.

    `past_values` goes through [`pad_or_truncate_series`] (as `TraceProcessor` input does): it keeps the most recent
    `context_length` steps and is left-padded; rows with fewer channels than `num_channels` get the missing
    channels as unobserved. Missing points are 0 in `past_values` and 0 in `past_observed_mask`; missing targets are
    NaN in `future_values` (the forecasting loss ignores them).
    """

    context_length: int
    num_channels: int
    prediction_length: int | None = None
    with_labels: bool = False
    label_column: str = "label"

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        n = len(rows)
        future = None
        if self.prediction_length:
            future = np.full((n, self.prediction_length, self.num_channels), np.nan, dtype=np.float32)
        pasts = []
        for i, row in enumerate(rows):
            index = row.get("id", i)
            past = _as_2d(row["past_values"], "past_values", index)
            if past.shape[1] > self.num_channels:
                raise ValueError(
                    f"Row {index} has {past.shape[1]} channels but the model takes {self.num_channels}; use a "
                    "model with more input channels or select channels in the dataset."
                )
            pasts.append(past)
            if future is not None:
                target = _as_2d(row.get("future_values"), "future_values", index)
                if target.shape[0] < self.prediction_length:
                    raise ValueError(
                        f"Row {index} has {target.shape[0]} future steps, fewer than prediction_length="
                        f"{self.prediction_length}; build the dataset with a horizon >= prediction_length."
                    )
                future[i, :, : target.shape[1]] = target[: self.prediction_length]
        values, observed = pad_or_truncate_series(
            pasts, self.context_length, self.num_channels, fill_missing_channels=True
        )
        batch = {
            "past_values": torch.from_numpy(values),
            "past_observed_mask": torch.from_numpy(observed),
        }
        if future is not None:
            batch["future_values"] = torch.from_numpy(future)
        if self.with_labels:
            labels = [row[self.label_column] for row in rows]
            if any(label is None or (isinstance(label, float) and math.isnan(label)) for label in labels):
                raise ValueError(f"Some rows have no {self.label_column!r}; classification needs a label per row.")
            batch["labels"] = torch.tensor(labels, dtype=torch.long)
        return batch
