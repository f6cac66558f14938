"""TRACE: multimodal time-series <-> text embedding and retrieval, as a Hugging Face model package.

Importing this package registers model_type "trace" with the transformers Auto classes (see `modeling_trace.auto`).
Everything else (the retrieval index, RAG, metrics) is imported on first use (PEP 562), so `import modeling_trace`
costs torch + transformers and no more.
"""

from .auto import AutoModelForTimeSeriesClassification, register_auto_classes
from .lazy import lazy_attributes

register_auto_classes()

__version__ = "0.1.0"

# public name -> submodule that defines it
_LAZY = {
    "TraceConfig": ".configuration_trace",
    "TraceClassificationOutput": ".modeling_trace",
    "TraceForClassification": ".modeling_trace",
    "TraceForecastingOutput": ".modeling_trace",
    "TraceForForecasting": ".modeling_trace",
    "TraceForPretraining": ".modeling_trace",
    "TraceModel": ".modeling_trace",
    "TraceOutput": ".modeling_trace",
    "TracePreTrainedModel": ".modeling_trace",
    "TracePretrainingOutput": ".modeling_trace",
    "TraceTimeSeriesModel": ".modeling_trace",
    "TraceTimeSeriesModelOutput": ".modeling_trace",
    "hard_negative_info_nce": ".modeling_trace",
    "trace_contrastive_loss": ".modeling_trace",
    "TraceFeatureExtractor": ".processing_trace",
    "TraceProcessor": ".processing_trace",
    "TraceForRetrievalAugmentedForecasting": ".modeling_rag",
    "SerafConfig": ".configuration_seraf",
    "SerafForForecasting": ".modeling_seraf",
    "RetrievalEvaluator": ".retrieval",
    "TraceRetrievalIndex": ".retrieval",
    "load_metric": ".metrics",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())

__all__ = ["AutoModelForTimeSeriesClassification", "register_auto_classes", *_LAZY]
