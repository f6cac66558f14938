# Copyright 2025 The TRACE package authors. Licensed under the Apache License, Version 2.0.
"""What every searcher of the package shares: `RetrievalResults`, the `exclude` rule, top-k over scores, and the
corpus rows of hits. The index (`index.py`) and the raw-series baselines (`baselines.py`) both return
`RetrievalResults` from one `search(queries, k, *, target=..., exclude=...)` signature."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

TS_EMBEDDING_COLUMN = "ts_embedding"
TEXT_EMBEDDING_COLUMN = "text_embedding"
MODALITIES = {"time_series": TS_EMBEDDING_COLUMN, "text": TEXT_EMBEDDING_COLUMN}
INDEX_FILES = {"time_series": "ts_index.faiss", "text": "text_index.faiss"}
MANIFEST_NAME = "trace_index.json"
CORPUS_DIR = "corpus"
INDEX_FORMAT_VERSION = 1
# Columns left out of result rows unless asked for: the embeddings, and values that are large to
# turn into Python lists for every hit.
DEFAULT_HIDDEN_COLUMNS = (TS_EMBEDDING_COLUMN, TEXT_EMBEDDING_COLUMN, "past_values", "future_values")

# What `exclude` may be: per query a collection of ids (or a single id, or None), a boolean matrix
# (num_queries, corpus_size) with True = leave out, or a callable
# `(query_position, candidate_rows) -> bool mask of the candidates to leave out`.
ExcludeSpec = Sequence[Any] | np.ndarray | Callable[[int, np.ndarray], np.ndarray] | None



@dataclass
class RetrievalResults:
    """Top-k results of a batch of queries, best first.

    `k` is the number of results asked for; `TraceRetrievalIndex.search` clamps it to the corpus size, so its
    results have `min(k, corpus_size)` columns (the raw-window baselines keep `k` columns).

    Attributes:
        scores (`np.ndarray` of shape `(num_queries, k)`, float32): similarity of each hit, higher is
            more similar (cosine for the embedding index, minus the distance for the baselines);
            `-inf` where a query has fewer than `k` hits (e.g. after `exclude`).
        indices (`np.ndarray` of shape `(num_queries, k)`, int64): corpus row of each hit, `-1`
            where a query has fewer than `k` hits.
        ids (`list[list]`, *optional*): corpus `id` of each hit (padding left out).
        rows (`list[list[dict]]`, *optional*): the corpus rows of the hits (without the embedding
            and value columns unless asked for), each with its `score` added.
    """

    scores: np.ndarray
    indices: np.ndarray
    ids: list[list[Any]] | None = None
    rows: list[list[dict[str, Any]]] | None = None

    def __len__(self) -> int:
        return int(self.indices.shape[0])


# --------------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------------


def _positive_int(value, name: str) -> int:
    """`value` as a Python int when it is a positive integer (Python or numpy int); a clear error otherwise.

    Booleans are refused (`True` is an int to Python, never a count), and so are floats and strings, even `5.0`
    or `"5"`: a count given as text or a float is a caller's bug this must not hide.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be a positive integer, got {value!r} ({type(value).__name__}).")
    value = int(value)
    if value < 1:
        raise ValueError(f"`{name}` must be >= 1, got {value}.")
    return value


def _validate_k(k, corpus_size: int | None = None) -> int:
    """The number of results to return for a requested `k`: `k` itself, clamped to `corpus_size` when given.

    No corpus can return more than `corpus_size` distinct hits, so a huge `k` (say 10**12) costs no more than
    `k = corpus_size` instead of allocating `(num_queries, k)` arrays.
    """
    k = _positive_int(k, "k")
    return k if corpus_size is None else min(k, int(corpus_size))


def _l2_normalize(vectors: np.ndarray, name: str) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim == 1:
        vectors = vectors[None, :]
    if vectors.ndim != 2:
        raise ValueError(f"`{name}` must be a 2-D array (num_vectors, dim), got shape {vectors.shape}.")
    if not np.isfinite(vectors).all():
        raise ValueError(f"`{name}` contains NaN or infinite values; embeddings must be finite.")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"`{name}` contains {int((norms == 0).sum())} all-zero vector(s), which have no direction.")
    return np.ascontiguousarray(vectors / norms, dtype=np.float32)


class _Exclusion:
    """Normalises the `exclude` argument of the searches into `mask(query_position, rows) -> bool`."""

    def __init__(self, exclude: ExcludeSpec, num_queries: int, corpus_size: int, id_to_rows: Callable[[], dict]):
        self.callable = None
        self.matrix = None
        self.rows: list[np.ndarray] | None = None
        if exclude is None:
            return
        if callable(exclude):
            self.callable = exclude
            return
        if isinstance(exclude, np.ndarray) and exclude.dtype == bool:
            if exclude.shape != (num_queries, corpus_size):
                raise ValueError(
                    f"A boolean `exclude` matrix must have shape (num_queries, corpus_size) = "
                    f"({num_queries}, {corpus_size}), got {exclude.shape}."
                )
            self.matrix = exclude
            return
        if len(exclude) != num_queries:
            raise ValueError(
                f"`exclude` must hold one entry (an id, a collection of ids, or None) per query: got "
                f"{len(exclude)} entries for {num_queries} queries."
            )
        lookup = id_to_rows()
        self.rows = []
        for entry in exclude:
            if entry is None:
                ids: Iterable[Hashable] = ()
            elif isinstance(entry, (str, bytes, int, np.integer)):
                ids = (entry,)
            else:
                ids = entry
            rows = [row for item in ids for row in lookup.get(item, ())]
            self.rows.append(np.asarray(rows, dtype=np.int64))

    @property
    def active(self) -> bool:
        return self.callable is not None or self.matrix is not None or self.rows is not None

    def max_excluded(self, positions: np.ndarray) -> int | None:
        """Exact upper bound of the excluded items for these queries, or None when unknown (callable)."""
        if self.rows is not None:
            return max((len(self.rows[p]) for p in positions), default=0)
        if self.matrix is not None:
            return int(self.matrix[positions].sum(axis=1).max(initial=0))
        return None if self.callable is not None else 0

    def mask(self, position: int, candidates: np.ndarray) -> np.ndarray:
        if self.callable is not None:
            out = np.asarray(self.callable(position, candidates), dtype=bool)
            if out.shape != candidates.shape:
                raise ValueError(
                    f"The `exclude` callable must return one boolean per candidate, shape {candidates.shape}; "
                    f"got shape {out.shape}."
                )
            return out
        if self.matrix is not None:
            return self.matrix[position, candidates]
        if self.rows is not None:
            return np.isin(candidates, self.rows[position])
        return np.zeros(candidates.shape, dtype=bool)


def overlapping_windows(query_start, query_end, corpus_start, corpus_end):
    """`(num_queries, corpus_size)` bool matrix: True where query window `[query_start, query_end)` and corpus window
    `[corpus_start, corpus_end)` share a step.

    The one overlap rule of the package (numpy arrays or torch tensors, 1-D each): retrieval-augmented
    forecasters leave such windows out, because they hold part of the query's future.
    """
    return (corpus_start[None, :] < query_end[:, None]) & (query_start[:, None] < corpus_end[None, :])


def _top_k_from_scores(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of a dense (num_queries, corpus_size) score matrix, ties broken by the lower row."""
    num_queries, corpus_size = scores.shape
    kk = min(k, corpus_size)
    out_scores = np.full((num_queries, k), -np.inf, dtype=np.float32)
    out_indices = np.full((num_queries, k), -1, dtype=np.int64)
    if kk == 0:
        return out_scores, out_indices
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk] if kk < corpus_size else np.tile(np.arange(corpus_size), (num_queries, 1))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    top = np.take_along_axis(part, order, axis=1)
    top_scores = np.take_along_axis(scores, top, axis=1)
    valid = np.isfinite(top_scores)
    out_indices[:, :kk] = np.where(valid, top, -1)
    out_scores[:, :kk] = np.where(valid, top_scores, -np.inf)
    return out_scores, out_indices


def _rows_for(corpus, indices: np.ndarray, scores: np.ndarray, columns: Sequence[str]) -> list[list[dict[str, Any]]]:
    flat = indices[indices >= 0]
    table = corpus.select_columns(list(columns))[flat.tolist()] if flat.size else {c: [] for c in columns}
    rows, cursor = [], 0
    for query_indices, query_scores in zip(indices, scores):
        hits = []
        for score in query_scores[query_indices >= 0]:
            hit = {column: table[column][cursor] for column in columns}
            hit["score"] = float(score)
            hits.append(hit)
            cursor += 1
        rows.append(hits)
    return rows


class _CorpusResultsMixin:
    """Turns (scores, indices) into `RetrievalResults` with ids and rows from `self.corpus`."""

    corpus = None
    id_column = "id"

    def _default_row_columns(self) -> list[str]:
        if self.corpus is None:
            return []
        return [c for c in self.corpus.column_names if c not in DEFAULT_HIDDEN_COLUMNS]

    def _results(self, scores, indices, return_rows: bool, columns: Sequence[str] | None) -> RetrievalResults:
        ids = rows = None
        if self.corpus is not None and self.id_column in self.corpus.column_names:
            # Take only the hits' ids: reading the whole id column would cost O(corpus) per search.
            flat = indices[indices >= 0]
            taken = self.corpus.select_columns([self.id_column])[flat.tolist()][self.id_column] if flat.size else []
            ends = np.cumsum((indices >= 0).sum(axis=1))
            ids = [taken[end - count : end] for end, count in zip(ends, (indices >= 0).sum(axis=1))]
        if return_rows and self.corpus is not None:
            rows = _rows_for(self.corpus, indices, scores, self._default_row_columns() if columns is None else columns)
        return RetrievalResults(scores=scores, indices=indices, ids=ids, rows=rows)

    def _id_values(self) -> list:
        if getattr(self, "_id_cache", None) is None:
            self._id_cache = self.corpus[self.id_column] if self.corpus is not None and self.id_column in self.corpus.column_names else None
        return self._id_cache

    def _id_to_rows(self) -> dict:
        ids = self._id_values()
        if ids is None:
            raise ValueError(
                f"Excluding by id needs an `{self.id_column}` column in the corpus; it has {self.corpus.column_names if self.corpus is not None else 'no corpus'}. "
                "Pass a boolean matrix or a callable as `exclude` instead."
            )
        lookup: dict = {}
        for row, item in enumerate(ids):
            lookup.setdefault(item, []).append(row)
        return lookup


# --------------------------------------------------------------------------------------------------
# The index
# --------------------------------------------------------------------------------------------------


def _column_to_numpy(dataset, column: str) -> np.ndarray:
    if dataset._indices is not None:
        dataset = dataset.flatten_indices()
    chunked = dataset.data.column(column)
    parts = []
    for chunk in chunked.chunks:
        lengths = chunk.value_lengths() if hasattr(chunk, "value_lengths") else None
        flat = chunk.flatten().to_numpy(zero_copy_only=False)
        if lengths is not None:
            lengths = np.unique(lengths.to_numpy(zero_copy_only=False))
            if len(lengths) > 1:
                raise ValueError(f"Column {column!r} holds vectors of different lengths {lengths.tolist()}; embeddings must share one dimension.")
        width = chunk.type.list_size if hasattr(chunk.type, "list_size") else (int(lengths[0]) if lengths is not None and len(lengths) else 0)
        parts.append(np.asarray(flat, dtype=np.float32).reshape(len(chunk), width))
    if not parts:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(parts, axis=0)


def _series_list(dataset, column: str) -> list[np.ndarray]:
    values = dataset.with_format("numpy", columns=[column])[column]
    if isinstance(values, np.ndarray) and values.dtype != object:
        return [np.asarray(v, dtype=np.float32) for v in values]
    return [np.asarray(np.stack(v) if v.dtype == object else v, dtype=np.float32) for v in values]


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------
