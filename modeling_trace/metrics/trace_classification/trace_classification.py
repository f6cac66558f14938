# Copyright 2025 The TRACE package authors. Licensed under the Apache License, Version 2.0.
"""Classification metrics of TRACE: accuracy and macro-F1.

Both an importable module (`modeling_trace.metrics.classification_metrics`) and a local `evaluate`
module (`evaluate.load("<path>/trace_classification")`); it imports only third-party libraries
because `evaluate` copies the script alone into its cache.
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
Accuracy (fraction of samples whose predicted class equals the reference) and macro-F1: the
unweighted mean over classes of F1 = 2·TP / (2·TP + FP + FN), over the classes that occur in the
references or the predictions (scikit-learn's `f1_score(average="macro")` with its default labels;
a class that is predicted but never true has F1 = 0).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int` or `str`): predicted class per sample.
    references (`list` of `int` or `str`): true class per sample.

Returns:
    `{"accuracy": float, "macro_f1": float}`.

Examples:
    >>> metric = evaluate.load("modeling_trace/metrics/trace_classification")
    >>> metric.compute(predictions=[0, 1, 1], references=[0, 1, 0])["accuracy"]
    0.6666666666666666
"""


def classification_metrics(predictions, references) -> dict[str, float]:
    """Accuracy and macro-F1 of class predictions.

    Args:
        predictions: predicted class per sample (ints or strings), or a `(batch, num_classes)` array
            of logits/scores, reduced by argmax.
        references: true class per sample.

    Returns:
        `{"accuracy", "macro_f1"}`.
    """
    pred = np.asarray(predictions)
    ref = np.asarray(references).reshape(-1)
    if pred.ndim == 2:
        pred = pred.argmax(axis=-1)
    pred = pred.reshape(-1)
    if pred.shape != ref.shape:
        raise ValueError(
            f"Got {pred.shape[0]} predictions and {ref.shape[0]} references; pass one predicted class per sample."
        )
    if ref.size == 0:
        raise ValueError("classification_metrics needs at least one sample, got none.")
    f1s = []
    for cls in np.unique(np.concatenate([ref, pred])):
        tp = np.sum((pred == cls) & (ref == cls))
        fp = np.sum((pred == cls) & (ref != cls))
        fn = np.sum((pred != cls) & (ref == cls))
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return {"accuracy": float(np.mean(pred == ref)), "macro_f1": float(np.mean(f1s))}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TraceClassification(evaluate.Metric):
    """`evaluate` wrapper of `classification_metrics` (accuracy, macro-F1)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
        )

    def _compute(self, predictions, references):
        return classification_metrics(predictions, references)
