# Copyright 2025 The TRACE package authors. Licensed under the Apache License, Version 2.0.
"""Retrieval over TRACE embeddings, in three parts: the index (`index.py`, the one FAISS index of the package), the
evaluator (`evaluation.py`) and the raw-series baselines (`baselines.py`), all returning `RetrievalResults`
(`results.py`)."""

from .baselines import DTWSearcher, EuclideanScanSearcher, RandomSearcher, znormalize_windows
from .evaluation import RetrievalEvaluator
from .index import RetrievalIndexIntegrityError, TraceRetrievalIndex
from .results import RetrievalResults, overlapping_windows


__all__ = [
    "DTWSearcher",
    "EuclideanScanSearcher",
    "RandomSearcher",
    "RetrievalEvaluator",
    "RetrievalIndexIntegrityError",
    "RetrievalResults",
    "TraceRetrievalIndex",
    "overlapping_windows",
    "znormalize_windows",
]
