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

For model_type "seraf" (registered in this process only, see below):

| Auto class                           | SERAF class                |
|--------------------------------------|----------------------------|
| `AutoConfig`                         | `SerafConfig`              |
| `AutoModel`                          | `SerafForForecasting`      |
| `AutoModelForTimeSeriesPrediction`   | `SerafForForecasting`      |

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
from .modeling_seraf import SerafConfig, SerafForForecasting
from .modeling_trace import (
    TraceForClassification,
    TraceForForecasting,
    TraceForPretraining,
    TraceModel,
)
from .processing_trace import TraceFeatureExtractor, TraceProcessor


class AutoModelForTimeSeriesClassification(_BaseAutoModelClass):
    """Auto class for time-series classification models (`from_pretrained`, `from_config`, `register`)."""

    _model_mapping = _LazyAutoMapping(OrderedDict(), OrderedDict())


def _register(auto_class, key, value) -> None:
    try:
        auto_class.register(key, value)
    except ValueError:
        pass  # already registered in this process


def register_auto_classes() -> None:
    """Register TRACE and SERAF with the Auto API (idempotent) and mark the TRACE classes for `auto_map` on save."""
    _register(AutoConfig, TraceConfig.model_type, TraceConfig)
    pairs = [
        (AutoModel, TraceModel),
        (AutoModelForPreTraining, TraceForPretraining),
        (AutoModelForTimeSeriesPrediction, TraceForForecasting),
        (AutoModelForSequenceClassification, TraceForClassification),
        (AutoModelForTimeSeriesClassification, TraceForClassification),
    ]
    for auto_class, model_class in pairs:
        _register(auto_class, TraceConfig, model_class)
    TraceConfig.register_for_auto_class("AutoConfig")
    for auto_class, model_class in pairs[:-1]:
        model_class.register_for_auto_class(auto_class.__name__)
    for auto_class, processing_class in ((AutoFeatureExtractor, TraceFeatureExtractor), (AutoProcessor, TraceProcessor)):
        _register(auto_class, TraceConfig, processing_class)
        processing_class.register_for_auto_class(auto_class.__name__)
    # SERAF (model_type "seraf"): registered in-process only; its file uses the package's describer, so it is not
    # written into `auto_map` as Hub remote code.
    _register(AutoConfig, SerafConfig.model_type, SerafConfig)
    for auto_class in (AutoModel, AutoModelForTimeSeriesPrediction):
        _register(auto_class, SerafConfig, SerafForForecasting)
