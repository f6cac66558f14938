# Copyright 2026 The TRACE package authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""SERAF (arXiv 2606.14941): semantics-enhanced retrieval-augmented forecasting, built on this package's pieces.

SERAF keeps a database of every stride-1 window (history L, future H) of the training series and forecasts a
query window from two retrievals over it:

* time-series retrieval: the top-K database histories by Pearson correlation with the query history, weighted
  by a Gaussian kernel on the correlation, `α_k = softmax_k(−(1−ρ_k)² / (2τ²))`, give `F̂_T = Σ α_k F_k`;
* semantic retrieval: each window's template description (`describe.seraf_template`: time period, season,
  main trend, main volatility) is embedded once by the frozen all-MiniLM-L6-v2; the top-K cosine neighbours of
  the query's description, weighted the same way, give `F̂_S`.

The two are fused, `F̂ = w·F̂_S + (1−w)·F̂_T` with `w = σ(θ)` learnable, a linear encoder maps the history to
`X̂`, a gate `β = σ(W[X̂; F̂])` mixes them, `G = βX̂ + (1−β)F̂`, and an output projection gives the forecast.
Training uses MSE and, as the paper, excludes from retrieval every database window whose index is within
`L+H−1` of the query's (they share points with the query's history or future).

Choices this file makes where the paper leaves room (stated so results can be read):

* Normalisation: every window (query and database) is z-scored per channel by its own history (RevIN without
  affine parameters); retrieved futures are expressed in their own history's normalised space, so `F̂` is a
  shape prediction in the query's normalised space, and the output is de-normalised with the query's
  statistics.
* Multivariate Pearson: `ρ` is the mean over channels of the per-channel Pearson correlation, which is one
  normalised dot product of the z-scored, flattened histories. With one channel it is exactly the Pearson
  correlation.
* Linear encoder, gate and output projection act along time and are shared across channels (channel
  independence, as DLinear / RAFT).
* "Without gate" uses `G = X̂ + F̂` (the additive combination of RAFT). "Without text" drops the semantic
  branch (`F̂ = F̂_T`). "Without learned weight" fixes `w = 0.5`. `use_retrieval=False` leaves the plain linear
  model `output_projection(X̂)`.

All retrieval is vectorised: one matrix product against the cached database keys, `topk`, and a gather — no
Python loop over the database.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_seraf import SerafConfig
from .describe import make_timestamps, seraf_template
from .modeling_trace import encode_sentences, forecasting_loss, resolve_text_model_path, zscore_statistics
from .retrieval.results import overlapping_windows

# ----------------------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class SerafForecastingOutput(ModelOutput):
    """
    Output of [`SerafForForecasting`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            MSE against `future_values` (in the input scale; NaN targets ignored), when they are given.
        prediction_outputs (`torch.FloatTensor` of shape `(batch_size, prediction_length, num_input_channels)`):
            Forecasts in the scale of the input.
        time_series_indices (`torch.LongTensor` of shape `(batch_size, top_k)`, *optional*):
            Database windows found by the Pearson retrieval.
        time_series_scores (`torch.FloatTensor` of shape `(batch_size, top_k)`, *optional*):
            Their Pearson correlations ρ.
        text_indices (`torch.LongTensor` of shape `(batch_size, top_k)`, *optional*):
            Database windows found by the description retrieval.
        text_scores (`torch.FloatTensor` of shape `(batch_size, top_k)`, *optional*):
            Their cosine similarities.
        fusion_weight (`torch.FloatTensor` of shape `()`, *optional*):
            The weight w of the semantic branch.
        gate (`torch.FloatTensor` of shape `(batch_size, prediction_length, num_input_channels)`, *optional*):
            β, the share of the linear encoder in G.
        time_series_forecast (`torch.FloatTensor` of shape `(batch_size, prediction_length, num_input_channels)`,
            *optional*): F̂_T in the scale of the input: the kernel-weighted futures of the Pearson retrieval, each
            in its own history's normalised space, times the query's standard deviation plus its mean (what the
            retrieval alone forecasts; no trained weight enters it).
        text_forecast (`torch.FloatTensor` of shape `(batch_size, prediction_length, num_input_channels)`,
            *optional*): F̂_S, the same for the description retrieval.
    """

    loss: torch.FloatTensor | None = None
    prediction_outputs: torch.FloatTensor | None = None
    time_series_indices: torch.LongTensor | None = None
    time_series_scores: torch.FloatTensor | None = None
    text_indices: torch.LongTensor | None = None
    text_scores: torch.FloatTensor | None = None
    fusion_weight: torch.FloatTensor | None = None
    gate: torch.FloatTensor | None = None
    time_series_forecast: torch.FloatTensor | None = None
    text_forecast: torch.FloatTensor | None = None


# ----------------------------------------------------------------------------------------------------------------
# Retrieval pieces (vectorised)
# ----------------------------------------------------------------------------------------------------------------


def zscore_windows(windows: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-(window, channel) mean and standard deviation over time of `(n, length, channels)` windows.

    Returns `(normalised, loc, scale)` with `loc`, `scale` of shape `(n, 1, channels)` in the dtype of `windows`:
    the package's [`zscore_statistics`] (population std, so a normalised channel has unit mean square), as TRACE's
    RevIN with every point observed.
    """
    loc, scale = zscore_statistics(windows, dim=1, eps=eps)
    normalized = ((windows.to(loc.dtype) - loc) / scale).to(windows.dtype)
    return normalized, loc.to(windows.dtype), scale.to(windows.dtype)


def pearson_keys(windows: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Unit-norm keys `(n, length * channels)` whose dot products are mean-over-channels Pearson correlations.

    Each channel is centred and divided by its norm, then the channels are concatenated and scaled by
    `1/sqrt(channels)`, so `keys_a @ keys_b.T` is `mean_c corr(a_c, b_c)` (a constant channel contributes 0).
    """
    centred = windows - windows.mean(dim=1, keepdim=True)
    norm = torch.sqrt((centred**2).sum(dim=1, keepdim=True) + eps * windows.shape[1])
    keys = centred / norm / windows.shape[2] ** 0.5
    return keys.transpose(1, 2).reshape(windows.shape[0], -1)


def exclusion_mask(query_indices: torch.Tensor | None, database_size: int, radius: int) -> torch.Tensor | None:
    """`(batch, database_size)` bool mask of database windows within `radius` of each query's own index.

    `query_indices[b] < 0` marks a query from outside the database (nothing excluded). `None` gives `None`.
    """
    if query_indices is None:
        return None
    # Window i spans steps [i, i + radius + 1), so |i - j| <= radius is exactly the package's overlap rule.
    positions = torch.arange(database_size, device=query_indices.device)
    inside = (query_indices >= 0)[:, None]
    return inside & overlapping_windows(query_indices, query_indices + radius + 1, positions, positions + radius + 1)


def kernel_top_k(
    scores: torch.Tensor, k: int, temperature: float, excluded: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k of `scores` `(batch, n)` outside `excluded`, with Gaussian-kernel weights.

    Returns `(indices, top_scores, weights)`, each `(batch, k)`; `weights = softmax(−(1−s)²/(2τ²))` over the k.
    Raises `ValueError` when some query has fewer than k windows left after the exclusion.
    """
    if excluded is not None:
        available = (~excluded).sum(dim=1)
        if bool((available < k).any()):
            raise ValueError(
                f"After excluding windows that overlap the query, only {int(available.min())} database windows are "
                f"left for some query but top_k={k}. Use a longer training series or a smaller top_k."
            )
        scores = scores.masked_fill(excluded, float("-inf"))
    top_scores, indices = scores.topk(k, dim=1)
    weights = torch.softmax(-((1.0 - top_scores) ** 2) / (2.0 * temperature**2), dim=1)
    return indices, top_scores, weights


def describe_windows(values, start_timestamps, freq: str) -> list[str]:
    """SERAF template descriptions (`describe.seraf_template`) of `(n, length, channels)` windows."""
    values = np.asarray(values)
    if values.ndim == 2:
        values = values[None]
    if len(start_timestamps) != len(values):
        raise ValueError(f"Got {len(start_timestamps)} start timestamps for {len(values)} windows; pass one each.")
    return [seraf_template(window, str(start), freq) for window, start in zip(values, start_timestamps)]


class SentenceEmbedder:
    """The frozen sentence encoder of the descriptions (mean pooling + L2, as sentence-transformers).

    Identical texts are embedded once (template descriptions repeat their season / trend / volatility parts
    often, and a database is embedded once and cached in the model).
    """

    def __init__(self, model_name_or_path: str | None = None, device: str | torch.device = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        path = resolve_text_model_path(model_name_or_path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path, add_pooling_layer=False).to(device).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.dim = self.model.config.hidden_size

    @torch.no_grad()
    def encode(self, texts, batch_size: int = 128, show_progress_bar: bool = False) -> np.ndarray:
        """L2-normalised float32 embeddings `(len(texts), dim)`."""
        if isinstance(texts, str):
            texts = [texts]
        unique, inverse = np.unique(np.asarray(list(texts), dtype=object).astype(str), return_inverse=True)
        embeddings = encode_sentences(
            self.model, self.tokenizer, list(unique), batch_size=batch_size, show_progress_bar=show_progress_bar
        )
        return embeddings.numpy()[inverse]


# ----------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------


class SerafPreTrainedModel(PreTrainedModel):
    """Base class of SERAF models: configuration and the loading / saving interface."""

    config_class = SerafConfig
    base_model_prefix = "seraf"
    main_input_name = "past_values"
    input_modalities = ("time",)

    def _init_weights(self, module: nn.Module):
        # nn.Linear keeps its PyTorch default init (as DLinear / RAFT); only SERAF's own parameter is set here.
        if isinstance(module, SerafForForecasting) and module.fusion_logit is not None:
            weight = self.config.fusion_weight_init
            # `transformers.initialization` functions skip tensors already loaded from a checkpoint.
            init.constant_(module.fusion_logit, math.log(weight) - math.log1p(-weight))


class SerafForForecasting(SerafPreTrainedModel):
    """SERAF forecaster: dual (Pearson + description) retrieval over a database of training windows, fused with a
    linear forecast through a learnable weight and a gate.

    Trainable: `linear_encoder` (L→H), `gate` (2H→H), `output_projection` (H→H) and the fusion logit θ (w=σ(θ)).
    The database (`database_values`, the training series) and the description embeddings
    (`description_embeddings`) are buffers saved with the model; the Pearson keys and normalised futures are
    derived from the series and cached.

    Example:

    ```python
    >>> config = SerafConfig(num_input_channels=7, context_length=720, prediction_length=96)
    >>> model = SerafForForecasting(config)
    >>> model.set_database(train_values, start_timestamp="2016-07-01T00:00:00", freq="1h")  # (T, 7) array
    >>> out = model(past_values, description_embeds=model.embed_queries(past_values, starts))
    ```
    """

    def __init__(self, config: SerafConfig):
        super().__init__(config)
        length, horizon, channels = config.context_length, config.prediction_length, config.num_input_channels
        self.linear_encoder = nn.Linear(length, horizon)
        self.gate = nn.Linear(2 * horizon, horizon) if config.use_retrieval and config.use_gate else None
        self.output_projection = nn.Linear(horizon, horizon)
        if config.use_retrieval and config.use_text and config.learn_fusion_weight:
            self.fusion_logit = nn.Parameter(torch.zeros(()))
        else:
            self.fusion_logit = None
        database_length = config.database_length or 0
        self.register_buffer("database_values", torch.zeros(database_length, channels))
        text_rows = config.database_size if config.use_text else 0
        self.register_buffer("description_embeddings", torch.zeros(text_rows, config.text_embedding_dim))
        self._cache_key = None
        self._cache = None
        self._embedder = None
        self.post_init()

    # -- database ---------------------------------------------------------------------------------------------

    @torch.no_grad()
    def set_database(
        self,
        values,
        start_timestamp: str | None = None,
        freq: str | None = None,
        description_embeddings=None,
        show_progress_bar: bool = False,
    ) -> SerafForForecasting:
        """Store the training series as the retrieval database (every stride-1 window of `L + H` steps).

        Args:
            values: `(T, channels)` array or tensor of the training split, finite (no NaN).
            start_timestamp, freq: timestamp of the first step and the step, used for the window descriptions
                (needed when `use_text`).
            description_embeddings: precomputed `(N, text_embedding_dim)` embeddings of the windows'
                descriptions (e.g. cached from an earlier run); computed with the frozen text model otherwise.
        """
        values = torch.as_tensor(np.asarray(values, dtype=np.float32))
        channels = self.config.num_input_channels
        if values.ndim != 2 or values.shape[1] != channels:
            raise ValueError(
                f"The database series must be (time, {channels}) with channels last, got shape {tuple(values.shape)}."
            )
        if not torch.isfinite(values).all():
            raise ValueError(
                "The database series holds NaN or inf; fill or drop missing steps before building the database."
            )
        self.config.database_length = int(values.shape[0])
        self.config.database_start_timestamp = start_timestamp
        self.config.freq = freq
        try:
            self.config.validate()
        except ValueError:
            self.config.database_length = None
            raise
        self.database_values = values.to(self.linear_encoder.weight.device)
        size = self.config.database_size
        if self.config.use_text:
            if description_embeddings is None:
                if start_timestamp is None or freq is None:
                    raise ValueError(
                        "use_text needs start_timestamp and freq of the database series to describe its windows "
                        "(or pass description_embeddings)."
                    )
                windows = values.unfold(0, self.config.context_length, 1)[:size].transpose(1, 2).numpy()
                starts = make_timestamps(start_timestamp, freq, size)
                texts = describe_windows(windows, starts, freq)
                description_embeddings = self.embed_texts(texts, show_progress_bar=show_progress_bar)
            description_embeddings = torch.as_tensor(np.asarray(description_embeddings, dtype=np.float32))
            expected = (size, self.config.text_embedding_dim)
            if tuple(description_embeddings.shape) != expected:
                raise ValueError(
                    f"description_embeddings must have shape {expected} (one per database window), got "
                    f"{tuple(description_embeddings.shape)}."
                )
            self.description_embeddings = description_embeddings.to(self.database_values.device)
        self._cache_key = None
        return self

    def _database(self) -> dict[str, torch.Tensor]:
        """Pearson keys `(N, L*C)` and normalised futures `(N, H, C)` derived from `database_values` (cached)."""
        values = self.database_values
        key = (values.data_ptr(), values._version, values.device, values.shape)
        if self._cache_key != key:
            if self.config.database_size == 0 or values.shape[0] != self.config.database_length:
                raise ValueError(
                    "This SERAF model has no retrieval database. Call model.set_database(train_values, "
                    "start_timestamp, freq) with the training split first (or load a model saved after that)."
                )
            length, horizon, size = self.config.context_length, self.config.prediction_length, self.config.database_size
            windows = values.unfold(0, length + horizon, 1)[:size].transpose(1, 2)  # (N, L+H, C)
            history, future = windows[:, :length], windows[:, length:]
            _, loc, scale = zscore_windows(history, self.config.normalization_eps)
            self._cache = {
                "keys": pearson_keys(history, self.config.normalization_eps).contiguous(),
                "futures": ((future - loc) / scale).contiguous(),
            }
            self._cache_key = key
        return self._cache

    # -- descriptions -----------------------------------------------------------------------------------------

    def embed_texts(self, texts, show_progress_bar: bool = False) -> np.ndarray:
        """Embed descriptions with the frozen sentence encoder (loaded once, never part of the checkpoint)."""
        if self._embedder is None:
            self._embedder = SentenceEmbedder(self.config.text_model_name_or_path)
            if self._embedder.dim != self.config.text_embedding_dim:
                raise ValueError(
                    f"The text model gives {self._embedder.dim}-d embeddings but config.text_embedding_dim is "
                    f"{self.config.text_embedding_dim}; set it to {self._embedder.dim}."
                )
        return self._embedder.encode(texts, show_progress_bar=show_progress_bar)

    def embed_queries(self, past_values, start_timestamps, freq: str | None = None) -> torch.Tensor:
        """Description embeddings `(batch, text_embedding_dim)` of query histories, for `description_embeds`.

        Args:
            past_values: `(batch, L, channels)` histories.
            start_timestamps: ISO-8601 timestamp of each history's first step.
            freq: step of the series; defaults to the database's.
        """
        freq = freq or self.config.freq
        if freq is None:
            raise ValueError("embed_queries needs freq (the series step, e.g. '1h'); the database has none recorded.")
        if isinstance(past_values, torch.Tensor):
            past_values = past_values.detach().cpu().numpy()
        texts = describe_windows(past_values, list(start_timestamps), freq)
        return torch.from_numpy(self.embed_texts(texts))

    # -- forward ----------------------------------------------------------------------------------------------

    def _check_inputs(self, past_values, future_values, description_embeds, window_index):
        c = self.config
        expected = f"(batch_size, context_length={c.context_length}, num_input_channels={c.num_input_channels})"
        if not isinstance(past_values, torch.Tensor) or not past_values.is_floating_point():
            raise TypeError(f"past_values must be a float tensor of shape {expected}, got {type(past_values).__name__}.")
        if past_values.ndim != 3 or tuple(past_values.shape[1:]) != (c.context_length, c.num_input_channels):
            raise ValueError(
                f"past_values must have shape {expected}, got {tuple(past_values.shape)}. SERAF reads exactly "
                "context_length steps with channels on the last axis."
            )
        if not torch.isfinite(past_values).all():
            raise ValueError("past_values holds NaN or inf; SERAF needs complete histories (fill missing points first).")
        batch = past_values.shape[0]
        if future_values is not None:
            target = (batch, c.prediction_length, c.num_input_channels)
            if tuple(future_values.shape) != target:
                raise ValueError(f"future_values must have shape {target}, got {tuple(future_values.shape)}.")
        if c.use_retrieval and c.use_text:
            if description_embeds is None:
                raise ValueError(
                    "This SERAF model uses the description branch (use_text=True): pass description_embeds "
                    "(batch, text_embedding_dim), e.g. model.embed_queries(past_values, start_timestamps), or the "
                    "database rows for training windows."
                )
            if tuple(description_embeds.shape) != (batch, c.text_embedding_dim):
                raise ValueError(
                    f"description_embeds must have shape ({batch}, {c.text_embedding_dim}), got "
                    f"{tuple(description_embeds.shape)}."
                )
        if c.use_retrieval and self.training and window_index is None:
            raise ValueError(
                "In training mode SERAF needs window_index (batch,): each query's index in the database, so that "
                f"windows within L+H-1={c.exclusion_radius} steps (which leak its future) are not retrieved. Use "
                "-1 for queries from outside the training series."
            )
        if window_index is not None and c.use_retrieval:
            if window_index.shape != (batch,) or window_index.is_floating_point():
                raise ValueError(f"window_index must be an integer tensor of shape ({batch},), got {tuple(window_index.shape)}.")
            if bool((window_index >= c.database_size).any()):
                raise ValueError(
                    f"window_index must be < database_size={c.database_size} (or -1 outside the database), got "
                    f"max {int(window_index.max())}."
                )

    def forward(
        self,
        past_values: torch.Tensor,
        future_values: torch.Tensor | None = None,
        description_embeds: torch.Tensor | None = None,
        window_index: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> SerafForecastingOutput | tuple:
        r"""
        Args:
            past_values (`torch.FloatTensor` of shape `(batch_size, context_length, num_input_channels)`):
                Query histories (complete, no NaN).
            future_values (`torch.FloatTensor` of shape `(batch_size, prediction_length, num_input_channels)`,
                *optional*): Targets; the MSE loss is returned when given.
            description_embeds (`torch.FloatTensor` of shape `(batch_size, text_embedding_dim)`, *optional*):
                L2-normalised embeddings of the queries' template descriptions (needed with `use_text`); see
                [`embed_queries`].
            window_index (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
                Index of each query in the database (−1 for queries outside it). Database windows within
                `L+H−1` of it are excluded from both retrievals. Required in training mode.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        self._check_inputs(past_values, future_values, description_embeds, window_index)
        c = self.config
        normalized, loc, scale = zscore_windows(past_values, c.normalization_eps)
        linear = self.linear_encoder(normalized.transpose(1, 2)).transpose(1, 2)  # X̂: (B, H, C)

        ts_indices = ts_scores = text_indices = text_scores = fusion_weight = gate = None
        time_series_forecast = text_forecast = None
        if c.use_retrieval:
            database = self._database()
            excluded = exclusion_mask(window_index, c.database_size, c.exclusion_radius)
            with torch.no_grad():
                correlations = pearson_keys(past_values, c.normalization_eps) @ database["keys"].t()
            ts_indices, ts_scores, ts_weights = kernel_top_k(correlations, c.top_k, c.kernel_temperature, excluded)
            retrieved = torch.einsum("bk,bkhc->bhc", ts_weights, database["futures"][ts_indices])  # F̂_T
            time_series_forecast = retrieved * scale + loc
            if c.use_text:
                with torch.no_grad():
                    similarities = F.normalize(description_embeds.float(), dim=-1) @ self.description_embeddings.t()
                text_indices, text_scores, text_weights = kernel_top_k(
                    similarities, c.top_k, c.kernel_temperature, excluded
                )
                semantic = torch.einsum("bk,bkhc->bhc", text_weights, database["futures"][text_indices])  # F̂_S
                text_forecast = semantic * scale + loc
                if self.fusion_logit is not None:
                    fusion_weight = torch.sigmoid(self.fusion_logit)
                else:
                    fusion_weight = torch.tensor(0.5, device=past_values.device)
                retrieved = fusion_weight * semantic + (1.0 - fusion_weight) * retrieved
            if self.gate is not None:
                gate = torch.sigmoid(self.gate(torch.cat([linear, retrieved], dim=1).transpose(1, 2))).transpose(1, 2)
                combined = gate * linear + (1.0 - gate) * retrieved
            else:
                combined = linear + retrieved
        else:
            combined = linear
        normalized_prediction = self.output_projection(combined.transpose(1, 2)).transpose(1, 2)
        prediction = normalized_prediction * scale + loc

        loss = None
        if future_values is not None:
            loss = forecasting_loss(prediction, future_values.to(prediction.dtype))
        output = SerafForecastingOutput(
            loss=loss,
            prediction_outputs=prediction,
            time_series_indices=ts_indices,
            time_series_scores=ts_scores,
            text_indices=text_indices,
            text_scores=text_scores,
            fusion_weight=fusion_weight,
            gate=gate,
            time_series_forecast=time_series_forecast,
            text_forecast=text_forecast,
        )
        return output if return_dict else output.to_tuple()


__all__ = [
    "SerafConfig",
    "SerafForForecasting",
    "SerafForecastingOutput",
    "SerafPreTrainedModel",
    "SentenceEmbedder",
    "describe_windows",
    "exclusion_mask",
    "kernel_top_k",
    "pearson_keys",
    "zscore_windows",
]
