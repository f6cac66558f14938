# Copyright 2025 The TRACE package authors. Licensed under the Apache License, Version 2.0.
"""Retrieval evaluation (paper Table 1) with the sentence-transformers evaluator contract: `__call__` returns a dict
of named metrics, `primary_metric` names the one to select on."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..metrics.trace_retrieval.trace_retrieval import retrieval_metrics
from .index import TraceRetrievalIndex
from .results import MODALITIES, _column_to_numpy, _positive_int, _series_list


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
        k (`int`): retrieved per query, at least; the search goes as deep as the largest cutoff too (`map_at=100`
            needs 100 items, as sentence-transformers retrieves max(every cutoff)), clamped to the corpus size.
        precision_at, mrr_at, ndcg_at, accuracy_at, recall_at, map_at: metric cutoffs, with the defaults of
            sentence-transformers' `InformationRetrievalEvaluator` (`precision_recall_at_k=[1, 3, 5, 10]`,
            `accuracy_at_k=[1, 3, 5, 10]`, `mrr_at_k=[10]`, `ndcg_at_k=[10]`, `map_at_k=[100]`); `recall_at`
            defaults to `precision_at`. See `trace_retrieval` for the definitions.
        exclude_self (`bool`): drop the query's own id from its TS -> TS results.
        batch_size (`int`): encoding batch size.
        name (`str`): prefix of the metric keys.

    Returns (from `__call__`): a dict keyed `{name_}{mode}_{label|modality}_{metric}` with the metric names of
    sentence-transformers' `InformationRetrievalEvaluator` (`accuracy@k`, `precision@k`, `recall@k`, `ndcg@10`,
    `mrr@10`, `map@100`; the family takes the place of its `cosine_` score-function prefix), e.g.
    `{"text_to_ts_label_precision@1": ..., "text_to_ts_modality_mrr@10": ..., "ts_to_ts_label_map@100": ...,
    "ts_to_ts_seconds_per_1k_queries": ...}`; `recall@k`, `ndcg@10` and `map@100` of label matching need the
    labels in the corpus. The `seconds_per_1k_queries` count the index search only (at the evaluator's depth),
    `encode_seconds_per_1k_queries` the query encoding when queries were raw.
    """

    MODES = {"text_to_ts": ("text", "time_series"), "ts_to_text": ("time_series", "text"), "ts_to_ts": ("time_series", "time_series")}

    def __init__(
        self,
        queries=None,
        *,
        modes: Sequence[str] = ("text_to_ts", "ts_to_text", "ts_to_ts"),
        k: int = 10,
        precision_at: Sequence[int] = (1, 3, 5, 10),
        mrr_at: int | None = 10,
        ndcg_at: int | None = 10,
        accuracy_at: Sequence[int] = (1, 3, 5, 10),
        recall_at: Sequence[int] | None = None,
        map_at: int | None = 100,
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
        self.k = _positive_int(k, "k")
        self.precision_at = tuple(precision_at)
        self.mrr_at = mrr_at
        self.ndcg_at = ndcg_at
        self.accuracy_at = tuple(accuracy_at)
        self.recall_at = None if recall_at is None else tuple(recall_at)
        self.map_at = map_at
        self.id_column = id_column
        self.label_column = label_column
        self.text_column = text_column
        self.values_column = values_column
        self.exclude_self = exclude_self
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.name = name
        # as sentence-transformers' SentenceEvaluator: the key to select checkpoints on
        first = self.modes[0] if self.modes else "text_to_ts"
        cutoff = f"mrr@{mrr_at}" if mrr_at else f"precision@{self.precision_at[0]}"
        self.primary_metric = f"{name + '_' if name else ''}{first}_{'label' if first == 'ts_to_ts' else 'modality'}_{cutoff}"

    def __call__(self, index: TraceRetrievalIndex, model=None, query_embeddings: dict | None = None) -> dict[str, float]:
        """Metrics of `index` (a `TraceRetrievalIndex` or a raw-window searcher of `baselines.py`).

        Args:
            index: what is searched.
            model: encodes raw queries (`encode_text` / `encode_time_series`); defaults to `index.model`.
            query_embeddings (`dict`, *optional*): `{"time_series": array, "text": array}`, the query vectors to
                search with, one row per query, in place of the queries' embedding columns or the model (e.g. the
                raw windows a Euclidean scan compares).
        """
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
        cutoffs = [*self.precision_at, *self.accuracy_at, *(self.recall_at or ()), self.mrr_at or 0, self.ndcg_at or 0]
        # as deep as the deepest cutoff (sentence-transformers retrieves max(every k)), never more than the corpus
        depth = min(max(self.k, self.map_at or 0, *cutoffs), len(index.corpus))
        for mode in self.modes:
            source, target = self.MODES[mode]
            if source not in embeddings and query_embeddings is not None and source in query_embeddings:
                embeddings[source] = np.asarray(query_embeddings[source], dtype=np.float32)
            if source not in embeddings:
                embeddings[source], encode_seconds = self._embed(queries, source, index, model)
                if encode_seconds is not None:
                    results[f"{prefix}{source}_encode_seconds_per_1k_queries"] = 1000.0 * encode_seconds / max(len(queries), 1)
            exclude = [[qid] for qid in query_ids] if mode == "ts_to_ts" and self.exclude_self else None
            start = time.perf_counter()
            hits = index.search(embeddings[source], depth, target=target, exclude=exclude, return_rows=False)
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
                hits.ids,
                precision_at=self.precision_at,
                mrr_at=self.mrr_at,
                ndcg_at=self.ndcg_at,
                accuracy_at=self.accuracy_at,
                recall_at=self.recall_at,
                map_at=self.map_at,
                **kwargs,
            )
            results.update({f"{prefix}{mode}_{key}": value for key, value in metrics.items()})
            results[f"{prefix}{mode}_seconds_per_1k_queries"] = 1000.0 * seconds / max(len(queries), 1)
        return results

    def _embed(self, queries, modality: str, index: TraceRetrievalIndex, model) -> tuple[np.ndarray, float | None]:
        column = MODALITIES[modality]
        if column in queries.column_names:
            return _column_to_numpy(queries, column), None
        model = model if model is not None else getattr(index, "model", None)
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
