"""TRACE: multimodal time-series <-> text embedding and retrieval, as a Hugging Face model package.

Importing this package registers model_type "trace" with the transformers Auto classes (see `modeling_trace.auto`).
"""

from .configuration_trace import TraceConfig
from .modeling_trace import (
    TraceClassificationOutput,
    TraceForClassification,
    TraceForecastingOutput,
    TraceForForecasting,
    TraceForPretraining,
    TraceModel,
    TraceOutput,
    TracePreTrainedModel,
    TracePretrainingOutput,
    TraceTimeSeriesModel,
    TraceTimeSeriesModelOutput,
    hard_negative_info_nce,
    trace_contrastive_loss,
)
from .processing_trace import TraceFeatureExtractor, TraceProcessor
from .modeling_rag import TraceForRetrievalAugmentedForecasting
from .retrieval import RetrievalEvaluator, TraceRetrievalIndex
from .metrics import load_metric
from .auto import AutoModelForTimeSeriesClassification, register_auto_classes

register_auto_classes()

__version__ = "0.1.0"

__all__ = [
    "AutoModelForTimeSeriesClassification",
    "TraceClassificationOutput",
    "TraceConfig",
    "TraceFeatureExtractor",
    "TraceForClassification",
    "TraceForecastingOutput",
    "TraceForForecasting",
    "TraceForPretraining",
    "TraceForRetrievalAugmentedForecasting",
    "TraceRetrievalIndex",
    "RetrievalEvaluator",
    "load_metric",
    "TraceModel",
    "TraceOutput",
    "TracePreTrainedModel",
    "TracePretrainingOutput",
    "TraceProcessor",
    "TraceTimeSeriesModel",
    "TraceTimeSeriesModelOutput",
    "hard_negative_info_nce",
    "trace_contrastive_loss",
]
