# Copyright 2025 The TRACE package authors. Licensed under the Apache License, Version 2.0.
"""Retrieval metrics of TRACE (paper Table 1): label matching and modality matching P@k, MRR, NDCG, and the rest of
sentence-transformers' `InformationRetrievalEvaluator` set (Accuracy@k, Recall@k, MAP@K), under the same names.

This file is both an importable module (`modeling_trace.metrics.retrieval_metrics` re-exports its
functions) and a local `evaluate` module (`evaluate.load("<path>/trace_retrieval")`): `evaluate`
copies the script alone into its cache, so it imports only third-party libraries, never the package.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Hashable, Sequence

import datasets
import evaluate
import numpy as np

_CITATION = """\
@article{chen2025trace,
  title   = {TRACE: Grounding Time Series in Context for Multimodal Embedding and Retrieval},
  author  = {Chen, Jialin and others},
  journal = {arXiv preprint arXiv:2506.09114},
  year    = {2025}
}
"""

_DESCRIPTION = """\
Ranking metrics for cross-modal (Text->TS, TS->Text) and uni-modal (TS->TS) retrieval, as reported in
TRACE Table 1, with binary relevance:

* label matching: a retrieved item is relevant when its label equals the query's label;
* modality matching: a retrieved item is relevant when it is the query's paired item (the time
  series of a text, or the text of a time series).

Definitions, per query, for a ranked list r_1, r_2, ... of retrieved items (best first):

* P@k (precision at k) = (number of relevant items among r_1..r_k) / k. Positions beyond the end of a
  shorter list count as not relevant (the divisor is always k), as sentence-transformers does.
* MRR@K = 1 / rank of the first relevant item among r_1..r_K, and 0 when none of r_1..r_K is
  relevant. The cutoff K is `mrr_at` (default 10); pass `mrr_at=None` to use the whole retrieved
  list.
* NDCG@K (default K=10) exactly as sentence-transformers' InformationRetrievalEvaluator computes it:
  DCG = sum_{i<=K} rel_i / log2(i + 1), divided by the DCG of an ideal list holding
  min(K, R) relevant items, where R is the number of relevant items in the whole corpus.
  R is known for modality matching (the pair, R=1) and, for label matching, only when the corpus
  labels (or the counts R) are given; otherwise label NDCG is not reported.
* Accuracy@k = 1 when at least one of r_1..r_k is relevant, else 0 (sentence-transformers' accuracy@k;
  for modality matching, where R=1, it is the hit rate / recall@k).
* Recall@k = (number of relevant items among r_1..r_k) / R (needs R, as NDCG).
* MAP@K (default K=100) = sum over the relevant r_i, i <= K, of precision@i, divided by min(K, R)
  (sentence-transformers' map@k; needs R). The list must reach K items for MAP@K to see them all:
  `RetrievalEvaluator` retrieves max(k, every cutoff) items per query.

The keys are those of sentence-transformers' evaluator (`accuracy@1`, `precision@1`, `recall@1`,
`ndcg@10`, `mrr@10`, `map@100`, ...) behind a family prefix (`label_` / `modality_`) instead of its
score-function prefix (`cosine_`).

Queries with no relevant item at all (no pair, label None, or R=0) are left out of that family's
averages, as sentence-transformers leaves out queries without relevant documents; the number of
queries averaged is reported as `<family>_num_queries`.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `str` or `int`): per query, the ids of the retrieved items, best
        first (e.g. the top-10 of an index).
    references (`list` of `str` or `int` or `None`): per query, the id of its paired item (modality
        matching); `None` when the query has no pair in the corpus.
    predicted_labels (`list` of `list` of `str` or `int`): per query, the labels of the retrieved
        items, in the same order as `predictions`.
    reference_labels (`list` of `str` or `int` or `None`): per query, its label (label matching).
    corpus_labels (`list`, *optional*): the labels of every corpus item, used to count the relevant
        items R of each query for label NDCG.
    precision_at (`tuple` of `int`, defaults to `(1, 5)`): the k of P@k.
    mrr_at (`int` or `None`, defaults to 10): the cutoff of MRR; `None` = whole retrieved list.
    ndcg_at (`int`, defaults to 10): the cutoff of NDCG.
    accuracy_at (`tuple` of `int`, defaults to `(1, 3, 5, 10)`): the k of Accuracy@k.
    recall_at (`tuple` of `int`, *optional*): the k of Recall@k; defaults to `precision_at`.
    map_at (`int` or `None`, defaults to 100): the cutoff of MAP; `None` = not reported.

Returns:
    `dict` with `label_precision@1`, `label_precision@5`, `label_mrr@10`, `label_accuracy@1` ...
    `label_accuracy@10`, and when `corpus_labels` is given `label_ndcg@10`, `label_recall@1`,
    `label_recall@5`, `label_map@100`; `label_num_queries`; the same keys with the `modality_` prefix.

Examples:
    >>> metric = evaluate.load("modeling_trace/metrics/trace_retrieval")
    >>> metric.compute(
    ...     predictions=[["b", "a"], ["a", "b"]], references=["a", "b"],
    ...     predicted_labels=[["x", "y"], ["y", "x"]], reference_labels=["y", "x"],
    ... )["modality_precision@1"]
    0.0
"""


def ranking_metrics(
    relevance: np.ndarray | Sequence[Sequence[float]],
    num_relevant: np.ndarray | Sequence[int] | None = None,
    *,
    precision_at: Sequence[int] = (1, 5),
    mrr_at: int | None = 10,
    ndcg_at: int | None = 10,
    accuracy_at: Sequence[int] = (1, 3, 5, 10),
    recall_at: Sequence[int] | None = None,
    map_at: int | None = 100,
    prefix: str = "",
) -> dict[str, float]:
    """Average P@k, MRR@K, NDCG@K, Accuracy@k, Recall@k and MAP@K over queries from a binary relevance matrix
    (the metrics and key names of sentence-transformers' `InformationRetrievalEvaluator.compute_metrics`).

    Args:
        relevance: `(num_queries, list_length)` array (or ragged list of lists), 1 where the item
            retrieved at that rank is relevant to the query, 0 otherwise; rank 1 is column 0.
        num_relevant: per query, the number of relevant items in the whole corpus (R). Needed for
            NDCG (the ideal DCG); queries with R == 0 are left out of all averages. When `None`,
            NDCG is not reported and every query is averaged.
        precision_at: the k of P@k (divisor k, also when the list is shorter than k).
        mrr_at: cutoff of MRR (`None` = the whole list).
        ndcg_at: cutoff of NDCG (`None` = do not report NDCG).
        accuracy_at: the k of Accuracy@k (1 when any of the top k is relevant).
        recall_at: the k of Recall@k (relevant in the top k / R); defaults to `precision_at`. Needs `num_relevant`.
        map_at: cutoff of MAP (`None` = do not report). Needs `num_relevant`.
        prefix: prepended to every key (e.g. `"label_"`).

    Returns:
        `{"{prefix}precision@{k}": ..., "{prefix}mrr@{K}": ..., "{prefix}ndcg@{K}": ..., "{prefix}accuracy@{k}": ...,
        "{prefix}recall@{k}": ..., "{prefix}map@{K}": ..., "{prefix}num_queries": ...}` (NDCG, recall and MAP only with
        `num_relevant`); averages are `nan` when no query is left to average.
    """
    rows = [np.asarray(row, dtype=np.float64).reshape(-1) for row in relevance]
    width = max([len(row) for row in rows] + [1])
    rel = np.zeros((len(rows), width), dtype=np.float64)
    for i, row in enumerate(rows):
        if row.size and not np.isin(row, (0.0, 1.0)).all():
            raise ValueError(f"Relevance must be binary (0/1); query {i} has values {np.unique(row).tolist()}.")
        rel[i, : row.size] = row

    keep = np.ones(len(rows), dtype=bool)
    if num_relevant is not None:
        num_relevant = np.asarray(num_relevant, dtype=np.int64).reshape(-1)
        if num_relevant.shape[0] != len(rows):
            raise ValueError(
                f"num_relevant has {num_relevant.shape[0]} entries but relevance has {len(rows)} queries; "
                "pass one count per query."
            )
        keep = num_relevant > 0
    rel = rel[keep]
    n = int(rel.shape[0])

    def mean(values: np.ndarray) -> float:
        return float(values.mean()) if n else float("nan")

    out: dict[str, float] = {}
    for k in precision_at:
        if k < 1:
            raise ValueError(f"precision_at values must be >= 1, got {k}.")
        out[f"{prefix}precision@{k}"] = mean(rel[:, :k].sum(axis=1) / k)

    cutoff = width if mrr_at is None else mrr_at
    top = rel[:, :cutoff]
    has_hit = top.any(axis=1)
    first = np.argmax(top, axis=1)
    out[f"{prefix}mrr@{cutoff}" if mrr_at is not None else f"{prefix}mrr"] = mean(np.where(has_hit, 1.0 / (first + 1), 0.0))

    if ndcg_at is not None and num_relevant is not None:
        discounts = 1.0 / np.log2(np.arange(2, ndcg_at + 2))
        dcg = (rel[:, :ndcg_at] * discounts[: min(ndcg_at, width)]).sum(axis=1)
        ideal_hits = np.minimum(num_relevant[keep], ndcg_at)
        idcg = np.concatenate([[0.0], np.cumsum(discounts)])[ideal_hits]
        out[f"{prefix}ndcg@{ndcg_at}"] = mean(dcg / np.where(idcg > 0, idcg, 1.0))

    for k in accuracy_at:
        if k < 1:
            raise ValueError(f"accuracy_at values must be >= 1, got {k}.")
        out[f"{prefix}accuracy@{k}"] = mean(rel[:, :k].any(axis=1).astype(np.float64))
    if num_relevant is not None:
        relevant = num_relevant[keep].astype(np.float64)
        for k in precision_at if recall_at is None else recall_at:
            if k < 1:
                raise ValueError(f"recall_at values must be >= 1, got {k}.")
            out[f"{prefix}recall@{k}"] = mean(rel[:, :k].sum(axis=1) / np.maximum(relevant, 1.0))
        if map_at is not None:
            if map_at < 1:
                raise ValueError(f"map_at must be >= 1, got {map_at}.")
            top = rel[:, :map_at]
            precision_at_hits = np.cumsum(top, axis=1) / np.arange(1, top.shape[1] + 1) * top
            out[f"{prefix}map@{map_at}"] = mean(precision_at_hits.sum(axis=1) / np.minimum(map_at, np.maximum(relevant, 1.0)))
    out[f"{prefix}num_queries"] = n
    return out


def retrieval_metrics(
    retrieved_ids: Sequence[Sequence[Hashable]],
    *,
    paired_ids: Sequence[Hashable | None] | None = None,
    retrieved_labels: Sequence[Sequence[Hashable]] | None = None,
    query_labels: Sequence[Hashable | None] | None = None,
    corpus_labels: Sequence[Hashable] | None = None,
    label_num_relevant: Sequence[int] | None = None,
    precision_at: Sequence[int] = (1, 5),
    mrr_at: int | None = 10,
    ndcg_at: int | None = 10,
    accuracy_at: Sequence[int] = (1, 3, 5, 10),
    recall_at: Sequence[int] | None = None,
    map_at: int | None = 100,
) -> dict[str, float]:
    """Label-matching and modality-matching P@k, MRR, NDCG, Accuracy@k, Recall@k and MAP of ranked retrieval
    results.

    See the module description for the exact definitions (binary relevance; P@k divides by k;
    MRR@K is 0 when nothing relevant is in the top K; NDCG as sentence-transformers).

    Args:
        retrieved_ids: per query, the ids of the retrieved items, best first.
        paired_ids: per query, the id of its paired item (`None` = no pair). Enables the
            `modality_*` metrics.
        retrieved_labels: per query, the labels of the retrieved items (same order as
            `retrieved_ids`). Enables the `label_*` metrics together with `query_labels`.
        query_labels: per query, its label (`None` = unlabelled, left out).
        corpus_labels: labels of the whole corpus, to count the relevant items R per query for
            label NDCG. Mutually exclusive with `label_num_relevant`.
        label_num_relevant: R per query given directly, e.g. the corpus count minus one when the
            query itself is excluded from its own results (TS->TS).
        precision_at, mrr_at, ndcg_at, accuracy_at, recall_at, map_at: cutoffs, as in `ranking_metrics`.

    Returns:
        dict of floats, keys prefixed `label_` and/or `modality_`.
    """
    num_queries = len(retrieved_ids)
    out: dict[str, float] = {}
    if paired_ids is None and (retrieved_labels is None or query_labels is None):
        raise ValueError(
            "Nothing to evaluate: pass `paired_ids` for modality matching and/or `retrieved_labels` with "
            "`query_labels` for label matching."
        )

    if retrieved_labels is not None or query_labels is not None:
        if retrieved_labels is None or query_labels is None:
            raise ValueError("Label matching needs both `retrieved_labels` and `query_labels`; only one was given.")
        _check_length("retrieved_labels", retrieved_labels, num_queries)
        _check_length("query_labels", query_labels, num_queries)
        for i, (ids, labels) in enumerate(zip(retrieved_ids, retrieved_labels)):
            if len(ids) != len(labels):
                raise ValueError(
                    f"Query {i}: {len(ids)} retrieved ids but {len(labels)} retrieved labels; they must align."
                )
        relevance = [
            [label == q for label in labels] if q is not None else []
            for labels, q in zip(retrieved_labels, query_labels)
        ]
        if corpus_labels is not None and label_num_relevant is not None:
            raise ValueError("Pass either `corpus_labels` or `label_num_relevant`, not both.")
        if corpus_labels is not None:
            counts = Counter(corpus_labels)
            label_num_relevant = [counts.get(q, 0) if q is not None else 0 for q in query_labels]
        elif label_num_relevant is not None:
            _check_length("label_num_relevant", label_num_relevant, num_queries)
        else:
            # Without R the ideal DCG is unknown: keep every labelled query, skip NDCG.
            labelled = [q is not None for q in query_labels]
            relevance = [r for r, keep in zip(relevance, labelled) if keep]
        out.update(
            ranking_metrics(
                relevance,
                label_num_relevant,
                precision_at=precision_at,
                mrr_at=mrr_at,
                ndcg_at=ndcg_at,
                accuracy_at=accuracy_at,
                recall_at=recall_at,
                map_at=map_at,
                prefix="label_",
            )
        )

    if paired_ids is not None:
        _check_length("paired_ids", paired_ids, num_queries)
        relevance = [[item == pair for item in ids] for ids, pair in zip(retrieved_ids, paired_ids)]
        num_relevant = [0 if pair is None else 1 for pair in paired_ids]
        out.update(
            ranking_metrics(
                relevance,
                num_relevant,
                precision_at=precision_at,
                mrr_at=mrr_at,
                ndcg_at=ndcg_at,
                accuracy_at=accuracy_at,
                recall_at=recall_at,
                map_at=map_at,
                prefix="modality_",
            )
        )
    return out


def _check_length(name: str, values: Sequence, expected: int) -> None:
    if len(values) != expected:
        raise ValueError(f"`{name}` has {len(values)} entries but there are {expected} queries; pass one per query.")


def _features() -> list[datasets.Features]:
    # `evaluate` picks the first option whose types match the inputs, so ids and labels may each be
    # strings or integers.
    options = []
    for id_type, label_type in itertools.product(("string", "int64"), repeat=2):
        options.append(
            datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value(id_type)),
                    "references": datasets.Value(id_type),
                    "predicted_labels": datasets.Sequence(datasets.Value(label_type)),
                    "reference_labels": datasets.Value(label_type),
                }
            )
        )
    return options


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TraceRetrieval(evaluate.Metric):
    """`evaluate` wrapper of `retrieval_metrics` (label and modality matching P@k, MRR, NDCG)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=_features(),
            reference_urls=["https://arxiv.org/abs/2506.09114"],
        )

    def _compute(
        self,
        predictions,
        references,
        predicted_labels,
        reference_labels,
        corpus_labels=None,
        precision_at=(1, 5),
        mrr_at=10,
        ndcg_at=10,
        accuracy_at=(1, 3, 5, 10),
        recall_at=None,
        map_at=100,
    ):
        has_labels = any(label is not None for label in reference_labels)
        return retrieval_metrics(
            predictions,
            paired_ids=references if any(ref is not None for ref in references) else None,
            retrieved_labels=predicted_labels if has_labels else None,
            query_labels=reference_labels if has_labels else None,
            corpus_labels=corpus_labels if has_labels else None,
            precision_at=precision_at,
            mrr_at=mrr_at,
            ndcg_at=ndcg_at,
            accuracy_at=accuracy_at,
            recall_at=recall_at,
            map_at=map_at,
        )
