# Copyright 2025 The TRACE package authors. Licensed under the Apache License, Version 2.0.
"""Forecasting metrics of TRACE: MSE and MAE over observed target points (NaN targets ignored).

Both an importable module (`modeling_trace.metrics.forecasting_metrics`) and a local `evaluate`
module (`evaluate.load("<path>/trace_forecasting")`); it imports only third-party libraries because
`evaluate` copies the script alone into its cache.
"""

from __future__ import annotations

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
Mean squared error and mean absolute error of forecasts, averaged over every observed target point
(all samples, horizon steps and channels pooled; a point whose target is NaN is missing and left
out). Forecasts are compared in whatever space they are given (usually the original scale, or the
z-normalised space of the benchmark protocol). A NaN forecast at an observed target is an error in
the forecaster and makes the result NaN rather than being hidden.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of arrays): per sample, the forecast, shape `(horizon,)` or
        `(horizon, channels)`.
    references (`list` of arrays): per sample, the target, same shape, NaN = missing.

Returns:
    `{"mse": float, "mae": float, "num_points": int}`.

Examples:
    >>> metric = evaluate.load("modeling_trace/metrics/trace_forecasting")
    >>> metric.compute(predictions=[[1.0, 2.0]], references=[[1.0, float("nan")]])["mse"]
    0.0
"""


def forecasting_metrics(predictions, references) -> dict[str, float]:
    """MSE and MAE over the points whose target is not NaN.

    Args:
        predictions: array-like of any shape (e.g. `(batch, horizon, channels)`), or a list of
            per-sample arrays.
        references: same shape as `predictions`; NaN marks a missing target point.

    Returns:
        `{"mse", "mae", "num_points"}`; `mse`/`mae` are NaN when no target point is observed.
    """
    pred = _flatten(predictions, "predictions")
    ref = _flatten(references, "references")
    if pred.shape != ref.shape:
        raise ValueError(
            f"predictions and references must have the same number of points, got {pred.shape[0]} and "
            f"{ref.shape[0]}; check the horizon and channel axes of both."
        )
    observed = ~np.isnan(ref)
    n = int(observed.sum())
    if n == 0:
        return {"mse": float("nan"), "mae": float("nan"), "num_points": 0}
    err = pred[observed] - ref[observed]
    return {"mse": float(np.mean(err**2)), "mae": float(np.mean(np.abs(err))), "num_points": n}


def _flatten(values, name: str) -> np.ndarray:
    if isinstance(values, np.ndarray):
        return values.astype(np.float64).reshape(-1)
    try:
        parts = [np.asarray(v, dtype=np.float64).reshape(-1) for v in values]
    except (TypeError, ValueError) as err:
        raise ValueError(f"`{name}` must be numeric arrays (NaN for missing); got {type(values).__name__}.") from err
    return np.concatenate(parts) if parts else np.zeros(0)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TraceForecasting(evaluate.Metric):
    """`evaluate` wrapper of `forecasting_metrics` (MSE, MAE; NaN targets ignored)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Sequence(datasets.Value("float64")),
                        "references": datasets.Sequence(datasets.Value("float64")),
                    }
                ),
                datasets.Features(
                    {
                        "predictions": datasets.Sequence(datasets.Sequence(datasets.Value("float64"))),
                        "references": datasets.Sequence(datasets.Sequence(datasets.Value("float64"))),
                    }
                ),
            ],
        )

    def _compute(self, predictions, references):
        return forecasting_metrics(predictions, references)
