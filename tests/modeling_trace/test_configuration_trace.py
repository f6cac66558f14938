import json

import pytest
import torch

from modeling_trace import TraceConfig, TraceModel, TraceTimeSeriesModel
from modeling_trace.presets import available_presets, load_preset
from modeling_trace.resources import configuration_dir
from tests.conftest import tiny_config


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


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(revin_eps=0.0), r"revin_eps must be a finite number in \(0.0, inf\), got 0.0"),
        (dict(revin_eps=-1e-5), "revin_eps"),
        (dict(layer_norm_eps=-1e-5), r"layer_norm_eps must be a finite number in \[0.0, inf\)"),
        (dict(rope_theta=0.0), "rope_theta"),
        (dict(rope_theta=-10.0), "rope_theta"),
        (dict(logit_scale_init_value=float("nan")), "logit_scale_init_value must be a finite number, got nan"),
        (dict(channel_loss_weight=float("nan")), "channel_loss_weight must be a finite number"),
        (dict(channel_loss_weight=-1.0), "channel_loss_weight"),
        (dict(initializer_range=float("inf")), "initializer_range"),
        (dict(activation_function="nope"), r"activation_function must be one of \(.*'gelu'.*got 'nope'"),
        (dict(ffn_dim=-64), "ffn_dim must be a positive integer, got -64"),
        (dict(prediction_length=-4), "prediction_length must be a positive integer or None, got -4"),
        (dict(prediction_length=2.5), r"prediction_length must be a positive integer or None, got 2.5 \(float\)"),
        (dict(classifier_hidden_dim=0), "classifier_hidden_dim"),
        (dict(num_hard_negatives=1.5), "num_hard_negatives"),
        (dict(dropout="0.1"), r"dropout must be a finite number in \[0.0, 1.0\), got '0.1' \(str\).*without quotes"),
        (dict(rope_theta="1e4"), r"rope_theta .*got '1e4' \(str\)"),
        (dict(d_model="32"), "d_model must be a positive integer"),
        (dict(revin="false"), r"revin must be a boolean \(true or false\), got 'false' \(str\)"),
        (dict(norm_first=1), "norm_first must be a boolean"),
        (dict(mask_ratio=float("nan")), "mask_ratio"),
        (dict(attention_type=["full"]), "attention_type must be one of"),
        (dict(num_input_channels=2, channel_names=["a", 2]), "channel_names must be a list of channel names"),
    ],
)
def test_every_value_is_checked_for_type_and_range(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**kwargs)


@pytest.mark.parametrize("key, value", [("rope_theta", "1e4"), ("dropout", "0.1"), ("revin", "false"), ("revin_eps", 0)])
def test_config_json_with_strings_or_bad_values_is_refused_on_load(tmp_path, key, value):
    tiny_config().save_pretrained(tmp_path)
    values = json.loads((tmp_path / "config.json").read_text())
    values[key] = value
    (tmp_path / "config.json").write_text(json.dumps(values))
    with pytest.raises(ValueError, match=f"TraceConfig.{key} must be"):
        TraceConfig.from_pretrained(tmp_path)


def test_overrides_given_to_from_pretrained_are_validated_too(tmp_path):
    tiny_config().save_pretrained(tmp_path)
    # transformers sets these as attributes after __init__
    with pytest.raises(ValueError, match="mask_ratio"):
        TraceConfig.from_pretrained(tmp_path, mask_ratio=0.0)
    with pytest.raises(ValueError, match="revin_eps"):
        TraceConfig.from_pretrained(tmp_path, revin_eps=-1.0)
    assert TraceConfig.from_pretrained(tmp_path, mask_ratio=0.5).mask_ratio == 0.5


def test_unknown_keys_are_kept_as_transformers_does(tmp_path):
    config = tiny_config(my_extra_key=3)
    assert config.my_extra_key == 3
    config.save_pretrained(tmp_path)
    assert TraceConfig.from_pretrained(tmp_path).my_extra_key == 3
    assert tiny_config(rope_theta=10000, dropout=0, layer_norm_eps=0).rope_theta == 10000  # ints are numbers
