"""Channels are put into the model's channel vocabulary by name, never poured into another channel's slot."""

import math

import numpy as np
import pytest
from datasets import Dataset

from modeling_trace.data_collator import TraceDataCollator, align_dataset_channels, order_channels

VOCABULARY = ["temperature", "precipitation", "OT"]


def test_a_row_goes_into_the_slots_of_its_channel_names():
    row = {"id": "flu-1", "past_values": [[1.0], [2.0]], "channel_names": ["OT"], "channel_texts": ["flu rises"]}
    out = order_channels(row, VOCABULARY)
    values = np.asarray(out["past_values"])
    assert values.shape == (2, 3)
    assert np.isnan(values[:, :2]).all() and values[:, 2].tolist() == [1.0, 2.0]  # OT's slot, not temperature's
    assert out["channel_texts"] == ["", "", "flu rises"] and out["channel_names"] == VOCABULARY


def test_reordered_channels_follow_their_names_and_future_values_too():
    row = {
        "past_values": [[10.0, 0.5]],
        "future_values": [[11.0, 0.0]],
        "channel_names": ["precipitation", "temperature"],
        "channel_texts": ["dry", "warm"],
    }
    out = order_channels(row, VOCABULARY)
    assert out["past_values"][0][:2] == [0.5, 10.0] and math.isnan(out["past_values"][0][2])
    assert out["future_values"][0][:2] == [0.0, 11.0]
    assert out["channel_texts"] == ["warm", "dry", ""]


def test_an_unknown_channel_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"\['humidity'\].*does not know"):
        order_channels({"id": 7, "past_values": [[1.0]], "channel_names": ["humidity"]}, VOCABULARY)


def test_a_dataset_is_aligned_and_the_collator_then_keeps_each_source_in_its_slots():
    dataset = Dataset.from_list(
        [
            {"past_values": [[1.0, 2.0]] * 4, "channel_names": ["temperature", "precipitation"], "channel_texts": ["a", "b"]},
            {"past_values": [[5.0]] * 4, "channel_names": ["OT"], "channel_texts": ["c"]},
        ]
    )
    aligned = align_dataset_channels(dataset, VOCABULARY)
    batch = TraceDataCollator(context_length=4, num_channels=3)(list(aligned))
    observed = batch["past_observed_mask"].numpy().astype(bool)
    assert observed[0].all(axis=0).tolist() == [True, True, False]
    assert observed[1].all(axis=0).tolist() == [False, False, True]
    assert batch["past_values"][1, :, 2].tolist() == [5.0] * 4
    assert align_dataset_channels(aligned, VOCABULARY) is aligned  # already in order: untouched


def test_finetuning_on_another_channel_set_warns_and_keeps_positions():
    dataset = Dataset.from_list([{"past_values": [[1.0]], "channel_names": ["dim_0"], "channel_texts": [""]}])
    with pytest.warns(UserWarning, match="matched to the model's channels by position"):
        assert align_dataset_channels(dataset, VOCABULARY, strict=False) is dataset
    with pytest.raises(ValueError, match="does not know"):
        align_dataset_channels(dataset, VOCABULARY)
