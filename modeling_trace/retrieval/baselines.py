# Copyright 2025 The TRACE package authors. Licensed under the Apache License, Version 2.0.
"""Raw-series baselines of the retrieval benchmarks: Euclidean scan, DTW, random. Same `search` signature and
`RetrievalResults` as `TraceRetrievalIndex`; they search raw windows, so only `target="time_series"` exists."""

from __future__ import annotations

import numpy as np

from ..modeling_trace import zscore_statistics
from .results import ExcludeSpec, RetrievalResults, _CorpusResultsMixin, _Exclusion, _top_k_from_scores


def znormalize_windows(windows) -> np.ndarray:
    """Z-normalise each window per channel over its observed (non-NaN) points ([`zscore_statistics`], float64);
    missing points -> 0.

    Args:
        windows: `(N, length)` or `(N, length, channels)`, NaN = missing.

    Returns:
        float32 `(N, length * channels)`, flattened channel-last. A constant or empty channel becomes all zeros.
    """
    x = np.asarray(windows, dtype=np.float64)
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3:
        raise ValueError(f"windows must be (N, length) or (N, length, channels), got shape {x.shape}.")
    loc, scale = zscore_statistics(x, dim=1)
    z = np.where(np.isnan(x), 0.0, (x - loc) / scale)
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
        self,
        queries,
        k: int = 10,
        *,
        target: str = "time_series",
        exclude: ExcludeSpec = None,
        batch_size: int = 256,
        return_rows: bool = True,
        columns=None,
    ) -> RetrievalResults:
        """TS -> TS search over raw windows; same arguments and results as `TraceRetrievalIndex.search`."""
        if target != "time_series":
            raise ValueError(f"{type(self).__name__} searches raw time-series windows only; got target={target!r}.")
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

    def search(
        self,
        queries,
        k: int = 10,
        *,
        target: str = "time_series",
        exclude: ExcludeSpec = None,
        batch_size: int | None = None,
        return_rows: bool = True,
        columns=None,
    ) -> RetrievalResults:
        """Random top-k for each of `len(queries)` queries (`queries` only sets the count; `target` and `batch_size`
        are accepted for the shared signature and change nothing)."""
        num_queries = len(queries)
        exclusion = _Exclusion(exclude, num_queries, self.size, self._id_to_rows)
        scores = self.rng.random((num_queries, self.size)).astype(np.float32)
        if exclusion.active:
            for row in range(num_queries):
                scores[row, exclusion.mask(row, np.arange(self.size))] = -np.inf
        s, i = _top_k_from_scores(scores, k)
        return self._results(s, i, return_rows, columns)
