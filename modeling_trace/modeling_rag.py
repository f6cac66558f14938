# Copyright 2026 The TRACE package authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""Retrieval-augmented forecasting with a frozen, aligned TRACE model (paper §3.4).

For each query window the frozen [`TraceModel`] gives its sample embedding `h_q` (projected, normalised [CLS])
and its encoder states `H_q`. The top-R pairs of a [`TraceRetrievalIndex`] over a training corpus (TS→TS
search on `h_q`) form a soft prompt:

* `rag_prompt_mode="ts_text"`: `p_i = [h_ts,i ; z_txt,i]` (2·projection_dim), `P = Proj(p_1 … p_R)`;
* `rag_prompt_mode="ts"`: `p_i = h_ts,i`, `P = Proj(p_1 … p_R)`;

where `Proj` is one linear map applied to every retrieved pair, giving R prompt tokens of size `d_model`. The
forecast is `ŷ = Head([P | H_q])`:

* `H_q` is the query's patch tokens of each channel, `(num_channels, num_patches, d_model)` — exactly what
  [`TraceForForecasting`]'s head reads;
* `Head` is one linear layer shared across channels, from the flattened `[P ; H_q,c]` ((R + num_patches)·d_model)
  to the horizon, and RevIN is undone with the query's statistics, as in [`TraceForForecasting`].

Since `Head` is linear, `Head([P | H_q]) = W_P·P + W_H·H_q + b`; with `use_retrieval=False` the prompt is zero and
the same head reads `H_q` alone — the no-RAG baseline. Only `Proj` (`prompt_projection`) and `Head`
(`forecast_head`) train; the TRACE model is frozen and always in eval mode.

During training, retrieval leaves out the query itself and every corpus window that overlaps it (same series,
intersecting `[window_start, window_end)` step ranges), so a window never sees its own future through its
neighbours.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from transformers.utils import ModelOutput

from .configuration_trace import TraceConfig
from .modeling_trace import TraceForecastingHead, TraceModel, TracePreTrainedModel
from .retrieval import TraceRetrievalIndex, overlapping_windows

RETRIEVAL_INDEX_DIR = "retrieval_index"
# Corpus columns that locate each window in its series (integer steps); see `window_positions`.
POSITION_COLUMNS = ("series_index", "window_start", "window_end")


@dataclass
class TraceRetrievalAugmentedForecastingOutput(ModelOutput):
    """
    Output of [`TraceForRetrievalAugmentedForecasting`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            MSE (or Huber, `config.forecast_loss`) against `future_values`, NaN targets ignored.
        prediction_outputs (`torch.FloatTensor` of shape `(batch_size, prediction_length, num_channels)`):
            Forecasts in the scale of the input (RevIN undone).
        retrieved_indices (`torch.LongTensor` of shape `(batch_size, num_retrieved)`, *optional*):
            Corpus rows of the retrieved pairs, best first (absent with `use_retrieval=False`).
        retrieved_scores (`torch.FloatTensor` of shape `(batch_size, num_retrieved)`, *optional*):
            Their cosine similarities to the query.
        prompt_embeds (`torch.FloatTensor` of shape `(batch_size, num_retrieved, d_model)`):
            The soft prompt P (zeros with `use_retrieval=False`).
        query_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`):
            The query's sample embedding h_q used for retrieval.
        loc, scale (`torch.FloatTensor` of shape `(batch_size, 1, num_channels)`): RevIN statistics of the query.
    """

    loss: torch.FloatTensor | None = None
    prediction_outputs: torch.FloatTensor | None = None
    retrieved_indices: torch.LongTensor | None = None
    retrieved_scores: torch.FloatTensor | None = None
    prompt_embeds: torch.FloatTensor | None = None
    query_embeds: torch.FloatTensor | None = None
    loc: torch.FloatTensor | None = None
    scale: torch.FloatTensor | None = None


def _step_numbers(timestamps, freq: str) -> np.ndarray:
    """Integer step number of each timestamp on a `freq` grid (months count calendar months)."""
    stamps = pd.DatetimeIndex(pd.to_datetime(list(timestamps), utc=True)).tz_localize(None)
    offset = pd.tseries.frequencies.to_offset(freq)
    name = getattr(offset, "rule_code", None) or offset.name
    if name.startswith(("M", "ME", "MS", "Q", "Y", "A")) and not name.startswith("min"):
        months = stamps.year * 12 + stamps.month - 1
        per_step = offset.n * (3 if name.startswith("Q") else 12 if name.startswith(("Y", "A")) else 1)
        return np.asarray(months // per_step, dtype=np.int64)
    step = pd.Timedelta(weeks=offset.n) if name.startswith("W") else pd.Timedelta(offset)
    return np.asarray((stamps - pd.Timestamp(0)) // step, dtype=np.int64)


def window_positions(dataset, prediction_length: int | None = None) -> dict[str, np.ndarray]:
    """Where each window of a dataset in the shared schema lies: `series_index`, `window_start`, `window_end`.

    `window_start` is the step number of the first step of `past_values` on the `freq` grid; `window_end`
    (exclusive) adds the history length and the horizon (`len(future_values)`, or `prediction_length` when
    given), so two windows of the same series overlap exactly when their `[start, end)` ranges intersect.
    `series_index` numbers the distinct `(source, series_id)` pairs in sorted order, so two datasets built from
    the same sources agree on it.
    """
    missing = [c for c in ("series_id", "start_timestamp", "freq", "past_values") if c not in dataset.column_names]
    if missing:
        raise ValueError(f"The dataset lacks columns {missing} of the shared schema, needed to locate its windows.")
    sources = dataset["source"] if "source" in dataset.column_names else [""] * len(dataset)
    keys = [f"{s}/{sid}" for s, sid in zip(sources, dataset["series_id"])]
    starts, freqs = dataset["start_timestamp"], dataset["freq"]
    if any(not s for s in starts) or any(not f for f in freqs):
        raise ValueError(
            "Some windows have no start_timestamp or freq, so overlapping windows cannot be found. Pass "
            "series_index / window_start / window_end columns yourself."
        )
    lengths = np.asarray([len(v) for v in dataset["past_values"]], dtype=np.int64)
    if prediction_length is None:
        horizons = np.asarray([len(v) for v in dataset["future_values"]], dtype=np.int64)
    else:
        horizons = np.full(len(dataset), prediction_length, dtype=np.int64)
    window_start = np.zeros(len(dataset), dtype=np.int64)
    freqs = np.asarray(freqs)
    for freq in np.unique(freqs):
        rows = np.flatnonzero(freqs == freq)
        window_start[rows] = _step_numbers([starts[i] for i in rows], freq)
    names = sorted(set(keys))
    lookup = {name: i for i, name in enumerate(names)}
    return {
        "series_index": np.asarray([lookup[k] for k in keys], dtype=np.int64),
        "window_start": window_start,
        "window_end": window_start + lengths + horizons,
    }


def top_k_inner_product(
    queries: torch.Tensor,
    corpus: torch.Tensor,
    k: int,
    exclude: torch.Tensor | None = None,
    chunk_rows: int = 262_144,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-`k` corpus rows by inner product (cosine on unit vectors), best first, on the tensors' device.

    Args:
        queries (`torch.Tensor` of shape `(Q, d)`), corpus (`torch.Tensor` of shape `(N, d)`).
        k (`int`): results per query (at most N).
        exclude (`torch.BoolTensor` of shape `(Q, N)`, *optional*): True = never return that row for that query
            (its score is -inf; a query with fewer than `k` rows left gets -inf scores at the end).
        chunk_rows (`int`): corpus rows scored at a time, so the score matrix never exceeds `Q x chunk_rows`.

    Returns `(scores, indices)`, each `(Q, k)`: the same rows as an exact FAISS `IndexFlatIP` search.
    """
    k = min(int(k), corpus.shape[0])
    best_scores = best_indices = None
    for start in range(0, corpus.shape[0], chunk_rows):
        block = corpus[start : start + chunk_rows]
        scores = queries @ block.T
        if exclude is not None:
            scores = scores.masked_fill(exclude[:, start : start + block.shape[0]], float("-inf"))
        scores, indices = scores.topk(min(k, block.shape[0]), dim=1)
        indices = indices + start
        if best_scores is not None:
            scores, indices = torch.cat([best_scores, scores], dim=1), torch.cat([best_indices, indices], dim=1)
            scores, order = scores.topk(k, dim=1)
            indices = indices.gather(1, order)
        best_scores, best_indices = scores, indices
    return best_scores, best_indices


class TraceForRetrievalAugmentedForecasting(TracePreTrainedModel):
    """Frozen aligned TRACE model + retrieval index + trainable soft-prompt projection and forecasting head.

    `ŷ = Head([P | H_q])`, `P = Proj(p_1 … p_R)` from the top-R retrieved (time series, text) pairs; see the
    module docstring for the exact shapes. The index is attached with [`set_retrieval_index`] (or built from a
    dataset with [`build_retrieval_index`]), saved beside the weights by `save_pretrained` (its folder recorded
    in `config.retrieval_index_path`) and loaded back by `from_pretrained`.

    Example:

    ```python
    >>> trace = TraceModel.from_pretrained("aligned-trace")
    >>> model = TraceForRetrievalAugmentedForecasting.from_trace_model(trace, prediction_length=12, num_retrieved=5)
    >>> model.build_retrieval_index(train_dataset)          # shared-schema windows with text
    >>> Trainer(model=model, train_dataset=..., data_collator=RetrievalForecastingCollator(model.config)).train()
    >>> model.save_pretrained("rag-model")                  # weights + retrieval_index/
    ```
    """

    def __init__(self, config: TraceConfig):
        super().__init__(config)
        if config.prediction_length is None:
            raise ValueError("TraceForRetrievalAugmentedForecasting needs config.prediction_length (the horizon H).")
        self.trace = TraceModel(config)
        pair_dim = config.projection_dim * (2 if config.rag_prompt_mode == "ts_text" else 1)
        self.prompt_projection = nn.Linear(pair_dim, config.d_model)
        # The soft prompt's R tokens come before each channel's N patch tokens: [P | H_q,c].
        self.forecast_head = TraceForecastingHead(config, num_tokens=config.num_retrieved + config.num_patches)
        self.retrieval_index: TraceRetrievalIndex | None = None
        self._corpus = None
        self.post_init()
        self.freeze_trace_model()

    # -- construction -----------------------------------------------------------------------------------------

    @classmethod
    def from_trace_model(cls, trace_model: TraceModel, **config_overrides) -> TraceForRetrievalAugmentedForecasting:
        """Wrap an aligned [`TraceModel`] (its weights are copied and frozen); `config_overrides` set e.g.
        `prediction_length`, `num_retrieved`, `rag_prompt_mode`."""
        config_dict = trace_model.config.to_dict()
        for key in ("architectures", "auto_map", "model_type", "transformers_version", "retrieval_index_path"):
            config_dict.pop(key, None)
        config_dict.update(config_overrides)
        model = cls(TraceConfig(**config_dict))
        model.trace.load_state_dict(trace_model.state_dict())
        model.trace.tokenizer = getattr(trace_model, "tokenizer", None)
        model.freeze_trace_model()
        return model

    def freeze_trace_model(self):
        """Freeze every weight of the TRACE model: only `prompt_projection` and `forecast_head` train."""
        for parameter in self.trace.parameters():
            parameter.requires_grad_(False)
        self.trace.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.trace.eval()  # frozen: no dropout, no masking, whatever the mode of the heads
        return self

    # -- index ------------------------------------------------------------------------------------------------

    def set_retrieval_index(self, index: TraceRetrievalIndex) -> TraceForRetrievalAugmentedForecasting:
        """Attach a retrieval index over the training corpus.

        The corpus needs the embeddings the prompt mode uses (`ts_embedding`, plus `text_embedding` for
        `"ts_text"`) of this model's dimension, at least `num_retrieved` rows, and the integer columns
        `series_index`, `window_start`, `window_end` (see [`window_positions`]) for the overlap exclusion.
        """
        needed = ["time_series"] + (["text"] if self.config.rag_prompt_mode == "ts_text" else [])
        for modality in needed:
            if modality not in index.indexes:
                raise ValueError(
                    f"rag_prompt_mode={self.config.rag_prompt_mode!r} needs {modality} embeddings in the index, which "
                    f"has only {list(index.indexes)}. Build it with both modalities or use rag_prompt_mode='ts'."
                )
        if index.dim != self.config.projection_dim:
            raise ValueError(
                f"The index holds {index.dim}-d embeddings but this model's projection_dim is "
                f"{self.config.projection_dim}; build the index with this model's TRACE encoder."
            )
        missing = [c for c in POSITION_COLUMNS if c not in index.corpus.column_names]
        if missing:
            raise ValueError(
                f"The index corpus lacks the position columns {missing}, needed to exclude windows that overlap a "
                "training query. Build it with build_retrieval_index, or add window_positions(dataset) as columns."
            )
        if len(index) < self.config.num_retrieved:
            raise ValueError(f"The index has {len(index)} rows, fewer than num_retrieved={self.config.num_retrieved}.")
        self.retrieval_index = index
        self._corpus = None
        return self

    @torch.no_grad()
    def build_retrieval_index(
        self, dataset, batch_size: int = 64, show_progress_bar: bool = False, text_column: str = "text", **index_kwargs
    ) -> TraceRetrievalIndex:
        """Encode a shared-schema dataset (the training split) with the frozen TRACE model, index it, and attach it.

        Adds the position columns of [`window_positions`] (history + horizon of each window) to the corpus.
        """
        positions = window_positions(dataset)
        corpus = dataset
        for name, values in positions.items():
            if name in corpus.column_names:
                corpus = corpus.remove_columns(name)
            corpus = corpus.add_column(name, values.tolist())
        use_text = self.config.rag_prompt_mode == "ts_text"
        index = TraceRetrievalIndex.build(
            corpus,
            self.trace,
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            text_column=text_column if use_text else None,
            **index_kwargs,
        )
        self.set_retrieval_index(index)
        return index

    def _corpus_tensors(self, device) -> dict[str, torch.Tensor]:
        """Embeddings and positions of the whole corpus, read from the index once."""
        if self.retrieval_index is None:
            raise ValueError(
                "No retrieval index: call model.build_retrieval_index(train_dataset) or model.set_retrieval_index(...), "
                "or load a model saved with its index (config.retrieval_index_path)."
            )
        if self._corpus is None or self._corpus["ts"].device != torch.device(device):
            index = self.retrieval_index
            corpus = {"ts": torch.from_numpy(index.embeddings("time_series"))}
            if self.config.rag_prompt_mode == "ts_text":
                corpus["text"] = torch.from_numpy(index.embeddings("text"))
            for name in POSITION_COLUMNS:
                corpus[name] = torch.as_tensor(np.asarray(index.corpus[name], dtype=np.int64))
            self._corpus = {k: v.to(device) for k, v in corpus.items()}
        return self._corpus

    def _retrieve(self, query_embeds, series_index, window_start, window_end):
        corpus = self._corpus_tensors(query_embeds.device)
        exclude = None
        if window_start is not None:
            # The query itself and every window of the same series that overlaps it.
            overlap = (corpus["series_index"][None, :] == series_index[:, None]) & overlapping_windows(
                window_start, window_end, corpus["window_start"], corpus["window_end"]
            )
            exclude = overlap
            left = (~exclude).sum(dim=1)
            if (left < self.config.num_retrieved).any():
                raise ValueError(
                    f"After excluding windows that overlap the query only {int(left.min())} corpus rows remain for some "
                    f"query, fewer than num_retrieved={self.config.num_retrieved}. Use a larger corpus or a smaller R."
                )
        # Exact cosine top-R on the device, over the corpus embeddings this model holds: no torch -> numpy -> FAISS
        # -> torch round trip per batch (the FAISS index serves TraceRetrievalIndex's own search API).
        queries = nn.functional.normalize(query_embeds.detach().to(corpus["ts"].dtype), dim=-1)
        scores, indices = top_k_inner_product(queries, corpus["ts"], self.config.num_retrieved, exclude)
        if torch.isneginf(scores).any():
            raise ValueError(
                f"Fewer than num_retrieved={self.config.num_retrieved} corpus rows are left to retrieve for some query."
            )
        pairs = corpus["ts"][indices]
        if self.config.rag_prompt_mode == "ts_text":
            pairs = torch.cat([pairs, corpus["text"][indices]], dim=-1)
        return indices, scores, pairs

    # -- persistence ------------------------------------------------------------------------------------------

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save weights and config; the retrieval index goes to `save_directory/retrieval_index/` and its folder
        name to `config.retrieval_index_path`."""
        if self.retrieval_index is not None:
            self.config.retrieval_index_path = RETRIEVAL_INDEX_DIR
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if self.retrieval_index is not None:
            self.retrieval_index.save(os.path.join(str(save_directory), RETRIEVAL_INDEX_DIR))
        return result

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Load weights, then the retrieval index from `config.retrieval_index_path` (relative to the model
        folder, or absolute). A model saved without an index loads without one."""
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        path = model.config.retrieval_index_path
        if path:
            if not os.path.isabs(path):
                base = str(pretrained_model_name_or_path)
                if not os.path.isdir(base):
                    from huggingface_hub import snapshot_download

                    base = snapshot_download(base, allow_patterns=[f"{path}/*"])
                path = os.path.join(base, path)
            if not os.path.isdir(path):
                raise FileNotFoundError(
                    f"config.retrieval_index_path points to {path}, which does not exist. Copy the retrieval index "
                    "folder saved with the model there, or attach one with set_retrieval_index."
                )
            model.set_retrieval_index(TraceRetrievalIndex.load(path, model=model.trace))
        return model

    # -- forward ----------------------------------------------------------------------------------------------

    def forward(
        self,
        past_values: torch.Tensor,
        past_observed_mask: torch.Tensor | None = None,
        future_values: torch.Tensor | None = None,
        future_observed_mask: torch.Tensor | None = None,
        series_index: torch.Tensor | None = None,
        window_start: torch.Tensor | None = None,
        window_end: torch.Tensor | None = None,
        use_retrieval: bool = True,
        return_dict: bool | None = None,
    ) -> TraceRetrievalAugmentedForecastingOutput | tuple:
        r"""
        Args:
            past_values (`torch.FloatTensor` of shape `(batch_size, sequence_length, num_input_channels)`):
                Query windows; see [`TraceTimeSeriesModel.forward`].
            past_observed_mask (`torch.BoolTensor`, *optional*): Observed points (NaN = missing when absent).
            future_values (`torch.FloatTensor` of shape `(batch_size, prediction_length, num_input_channels)`,
                *optional*): Targets; NaN points are ignored by the loss.
            future_observed_mask (`torch.BoolTensor`, *optional*): Which target points count in the loss.
            series_index, window_start, window_end (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
                Where each query lies (as the corpus columns of [`window_positions`]); corpus windows of the same
                series whose `[window_start, window_end)` intersects the query's are not retrieved. Required in
                training mode; `series_index` defaults to 0.
            use_retrieval (`bool`, *optional*, defaults to `True`):
                `False` zeroes the prompt: the head then reads `H_q` alone (the no-RAG baseline).
        """
        batch_size = past_values.shape[0] if isinstance(past_values, torch.Tensor) else None
        if use_retrieval:
            if window_start is None and self.training:
                raise ValueError(
                    "In training mode the model needs window_start and window_end (and series_index for several series): "
                    "the query's step range, so that the query and overlapping corpus windows are not retrieved (they "
                    "hold its future). The collator RetrievalForecastingCollator adds them from window_positions."
                )
            if (window_start is None) != (window_end is None):
                raise ValueError("Pass both window_start and window_end (the query's [start, end) steps), or neither.")
            if window_start is not None:
                for name, value in (("window_start", window_start), ("window_end", window_end), ("series_index", series_index)):
                    if value is not None and (value.shape != (batch_size,) or value.is_floating_point()):
                        raise ValueError(
                            f"{name} must be an integer tensor of shape ({batch_size},), got "
                            f"{value.dtype} {tuple(value.shape)}."
                        )
                if series_index is None:
                    series_index = torch.zeros_like(window_start)

        with torch.no_grad():
            outputs = self.trace.time_series_model(past_values, past_observed_mask, return_dict=True)
            query_embeds = self.trace.project_time_series(outputs.pooler_output)
        patches = outputs.patch_embeddings  # H_q: (B, C, N, d)
        batch_size, num_channels = patches.shape[:2]

        indices = scores = None
        if use_retrieval:
            indices, scores, pairs = self._retrieve(query_embeds, series_index, window_start, window_end)
            prompt = self.prompt_projection(pairs.to(patches.dtype))  # P: (B, R, d)
        else:
            prompt = patches.new_zeros(batch_size, self.config.num_retrieved, self.config.d_model)
        prompt_per_channel = prompt[:, None].expand(-1, num_channels, -1, -1)
        normalized = self.forecast_head(torch.cat([prompt_per_channel, patches], dim=2))  # (B, H, C)
        prediction, loss = self._forecast(
            normalized, outputs, past_values, past_observed_mask, future_values, future_observed_mask
        )
        return self._model_output(
            TraceRetrievalAugmentedForecastingOutput,
            return_dict,
            outputs,
            loss=loss,
            prediction_outputs=prediction,
            retrieved_indices=indices,
            retrieved_scores=scores,
            prompt_embeds=prompt,
            query_embeds=query_embeds,
        )


@dataclass
class RetrievalForecastingCollator:
    """Collate shared-schema rows for [`TraceForRetrievalAugmentedForecasting`]: the inputs of
    `TraceDataCollator` plus `series_index` / `window_start` / `window_end` (columns of the rows, e.g. added with
    [`window_positions`]), and `use_retrieval`.
    """

    config: TraceConfig
    use_retrieval: bool = True

    def __call__(self, rows: list[dict]) -> dict:
        from .data_collator import TraceDataCollator

        base = TraceDataCollator(
            context_length=self.config.context_length,
            num_channels=self.config.num_input_channels,
            prediction_length=self.config.prediction_length,
        )
        batch = base(rows)
        if all(name in rows[0] for name in POSITION_COLUMNS):
            for name in POSITION_COLUMNS:
                batch[name] = torch.tensor([int(row[name]) for row in rows], dtype=torch.long)
        batch["use_retrieval"] = self.use_retrieval
        return batch


__all__ = [
    "RetrievalForecastingCollator",
    "TraceForRetrievalAugmentedForecasting",
    "TraceRetrievalAugmentedForecastingOutput",
    "top_k_inner_product",
    "window_positions",
]
