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

Stored vectors can be quantised (`precision=`, as sentence-transformers' `quantize_embeddings`): `"float32"`
(default, exact), `"int8"` (FAISS `IndexScalarQuantizer` QT_8bit, one byte per dimension, queries stay float32)
or `"binary"` (FAISS `IndexBinaryFlat`, one bit per dimension: the sign; 4k candidates by Hamming distance,
re-ranked by the float query against their sign vectors). The corpus keeps the float32 embedding columns.
Recall@10 against the exact float32 search, asserted in `tests/modeling_trace/test_retrieval.py` on isotropic
random unit vectors (d=384, 5,000 items, 200 queries near corpus items), the hardest case for quantisation:
int8 >= 0.95 (measured 0.99), binary >= 0.2 (measured 0.30; 0.22 without the re-ranking).

The baselines (`EuclideanScanSearcher`, `DTWSearcher`, `RandomSearcher`) search raw windows and
return the same `RetrievalResults`, for the speed/quality benchmarks.
"""


from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence

import numpy as np

from ..modeling_trace import sha256_file
from .results import (
    CORPUS_DIR,
    INDEX_FILES,
    INDEX_FORMAT_VERSION,
    MANIFEST_NAME,
    MODALITIES,
    TEXT_EMBEDDING_COLUMN,
    TS_EMBEDDING_COLUMN,
    ExcludeSpec,
    RetrievalResults,
    _column_to_numpy,
    _CorpusResultsMixin,
    _Exclusion,
    _l2_normalize,
    _positive_int,
    _series_list,
    _validate_k,
)


class RetrievalIndexIntegrityError(ValueError):
    """A saved `TraceRetrievalIndex` is incomplete, corrupted or inconsistent with its corpus or with the model it
    is loaded with; the message names the file (or both fingerprints) and what to do."""


FINGERPRINT_VERSION = "trace-model-fingerprint-v1"
PRECISIONS = ("float32", "int8", "binary")


def _check_precision(precision) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}.")
    return precision


def quantize_binary(vectors: np.ndarray) -> np.ndarray:
    """Sign bits of `(n, d)` float vectors packed into `(n, d / 8)` uint8 codes (sentence-transformers'
    `quantize_embeddings(..., precision="ubinary")`): bit 1 where the value is > 0."""
    return np.packbits(np.asarray(vectors) > 0, axis=-1)


class BinaryHammingIndex:
    """A FAISS `IndexBinaryFlat` behind the float `Index` interface the searches use.

    `search(float_queries, k)` packs the queries' sign bits, takes the `rescore_multiplier * k` nearest codes by
    Hamming distance, and ranks those by the float query's dot product with their +-1 sign vectors over sqrt(d)
    (sentence-transformers' `rescore` of binary search: the query keeps its float32 precision). Scores are in
    [-1, 1], best first. `rescore_multiplier=1` ranks by Hamming alone (score `1 - 2 * hamming / d`, the cosine of
    the sign vectors)."""

    def __init__(self, index, rescore_multiplier: int = 4):
        self.index = index
        self.rescore_multiplier = int(rescore_multiplier)

    @classmethod
    def from_vectors(cls, vectors: np.ndarray) -> BinaryHammingIndex:
        import faiss

        dim = vectors.shape[1]
        if dim % 8:
            raise ValueError(f"precision='binary' packs 8 dimensions per byte: the embedding dimension must be a multiple of 8, got {dim}.")
        index = faiss.IndexBinaryFlat(dim)
        index.add(quantize_binary(vectors))
        return cls(index)

    @property
    def ntotal(self) -> int:
        return self.index.ntotal

    @property
    def d(self) -> int:
        return self.index.d

    def search(self, queries: np.ndarray, k: int):
        queries = np.asarray(queries, dtype=np.float32)
        fetch = min(self.ntotal, max(k, k * self.rescore_multiplier))
        distances, indices = self.index.search(quantize_binary(queries), fetch)
        if fetch == k and self.rescore_multiplier <= 1:
            return (1.0 - 2.0 * distances.astype(np.float32) / self.d).astype(np.float32), indices
        codes = self.index.reconstruct_n(0, self.ntotal) if not hasattr(self, "_codes") else self._codes
        self._codes = codes
        found = np.where(indices >= 0, indices, 0)
        signs = np.unpackbits(codes[found], axis=-1, count=self.d).astype(np.float32) * 2.0 - 1.0  # (q, fetch, d)
        scores = np.einsum("qd,qfd->qf", queries, signs) / np.sqrt(self.d)
        scores = np.where(indices >= 0, scores, -np.inf)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, 1).astype(np.float32), np.take_along_axis(indices, order, 1)
_EMPTY_CORPUS = (
    "{what} holds no rows: an index needs at least one item. Check that the split, filter or row selection you "
    "index keeps some rows."
)
_REBUILD = "Rebuild it (TraceRetrievalIndex.build / from_embeddings) and save it again, or restore the original file."


def model_fingerprint(model) -> str | None:
    """A deterministic identity of an encoder's weights, stored in the index manifest by `save` and checked by `load`.

    For a model with a `state_dict` (e.g. `TraceModel`): `"sha256:<hex>"` of the sha256 over, for every state_dict
    entry in sorted key order, its name, dtype, shape and raw bytes (the time-series tower, the text tower and both
    projections: everything that shapes a query embedding). Two models share a fingerprint exactly when their
    weights are bit-identical; the same checkpoint loaded in another dtype (bf16 vs fp32) differs. It reads every
    weight once (about 0.1-0.3 s for a MiniLM-sized model). Objects without a `state_dict` (a stand-in encoder) or
    `None` have no fingerprint: `None` is returned and nothing is checked for them.
    """
    state_dict = getattr(model, "state_dict", None)
    if model is None or not callable(state_dict):
        return None
    import torch

    digest = hashlib.sha256(FINGERPRINT_VERSION.encode())
    for name, tensor in sorted(state_dict().items()):
        if not isinstance(tensor, torch.Tensor):
            continue
        tensor = tensor.detach()
        digest.update(f"\0{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        flat = tensor.to("cpu").contiguous().reshape(-1)
        if flat.numel():
            digest.update(flat.view(torch.uint8).numpy())
    return "sha256:" + digest.hexdigest()


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
        precision (`str`, defaults to `"float32"`): how the indexes store the vectors: `"float32"`, `"int8"`
            (scalar-quantised) or `"binary"` (sign bits, Hamming search; the indexes are `BinaryHammingIndex`).
        model (*optional*): an object with `encode_time_series` / `encode_text` (e.g. `TraceModel`),
            used when queries are given as raw series or strings.
        id_column (`str`, defaults to `"id"`): the corpus column holding item ids (used by
            `exclude` and in `RetrievalResults.ids`).
    """

    def __init__(
        self,
        corpus,
        indexes: dict,
        *,
        index_factory: str | None = None,
        model=None,
        id_column: str = "id",
        precision: str = "float32",
    ):
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
        self.precision = _check_precision(precision)
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
        precision: str = "float32",
    ) -> TraceRetrievalIndex:
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
            precision (`str`): `"float32"` (default), `"int8"` (FAISS `IndexScalarQuantizer` QT_8bit, trained on
                the corpus: 4x smaller, recall@10 vs float32 ~0.99) or `"binary"` (sign bits in an
                `IndexBinaryFlat`, Hamming distance, re-ranked with the float query: 32x smaller, recall@10 ~0.3 on
                isotropic random vectors; the embedding dimension must be a multiple of 8). Quantisation applies to the exact index: with `index_factory`,
                keep `"float32"` and ask FAISS for codes in the string (e.g. `"IVF256,SQ8"`).

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

        if corpus_ds is not None and len(corpus_ds) == 0:
            raise ValueError(_EMPTY_CORPUS.format(what="The corpus"))
        given = {"time_series": ts_embeddings, "text": text_embeddings}
        vectors: dict[str, np.ndarray] = {}
        for modality, column in MODALITIES.items():
            array = given[modality]
            if array is None and corpus_ds is not None and column in corpus_ds.column_names:
                array = _column_to_numpy(corpus_ds, column)
            if array is not None and np.size(array) == 0:
                raise ValueError(_EMPTY_CORPUS.format(what=f"The {modality} embeddings"))
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

        precision = _check_precision(precision)
        if precision != "float32" and index_factory is not None and index_factory.strip() not in ("", "Flat"):
            raise ValueError(
                f"precision={precision!r} quantises the exact index; with index_factory={index_factory!r} keep "
                "precision='float32' and put the codes in the factory string (e.g. 'IVF256,SQ8' for int8 codes)."
            )
        indexes = {
            modality: _make_faiss_index(v, index_factory, train_size=train_size, seed=seed, name=modality, precision=precision)
            for modality, v in vectors.items()
        }
        index = cls(corpus_ds, indexes, index_factory=index_factory, model=model, id_column=id_column, precision=precision)
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
        fill_missing_channels: bool = False,
        **index_kwargs,
    ) -> TraceRetrievalIndex:
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
            fill_missing_channels (`bool`): rows with fewer channels than the model (a univariate source in a
                multichannel corpus) get the missing trailing channels as unobserved, as in training; passed to
                `model.encode_time_series`.
            **index_kwargs: `nprobe`, `ef_search`, `train_size`, `seed`, `precision` of `from_embeddings`.
        """
        if len(dataset) == 0:
            raise ValueError(_EMPTY_CORPUS.format(what="The dataset passed to TraceRetrievalIndex.build"))
        ts_embeddings = text_embeddings = None
        for column in (text_column, values_column):
            if column is not None and column not in dataset.column_names:
                raise ValueError(
                    f"Column {column!r} is not in the dataset (columns: {dataset.column_names}); pass the right "
                    "`text_column` / `values_column`, or None to skip that modality."
                )
        if values_column is not None:
            series = _series_list(dataset, values_column)
            fill = {"fill_missing_channels": True} if fill_missing_channels else {}
            ts_embeddings = model.encode_time_series(
                series, batch_size=batch_size, show_progress_bar=show_progress_bar, convert_to_numpy=True, **fill
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
        return (
            f"TraceRetrievalIndex(num_rows={len(self)}, dims={dims}, index_factory={self.index_factory!r}, "
            f"precision={self.precision!r})"
        )

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
            if self.precision == "binary":
                raise ValueError(f"A binary index (exact Hamming scan) has no `{name}` parameter.")
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
            k (`int`): results per query, a positive int (numpy ints too). It is clamped to the corpus size: the
                results have `min(k, len(index))` columns, and a query whose `exclude` leaves fewer candidates
                than that is padded with index `-1` / score `-inf`.
            target (`str`): `"time_series"` or `"text"` — which side of the corpus to search.
            exclude: items to leave out per query: a list with, per query, an id / a collection of
                ids / None; a boolean `(num_queries, corpus_size)` matrix (True = leave out); or a
                callable `f(query_position, candidate_rows) -> bool array` (True = leave out), e.g.
                to drop windows overlapping the query.
            batch_size (`int`): queries per FAISS call (a positive int).
            return_rows (`bool`): also return the corpus rows of the hits.
            columns (`list[str]`, *optional*): corpus columns in the rows (default: all but the
                embeddings, `past_values` and `future_values`).
        """
        target = self._check_modality(target)
        index = self.indexes[target]
        k = _validate_k(k, index.ntotal)
        batch_size = _positive_int(batch_size, "batch_size")
        if index.ntotal == 0:
            raise ValueError(
                f"The {target} index is empty (0 vectors): there is nothing to search. Build the index from a "
                "non-empty corpus (TraceRetrievalIndex.build / from_embeddings)."
            )
        queries = _l2_normalize(query_embeddings, "query_embeddings")
        if queries.shape[1] != index.d:
            raise ValueError(f"Query embeddings have dimension {queries.shape[1]} but the {target} index has {index.d}.")
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
            k (`int`): results per query (clamped to the corpus size, see `search`).
            query_embeddings (`np.ndarray`, *optional*): text embeddings instead of `texts`.
            exclude: see `search`.
            batch_size, show_progress_bar: encoding options.
            model (*optional*): encoder to use instead of the index's.
            **search_kwargs: `return_rows`, `columns`, `batch_size` of `search` (as `search_batch_size`).
        """
        _validate_k(k)  # before encoding: a bad k is reported without spending the encoding first
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
            k (`int`): results per query (clamped to the corpus size, see `search`).
            target (`str`): `"time_series"` for similar series, `"text"` for matching texts.
            query_embeddings (`np.ndarray`, *optional*): time-series embeddings instead of `series`.
            exclude: see `search` — e.g. `exclude=[[qid] for qid in query_ids]` drops each query
                from its own TS -> TS results.
            batch_size, show_progress_bar: encoding options.
            model (*optional*): encoder to use instead of the index's.
            **search_kwargs: `return_rows`, `columns`, `search_batch_size`.
        """
        _validate_k(k)
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

        The manifest records the format version, factory string, row count, per index its file, sha256, vector
        count and dimension, the sha256 and size of each data file of the saved corpus, and the fingerprint of
        `self.model` (`model_fingerprint`, `None` without a model), so that `load` can detect truncated, swapped or
        stale files and a model other than the one the index was saved with.

        Raises:
            ValueError: the index holds no rows (an empty index could not be searched nor loaded again).
        """
        import faiss

        if len(self.corpus) == 0 or any(index.ntotal == 0 for index in self.indexes.values()):
            raise ValueError(_EMPTY_CORPUS.format(what="This TraceRetrievalIndex") + " Nothing was written.")
        os.makedirs(directory, exist_ok=True)
        corpus_dir = os.path.join(directory, CORPUS_DIR)
        self.corpus.save_to_disk(corpus_dir)
        manifest = {
            "format_version": INDEX_FORMAT_VERSION,
            "index_factory": self.index_factory,
            "metric": "hamming" if self.precision == "binary" else "inner_product",
            "precision": self.precision,
            "num_rows": len(self.corpus),
            "id_column": self.id_column,
            "model_fingerprint": model_fingerprint(self.model),
            "corpus": {"data_files": {}},
            "indexes": {},
        }
        for name in _corpus_data_files(corpus_dir):
            path = os.path.join(corpus_dir, name)
            manifest["corpus"]["data_files"][name] = {"sha256": sha256_file(path), "num_bytes": os.path.getsize(path)}
        for modality, index in self.indexes.items():
            path = os.path.join(directory, INDEX_FILES[modality])
            if isinstance(index, BinaryHammingIndex):
                faiss.write_index_binary(index.index, path)
            else:
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
    def load(cls, directory: str, *, model=None, keep_in_memory: bool = False, verify: bool = True) -> TraceRetrievalIndex:
        """Load an index written by `save`, checking its integrity.

        Args:
            directory (`str`): the folder given to `save`.
            model (*optional*): encoder for raw queries. With `verify`, its `model_fingerprint` must equal the one
                the manifest records (the model the index was saved with).
            keep_in_memory (`bool`): load the corpus into memory instead of memory-mapping it.
            verify (`bool`): check each index file's and corpus data file's size and sha256, and the model
                fingerprint, against the manifest. `verify=False` skips these (reading every file costs time on a
                large index); the manifest is still validated, and paths leaving `directory` are still refused.

        Manifests written before fingerprints and corpus hashes existed load with a warning (those checks are
        skipped); save the index again to add them.

        Raises:
            RetrievalIndexIntegrityError: an unreadable or malformed manifest, a manifest path outside `directory`,
                a missing, truncated or modified index or corpus file, an index whose vector count or dimension
                differs from the manifest, a corpus whose row count differs, an index saved with no rows, or a
                `model` whose fingerprint differs from the one the index was saved with.
        """
        import datasets
        import faiss

        manifest_path = os.path.join(directory, MANIFEST_NAME)
        if not os.path.isfile(manifest_path):
            raise RetrievalIndexIntegrityError(
                f"{manifest_path} not found: {directory!r} is not a saved TraceRetrievalIndex (expected "
                f"{MANIFEST_NAME}, {CORPUS_DIR}/ and the .faiss files written by TraceRetrievalIndex.save)."
            )
        manifest = _read_manifest(manifest_path)
        rebuild = _REBUILD
        if manifest["num_rows"] == 0:
            raise RetrievalIndexIntegrityError(
                f"The manifest {manifest_path} records an index of 0 rows: an empty index cannot be searched. Build "
                "it again from a non-empty corpus."
            )
        corpus_path = os.path.join(directory, CORPUS_DIR)
        index_paths = {
            modality: _inside(directory, entry["file"], f"indexes.{modality}.file", manifest_path)
            for modality, entry in manifest["indexes"].items()
        }
        corpus_files = manifest.get("corpus", {}).get("data_files")
        corpus_file_paths = {
            name: _inside(directory, os.path.join(CORPUS_DIR, name), f"corpus.data_files[{name!r}]", manifest_path)
            for name in (corpus_files or {})
        }
        try:
            corpus = datasets.load_from_disk(corpus_path, keep_in_memory=keep_in_memory)
        except FileNotFoundError as err:
            raise RetrievalIndexIntegrityError(f"The corpus folder {corpus_path} is missing or unreadable. {rebuild}") from err
        except Exception as err:  # datasets/pyarrow raise many types for a damaged folder (IndexError, ArrowInvalid...)
            raise RetrievalIndexIntegrityError(
                f"The corpus folder {corpus_path} cannot be read ({type(err).__name__}: {err}). {rebuild}"
            ) from err
        if not isinstance(corpus, datasets.Dataset):
            raise RetrievalIndexIntegrityError(
                f"The corpus folder {corpus_path} holds a {type(corpus).__name__}, not the single Dataset that "
                f"TraceRetrievalIndex.save writes. {rebuild}"
            )
        if len(corpus) != manifest["num_rows"]:
            raise RetrievalIndexIntegrityError(
                f"The corpus in {corpus_path} has {len(corpus)} rows but the manifest {manifest_path} records "
                f"{manifest['num_rows']}: the corpus and the index files come from different saves. {rebuild}"
            )
        if verify:
            if corpus_files is None:
                warnings.warn(
                    f"{manifest_path} records no checksums of the corpus files (saved by an older version): the corpus "
                    f"in {corpus_path} is not verified. Save the index again to add them.",
                    stacklevel=2,
                )
            else:
                _verify_corpus_files(corpus_path, corpus_files, corpus_file_paths, manifest_path)
        indexes = {}
        for modality, entry in manifest["indexes"].items():
            path = index_paths[modality]
            if not os.path.isfile(path):
                raise RetrievalIndexIntegrityError(f"The {modality} index file {path} is missing. {rebuild}")
            if verify:
                _verify_recorded_file(
                    path,
                    entry,
                    f"The {modality} index file",
                    "the manifest",
                    truncated="it is truncated or was replaced",
                    modified="the file is corrupted or was modified",
                )
            try:
                if manifest.get("precision") == "binary":
                    index = BinaryHammingIndex(faiss.read_index_binary(path))
                else:
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
        if verify and model is not None:
            _verify_model(manifest, manifest_path, model)
        return cls(
            corpus,
            indexes,
            index_factory=manifest.get("index_factory"),
            model=model,
            id_column=manifest.get("id_column", "id"),
            precision=manifest.get("precision", "float32"),
        )


# ---------------------------------------------------------------- manifest checks


def _corpus_data_files(corpus_dir: str) -> list[str]:
    """The data files of a `save_to_disk` folder (as its state.json lists them: what `load_from_disk` reads)."""
    state_path = os.path.join(corpus_dir, "state.json")
    try:
        with open(state_path, encoding="utf-8") as f:
            files = [entry["filename"] for entry in json.load(f)["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RetrievalIndexIntegrityError(
            f"Cannot read the list of data files in {state_path} ({type(err).__name__}: {err}); the corpus folder "
            f"is damaged. {_REBUILD}"
        ) from err
    if not all(isinstance(name, str) for name in files):
        raise RetrievalIndexIntegrityError(f"{state_path} lists data files that are not file names: {files!r}. {_REBUILD}")
    return files


def _inside(directory: str, relative, what: str, manifest_path: str) -> str:
    """`directory/relative`, refusing an absolute path or one that resolves (symlinks too) outside `directory`."""
    if not isinstance(relative, str) or not relative or os.path.isabs(relative):
        raise RetrievalIndexIntegrityError(
            f"The manifest {manifest_path} gives {what} = {relative!r}; expected a file name relative to the index "
            f"folder. {_REBUILD}"
        )
    root = os.path.realpath(directory)
    resolved = os.path.realpath(os.path.join(root, relative))
    if os.path.commonpath([root, resolved]) != root:
        raise RetrievalIndexIntegrityError(
            f"The manifest {manifest_path} gives {what} = {relative!r}, which resolves to {resolved}, outside the index "
            f"folder {root}; refusing to read it. An index only reads files inside its own folder. {_REBUILD}"
        )
    return os.path.join(directory, relative)


def _read_manifest(manifest_path: str) -> dict:
    """The parsed manifest, with every field `load` uses checked; `RetrievalIndexIntegrityError` naming the file."""
    try:
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise RetrievalIndexIntegrityError(
            f"Cannot read the manifest {manifest_path} ({type(err).__name__}: {err}): it is damaged or not the JSON "
            f"written by TraceRetrievalIndex.save. {_REBUILD}"
        ) from err

    def invalid(what: str):
        return RetrievalIndexIntegrityError(f"The manifest {manifest_path} is invalid: {what}. {_REBUILD}")

    def is_count(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    if not isinstance(manifest, dict):
        raise invalid(f"it holds a JSON {type(manifest).__name__}, expected an object")
    version = manifest.get("format_version")
    if version != INDEX_FORMAT_VERSION:
        raise RetrievalIndexIntegrityError(
            f"{manifest_path} has format_version {version!r}; this version of modeling_trace reads "
            f"{INDEX_FORMAT_VERSION}. Rebuild the index with TraceRetrievalIndex.build and save it again."
        )
    if not is_count(manifest.get("num_rows")):
        raise invalid(f"num_rows is {manifest.get('num_rows')!r}, expected a non-negative integer")
    for key in ("index_factory", "model_fingerprint"):
        if manifest.get(key) is not None and not isinstance(manifest[key], str):
            raise invalid(f"{key} is {manifest[key]!r}, expected a string or null")
    if manifest.get("precision", "float32") not in PRECISIONS:
        raise invalid(f"precision is {manifest['precision']!r}, expected one of {list(PRECISIONS)}")
    if not isinstance(manifest.get("id_column", "id"), str):
        raise invalid(f"id_column is {manifest['id_column']!r}, expected a string")
    indexes = manifest.get("indexes")
    if not isinstance(indexes, dict) or not indexes:
        raise invalid(f"indexes is {indexes!r}, expected an object with a 'time_series' and/or 'text' entry")
    for modality, entry in indexes.items():
        if modality not in MODALITIES:
            raise invalid(f"indexes has an entry {modality!r}; expected 'time_series' and/or 'text'")
        if not isinstance(entry, dict):
            raise invalid(f"indexes.{modality} is {entry!r}, expected an object")
        for key, check, expected in (
            ("file", lambda v: isinstance(v, str) and v != "", "a file name"),
            ("sha256", lambda v: isinstance(v, str), "a hex digest"),
            ("num_bytes", is_count, "a non-negative integer"),
            ("num_vectors", is_count, "a non-negative integer"),
            ("dim", is_count, "a non-negative integer"),
        ):
            if key not in entry:
                raise invalid(f"indexes.{modality} lacks {key!r}")
            if not check(entry[key]):
                raise invalid(f"indexes.{modality}.{key} is {entry[key]!r}, expected {expected}")
    if "corpus" in manifest:
        corpus = manifest["corpus"]
        files = corpus.get("data_files") if isinstance(corpus, dict) else None
        if not isinstance(files, dict) or not files:
            raise invalid(f"corpus is {corpus!r}, expected an object with a non-empty 'data_files' object")
        for name, entry in files.items():
            if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and is_count(entry.get("num_bytes"))):
                raise invalid(f"corpus.data_files[{name!r}] is {entry!r}, expected {{'sha256': ..., 'num_bytes': ...}}")
    return manifest


def _verify_corpus_files(corpus_path: str, recorded: dict, paths: dict, manifest_path: str) -> None:
    listed = _corpus_data_files(corpus_path)
    if sorted(listed) != sorted(recorded):
        raise RetrievalIndexIntegrityError(
            f"The corpus in {corpus_path} is made of the data files {sorted(listed)}, but the manifest {manifest_path} "
            f"records {sorted(recorded)}: the corpus folder was replaced. {_REBUILD}"
        )
    for name, entry in recorded.items():
        path = paths[name]
        if not os.path.isfile(path):
            raise RetrievalIndexIntegrityError(f"The corpus data file {path} is missing. {_REBUILD}")
        _verify_recorded_file(
            path,
            entry,
            "The corpus data file",
            f"the manifest {manifest_path}",
            truncated="the corpus was truncated or replaced by another one",
            modified="the corpus was modified or replaced by another one of the same size",
        )


def _verify_recorded_file(path: str, entry: dict, name: str, manifest: str, truncated: str, modified: str) -> None:
    """`RetrievalIndexIntegrityError` unless the file at `path` has the size and the sha256 that its manifest entry
    records (`entry["num_bytes"]`, `entry["sha256"]`); the message names the file (`name`, e.g. "The text index
    file"), the `manifest` and what the mismatch means (`truncated` for the size, `modified` for the digest)."""
    size = os.path.getsize(path)
    if size != entry["num_bytes"]:
        raise RetrievalIndexIntegrityError(
            f"{name} {path} is {size} bytes but {manifest} records {entry['num_bytes']}: {truncated}. {_REBUILD}"
        )
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise RetrievalIndexIntegrityError(
            f"{name} {path} has sha256 {digest} but {manifest} records {entry['sha256']}: {modified}. {_REBUILD}"
        )


def _verify_model(manifest: dict, manifest_path: str, model) -> None:
    if "model_fingerprint" not in manifest:
        warnings.warn(
            f"{manifest_path} records no model fingerprint (saved by an older version): cannot check that the model "
            "given to load is the one the index was built with. Save the index again to add it.",
            stacklevel=3,
        )
        return
    saved = manifest["model_fingerprint"]
    if saved is None:
        return  # saved without a model (from_embeddings) or with an encoder that has no state_dict
    current = model_fingerprint(model)
    if current is None:
        warnings.warn(
            f"The model given to load ({type(model).__name__}) has no state_dict to fingerprint: cannot check it "
            f"against the fingerprint {saved} recorded in {manifest_path}.",
            stacklevel=3,
        )
        return
    if current != saved:
        raise RetrievalIndexIntegrityError(
            f"The index in {os.path.dirname(manifest_path) or '.'} was saved with the model of fingerprint {saved}, "
            f"but the model given to load has fingerprint {current}: its embeddings are not comparable, searches "
            "would return wrong hits. Load the index with the model it was built with, rebuild the index with this "
            "model, or pass verify=False if the weights differ on purpose."
        )


def _make_faiss_index(
    vectors: np.ndarray, factory: str | None, *, train_size: int | None, seed: int, name: str, precision: str = "float32"
):
    import faiss

    dim = vectors.shape[1]
    if precision == "binary":
        return BinaryHammingIndex.from_vectors(vectors)
    if precision == "int8":
        index = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    elif factory is None or factory.strip() in ("", "Flat"):
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
