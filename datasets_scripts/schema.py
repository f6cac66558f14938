"""The one schema every TRACE dataset builder produces.

Every source (NOAA Storm Events + station observations, Time-MMD, UCR/UEA, ETT) is turned into rows
with exactly these columns, so that the library (processor, index, training scripts) reads all of
them the same way. Only the label names differ between datasets; they live in the `ClassLabel`.

Columns
-------
id               unique, non-empty string per row
source           "noaa" | "timemmd" | "ucr" | "ett"
domain           a finer grouping inside the source (Time-MMD domain, UCR set name, resolution...)
series_id        station id / series id the window was cut from
start_timestamp  ISO-8601 UTC string of the first step of `past_values` ("" when unknown, e.g. UCR)
freq             pandas-style frequency string of the steps ("1h", "4h", "1D", "7D", "" when unknown)
past_values      length x channels float32, NaN = missing
channel_names    one name per channel, in the order of the last axis of `past_values`
future_values    horizon x channels float32 (empty list when the dataset has no forecasting target)
text             sample / event-level text (may be "")
channel_texts    one text per channel (may be "")
label            ClassLabel; NOAA uses a "none" class for non-event windows
event_type       the raw event type (NOAA), or "" elsewhere
source_file      provenance: file the values/text were read from
event_id         provenance: event id (NOAA) or "" elsewhere
narrative_type   provenance: "event" | "episode" | "report" | "search" | "description" | ""
"""

from __future__ import annotations

from collections.abc import Sequence as SequenceABC

import numpy as np
from datasets import ClassLabel, Features, Sequence, Value

COLUMNS = (
    "id",
    "source",
    "domain",
    "series_id",
    "start_timestamp",
    "freq",
    "past_values",
    "channel_names",
    "future_values",
    "text",
    "channel_texts",
    "label",
    "event_type",
    "source_file",
    "event_id",
    "narrative_type",
)


def make_features(label_names: SequenceABC[str]) -> Features:
    """Return the shared `datasets.Features` with a `ClassLabel` over `label_names`."""
    if len(label_names) == 0:
        raise ValueError("make_features needs at least one label name.")
    if len(set(label_names)) != len(label_names):
        raise ValueError(f"Label names must be unique, got {list(label_names)}.")
    return Features(
        {
            "id": Value("string"),
            "source": Value("string"),
            "domain": Value("string"),
            "series_id": Value("string"),
            "start_timestamp": Value("string"),
            "freq": Value("string"),
            "past_values": Sequence(Sequence(Value("float32"))),
            "channel_names": Sequence(Value("string")),
            "future_values": Sequence(Sequence(Value("float32"))),
            "text": Value("string"),
            "channel_texts": Sequence(Value("string")),
            "label": ClassLabel(names=list(label_names)),
            "event_type": Value("string"),
            "source_file": Value("string"),
            "event_id": Value("string"),
            "narrative_type": Value("string"),
        }
    )


class RecordError(ValueError):
    """A record does not fit the schema; the message names the record and what is wrong."""


def validate_record(record: dict, num_labels: int | None = None) -> dict:
    """Check one row against the schema and return it with arrays as nested float lists.

    Raises `RecordError` naming the record id (or its position when the id itself is bad).
    """
    missing = [c for c in COLUMNS if c not in record]
    if missing:
        raise RecordError(f"Record {record.get('id', '<no id>')!r} lacks columns {missing}.")
    rid = record["id"]
    if not isinstance(rid, str) or not rid.strip():
        raise RecordError(f"Record has an empty or non-string id: {rid!r} (source={record.get('source')!r}).")

    values = np.asarray(record["past_values"], dtype=np.float32)
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] == 0:
        raise RecordError(
            f"Record {rid!r}: past_values must be (length, channels) with both > 0, got shape {values.shape}."
        )
    if np.isinf(values).any():
        raise RecordError(f"Record {rid!r}: past_values contain inf; use NaN for missing points.")
    if np.isnan(values).all():
        raise RecordError(f"Record {rid!r}: past_values are all NaN (no observed point in the window).")
    num_channels = values.shape[1]
    names = list(record["channel_names"])
    if len(names) != num_channels:
        raise RecordError(
            f"Record {rid!r}: {len(names)} channel_names for {num_channels} channels in past_values."
        )
    texts = list(record["channel_texts"])
    if len(texts) != num_channels:
        raise RecordError(f"Record {rid!r}: {len(texts)} channel_texts for {num_channels} channels.")

    future = record["future_values"]
    future_arr = np.asarray(future if future is not None else [], dtype=np.float32)
    if future_arr.size:
        if future_arr.ndim != 2 or future_arr.shape[1] != num_channels:
            raise RecordError(
                f"Record {rid!r}: future_values must be (horizon, {num_channels}), got shape {future_arr.shape}."
            )
        future_list = future_arr.tolist()
    else:
        future_list = []

    label = record["label"]
    if num_labels is not None and isinstance(label, int) and not 0 <= label < num_labels:
        raise RecordError(f"Record {rid!r}: label {label} outside [0, {num_labels}).")

    out = dict(record)
    out["past_values"] = values.tolist()  # NaN stays NaN: arrow float columns hold it
    out["future_values"] = future_list
    out["channel_names"] = names
    out["channel_texts"] = texts
    for key in ("text", "event_type", "source_file", "event_id", "narrative_type", "start_timestamp", "freq"):
        out[key] = "" if out[key] is None else str(out[key])
    return out
