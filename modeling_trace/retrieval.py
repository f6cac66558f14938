# Copyright 2025 The TRACE package authors. Licensed under the Apache License, Version 2.0.
"""Retrieval over TRACE embeddings: the corpus index, its evaluator, and raw-series baselines.

`TraceRetrievalIndex` is the one index of the project. It keeps the corpus as a `datasets.Dataset`
(ids, labels, texts, metadata, and the `ts_embedding` / `text_embedding` columns) next to one FAISS
inner-product index per modality. Embeddings are L2-normalised, so inner product = cosine similarity
(design §1 "Retrieval"). Modes:

* Text -> TS: `search_by_text(texts, k)` (queries the time-series index),
* TS -> Text: `search_by_time_series(series, k, target="text")`,
* TS -> TS: `search_by_time_series(series, k)`.

Every search can leave out items per query (`exclude`): the query itself, or — for retrieval-
augmented forecasting — windows overlapping it. Excluded items are removed after over-fetching from
FAISS, and the fetch grows until each query has `k` results or the corpus is exhausted.

    >>> from modeling_trace import TraceModel
    >>> from modeling_trace.retrieval import TraceRetrievalIndex
    >>> model = TraceModel.from_pretrained("path/to/checkpoint")
    >>> index = TraceRetrievalIndex.build(dataset, model)          # encodes both modalities
    >>> hits = index.search_by_text(["heavy rain and flash flooding"], k=5)
    >>> hits.rows[0][0]["id"], hits.scores[0, 0]
    >>> index.save("storm_index"); index = TraceRetrievalIndex.load("storm_index", model=model)

The baselines (`EuclideanScanSearcher`, `DTWSearcher`, `RandomSearcher`) search raw windows and
return the same `RetrievalResults`, for the speed/quality benchmarks.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .metrics.trace_retrieval.trace_retrieval import retrieval_metrics
from .modeling_trace import sha256_file


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


class RetrievalIndexIntegrityError(ValueError):
    """A saved `TraceRetrievalIndex` is incomplete, corrupted or inconsistent with its corpus."""


@dataclass
class RetrievalResults:
    """Top-k results of a batch of queries, best first.

    Attributes:
        scores (`np.ndarray` of shape `(num_queries, k)`, float32): similarity of each hit, higher is
            more similar (cosine for the embedding index, minus the distance for the baselines);
            `-inf` where a query has fewer than `k` hits.
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


class TraceRetrievalIndex(_CorpusResultsMixin):
    """A corpus of time series and texts with FAISS inner-product indexes over their TRACE embeddings.

    Build it with `TraceRetrievalIndex.build(dataset, model)` (encodes the corpus) or
    `TraceRetrievalIndex.from_embeddings(...)` (embeddings already computed), search it with
    `search_by_text` / `search_by_time_series`, persist it with `save` / `load`.

    Args:
        corpus (`datasets.Dataset`): one row per item, with the embedding columns `ts_embedding`
            and/or `text_embedding` (float32, unit norm) and any metadata (`id`, `label`, `text`...).
        indexes (`dict[str, faiss.Index]`): `"time_series"` and/or `"text"` index over the rows of
            `corpus`, in row order.
        index_factory (`str`, *optional*): the FAISS factory string the indexes were built with
            (`None` = exact `IndexFlatIP`).
        model (*optional*): an object with `encode_time_series` / `encode_text` (e.g. `TraceModel`),
            used when queries are given as raw series or strings.
        id_column (`str`, defaults to `"id"`): the corpus column holding item ids (used by
            `exclude` and in `RetrievalResults.ids`).
    """

    def __init__(self, corpus, indexes: dict, *, index_factory: str | None = None, model=None, id_column: str = "id"):
        for modality, index in indexes.items():
            if modality not in MODALITIES:
                raise ValueError(f"Unknown modality {modality!r}; expected one of {list(MODALITIES)}.")
            if index.ntotal != len(corpus):
                raise ValueError(
                    f"The {modality} index holds {index.ntotal} vectors but the corpus has {len(corpus)} rows; "
                    "they must describe the same items in the same order."
                )
        if not indexes:
            raise ValueError("A TraceRetrievalIndex needs at least one of the time-series or text embeddings.")
        self.corpus = corpus
        self.indexes = dict(indexes)
        self.index_factory = index_factory
        self.model = model
        self.id_column = id_column
        self._id_cache = None

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_embeddings(
        cls,
        ts_embeddings: np.ndarray | None = None,
        text_embeddings: np.ndarray | None = None,
        corpus=None,
        index_factory: str | None = None,
        *,
        model=None,
        id_column: str = "id",
        nprobe: int | None = None,
        ef_search: int | None = None,
        train_size: int | None = None,
        seed: int = 0,
    ) -> "TraceRetrievalIndex":
        """Index precomputed embeddings.

        Args:
            ts_embeddings (`np.ndarray` of shape `(N, d)`, *optional*): time-series embeddings;
                taken from the corpus column `ts_embedding` when omitted and present.
            text_embeddings (`np.ndarray` of shape `(N, d)`, *optional*): text embeddings; likewise
                from `text_embedding`.
            corpus (`datasets.Dataset` or `dict` of columns, *optional*): metadata of the N items,
                in the order of the embeddings. Defaults to an `id` column `"0".."N-1"`.
            index_factory (`str`, *optional*): FAISS factory string (e.g. `"IVF1024,Flat"`,
                `"HNSW32"`, `"IVF256,PQ32"`); `None` = exact `IndexFlatIP`. Trainable indexes are
                trained on the corpus vectors (or a random `train_size` subset of them).
            model (*optional*): encoder kept for searches with raw queries.
            id_column (`str`): the id column of the corpus.
            nprobe (`int`, *optional*): IVF lists visited per query (FAISS default 1).
            ef_search (`int`, *optional*): HNSW search breadth `efSearch` (FAISS default 16).
            train_size (`int`, *optional*): number of vectors used to train an IVF/PQ index.
            seed (`int`): seed of that subset.

        Embeddings are re-normalised to unit L2 norm and stored as float32 columns of the corpus.
        """
        import datasets

        if corpus is None:
            corpus_ds = None
        elif isinstance(corpus, datasets.Dataset):
            corpus_ds = corpus.flatten_indices() if corpus._indices is not None else corpus
        elif isinstance(corpus, dict):
            corpus_ds = datasets.Dataset.from_dict(corpus)
        else:
            raise TypeError(f"`corpus` must be a datasets.Dataset, a dict of columns or None; got {type(corpus).__name__}.")

        given = {"time_series": ts_embeddings, "text": text_embeddings}
        vectors: dict[str, np.ndarray] = {}
        for modality, column in MODALITIES.items():
            array = given[modality]
            if array is None and corpus_ds is not None and column in corpus_ds.column_names:
                array = _column_to_numpy(corpus_ds, column)
            if array is not None:
                vectors[modality] = _l2_normalize(array, f"{modality} embeddings")
        if not vectors:
            raise ValueError(
                "No embeddings to index: pass `ts_embeddings` and/or `text_embeddings`, or a corpus with "
                f"`{TS_EMBEDDING_COLUMN}` / `{TEXT_EMBEDDING_COLUMN}` columns."
            )
        sizes = {m: v.shape[0] for m, v in vectors.items()}
        num_rows = next(iter(sizes.values()))
        if len(set(sizes.values())) > 1:
            raise ValueError(f"Time-series and text embeddings must describe the same items; got counts {sizes}.")
        if corpus_ds is None:
            corpus_ds = datasets.Dataset.from_dict({id_column: [str(i) for i in range(num_rows)]})
        if len(corpus_ds) != num_rows:
            raise ValueError(f"The corpus has {len(corpus_ds)} rows but the embeddings have {num_rows}; pass one row per vector.")

        corpus_ds = corpus_ds.remove_columns([MODALITIES[m] for m in vectors if MODALITIES[m] in corpus_ds.column_names])
        corpus_ds = _append_embedding_columns(corpus_ds, {MODALITIES[m]: v for m, v in vectors.items()})

        indexes = {
            modality: _make_faiss_index(v, index_factory, train_size=train_size, seed=seed, name=modality)
            for modality, v in vectors.items()
        }
        index = cls(corpus_ds, indexes, index_factory=index_factory, model=model, id_column=id_column)
        index.set_search_parameters(nprobe=nprobe, ef_search=ef_search)
        return index

    @classmethod
    def build(
        cls,
        dataset,
        model,
        *,
        batch_size: int = 64,
        show_progress_bar: bool = True,
        text_column: str | None = "text",
        values_column: str | None = "past_values",
        index_factory: str | None = None,
        id_column: str = "id",
        **index_kwargs,
    ) -> "TraceRetrievalIndex":
        """Encode a dataset with `model` and index it.

        Args:
            dataset (`datasets.Dataset`): the corpus, in the shared TRACE schema (`id`, `label`,
                `text`, `past_values` of shape (length, channels) with NaN = missing, ...).
            model: an object with `encode_time_series(series, batch_size=, show_progress_bar=,
                convert_to_numpy=True)` and `encode_text(texts, ...)` returning L2-normalised float32
                arrays `(N, d)` — `TraceModel` provides both.
            batch_size (`int`): items per forward pass.
            show_progress_bar (`bool`): tqdm bars while encoding.
            text_column (`str` or `None`): texts to embed; `None` = no text index.
            values_column (`str` or `None`): series to embed; `None` = no time-series index.
            index_factory (`str`, *optional*): FAISS factory string, see `from_embeddings`.
            id_column (`str`): the id column.
            **index_kwargs: `nprobe`, `ef_search`, `train_size`, `seed` of `from_embeddings`.
        """
        ts_embeddings = text_embeddings = None
        for column in (text_column, values_column):
            if column is not None and column not in dataset.column_names:
                raise ValueError(
                    f"Column {column!r} is not in the dataset (columns: {dataset.column_names}); pass the right "
                    "`text_column` / `values_column`, or None to skip that modality."
                )
        if values_column is not None:
            series = _series_list(dataset, values_column)
            ts_embeddings = model.encode_time_series(
                series, batch_size=batch_size, show_progress_bar=show_progress_bar, convert_to_numpy=True
            )
        if text_column is not None:
            texts = ["" if t is None else str(t) for t in dataset[text_column]]
            text_embeddings = model.encode_text(
                texts, batch_size=batch_size, show_progress_bar=show_progress_bar, convert_to_numpy=True
            )
        return cls.from_embeddings(
            ts_embeddings,
            text_embeddings,
            corpus=dataset,
            index_factory=index_factory,
            model=model,
            id_column=id_column,
            **index_kwargs,
        )

    # ---------------------------------------------------------------- properties

    def __len__(self) -> int:
        return len(self.corpus)

    def __repr__(self) -> str:
        dims = {m: idx.d for m, idx in self.indexes.items()}
        return f"TraceRetrievalIndex(num_rows={len(self)}, dims={dims}, index_factory={self.index_factory!r})"

    @property
    def dim(self) -> int:
        """Embedding dimension (the same for both modalities)."""
        return next(iter(self.indexes.values())).d

    def embeddings(self, modality: str = "time_series", rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """The stored unit-norm embeddings `(len(rows), d)` of `modality` (all rows by default).

        Retrieval-augmented forecasting uses this to fetch `[h_ts ; z_txt]` of the retrieved pairs.
        """
        column = MODALITIES[self._check_modality(modality)]
        subset = self.corpus if rows is None else self.corpus.select(np.asarray(rows, dtype=np.int64).tolist())
        return _column_to_numpy(subset, column)

    def set_search_parameters(self, *, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Set IVF `nprobe` and/or HNSW `efSearch` on every index (recall/speed trade-off)."""
        import faiss

        for name, value in (("nprobe", nprobe), ("efSearch", ef_search)):
            if value is None:
                continue
            for modality, index in self.indexes.items():
                try:
                    faiss.ParameterSpace().set_index_parameter(index, name, int(value))
                except RuntimeError as err:
                    raise ValueError(
                        f"The {modality} index ({self.index_factory or 'Flat'}) has no `{name}` parameter; "
                        f"`nprobe` applies to IVF indexes and `ef_search` to HNSW ones."
                    ) from err

    def _check_modality(self, modality: str) -> str:
        if modality not in MODALITIES:
            raise ValueError(f"Unknown modality {modality!r}; expected 'time_series' or 'text'.")
        if modality not in self.indexes:
            raise ValueError(
                f"This index has no {modality} embeddings (it has {list(self.indexes)}); build it with "
                f"{'`values_column`' if modality == 'time_series' else '`text_column`'} set, or pass them to from_embeddings."
            )
        return modality

    # ---------------------------------------------------------------- search

    def search(
        self,
        query_embeddings: np.ndarray,
        k: int = 10,
        *,
        target: str = "time_series",
        exclude: ExcludeSpec = None,
        batch_size: int = 1024,
        return_rows: bool = True,
        columns: Sequence[str] | None = None,
    ) -> RetrievalResults:
        """Search the `target` index with query embeddings (any modality; cosine similarity).

        Args:
            query_embeddings (`np.ndarray` of shape `(num_queries, d)`): re-normalised to unit norm.
            k (`int`): results per query.
            target (`str`): `"time_series"` or `"text"` — which side of the corpus to search.
            exclude: items to leave out per query: a list with, per query, an id / a collection of
                ids / None; a boolean `(num_queries, corpus_size)` matrix (True = leave out); or a
                callable `f(query_position, candidate_rows) -> bool array` (True = leave out), e.g.
                to drop windows overlapping the query.
            batch_size (`int`): queries per FAISS call.
            return_rows (`bool`): also return the corpus rows of the hits.
            columns (`list[str]`, *optional*): corpus columns in the rows (default: all but the
                embeddings, `past_values` and `future_values`).
        """
        target = self._check_modality(target)
        index = self.indexes[target]
        queries = _l2_normalize(query_embeddings, "query_embeddings")
        if queries.shape[1] != index.d:
            raise ValueError(f"Query embeddings have dimension {queries.shape[1]} but the {target} index has {index.d}.")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}.")
        exclusion = _Exclusion(exclude, len(queries), len(self), self._id_to_rows)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        indices = np.full((len(queries), k), -1, dtype=np.int64)
        for start in range(0, len(queries), batch_size):
            positions = np.arange(start, min(start + batch_size, len(queries)))
            self._search_batch(index, queries, positions, k, exclusion, scores, indices)
        return self._results(scores, indices, return_rows, columns)

    def _search_batch(self, index, queries, positions, k, exclusion: _Exclusion, scores, indices) -> None:
        ntotal = index.ntotal
        if not exclusion.active:
            s, i = index.search(queries[positions], min(k, ntotal))
            s = np.where(i >= 0, s, -np.inf)
            scores[positions, : s.shape[1]] = s
            indices[positions, : i.shape[1]] = i
            return
        extra = exclusion.max_excluded(positions)
        fetch = min(ntotal, k + (extra if extra is not None else k))
        pending = positions
        while pending.size:
            s, i = index.search(queries[pending], fetch)
            retry = []
            for row, position in enumerate(pending):
                candidates = i[row]
                found = candidates >= 0
                keep = found.copy()
                keep[found] = ~exclusion.mask(int(position), candidates[found])
                chosen = np.flatnonzero(keep)[:k]
                # A full fetch that still lacks k survivors may hide more candidates further down.
                if chosen.size < k and fetch < ntotal and found.all():
                    retry.append(position)
                    continue
                scores[position, : chosen.size] = s[row, chosen]
                indices[position, : chosen.size] = candidates[chosen]
            pending = np.asarray(retry, dtype=np.int64)
            fetch = min(ntotal, fetch * 2)

    def search_by_text(
        self,
        texts: Sequence[str] | str | np.ndarray | None = None,
        k: int = 10,
        *,
        query_embeddings: np.ndarray | None = None,
        exclude: ExcludeSpec = None,
        batch_size: int = 64,
        show_progress_bar: bool = False,
        model=None,
        **search_kwargs,
    ) -> RetrievalResults:
        """Text -> TS: find the time series that match each text.

        Args:
            texts (`list[str]` or `str`): query texts, encoded with `model` (or the index's model).
                A float array is taken as text embeddings.
            k (`int`): results per query.
            query_embeddings (`np.ndarray`, *optional*): text embeddings instead of `texts`.
            exclude: see `search`.
            batch_size, show_progress_bar: encoding options.
            model (*optional*): encoder to use instead of the index's.
            **search_kwargs: `return_rows`, `columns`, `batch_size` of `search` (as `search_batch_size`).
        """
        if isinstance(texts, np.ndarray) and texts.dtype.kind == "f":
            query_embeddings, texts = texts, None
        embeddings = self._query_embeddings(
            "text", texts, query_embeddings, model, batch_size=batch_size, show_progress_bar=show_progress_bar
        )
        return self._search_kw(embeddings, k, "time_series", exclude, search_kwargs)

    def search_by_time_series(
        self,
        series=None,
        k: int = 10,
        *,
        target: str = "time_series",
        query_embeddings: np.ndarray | None = None,
        exclude: ExcludeSpec = None,
        batch_size: int = 64,
        show_progress_bar: bool = False,
        model=None,
        **search_kwargs,
    ) -> RetrievalResults:
        """TS -> TS (`target="time_series"`) or TS -> Text (`target="text"`).

        Args:
            series: query series, an array `(num_queries, length, channels)` or a list of
                `(length_i, channels)` arrays (NaN = missing), encoded with the model.
            k (`int`): results per query.
            target (`str`): `"time_series"` for similar series, `"text"` for matching texts.
            query_embeddings (`np.ndarray`, *optional*): time-series embeddings instead of `series`.
            exclude: see `search` — e.g. `exclude=[[qid] for qid in query_ids]` drops each query
                from its own TS -> TS results.
            batch_size, show_progress_bar: encoding options.
            model (*optional*): encoder to use instead of the index's.
            **search_kwargs: `return_rows`, `columns`, `search_batch_size`.
        """
        embeddings = self._query_embeddings(
            "time_series", series, query_embeddings, model, batch_size=batch_size, show_progress_bar=show_progress_bar
        )
        return self._search_kw(embeddings, k, target, exclude, search_kwargs)

    def _search_kw(self, embeddings, k, target, exclude, search_kwargs) -> RetrievalResults:
        unknown = set(search_kwargs) - {"return_rows", "columns", "search_batch_size"}
        if unknown:
            raise TypeError(f"Unexpected arguments {sorted(unknown)}; accepted: return_rows, columns, search_batch_size.")
        if "search_batch_size" in search_kwargs:
            search_kwargs["batch_size"] = search_kwargs.pop("search_batch_size")
        return self.search(embeddings, k, target=target, exclude=exclude, **search_kwargs)

    def _query_embeddings(self, modality, raw, embeddings, model, **encode_kwargs) -> np.ndarray:
        if (raw is None) == (embeddings is None):
            what = "texts" if modality == "text" else "series"
            raise ValueError(f"Pass exactly one of `{what}` and `query_embeddings`.")
        if embeddings is not None:
            return np.asarray(embeddings, dtype=np.float32)
        model = model if model is not None else self.model
        if model is None:
            raise ValueError(
                "Raw queries need an encoder: pass `model=` (e.g. a TraceModel) here or when building/loading "
                "the index, or pass `query_embeddings`."
            )
        if modality == "text":
            texts = [raw] if isinstance(raw, str) else list(raw)
            return model.encode_text(texts, convert_to_numpy=True, **encode_kwargs)
        return model.encode_time_series(raw, convert_to_numpy=True, **encode_kwargs)

    # ---------------------------------------------------------------- persistence

    def save(self, directory: str) -> None:
        """Write the corpus (`save_to_disk`), one FAISS file per modality and a JSON manifest.

        The manifest records the format version, factory string, row count, and per index its
        file, sha256, vector count and dimension, so that `load` can detect truncated, swapped or
        stale files.
        """
        import faiss

        os.makedirs(directory, exist_ok=True)
        self.corpus.save_to_disk(os.path.join(directory, CORPUS_DIR))
        manifest = {
            "format_version": INDEX_FORMAT_VERSION,
            "index_factory": self.index_factory,
            "metric": "inner_product",
            "num_rows": len(self.corpus),
            "id_column": self.id_column,
            "indexes": {},
        }
        for modality, index in self.indexes.items():
            path = os.path.join(directory, INDEX_FILES[modality])
            faiss.write_index(index, path)
            manifest["indexes"][modality] = {
                "file": INDEX_FILES[modality],
                "embedding_column": MODALITIES[modality],
                "sha256": sha256_file(path),
                "num_bytes": os.path.getsize(path),
                "num_vectors": int(index.ntotal),
                "dim": int(index.d),
            }
        with open(os.path.join(directory, MANIFEST_NAME), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2)

    @classmethod
    def load(cls, directory: str, *, model=None, keep_in_memory: bool = False, verify: bool = True) -> "TraceRetrievalIndex":
        """Load an index written by `save`, checking its integrity.

        Args:
            directory (`str`): the folder given to `save`.
            model (*optional*): encoder for raw queries.
            keep_in_memory (`bool`): load the corpus into memory instead of memory-mapping it.
            verify (`bool`): check each index file's size and sha256 against the manifest.

        Raises:
            RetrievalIndexIntegrityError: a missing, truncated or modified index file, an index whose
                vector count or dimension differs from the manifest, or a corpus whose row count differs.
        """
        import datasets
        import faiss

        manifest_path = os.path.join(directory, MANIFEST_NAME)
        if not os.path.isfile(manifest_path):
            raise RetrievalIndexIntegrityError(
                f"{manifest_path} not found: {directory!r} is not a saved TraceRetrievalIndex (expected "
                f"{MANIFEST_NAME}, {CORPUS_DIR}/ and the .faiss files written by TraceRetrievalIndex.save)."
            )
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
        version = manifest.get("format_version")
        if version != INDEX_FORMAT_VERSION:
            raise RetrievalIndexIntegrityError(
                f"{manifest_path} has format_version {version!r}; this version of modeling_trace reads "
                f"{INDEX_FORMAT_VERSION}. Rebuild the index with TraceRetrievalIndex.build and save it again."
            )
        rebuild = "Rebuild it (TraceRetrievalIndex.build / from_embeddings) and save it again, or restore the original file."
        corpus_path = os.path.join(directory, CORPUS_DIR)
        try:
            corpus = datasets.load_from_disk(corpus_path, keep_in_memory=keep_in_memory)
        except FileNotFoundError as err:
            raise RetrievalIndexIntegrityError(f"The corpus folder {corpus_path} is missing or unreadable. {rebuild}") from err
        if len(corpus) != manifest["num_rows"]:
            raise RetrievalIndexIntegrityError(
                f"The corpus in {corpus_path} has {len(corpus)} rows but the manifest {manifest_path} records "
                f"{manifest['num_rows']}: the corpus and the index files come from different saves. {rebuild}"
            )
        indexes = {}
        for modality, entry in manifest["indexes"].items():
            path = os.path.join(directory, entry["file"])
            if not os.path.isfile(path):
                raise RetrievalIndexIntegrityError(f"The {modality} index file {path} is missing. {rebuild}")
            if verify:
                size = os.path.getsize(path)
                if size != entry["num_bytes"]:
                    raise RetrievalIndexIntegrityError(
                        f"The {modality} index file {path} is {size} bytes but the manifest records "
                        f"{entry['num_bytes']}: it is truncated or was replaced. {rebuild}"
                    )
                digest = sha256_file(path)
                if digest != entry["sha256"]:
                    raise RetrievalIndexIntegrityError(
                        f"The {modality} index file {path} has sha256 {digest} but the manifest records "
                        f"{entry['sha256']}: the file is corrupted or was modified. {rebuild}"
                    )
            try:
                index = faiss.read_index(path)
            except RuntimeError as err:
                raise RetrievalIndexIntegrityError(f"FAISS cannot read the {modality} index file {path} ({err}). {rebuild}") from err
            if index.ntotal != entry["num_vectors"] or index.d != entry["dim"]:
                raise RetrievalIndexIntegrityError(
                    f"The {modality} index file {path} holds {index.ntotal} vectors of dimension {index.d}, but the "
                    f"manifest records {entry['num_vectors']} of dimension {entry['dim']}. {rebuild}"
                )
            if index.ntotal != len(corpus):
                raise RetrievalIndexIntegrityError(
                    f"The {modality} index file {path} holds {index.ntotal} vectors but the corpus {corpus_path} has "
                    f"{len(corpus)} rows; each corpus row needs exactly one vector. {rebuild}"
                )
            indexes[modality] = index
        return cls(
            corpus,
            indexes,
            index_factory=manifest.get("index_factory"),
            model=model,
            id_column=manifest.get("id_column", "id"),
        )


def _make_faiss_index(vectors: np.ndarray, factory: str | None, *, train_size: int | None, seed: int, name: str):
    import faiss

    dim = vectors.shape[1]
    if factory is None or factory.strip() in ("", "Flat"):
        index = faiss.IndexFlatIP(dim)
    else:
        try:
            index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as err:
            raise ValueError(
                f"FAISS cannot build index_factory={factory!r} for dimension {dim} ({err}). Use a factory string such "
                "as 'IVF1024,Flat', 'HNSW32' or 'IVF256,PQ16'."
            ) from err
    if not index.is_trained:
        train = vectors
        if train_size is not None and train_size < len(vectors):
            rows = np.random.default_rng(seed).choice(len(vectors), size=train_size, replace=False)
            train = vectors[np.sort(rows)]
        nlist = getattr(faiss.try_extract_index_ivf(index), "nlist", 0) if _is_ivf(index) else 0
        if nlist and len(train) < nlist:
            raise ValueError(
                f"index_factory={factory!r} has {nlist} IVF lists but only {len(train)} {name} vectors to train them; "
                f"use fewer lists (about sqrt(N), e.g. 'IVF{max(1, int(np.sqrt(len(vectors))))},Flat') or the exact index."
            )
        index.train(train)
    index.add(vectors)
    return index


def _is_ivf(index) -> bool:
    import faiss

    try:
        return faiss.try_extract_index_ivf(index) is not None
    except (RuntimeError, AttributeError):
        return False


def _append_embedding_columns(corpus, columns: dict[str, np.ndarray]):
    import datasets
    import pyarrow as pa

    arrays = {
        name: pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
        for name, values in columns.items()
    }
    embeddings = datasets.Dataset(datasets.table.InMemoryTable(pa.table(arrays)))
    return datasets.concatenate_datasets([corpus, embeddings], axis=1)


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


class RetrievalEvaluator:
    """Evaluate a `TraceRetrievalIndex` on Text -> TS, TS -> Text and TS -> TS (paper Table 1).

    For each query row, the paired item of the other modality is the corpus row with the same id
    (modality matching), and relevant items for label matching are the corpus rows with the same
    label. TS -> TS leaves the query itself out of its own results (`exclude_self`) and reports
    label matching only. Metrics come from the `trace_retrieval` metric (`retrieval_metrics`).

    Args:
        queries (`datasets.Dataset`, *optional*): query rows with `id_column`, `label_column`, and
            either embedding columns (`ts_embedding` / `text_embedding`) or raw `text_column` /
            `values_column` to encode. Defaults to the index's own corpus (self-retrieval).
        modes (`tuple[str]`): among `"text_to_ts"`, `"ts_to_text"`, `"ts_to_ts"`.
        k (`int`): retrieved per query (the list the metrics see).
        precision_at, mrr_at, ndcg_at: metric cutoffs.
        exclude_self (`bool`): drop the query's own id from its TS -> TS results.
        batch_size (`int`): encoding batch size.
        name (`str`): prefix of the metric keys.

    Returns (from `__call__`): a dict such as `{"text_to_ts_label_precision@1": ...,
    "text_to_ts_modality_mrr@10": ..., "ts_to_ts_seconds_per_1k_queries": ...}`; the
    `seconds_per_1k_queries` count the index search only, `encode_seconds_per_1k_queries` the
    query encoding when queries were raw.
    """

    MODES = {"text_to_ts": ("text", "time_series"), "ts_to_text": ("time_series", "text"), "ts_to_ts": ("time_series", "time_series")}

    def __init__(
        self,
        queries=None,
        *,
        modes: Sequence[str] = ("text_to_ts", "ts_to_text", "ts_to_ts"),
        k: int = 10,
        precision_at: Sequence[int] = (1, 5),
        mrr_at: int | None = 10,
        ndcg_at: int | None = 10,
        id_column: str = "id",
        label_column: str | None = "label",
        text_column: str = "text",
        values_column: str = "past_values",
        exclude_self: bool = True,
        batch_size: int = 64,
        name: str = "",
    ):
        unknown = [m for m in modes if m not in self.MODES]
        if unknown:
            raise ValueError(f"Unknown retrieval modes {unknown}; expected some of {list(self.MODES)}.")
        self.queries = queries
        self.modes = tuple(modes)
        self.k = k
        self.precision_at = tuple(precision_at)
        self.mrr_at = mrr_at
        self.ndcg_at = ndcg_at
        self.id_column = id_column
        self.label_column = label_column
        self.text_column = text_column
        self.values_column = values_column
        self.exclude_self = exclude_self
        self.batch_size = batch_size
        self.name = name

    def __call__(self, index: TraceRetrievalIndex, model=None) -> dict[str, float]:
        queries = self.queries if self.queries is not None else index.corpus
        for where, columns in (("queries", queries.column_names), ("index corpus", index.corpus.column_names)):
            if self.id_column not in columns:
                raise ValueError(
                    f"The {where} have no `{self.id_column}` column (columns: {columns}); the evaluator pairs queries "
                    "with corpus items by id. Pass `id_column=`."
                )
        prefix = f"{self.name}_" if self.name else ""
        query_ids = queries[self.id_column]
        has_labels = self.label_column is not None and self.label_column in queries.column_names and self.label_column in index.corpus.column_names
        query_labels = queries[self.label_column] if has_labels else None
        corpus_labels = index.corpus[self.label_column] if has_labels else None
        corpus_ids = index._id_values()
        corpus_id_set = set(corpus_ids)
        label_counts: dict = {}
        if has_labels:
            for label in corpus_labels:
                label_counts[label] = label_counts.get(label, 0) + 1

        results: dict[str, float] = {}
        embeddings: dict[str, np.ndarray] = {}
        for mode in self.modes:
            source, target = self.MODES[mode]
            if source not in embeddings:
                embeddings[source], encode_seconds = self._embed(queries, source, index, model)
                if encode_seconds is not None:
                    results[f"{prefix}{source}_encode_seconds_per_1k_queries"] = 1000.0 * encode_seconds / max(len(queries), 1)
            exclude = [[qid] for qid in query_ids] if mode == "ts_to_ts" and self.exclude_self else None
            start = time.perf_counter()
            hits = index.search(embeddings[source], self.k, target=target, exclude=exclude, return_rows=False)
            seconds = time.perf_counter() - start

            kwargs: dict[str, Any] = {}
            if mode != "ts_to_ts":
                kwargs["paired_ids"] = [qid if qid in corpus_id_set else None for qid in query_ids]
            if has_labels:
                kwargs["retrieved_labels"] = [[corpus_labels[i] for i in row if i >= 0] for row in hits.indices]
                kwargs["query_labels"] = query_labels
                num_relevant = [label_counts.get(label, 0) for label in query_labels]
                if exclude is not None:
                    num_relevant = [n - (qid in corpus_id_set) for n, qid in zip(num_relevant, query_ids)]
                kwargs["label_num_relevant"] = num_relevant
            if not kwargs:
                raise ValueError(f"{mode} needs labels (`{self.label_column}` in queries and corpus) to be evaluated.")
            metrics = retrieval_metrics(
                hits.ids, precision_at=self.precision_at, mrr_at=self.mrr_at, ndcg_at=self.ndcg_at, **kwargs
            )
            results.update({f"{prefix}{mode}_{key}": value for key, value in metrics.items()})
            results[f"{prefix}{mode}_seconds_per_1k_queries"] = 1000.0 * seconds / max(len(queries), 1)
        return results

    def _embed(self, queries, modality: str, index: TraceRetrievalIndex, model) -> tuple[np.ndarray, float | None]:
        column = MODALITIES[modality]
        if column in queries.column_names:
            return _column_to_numpy(queries, column), None
        model = model if model is not None else index.model
        if model is None:
            raise ValueError(f"The queries have no `{column}` column and no model was given to encode them; pass `model=`.")
        start = time.perf_counter()
        if modality == "text":
            texts = ["" if t is None else str(t) for t in queries[self.text_column]]
            out = model.encode_text(texts, batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True)
        else:
            out = model.encode_time_series(
                _series_list(queries, self.values_column), batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True
            )
        return np.asarray(out, dtype=np.float32), time.perf_counter() - start


# --------------------------------------------------------------------------------------------------
# Baselines over raw windows
# --------------------------------------------------------------------------------------------------


def znormalize_windows(windows) -> np.ndarray:
    """Z-normalise each window per channel over its observed (non-NaN) points; missing points -> 0.

    Args:
        windows: `(N, length)` or `(N, length, channels)`, NaN = missing.

    Returns:
        float32 `(N, length * channels)`, flattened channel-last. A constant or empty channel
        becomes all zeros (its standard deviation is taken as 1).
    """
    x = np.asarray(windows, dtype=np.float32)
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3:
        raise ValueError(f"windows must be (N, length) or (N, length, channels), got shape {x.shape}.")
    observed = ~np.isnan(x)
    count = observed.sum(axis=1, keepdims=True)
    filled = np.where(observed, x, 0.0)
    mean = filled.sum(axis=1, keepdims=True) / np.maximum(count, 1)
    var = (np.where(observed, x - mean, 0.0) ** 2).sum(axis=1, keepdims=True) / np.maximum(count, 1)
    std = np.sqrt(var)
    std = np.where(std > 1e-8, std, 1.0)
    z = np.where(observed, (x - mean) / std, 0.0)
    return np.ascontiguousarray(z.reshape(len(z), -1), dtype=np.float32)


class _RawWindowSearcher(_CorpusResultsMixin):
    def __init__(self, windows, corpus=None, id_column: str = "id"):
        self.shape = np.asarray(windows[:1], dtype=np.float32).shape[1:] if len(windows) else ()
        self.corpus = corpus
        self.id_column = id_column
        self._id_cache = None
        self.size = len(windows)
        if corpus is not None and len(corpus) != self.size:
            raise ValueError(f"The corpus has {len(corpus)} rows but there are {self.size} windows; pass one row per window.")

    def _scores(self, queries: np.ndarray) -> np.ndarray:  # (num_queries, corpus_size), higher = closer
        raise NotImplementedError

    def search(
        self, queries, k: int = 10, *, exclude: ExcludeSpec = None, batch_size: int = 256, return_rows: bool = True, columns=None
    ) -> RetrievalResults:
        """TS -> TS search over raw windows; same arguments and results as `TraceRetrievalIndex.search`."""
        queries = np.asarray(queries, dtype=np.float32)
        if queries.shape[1:] != self.shape:
            raise ValueError(f"Query windows have shape {queries.shape[1:]} but the corpus windows have {self.shape}.")
        exclusion = _Exclusion(exclude, len(queries), self.size, self._id_to_rows)
        all_rows = np.arange(self.size)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        indices = np.full((len(queries), k), -1, dtype=np.int64)
        for start in range(0, len(queries), batch_size):
            block = self._scores(queries[start : start + batch_size]).astype(np.float32, copy=False)
            if exclusion.active:
                for row in range(block.shape[0]):
                    block[row, exclusion.mask(start + row, all_rows)] = -np.inf
            s, i = _top_k_from_scores(block, k)
            scores[start : start + len(block)] = s
            indices[start : start + len(block)] = i
        return self._results(scores, indices, return_rows, columns)


class EuclideanScanSearcher(_RawWindowSearcher):
    """Brute-force Euclidean distance between z-normalised raw windows (NaN-aware), score = -distance.

    Args:
        windows: `(N, length)` or `(N, length, channels)` corpus windows, NaN = missing.
        corpus (`datasets.Dataset`, *optional*): metadata rows of the windows (ids for `exclude`).
    """

    def __init__(self, windows, corpus=None, id_column: str = "id"):
        super().__init__(windows, corpus, id_column)
        self.vectors = znormalize_windows(windows)
        self.sq_norms = (self.vectors**2).sum(axis=1)

    def _scores(self, queries):
        q = znormalize_windows(queries)
        sq = (q**2).sum(axis=1)[:, None] + self.sq_norms[None, :] - 2.0 * (q @ self.vectors.T)
        return -np.sqrt(np.maximum(sq, 0.0))


class DTWSearcher(_RawWindowSearcher):
    """Dynamic time warping (dtaidistance, C implementation) between z-normalised windows.

    Multichannel windows use dependent multivariate DTW (`dtw_ndim`). Cost grows with
    `num_queries x N x length^2`; use it on a subset of the corpus.

    Args:
        windows: `(N, length)` or `(N, length, channels)`, NaN = missing (0 after z-normalisation).
        corpus (`datasets.Dataset`, *optional*): metadata rows of the windows.
        window (`int`, *optional*): Sakoe-Chiba band; `None` = unconstrained.
    """

    def __init__(self, windows, corpus=None, id_column: str = "id", window: int | None = None):
        super().__init__(windows, corpus, id_column)
        self.channels = 1 if len(self.shape) == 1 else self.shape[1]
        self.series = self._prepare(windows)
        self.window = window

    def _prepare(self, windows) -> np.ndarray:
        z = znormalize_windows(windows).astype(np.float64)
        return z.reshape(len(z), -1, self.channels) if self.channels > 1 else z

    def _scores(self, queries):
        from dtaidistance import dtw, dtw_ndim

        q = self._prepare(queries)
        both = np.ascontiguousarray(np.concatenate([q, self.series], axis=0))
        block = ((0, len(q)), (len(q), len(q) + self.size))
        options = {"window": self.window} if self.window is not None else {}
        if self.channels > 1:
            flat = dtw_ndim.distance_matrix_fast(both, ndim=self.channels, block=block, compact=True, **options)
        else:
            flat = dtw.distance_matrix_fast(both, block=block, compact=True, **options)
        return -np.asarray(flat, dtype=np.float64).reshape(len(q), self.size)


class RandomSearcher(_CorpusResultsMixin):
    """Uniformly random results (chance level of the retrieval metrics)."""

    def __init__(self, size: int, corpus=None, id_column: str = "id", seed: int = 0):
        self.size = size
        self.corpus = corpus
        self.id_column = id_column
        self._id_cache = None
        self.rng = np.random.default_rng(seed)

    def search(self, queries, k: int = 10, *, exclude: ExcludeSpec = None, return_rows: bool = True, columns=None) -> RetrievalResults:
        """Random top-k for each of `len(queries)` queries (`queries` only sets the count)."""
        num_queries = len(queries)
        exclusion = _Exclusion(exclude, num_queries, self.size, self._id_to_rows)
        scores = self.rng.random((num_queries, self.size)).astype(np.float32)
        if exclusion.active:
            for row in range(num_queries):
                scores[row, exclusion.mask(row, np.arange(self.size))] = -np.inf
        s, i = _top_k_from_scores(scores, k)
        return self._results(s, i, return_rows, columns)


__all__ = [
    "DTWSearcher",
    "EuclideanScanSearcher",
    "RandomSearcher",
    "RetrievalEvaluator",
    "RetrievalIndexIntegrityError",
    "RetrievalResults",
    "TraceRetrievalIndex",
    "overlapping_windows",
    "znormalize_windows",
]
