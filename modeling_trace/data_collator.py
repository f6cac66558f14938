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


def order_channels(row: dict, channel_names, index=None) -> dict:
    """Put a schema row's channels into the model's channel vocabulary `channel_names`, by name.

    Channel identity in TRACE is positional inside the model (one Channel Identity Token per slot), so a row whose
    channels are named differently, fewer, or in another order is rearranged here: `past_values`, `future_values`
    and `channel_texts` follow their names; names the row lacks become all-NaN (never observed, never attended) with
    an empty text. A name the model does not know is an error: pouring it into another channel's slot would teach
    that channel's CIT someone else's signal.
    """
    names = [str(name) for name in row.get("channel_names") or []]
    vocabulary = [str(name) for name in channel_names]
    if names == vocabulary:
        return row
    where = f"Row {row.get('id', index)!r}" if row.get("id", index) is not None else "A row"
    unknown = [name for name in names if name not in vocabulary]
    if unknown:
        raise ValueError(
            f"{where} has channels {unknown} that the model does not know (its channel_names are {vocabulary}). "
            "Train a model whose channel_names include them, or drop those channels from the dataset."
        )
    if len(set(names)) != len(names):
        raise ValueError(f"{where} names a channel twice: {names}.")
    slot = {name: vocabulary.index(name) for name in names}
    out = dict(row)
    for column in ("past_values", "future_values"):
        values = row.get(column)
        if values is None:
            continue
        array = _as_2d(values, column, row.get("id", index))
        if array.size == 0:
            continue
        if array.shape[1] != len(names):
            raise ValueError(f"{where}: {column} has {array.shape[1]} channels but channel_names has {len(names)}.")
        placed = np.full((array.shape[0], len(vocabulary)), np.nan, dtype=np.float32)
        for position, name in enumerate(names):
            placed[:, slot[name]] = array[:, position]
        out[column] = placed.tolist()
    if row.get("channel_texts") is not None:
        texts = [""] * len(vocabulary)
        for position, name in enumerate(names):
            if position < len(row["channel_texts"]):
                texts[slot[name]] = row["channel_texts"][position] or ""
        out["channel_texts"] = texts
    out["channel_names"] = vocabulary
    return out


def align_dataset_channels(dataset, channel_names, strict: bool = True):
    """`dataset` (a `datasets.Dataset` in the shared schema) with every row's channels in the order of
    `channel_names` (see `order_channels`); unchanged when the model has no channel names or the rows carry none.

    With `strict=False` (task tuning on another channel set, where the new head is trained anyway), rows naming
    channels the model does not know keep their order, matched to the model's slots by position, with a warning.
    """
    if not channel_names or "channel_names" not in dataset.column_names or len(dataset) == 0:
        return dataset
    vocabulary = [str(name) for name in channel_names]
    seen = {str(name) for names in dataset["channel_names"] for name in names}
    if all([str(n) for n in names] == vocabulary for names in dataset["channel_names"]):
        return dataset
    if not strict and not seen <= set(vocabulary):
        import warnings

        warnings.warn(
            f"The dataset's channels {sorted(seen - set(vocabulary))} are not among the model's channel_names "
            f"{vocabulary}; they are matched to the model's channels by position. Set channel_names (model_overrides) "
            "to the dataset's names to give them their own identity tokens.",
            stacklevel=2,
        )
        return dataset
    return dataset.map(lambda row, i: order_channels(row, vocabulary, i), with_indices=True, desc="ordering channels by name")
