# Copyright 2025 The TRACE package authors. Licensed under the Apache License, Version 2.0.
"""Retrieval over TRACE embeddings, in three parts: the index (`index.py`, the one FAISS index of the package), the
evaluator (`evaluation.py`) and the raw-series baselines (`baselines.py`), all returning `RetrievalResults`
(`results.py`). Names are imported on first use, so the overlap rule does not pull in the evaluator's metrics.
"""

import importlib

_LAZY = {
    "DTWSearcher": "baselines",
    "EuclideanScanSearcher": "baselines",
    "RandomSearcher": "baselines",
    "znormalize_windows": "baselines",
    "RetrievalEvaluator": "evaluation",
    "RetrievalIndexIntegrityError": "index",
    "TraceRetrievalIndex": "index",
    "RetrievalResults": "results",
    "overlapping_windows": "results",
}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = sorted(_LAZY)
