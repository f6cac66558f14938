import json

import pytest
import torch

from tests.conftest import tiny_config
from modeling_trace import TraceConfig, TraceModel, TraceTimeSeriesModel
from modeling_trace.presets import available_presets, load_preset
from modeling_trace.resources import configuration_dir


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(patch_length=64, context_length=48), "larger than context_length"),
        (dict(d_model=30, num_attention_heads=4), "must divide d_model"),
        (dict(d_model=36, num_attention_heads=4), "must be even"),
        (dict(num_input_channels=2, channel_names=["a", "b", "c"]), "3 names but num_input_channels is 2"),
        (dict(num_input_channels=2, channel_names=["a", "a"]), "unique"),
        (dict(attention_type="sparse"), "attention_type must be one of"),
        (dict(mask_ratio=1.5), "mask_ratio"),
        (dict(num_input_channels=0), "positive integer"),
        (dict(dropout=1.0), "dropout"),
        (dict(num_hard_negatives=0), "num_hard_negatives"),
    ],
)
def test_invalid_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**kwargs)


def test_derived_sizes_follow_the_token_layout():
    config = tiny_config(context_length=50, patch_length=6, patch_stride=4)
    # patches start at the most recent step and go back by the stride: (50 - 6) // 4 + 1
    assert config.num_patches == 12
    assert config.sequence_length == 1 + 3 * (12 + 1)
    assert tiny_config(use_channel_identity_tokens=False).sequence_length == 1 + 3 * 8


def test_json_round_trip_keeps_every_field(tmp_path):
    config = tiny_config(channel_names=["a", "b", "c"], num_hard_negatives=None, attention_type="full")
    config.save_pretrained(tmp_path)
    loaded = TraceConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "trace"


def test_presets_load_by_name_and_by_path():
    assert {"trace-tiny", "trace-small"} <= set(available_presets())
    for name in ("trace-tiny", "trace-small"):
        by_name = load_preset(name)
        by_file = TraceConfig.from_json_file(configuration_dir("models") / f"{name}.json")
        by_pretrained = TraceConfig.from_pretrained(str(configuration_dir("models") / f"{name}.json"))
        assert by_name.to_dict() == by_file.to_dict() == by_pretrained.to_dict()
    assert load_preset("trace-tiny", num_input_channels=1).channel_names is None
    with pytest.raises(FileNotFoundError, match="Available"):
        load_preset("trace-huge")


def test_trace_small_matches_the_paper_size():
    config = load_preset("trace-small")
    assert (config.num_hidden_layers, config.d_model, config.num_attention_heads, config.ffn_dim) == (6, 384, 6, 1536)
    assert config.patch_length == 6
    with torch.device("meta"):
        encoder = TraceTimeSeriesModel(config)
        dual = TraceModel(config)
    encoder_params = sum(p.numel() for p in encoder.parameters())
    aligned_params = sum(p.numel() for n, p in dual.named_parameters() if not n.startswith("text_model."))
    # The paper's ~10.8 M is the trainable part of the aligned model: the encoder (10,658,688 at 7 channels:
    # 6 blocks of 1.77 M plus patch embedding, CITs, channel embeddings, [CLS]) plus the 384 -> 384 text projection.
    assert abs(aligned_params - 10.8e6) / 10.8e6 < 0.01, aligned_params
    assert encoder_params < aligned_params


def test_pooling_is_validated_and_reads_the_old_pooling_type(tmp_path):
    with pytest.raises(ValueError, match=r"TraceConfig.pooling must be 'cls' .* or 'mean' .*got 'max'"):
        tiny_config(pooling="max")
    assert tiny_config().pooling == "cls" and tiny_config(pooling="mean").pooling == "mean"
    # configs saved before `pooling` applied to every model named it `pooling_type`
    tiny_config(pooling="mean").save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["pooling"] == "mean" and "pooling_type" not in saved
    saved["pooling_type"] = saved.pop("pooling")
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert TraceConfig.from_pretrained(tmp_path).pooling == "mean"
    assert tiny_config(pooling_type="mean").pooling == "mean"
