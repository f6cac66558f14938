"""Save / load round trips: in-process through the Auto classes, and in a fresh process through remote code."""

import json

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining, AutoModelForTimeSeriesPrediction

from conftest import run_fresh_python, tiny_config
from modeling_trace import (
    AutoModelForTimeSeriesClassification,
    TraceForClassification,
    TraceForForecasting,
    TraceForPretraining,
    TraceModel,
    TraceTimeSeriesModel,
)


def _values(seed=0, batch=3):
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(batch, 48, 3, generator=generator)
    values[0, :10, 1] = torch.nan
    return values


CASES = [
    (TraceModel, AutoModel, {}, lambda m, v: m.get_time_series_features(v)),
    (TraceForPretraining, AutoModelForPreTraining, {}, lambda m, v: m(v).reconstruction),
    (TraceForForecasting, AutoModelForTimeSeriesPrediction, {"prediction_length": 12}, lambda m, v: m(v).prediction_outputs),
    (
        TraceForClassification,
        AutoModelForTimeSeriesClassification,
        {"id2label": {0: "calm", 1: "storm"}, "label2id": {"calm": 0, "storm": 1}},
        lambda m, v: m(v).logits,
    ),
]


@pytest.mark.parametrize("model_class, auto_class, extra, run", CASES, ids=[c[0].__name__ for c in CASES])
def test_auto_class_round_trip_gives_identical_outputs(tmp_path, model_class, auto_class, extra, run):
    torch.manual_seed(0)
    model = model_class(tiny_config(**extra)).eval()
    model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors", "configuration_trace.py", "modeling_trace.py"} <= files
    assert not any(name.endswith(".bin") for name in files)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map["AutoConfig"] == "configuration_trace.TraceConfig"

    loaded = auto_class.from_pretrained(tmp_path).eval()
    assert type(loaded) is model_class
    assert isinstance(AutoConfig.from_pretrained(tmp_path), type(model.config))
    with torch.no_grad():
        assert torch.equal(run(model, _values()), run(loaded, _values()))
    # `_init_weights` must not touch loaded tensors: every parameter comes back bit for bit
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name


def test_encoder_checkpoint_feeds_the_task_heads(tmp_path):
    torch.manual_seed(0)
    pretrained = TraceForPretraining(tiny_config()).eval()
    pretrained.save_pretrained(tmp_path)
    head = TraceForForecasting.from_pretrained(tmp_path, prediction_length=6).eval()
    encoder = TraceTimeSeriesModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        reference = pretrained.time_series_model(_values()).last_hidden_state
        assert torch.equal(head.time_series_model(_values()).last_hidden_state, reference)
        assert torch.equal(encoder(_values()).last_hidden_state, reference)


def test_fresh_process_loads_with_trust_remote_code(tmp_path):
    torch.manual_seed(0)
    model = TraceModel(tiny_config(channel_names=["t", "p", "rh"])).eval()
    folder = tmp_path / "checkpoint"
    model.save_pretrained(folder)
    values = _values()
    torch.save(values, tmp_path / "values.pt")
    with torch.no_grad():
        expected = model.get_time_series_features(values)
        expected_channels = model.get_channel_features(values)
    torch.save({"sample": expected, "channel": expected_channels}, tmp_path / "expected.pt")

    result = run_fresh_python(
        """
        import torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained("checkpoint", trust_remote_code=True).eval()
        assert type(model).__name__ == "TraceModel", type(model)
        assert model.__class__.__module__.startswith("transformers_modules"), model.__class__.__module__
        values = torch.load("values.pt")
        expected = torch.load("expected.pt")
        with torch.no_grad():
            assert torch.equal(model.get_time_series_features(values), expected["sample"])
            assert torch.equal(model.get_channel_features(values), expected["channel"])
        print("fresh-process-ok", model.config.channel_names)
        """,
        tmp_path,
    )
    assert "fresh-process-ok ['t', 'p', 'rh']" in result.stdout
