"""Retrieval evaluation of a `TraceModel` against the random and raw-Euclidean baselines: one implementation for
the quickstart, `python -m trace_training.ship` and `trace evaluate`.

    from trace_training.evaluation import evaluate_test_split, results_table
    result = evaluate_test_split(model, "noaa", {"config": "station_windows"})
    print(results_table(result.evaluation))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

MODES = ("text_to_ts", "ts_to_text", "ts_to_ts")
TABLE_METRICS = (
    ("label P@1", "label_precision@1"),
    ("label P@5", "label_precision@5"),
    ("label MRR@10", "label_mrr@10"),
    ("modality P@1", "modality_precision@1"),
    ("modality MRR@10", "modality_mrr@10"),
)


@dataclass
class TestSplitEvaluation:
    """What `evaluate_test_split` returns: the (channel-aligned) test split, its index, the metrics of TRACE and of
    the baselines (`evaluate`'s format) and the embedding geometry of both towers (`embedding_geometry`)."""

    test: Any
    index: Any
    evaluation: dict
    geometry: dict


def spread_rows(dataset, max_rows: int | None):
    """At most `max_rows` rows of `dataset`, spread evenly over it (all of them when `None` or fewer)."""
    if max_rows is not None and len(dataset) > max_rows:
        dataset = dataset.select(np.linspace(0, len(dataset) - 1, max_rows).round().astype(int).tolist())
    return dataset


def index_geometry(index) -> dict:
    """`embedding_geometry` of both towers' embeddings in a `TraceRetrievalIndex` (`ts_...`, `text_...` keys)."""
    import torch

    from .loops import embedding_geometry

    return {
        **embedding_geometry(torch.from_numpy(index.embeddings("time_series")), "ts"),
        **embedding_geometry(torch.from_numpy(index.embeddings("text")), "text"),
    }


def evaluate_test_split(
    model, dataset: str, dataset_config: dict | None = None, *, data_dir=None, k: int = 10, seed: int = 0,
    max_rows: int | None = None,
) -> TestSplitEvaluation:  # fmt: skip
    """Index the test split of a registered dataset (`trace_training.data.load_training_splits`) with `model`,
    every test row a query against that corpus, and evaluate TRACE and the baselines (`evaluate`).

    `max_rows` keeps that many rows spread evenly over the split (a quick check; the metrics then differ from the
    full split's). Label metrics are dropped when the split has a single label (station windows carry no event
    label: label matching would be trivially 1).
    """
    from modeling_trace.data_collator import align_dataset_channels
    from modeling_trace.retrieval import TraceRetrievalIndex

    from .data import load_training_splits

    test = spread_rows(load_training_splits(dataset, dataset_config, splits=("test",), data_dir=data_dir)["test"], max_rows)
    test = align_dataset_channels(test, model.config.channel_names)
    index = TraceRetrievalIndex.build(test, model, show_progress_bar=False)
    evaluation = evaluate(model, index, None, k=min(k, len(index)), seed=seed)
    if len(set(test["label"])) < 2:
        evaluation = {
            method: {key: value for key, value in metrics.items() if "_label_" not in key}
            for method, metrics in evaluation.items()
        }
        evaluation = {method: metrics for method, metrics in evaluation.items() if metrics}
    return TestSplitEvaluation(test=test, index=index, evaluation=evaluation, geometry=index_geometry(index))


def geometry_line(geometry: dict) -> str:
    """One printed line on how spread the embeddings are (near 1 = one shared direction, a collapse)."""
    return (
        "embedding geometry of the test split (mean pairwise cosine / norm of the mean unit vector; 1 = collapsed): "
        f"time series {geometry['ts_mean_cosine']:.3f} / {geometry['ts_mean_norm']:.3f}, "
        f"text {geometry['text_mean_cosine']:.3f} / {geometry['text_mean_norm']:.3f}"
    )


def evaluate(model, index, queries, k: int = 10, seed: int = 0) -> dict[str, dict[str, float]]:
    """Retrieval metrics of the TRACE index and of the baselines over `queries` (paired with the index corpus by id;
    `None` = the corpus itself, as the quickstart evaluates the test split against itself).

    Returns `{"trace": {...}, "random": {...}, "euclidean": {...}}` in `RetrievalEvaluator`'s key format.
    """
    from modeling_trace.modeling_trace import pad_or_truncate_series
    from modeling_trace.retrieval import EuclideanScanSearcher, RandomSearcher, RetrievalEvaluator

    corpus = index.corpus
    # The index corpus already holds the query rows' embeddings when queries == corpus: no second encoding.
    trace_queries = corpus if queries is None else queries
    results = {"trace": RetrievalEvaluator(trace_queries, k=k)(index, model=model)}

    # Baselines see the raw windows, padded / truncated to the model's context as the model sees them (NaN = missing).
    def raw_windows(dataset):
        values, observed = pad_or_truncate_series(
            [np.asarray(v, dtype=np.float32) for v in dataset["past_values"]],
            model.config.context_length,
            model.config.num_input_channels,
            fill_missing_channels=True,
        )
        return np.where(observed, values, np.nan)

    windows = raw_windows(corpus)
    query_windows = windows if queries is None else raw_windows(queries)
    # A random ranking ignores the query vectors; the raw windows (and empty text vectors) only give their count.
    raw = {"time_series": query_windows, "text": np.zeros((len(query_windows), 1), dtype=np.float32)}
    random_searcher = RandomSearcher(len(corpus), corpus=corpus, seed=seed)
    results["random"] = RetrievalEvaluator(trace_queries, k=k)(random_searcher, query_embeddings=raw)
    euclidean = EuclideanScanSearcher(windows, corpus=corpus)
    results["euclidean"] = RetrievalEvaluator(trace_queries, modes=("ts_to_ts",), k=k)(euclidean, query_embeddings=raw)
    return results


def results_table(evaluation: dict[str, dict[str, float]]) -> str:
    """A Markdown table: one row per (mode, method), the label/modality matching metrics as columns."""
    from modeling_trace.tables import markdown_table

    methods = {"trace": "TRACE", "random": "random", "euclidean": "Euclidean (raw)"}
    rows = []
    for mode in MODES:
        for method, label in methods.items():
            metrics = evaluation.get(method, {})
            if not any(key.startswith(mode + "_") for key in metrics):
                continue
            cells = [metrics.get(f"{mode}_{key}") for _, key in TABLE_METRICS]
            cells = [None if value is None else float(value) for value in cells]
            if all(value is None for value in cells):
                continue  # e.g. TS->TS on a single-label split: label matching was dropped, no modality pair exists
            rows.append([mode.replace("_to_", "→").replace("ts", "TS").replace("text", "Text"), label, *cells])
    header = ["mode", "method", *(name for name, _ in TABLE_METRICS)]
    return markdown_table(header, rows, align=["-", "-", *["r"] * len(TABLE_METRICS)], float_format=".3f", missing="-")
