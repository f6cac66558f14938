"""Metrics of TRACE, each implemented once in a local `evaluate` module folder.

`evaluate.load("accuracy")` needs the Hub; these modules load offline from the package:

    >>> from modeling_trace.metrics import load_metric, retrieval_metrics
    >>> metric = load_metric("trace_retrieval")          # an `evaluate.Metric`
    >>> scores = retrieval_metrics([["a", "b"]], paired_ids=["b"])  # the same numpy core

Each folder `<name>/<name>.py` is self-contained (it imports only numpy, datasets and evaluate),
because `evaluate.load` copies that one file into its module cache; the functions below are
imported from those very files, so the package and the `evaluate` module share one implementation.
"""

from __future__ import annotations

import os

from .trace_classification.trace_classification import classification_metrics
from .trace_forecasting.trace_forecasting import forecasting_metrics
from .trace_retrieval.trace_retrieval import ranking_metrics, retrieval_metrics

METRICS_DIR = os.path.dirname(os.path.abspath(__file__))
METRIC_NAMES = ("trace_retrieval", "trace_forecasting", "trace_classification")


def metric_path(name: str) -> str:
    """Local folder of the metric `name`, suitable for `evaluate.load`."""
    if name not in METRIC_NAMES:
        raise ValueError(f"Unknown TRACE metric {name!r}; expected one of {list(METRIC_NAMES)}.")
    return os.path.join(METRICS_DIR, name)


def load_metric(name: str, **kwargs):
    """`evaluate.load` a TRACE metric from its local folder (works offline).

    Args:
        name: one of `"trace_retrieval"`, `"trace_forecasting"`, `"trace_classification"`.
        **kwargs: passed to `evaluate.load` (e.g. `experiment_id`, `keep_in_memory`).

    Returns:
        The `evaluate.Metric`.
    """
    import evaluate

    return evaluate.load(metric_path(name), **kwargs)


__all__ = [
    "METRIC_NAMES",
    "classification_metrics",
    "forecasting_metrics",
    "load_metric",
    "metric_path",
    "ranking_metrics",
    "retrieval_metrics",
]
