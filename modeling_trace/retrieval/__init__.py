# Copyright 2025 The TRACE package authors. Licensed under the Apache License, Version 2.0.
"""Retrieval over TRACE embeddings, in three parts: the index (`index.py`, the one FAISS index of the package), the
evaluator (`evaluation.py`) and the raw-series baselines (`baselines.py`), all returning `RetrievalResults`
(`results.py`). Names are imported on first use, so the overlap rule does not pull in the evaluator's metrics.
"""

from ..lazy import lazy_attributes

_LAZY = {
    "DTWSearcher": ".baselines",
    "EuclideanScanSearcher": ".baselines",
    "RandomSearcher": ".baselines",
    "znormalize_windows": ".baselines",
    "RetrievalEvaluator": ".evaluation",
    "RetrievalIndexIntegrityError": ".index",
    "TraceRetrievalIndex": ".index",
    "RetrievalResults": ".results",
    "overlapping_windows": ".results",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())

__all__ = sorted(_LAZY)
