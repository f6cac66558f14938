"""Auto-class registration for model_type "trace".

Importing `modeling_trace` registers the classes with transformers' Auto API:

| Auto class                           | TRACE class                |
|--------------------------------------|----------------------------|
| `AutoConfig`                         | `TraceConfig`              |
| `AutoModel`                          | `TraceModel` (dual encoder)|
| `AutoModelForPreTraining`            | `TraceForPretraining`      |
| `AutoModelForTimeSeriesPrediction`   | `TraceForForecasting`      |
| `AutoModelForSequenceClassification` | `TraceForClassification`   |
| `AutoModelForTimeSeriesClassification` (this package) | `TraceForClassification` |
| `AutoFeatureExtractor`               | `TraceFeatureExtractor`    |
| `AutoProcessor`                      | `TraceProcessor`           |

transformers has no Auto class for time-series classification, so this package defines
`AutoModelForTimeSeriesClassification` (same interface as the others). For checkpoints on the Hub, the
classifier is also registered under `AutoModelForSequenceClassification` (a "sequence" being a time series
here), which is the key `save_pretrained` writes into `auto_map` so that `trust_remote_code=True` loading works
without this package.
"""

from collections import OrderedDict

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
    AutoModelForTimeSeriesPrediction,
    AutoProcessor,
)
from transformers.models.auto.auto_factory import _BaseAutoModelClass, _LazyAutoMapping

from .configuration_trace import TraceConfig
from .modeling_trace import (
    TraceForClassification,
    TraceForForecasting,
    TraceForPretraining,
    TraceModel,
)
from .modeling_seraf import SerafConfig, SerafForForecasting
from .processing_trace import TraceFeatureExtractor, TraceProcessor


class AutoModelForTimeSeriesClassification(_BaseAutoModelClass):
    """Auto class for time-series classification models (`from_pretrained`, `from_config`, `register`)."""

    _model_mapping = _LazyAutoMapping(OrderedDict(), OrderedDict())


def register_auto_classes() -> None:
    """Register TRACE with the Auto API (idempotent) and mark the classes for `auto_map` on save."""
    try:
        AutoConfig.register(TraceConfig.model_type, TraceConfig)
    except ValueError:
        pass  # already registered in this process
    pairs = [
        (AutoModel, TraceModel),
        (AutoModelForPreTraining, TraceForPretraining),
        (AutoModelForTimeSeriesPrediction, TraceForForecasting),
        (AutoModelForSequenceClassification, TraceForClassification),
        (AutoModelForTimeSeriesClassification, TraceForClassification),
    ]
    for auto_class, model_class in pairs:
        try:
            auto_class.register(TraceConfig, model_class)
        except ValueError:
            pass  # already registered in this process
    TraceConfig.register_for_auto_class("AutoConfig")
    for auto_class, model_class in pairs[:-1]:
        model_class.register_for_auto_class(auto_class.__name__)
    for auto_class, processing_class in ((AutoFeatureExtractor, TraceFeatureExtractor), (AutoProcessor, TraceProcessor)):
        try:
            auto_class.register(TraceConfig, processing_class)
        except ValueError:
            pass  # already registered in this process
        processing_class.register_for_auto_class(auto_class.__name__)
    # SERAF (model_type "seraf"): registered in-process only; its file uses the package's describer, so it is not
    # written into `auto_map` as Hub remote code.
    try:
        AutoConfig.register(SerafConfig.model_type, SerafConfig)
    except ValueError:
        pass  # already registered in this process
    for auto_class in (AutoModel, AutoModelForTimeSeriesPrediction):
        try:
            auto_class.register(SerafConfig, SerafForForecasting)
        except ValueError:
            pass  # already registered in this process
