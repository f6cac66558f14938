# Copyright 2025 The TRACE package authors. Licensed under the Apache License, Version 2.0.
"""Raw-series baselines of the retrieval and classification benchmarks: Euclidean scan, DTW, random. Same `search`
signature and `RetrievalResults` as `TraceRetrievalIndex`; they search raw series, so only `target="time_series"`
exists.

Two input forms, for the corpus and the queries alike:

- an array `(N, length)` or `(N, length, channels)`: equal-length windows, NaN = missing. Each window is
  z-normalised per channel over its observed points and missing points become 0 (`znormalize_windows`); this is
  the behaviour the retrieval benchmarks use. With `znormalize=False` the values are compared as they are, and a
  NaN is refused (pass the series as a list instead).
- a list of `(length_i, channels)` (or `(length_i,)`) arrays: series at their own lengths (the UCR/UEA archive
  convention for variable-length sets). Leading/trailing all-NaN rows (padding) are dropped, interior NaN are
  filled by linear interpolation in time (a channel with nothing observed is 0), then, with `znormalize=True`
  (the default), each series is z-normalised per channel over its own length. NaN never enters a distance.
  `DTWSearcher` compares the series at their own lengths (dtaidistance handles unequal lengths);
  `EuclideanScanSearcher` resamples every series by linear interpolation to one common length (the longest
  series of the corpus unless `length` is given), so equal-length series are compared point by point, unchanged.
"""

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


def _is_series_list(windows) -> bool:
    """A list/tuple of series (or a ragged object array) rather than one equal-length numeric array."""
    if isinstance(windows, np.ndarray):
        return windows.dtype == object
    return isinstance(windows, (list, tuple))


def clean_series(series, znormalize: bool = True, position: int | None = None) -> np.ndarray:
    """One series of a list input as the searchers compare it: float64 `(length, channels)`, no NaN.

    Leading and trailing rows with no observed value (padding) are dropped; an interior NaN is filled by linear
    interpolation in time from the observed points of its channel (constant beyond the first/last one); a channel
    with nothing observed is 0. With `znormalize`, each channel is then z-normalised over the series' own length
    (`zscore_statistics`: population std; a constant channel becomes 0).
    """
    where = "" if position is None else f" {position}"
    x = np.array(series, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"Series{where} must be (length,) or (length, channels), got shape {x.shape}.")
    rows = ~np.isnan(x).all(axis=1)
    if not rows.any():
        raise ValueError(f"Series{where} has no observed value; drop it before searching.")
    first, last = int(np.argmax(rows)), len(rows) - int(np.argmax(rows[::-1]))
    x = x[first:last]
    missing = np.isnan(x)
    if missing.any():
        steps = np.arange(len(x))
        for c in np.flatnonzero(missing.any(axis=0)):
            seen = ~missing[:, c]
            x[:, c] = np.interp(steps, steps[seen], x[seen, c]) if seen.any() else 0.0
    if znormalize:
        loc, scale = zscore_statistics(x, dim=0)
        x = (x - loc) / scale
    return np.ascontiguousarray(x)


def resample_series(x: np.ndarray, length: int) -> np.ndarray:
    """`(n, channels)` -> `(length, channels)` by linear interpolation over the same time span (a series of one
    point is repeated); returned unchanged when `n == length`."""
    n = len(x)
    if n == length:
        return x
    if n == 1:
        return np.repeat(x, length, axis=0)
    grid = np.linspace(0.0, n - 1.0, length)
    return np.stack([np.interp(grid, np.arange(n), x[:, c]) for c in range(x.shape[1])], axis=1)


class _RawWindowSearcher(_CorpusResultsMixin):
    def __init__(self, windows, corpus=None, id_column: str = "id", znormalize: bool = True):
        self.znormalize = bool(znormalize)
        self.variable_length = _is_series_list(windows)
        self.corpus = corpus
        self.id_column = id_column
        self._id_cache = None
        self.size = len(windows)
        if self.variable_length:
            self.shape = None
            self._corpus_series = [clean_series(s, self.znormalize, i) for i, s in enumerate(windows)]
            channels = {s.shape[1] for s in self._corpus_series}
            if len(channels) > 1:
                raise ValueError(f"The corpus series have different channel counts {sorted(channels)}.")
            self.channels = channels.pop() if channels else 1
            self.lengths = np.array([len(s) for s in self._corpus_series], dtype=np.int64)
        else:
            self.shape = np.asarray(windows[:1], dtype=np.float32).shape[1:] if len(windows) else ()
            self.channels = 1 if len(self.shape) < 2 else self.shape[1]
        if corpus is not None and len(corpus) != self.size:
            raise ValueError(
                f"The corpus has {len(corpus)} rows but there are {self.size} windows; pass one row per window."
            )

    def _raw_values(self, windows) -> np.ndarray:
        """An equal-length array searched without z-normalisation: the values themselves, NaN refused."""
        x = np.asarray(windows, dtype=np.float64)
        if np.isnan(x).any():
            raise ValueError(
                f"{type(self).__name__}(znormalize=False) got NaN in an equal-length array; NaN must not enter a "
                "distance. Pass the series as a list of (length_i, channels) arrays (padding is then dropped and "
                "interior gaps interpolated), or use znormalize=True."
            )
        return x

    def _query_series(self, queries) -> list[np.ndarray]:
        out = [clean_series(q, self.znormalize, i) for i, q in enumerate(queries)]
        for i, q in enumerate(out):
            if q.shape[1] != self.channels:
                raise ValueError(
                    f"Query series {i} has {q.shape[1]} channel(s) but the corpus series have {self.channels}."
                )
        return out

    def _scores(self, queries) -> np.ndarray:  # (num_queries, corpus_size), higher = closer
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
        """TS -> TS search over raw series; same arguments and results as `TraceRetrievalIndex.search`.

        `queries` take the corpus' form: an array of the corpus' window shape, or (for a corpus given as a list)
        a list of series of any length (an array of equal-length queries is accepted too)."""
        if target != "time_series":
            raise ValueError(f"{type(self).__name__} searches raw time-series windows only; got target={target!r}.")
        if self.variable_length:
            queries = list(queries)
        else:
            if _is_series_list(queries) and len({np.shape(q) for q in queries}) > 1:
                raise ValueError(
                    f"Query series have different shapes but the corpus is an equal-length array of shape "
                    f"{self.shape}; build the searcher from a list of series to compare variable-length series."
                )
            queries = np.asarray(queries, dtype=np.float32)
            if queries.shape[1:] != self.shape:
                raise ValueError(
                    f"Query windows have shape {queries.shape[1:]} but the corpus windows have {self.shape}."
                )
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
    """Brute-force Euclidean distance between raw series, score = -distance.

    Args:
        windows: `(N, length)` or `(N, length, channels)` corpus windows (NaN = missing), or a list of
            `(length_i, channels)` series of any lengths (see the module docstring).
        corpus (`datasets.Dataset`, *optional*): metadata rows of the windows (ids for `exclude`).
        znormalize (`bool`, default `True`): z-normalise every series per channel first (NaN-aware for arrays).
        length (`int`, *optional*): list input only: the common length every series (corpus and queries) is
            linearly resampled to; default the longest corpus series. Ignored for array input.
    """

    def __init__(
        self, windows, corpus=None, id_column: str = "id", *, znormalize: bool = True, length: int | None = None
    ):
        super().__init__(windows, corpus, id_column, znormalize)
        if self.variable_length:
            self.length = int(length) if length is not None else int(self.lengths.max(initial=1))
            self.vectors = self._flatten(self._corpus_series)
            del self._corpus_series
        elif self.znormalize:
            self.vectors = znormalize_windows(windows)
        else:
            x = self._raw_values(windows)
            self.vectors = np.ascontiguousarray(x.reshape(len(x), -1))
        # float32 for z-normalised arrays (as before); float64 for raw values and lists, whose norms are not ~1
        self.sq_norms = (self.vectors**2).sum(axis=1)

    def _flatten(self, series: list[np.ndarray]) -> np.ndarray:
        if not series:
            return np.zeros((0, self.length * self.channels))
        return np.stack([resample_series(s, self.length).reshape(-1) for s in series])

    def _scores(self, queries):
        if self.variable_length:
            q = self._flatten(self._query_series(queries))
        elif self.znormalize:
            q = znormalize_windows(queries)
        else:
            q = self._raw_values(queries).reshape(len(queries), -1)
        q = q.astype(self.vectors.dtype, copy=False)
        sq = (q**2).sum(axis=1)[:, None] + self.sq_norms[None, :] - 2.0 * (q @ self.vectors.T)
        return -np.sqrt(np.maximum(sq, 0.0))


class DTWSearcher(_RawWindowSearcher):
    """Dynamic time warping (dtaidistance, C implementation) between raw series, score = -distance.

    The distance is dtaidistance's: the square root of the summed squared point differences along the best
    warping path. Series of a list input keep their own lengths. Cost grows with `num_queries x N x length^2`;
    use it on a subset of a large corpus.

    Args:
        windows: `(N, length)` or `(N, length, channels)` (NaN = missing; 0 after z-normalisation), or a list of
            `(length_i, channels)` series of any lengths (see the module docstring).
        corpus (`datasets.Dataset`, *optional*): metadata rows of the windows.
        window (`int`, *optional*): Sakoe-Chiba band; `None` = unconstrained (full window).
        znormalize (`bool`, default `True`): z-normalise every series per channel first.
        multivariate (`str`, default `"dependent"`): for several channels, `"dependent"` = DTW_D, one warping path
            for all channels (`dtw_ndim`, squared Euclidean point cost over the channels); `"independent"` = DTW_I,
            the sum over channels of the univariate DTW distances (each channel warped on its own).
    """

    def __init__(
        self,
        windows,
        corpus=None,
        id_column: str = "id",
        window: int | None = None,
        *,
        znormalize: bool = True,
        multivariate: str = "dependent",
    ):
        if multivariate not in ("dependent", "independent"):
            raise ValueError(
                f"multivariate must be 'dependent' (DTW_D) or 'independent' (DTW_I), got {multivariate!r}."
            )
        super().__init__(windows, corpus, id_column, znormalize)
        self.window = window
        self.multivariate = multivariate
        if self.variable_length:
            self.series = self._corpus_series
            del self._corpus_series
        else:
            self.series = list(self._prepare(windows))

    def _prepare(self, windows) -> np.ndarray:  # array input -> (N, length, channels) float64
        if self.znormalize:
            z = znormalize_windows(windows).astype(np.float64)
        else:
            z = self._raw_values(windows)
        return z.reshape(len(z), -1, self.channels)

    def _scores(self, queries):
        from dtaidistance import dtw, dtw_ndim

        q = self._query_series(queries) if self.variable_length else list(self._prepare(queries))
        both = q + self.series
        block = ((0, len(q)), (len(q), len(q) + self.size))
        options = {"window": self.window} if self.window is not None else {}

        def univariate(channel: int) -> np.ndarray:
            arrays = [np.ascontiguousarray(s[:, channel]) for s in both]
            return np.asarray(dtw.distance_matrix_fast(arrays, block=block, compact=True, **options), dtype=np.float64)

        if self.channels == 1:
            flat = univariate(0)
        elif self.multivariate == "independent":
            flat = sum(univariate(c) for c in range(self.channels))
        else:
            arrays = [np.ascontiguousarray(s) for s in both]
            flat = np.asarray(
                dtw_ndim.distance_matrix_fast(arrays, ndim=self.channels, block=block, compact=True, **options),
                dtype=np.float64,
            )
        return -flat.reshape(len(q), self.size)


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
