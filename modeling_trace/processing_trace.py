# Copyright 2026 The TRACE package authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""Preprocessing for TRACE: a time-series feature extractor and a processor pairing it with the text tokenizer.

Hub-side file: it imports only torch, numpy, transformers and, relatively, `configuration_trace` / `modeling_trace`,
so `AutoProcessor.from_pretrained(folder, trust_remote_code=True)` works where this package is not installed.

- [`TraceFeatureExtractor`] turns raw series (arrays, lists of arrays of any length, pandas DataFrames or
  `{channel_name: values}` dicts) into `past_values` / `past_observed_mask` tensors of shape
  `(batch, context_length, num_input_channels)`: the most recent `context_length` steps are kept, shorter series
  are left-padded, and NaN (or padding) is marked as not observed.
- [`TraceProcessor`] adds the text tokenizer of the frozen text tower, for sample texts (`input_ids`,
  `attention_mask`) and per-channel texts (`channel_input_ids`, `channel_attention_mask` of shape
  `(batch, channels, tokens)` and `channel_text_mask`).
"""

from numbers import Number

import numpy as np
import torch
from transformers import BatchFeature, FeatureExtractionMixin, ProcessorMixin
from transformers.utils import logging

from .configuration_trace import TraceConfig
from .modeling_trace import _tensor_to_numpy, check_texts, pad_or_truncate_series, text_max_length

logger = logging.get_logger(__name__)


def _is_dataframe(obj) -> bool:
    # Duck-typed so that this Hub-side file does not import pandas.
    return hasattr(obj, "columns") and hasattr(obj, "to_numpy") and hasattr(obj, "iloc")


def _is_scalar(obj) -> bool:
    return isinstance(obj, Number) or (isinstance(obj, np.generic) and np.ndim(obj) == 0) or obj is None


class TraceFeatureExtractor(FeatureExtractionMixin):
    r"""
    Prepares time series for TRACE models: channel ordering, truncation / left-padding to the context, observed mask.

    Args:
        context_length (`int`, *optional*, defaults to 186):
            Time steps T the model reads. Longer series keep their last `context_length` steps; shorter ones are
            left-padded with points marked as not observed.
        num_input_channels (`int`, *optional*, defaults to 1):
            Channels C of every series.
        channel_names (`list[str]`, *optional*):
            Channel names in model order. Needed to read named input (DataFrame columns, dict keys) with more
            than one channel; named input is reordered to this order.

    Example:

    ```python
    >>> import numpy as np
    >>> from modeling_trace import TraceFeatureExtractor
    >>> fe = TraceFeatureExtractor(context_length=8, num_input_channels=2, channel_names=["temp", "rain"])
    >>> batch = fe([{"rain": [0.0, 1.0, np.nan], "temp": [3.0, 2.0, 1.0]}])
    >>> batch["past_values"].shape, batch["past_observed_mask"][0, -1].tolist()
    (torch.Size([1, 8, 2]), [True, False])
    ```
    """

    model_input_names = ["past_values", "past_observed_mask"]

    def __init__(
        self,
        context_length: int = 186,
        num_input_channels: int = 1,
        channel_names: list | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(context_length, bool) or not isinstance(context_length, int) or context_length < 1:
            raise ValueError(f"context_length must be a positive integer, got {context_length!r}.")
        if isinstance(num_input_channels, bool) or not isinstance(num_input_channels, int) or num_input_channels < 1:
            raise ValueError(f"num_input_channels must be a positive integer, got {num_input_channels!r}.")
        if channel_names is not None:
            channel_names = [str(name) for name in channel_names]
            if len(channel_names) != num_input_channels:
                raise ValueError(
                    f"channel_names has {len(channel_names)} names {channel_names} but num_input_channels is "
                    f"{num_input_channels}; give one name per channel."
                )
            if len(set(channel_names)) != len(channel_names):
                raise ValueError(f"channel_names must be unique, got {channel_names}.")
        self.context_length = context_length
        self.num_input_channels = num_input_channels
        self.channel_names = channel_names

    @classmethod
    def from_model_config(cls, config: TraceConfig, **kwargs) -> "TraceFeatureExtractor":
        """Build the feature extractor matching a [`TraceConfig`] (context length, channels, channel names)."""
        return cls(
            context_length=config.context_length,
            num_input_channels=config.num_input_channels,
            channel_names=list(config.channel_names) if config.channel_names is not None else None,
            **kwargs,
        )

    # -- named input ----------------------------------------------------------------------------------------------

    def _order_named_channels(self, columns: dict, index: int, fill_missing_channels: bool) -> np.ndarray:
        """`{name: 1-D values}` -> `(length, num_input_channels)` float array in model channel order."""
        names = [str(name) for name in columns]
        columns = {str(name): values for name, values in columns.items()}
        if self.channel_names is None:
            if self.num_input_channels == 1 and len(names) == 1:
                order = names
            else:
                raise ValueError(
                    f"Series {index} has named channels {names}, but this feature extractor has no channel_names to "
                    f"order them by (it expects {self.num_input_channels} channels). Create it with "
                    "channel_names=[...] (or from a TraceConfig that has them), or pass an array whose last axis is "
                    "already in model order."
                )
        else:
            order = self.channel_names
            unknown = [name for name in names if name not in order]
            missing = [name for name in order if name not in columns]
            if unknown:
                raise ValueError(
                    f"Series {index} has channels {unknown} that the model does not know; expected names from "
                    f"{order}. Drop or rename those columns."
                )
            if missing and not fill_missing_channels:
                raise ValueError(
                    f"Series {index} lacks channels {missing}; the model expects all of {order}. Add them (NaN for "
                    "missing values) or call with fill_missing_channels=True to mark them as not observed."
                )
        arrays = {}
        for name in order:
            if name not in columns:
                continue
            try:
                # float64 here; pad_or_truncate_series checks the range of the float32 output
                array = np.asarray(columns[name], dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise ValueError(f"Channel {name!r} of series {index} is not numeric: {err}") from err
            if array.ndim != 1:
                raise ValueError(
                    f"Channel {name!r} of series {index} has shape {array.shape}; each channel must be 1-D values."
                )
            arrays[name] = array
        lengths = {name: len(array) for name, array in arrays.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(
                f"The channels of series {index} have different lengths {lengths}; give every channel the same time "
                "axis (NaN for missing points)."
            )
        length = next(iter(lengths.values())) if lengths else 0
        out = np.full((length, len(order)), np.nan, dtype=np.float64)
        for position, name in enumerate(order):
            if name in arrays:
                out[:, position] = arrays[name]
        return out

    def _to_array(self, item, index: int, fill_missing_channels: bool):
        if _is_dataframe(item):
            return self._order_named_channels(
                {column: item[column].to_numpy() for column in item.columns}, index, fill_missing_channels
            )
        if isinstance(item, dict):
            return self._order_named_channels(item, index, fill_missing_channels)
        if isinstance(item, torch.Tensor):
            return _tensor_to_numpy(item)
        return item

    def _split_batch(self, time_series) -> list:
        """Split the accepted input forms into a list of per-series items."""
        if isinstance(time_series, torch.Tensor):
            time_series = _tensor_to_numpy(time_series)
        if isinstance(time_series, np.ndarray):
            if time_series.ndim == 3:
                return list(time_series)
            if time_series.ndim in (1, 2):
                return [time_series]
            raise ValueError(
                f"An array of time series must have shape (batch, length, channels), (length, channels) or (length,), "
                f"got {time_series.shape}."
            )
        if _is_dataframe(time_series) or isinstance(time_series, dict):
            return [time_series]
        if isinstance(time_series, (list, tuple)):
            if len(time_series) > 0 and all(_is_scalar(value) for value in time_series):
                return [np.asarray([np.nan if v is None else v for v in time_series], dtype=np.float32)]
            return list(time_series)
        raise TypeError(
            "time_series must be a numpy array / torch tensor (batch, length, channels), one series (length, channels), "
            "a pandas DataFrame or {channel_name: values} dict, or a list of those; got "
            f"{type(time_series).__name__}."
        )

    def __call__(
        self,
        time_series,
        return_tensors: str | None = "pt",
        fill_missing_channels: bool = False,
        **kwargs,
    ) -> BatchFeature:
        """
        Turn raw series into model inputs.

        Args:
            time_series: one series or a batch. A series is an array `(length, channels)` (or `(length,)` for one
                channel), a list of numbers, a pandas DataFrame with one column per channel, or a dict
                `{channel_name: values}`; named channels are reordered to `channel_names`. A batch is an array
                `(batch, length, channels)` or a list of series (lengths may differ). NaN marks missing points.
            return_tensors (`str`, *optional*, defaults to `"pt"`): `"pt"` for torch tensors, `"np"` for numpy.
            fill_missing_channels (`bool`, *optional*, defaults to `False`): Named input lacking some channels, or an
                array with fewer channels than the model, is an error unless this is `True`, in which case the
                absent channels (for arrays: the trailing ones) are all unobserved.

        Returns:
            [`BatchFeature`] with `past_values` (float32, 0 at missing points) and `past_observed_mask` (bool), both
            `(batch, context_length, num_input_channels)`.
        """
        if kwargs:
            raise TypeError(f"Unexpected arguments {sorted(kwargs)} for TraceFeatureExtractor.__call__.")
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}.")
        items = self._split_batch(time_series)
        if not items:
            raise ValueError("time_series is empty; give at least one series.")
        arrays = [self._to_array(item, i, fill_missing_channels) for i, item in enumerate(items)]
        # The one raw-series -> model-input conversion of the package (also behind `TraceModel.encode_time_series`).
        # An empty series (0 time steps) is an error naming it, as in `TraceModel.forward` / `encode_time_series`.
        values, observed = pad_or_truncate_series(
            arrays,
            self.context_length,
            self.num_input_channels,
            fill_missing_channels=fill_missing_channels,
            allow_empty=False,
        )
        if return_tensors == "pt":
            data = {"past_values": torch.from_numpy(values), "past_observed_mask": torch.from_numpy(observed)}
        else:
            data = {"past_values": values, "past_observed_mask": observed}
        return BatchFeature(data=data)


class TraceProcessor(ProcessorMixin):
    r"""
    TRACE processor: a [`TraceFeatureExtractor`] for time series and the text tower's tokenizer for sample and
    channel texts.

    Args:
        feature_extractor ([`TraceFeatureExtractor`]): Time-series preprocessing.
        tokenizer ([`PreTrainedTokenizerBase`]): Tokenizer of the text tower (all-MiniLM-L6-v2's by default).
        max_length (`int`, *optional*, defaults to 256): Token truncation length (256, as all-MiniLM-L6-v2). A
            length above the tokenizer's `model_max_length` is capped to it with a warning; `from_model` caps it by
            the text tower's position embeddings.

    Example:

    ```python
    >>> processor = TraceProcessor.from_model(model)  # model: a TraceModel with model.tokenizer set
    >>> batch = processor(time_series=[series_a, series_b], text=["a storm", "a calm week"],
    ...                   channel_texts=[["warm", "dry"], ["cold", ""]])
    >>> outputs = model(**batch)
    >>> processor.save_pretrained(folder); model.save_pretrained(folder)  # one folder for both
    ```
    """

    def __init__(self, feature_extractor, tokenizer, max_length: int = 256, **kwargs):
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise ValueError(f"max_length must be an integer >= 2, got {max_length!r}.")
        self.max_length = max_length
        super().__init__(feature_extractor, tokenizer, **kwargs)

    @classmethod
    def from_model(cls, model, tokenizer=None, **kwargs) -> "TraceProcessor":
        """Build the processor of a [`TraceModel`]: a feature extractor from `model.config` and the model's tokenizer.

        Args:
            model: a [`TraceModel`] (e.g. from `TraceModel.from_time_series_text_pretrained`).
            tokenizer: the text tokenizer; defaults to `model.tokenizer` (or the one found where the model was
                loaded from).
        """
        if tokenizer is None:
            get_tokenizer = getattr(model, "_get_tokenizer", None)
            tokenizer = get_tokenizer() if get_tokenizer is not None else getattr(model, "tokenizer", None)
        if tokenizer is None:
            raise ValueError(f"{type(model).__name__} has no tokenizer; pass tokenizer=... to TraceProcessor.from_model.")
        text_config = getattr(model.config, "text_config", None)
        if text_config is not None:  # longer token input fails inside the tower: cap at its positions
            kwargs["max_length"] = text_max_length(text_config, kwargs.get("max_length"))
        return cls(TraceFeatureExtractor.from_model_config(model.config), tokenizer, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        """Every key `__call__` can return (time-series inputs, then sample and channel text inputs)."""
        return [
            "past_values",
            "past_observed_mask",
            "input_ids",
            "attention_mask",
            "channel_input_ids",
            "channel_attention_mask",
            "channel_text_mask",
        ]

    def _max_length(self, max_length):
        """`max_length` (default `self.max_length`), capped with a warning by the tokenizer's `model_max_length`."""
        if max_length is None:
            max_length = self.max_length
        elif isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise ValueError(f"max_length must be an integer >= 2 (tokens), got {max_length!r}.")
        limit = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(limit, int) and 2 <= limit < 1_000_000 and max_length > limit:
            logger.warning(
                "max_length=%d is more than the tokenizer's model_max_length %d (the text tower's positions); "
                "truncating texts to %d tokens.",
                max_length,
                limit,
                limit,
            )
            max_length = limit
        return max_length

    def _tokenize(self, texts: list[str], padding, truncation, max_length):
        encoded = self.tokenizer(
            texts,
            padding=padding,
            truncation=truncation,
            max_length=self._max_length(max_length),
            return_tensors="pt",
            return_token_type_ids=False,
        )
        return encoded["input_ids"], encoded["attention_mask"]

    def _channel_text_rows(self, channel_texts) -> list[list]:
        """Normalise channel texts to one list of `num_input_channels` entries (str or None) per sample."""
        names = self.feature_extractor.channel_names
        num_channels = self.feature_extractor.num_input_channels
        if isinstance(channel_texts, dict) or (
            isinstance(channel_texts, (list, tuple)) and all(isinstance(t, str) or t is None for t in channel_texts)
        ):
            channel_texts = [channel_texts]  # a single sample
        if not isinstance(channel_texts, (list, tuple)):
            raise TypeError(
                "channel_texts must be a list (one entry per sample) of lists of channel texts or of "
                f"{{channel_name: text}} dicts; got {type(channel_texts).__name__}."
            )
        rows = []
        for i, sample in enumerate(channel_texts):
            if isinstance(sample, dict):
                if names is None:
                    raise ValueError(
                        f"channel_texts[{i}] is a dict, but the feature extractor has no channel_names to order it by; "
                        "give a list of texts in channel order or set channel_names."
                    )
                unknown = [str(key) for key in sample if str(key) not in names]
                if unknown:
                    raise ValueError(
                        f"channel_texts[{i}] has channels {unknown} that the model does not know; expected names from "
                        f"{names}."
                    )
                by_name = {str(key): value for key, value in sample.items()}
                sample = [by_name.get(name) for name in names]  # an absent channel has no text
            if not isinstance(sample, (list, tuple)) or len(sample) != num_channels:
                given = len(sample) if isinstance(sample, (list, tuple)) else type(sample).__name__
                raise ValueError(
                    f"channel_texts[{i}] must hold one text per channel ({num_channels}), got {given}. Use '' or None "
                    "for a channel without text."
                )
            # str or None, valid Unicode: a TypeError / ValueError names channel_texts[i][c]
            check_texts(["" if text is None else text for text in sample], f"channel_texts[{i}]")
            rows.append(list(sample))
        return rows

    def __call__(
        self,
        time_series=None,
        text=None,
        channel_texts=None,
        padding: bool | str = True,
        truncation: bool = True,
        max_length: int | None = None,
        fill_missing_channels: bool = False,
        return_tensors: str = "pt",
        **kwargs,
    ) -> BatchFeature:
        """
        Prepare a batch for [`TraceModel`] (any subset of the three inputs; all given ones must have the same batch
        size).

        Args:
            time_series: series as [`TraceFeatureExtractor.__call__`] accepts them -> `past_values`,
                `past_observed_mask` `(batch, context_length, channels)`.
            text (`str` or `list[str]`): sample / event texts -> `input_ids`, `attention_mask` `(batch, tokens)`.
            channel_texts: per sample, one text per channel (a list in channel order, or a `{channel_name: text}`
                dict); a flat list or a dict is one sample. Empty or `None` texts are absent ->
                `channel_input_ids`, `channel_attention_mask` `(batch, channels, tokens)` and `channel_text_mask`
                `(batch, channels)` (False where absent).
            padding, truncation, max_length: passed to the tokenizer (`max_length` defaults to `self.max_length`).
            fill_missing_channels (`bool`): see [`TraceFeatureExtractor.__call__`].
            return_tensors (`str`): only `"pt"` (the model takes torch tensors).
        """
        if kwargs:
            raise TypeError(f"Unexpected arguments {sorted(kwargs)} for TraceProcessor.__call__.")
        if time_series is None and text is None and channel_texts is None:
            raise ValueError("Give at least one of time_series, text or channel_texts.")
        if return_tensors != "pt":
            raise ValueError(f"TraceProcessor returns torch tensors only (return_tensors='pt'), got {return_tensors!r}.")
        data = {}
        sizes = {}
        if time_series is not None:
            features = self.feature_extractor(
                time_series, return_tensors="pt", fill_missing_channels=fill_missing_channels
            )
            data.update(features)
            sizes["time_series"] = features["past_values"].shape[0]
        if text is not None:
            texts = check_texts(text, "text")  # as TraceModel.encode_text: a TypeError names a non-str item
            if not texts:
                raise ValueError("text is an empty list; give one text per sample (a str or a non-empty list of str).")
            data["input_ids"], data["attention_mask"] = self._tokenize(texts, padding, truncation, max_length)
            sizes["text"] = len(texts)
        if channel_texts is not None:
            rows = self._channel_text_rows(channel_texts)
            num_channels = self.feature_extractor.num_input_channels
            flat = [("" if t is None else t) for row in rows for t in row]
            ids, mask = self._tokenize(flat, padding, truncation, max_length)
            data["channel_input_ids"] = ids.reshape(len(rows), num_channels, -1)
            data["channel_attention_mask"] = mask.reshape(len(rows), num_channels, -1)
            data["channel_text_mask"] = torch.tensor(
                [[bool(t is not None and t.strip()) for t in row] for row in rows], dtype=torch.bool
            )
            sizes["channel_texts"] = len(rows)
        if len(set(sizes.values())) > 1:
            raise ValueError(f"The inputs have different batch sizes {sizes}; give one entry per sample in each.")
        return BatchFeature(data=data)

    def batch_decode(self, *args, **kwargs):
        """Forwarded to the tokenizer's `batch_decode`."""
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        """Forwarded to the tokenizer's `decode`."""
        return self.tokenizer.decode(*args, **kwargs)


__all__ = ["TraceFeatureExtractor", "TraceProcessor"]
