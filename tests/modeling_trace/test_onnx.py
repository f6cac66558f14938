"""ONNX export (modeling_trace/onnx_export.py): the optimum-style folder, dynamic batch axes, and onnxruntime outputs
equal to PyTorch's within float32 tolerance, for the dual encoder and for the time-series tower alone."""

import json

import numpy as np
import pytest
import torch

from modeling_trace import TraceModel, TraceTimeSeriesModel
from modeling_trace.onnx_export import TimeSeriesOnnxGraph, TraceOnnxEncoder, export_onnx
from tests.conftest import tiny_config

onnx = pytest.importorskip("onnx", reason="the onnx extra (pip install trace-ts[onnx])")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra (pip install trace-ts[onnx])")

ATOL = 1e-5


def random_series(seed=0, lengths=(48, 30, 48, 60, 7), channels=3):
    rng = np.random.default_rng(seed)
    series = [rng.normal(loc=5.0, scale=3.0, size=(n, channels)) for n in lengths]
    series[0][3:9, 1] = np.nan  # missing points
    series[2][:, 2] = np.nan  # a channel never observed
    return series


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    # with the RevIN statistics embedding too: the graph must compute and embed them as the model does
    model = TraceModel(tiny_config(embedding_centering=True, projection_dim=16, revin_statistics_embedding=True)).eval()
    with torch.no_grad():  # non-trivial centring means and LayerNorm: a graph that dropped them would show
        model.time_series_projection.sample_center.running_mean.normal_(0, 0.1)
        model.text_projection.sample_center.running_mean.normal_(0, 0.1)
        model.text_projection.layer_norm.bias.normal_()
    folder = tmp_path_factory.mktemp("onnx")
    manifest = export_onnx(model, folder)
    return model, folder, manifest


def test_folder_layout_manifest_and_dynamic_batch_axes(exported):
    model, folder, manifest = exported
    names = {p.name for p in folder.iterdir()}
    assert {"time_series_model.onnx", "time_series_projection.onnx", "text_projection.onnx", "config.json",
            "onnx_manifest.json", "README.md"} <= names  # fmt: skip
    assert json.loads((folder / "config.json").read_text())["model_type"] == "trace"
    assert json.loads((folder / "onnx_manifest.json").read_text()) == manifest
    assert manifest["parts"]["time_series"]["inputs"]["past_values"] == ["batch", 48, 3]
    assert "time_series_model.onnx" in (folder / "README.md").read_text()
    # the export's own check against PyTorch, on a batch of another size than the one traced
    assert all(diff < ATOL for diff in manifest["verification"]["max_abs_diff"].values()), manifest["verification"]
    for part in manifest["parts"].values():
        graph = onnx.load(str(folder / part["file"]))
        onnx.checker.check_model(graph)
        for value in [*graph.graph.input, *graph.graph.output]:
            first = value.type.tensor_type.shape.dim[0]
            assert first.dim_param and not first.dim_value, f"{part['file']}:{value.name} has a fixed batch axis"


@pytest.mark.parametrize("batch_size", [1, 5])
def test_onnxruntime_matches_pytorch_for_the_time_series_tower(exported, batch_size):
    model, folder, _ = exported
    session = ort.InferenceSession(str(folder / "time_series_model.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(batch_size)
    values = rng.normal(size=(batch_size, 48, 3)).astype(np.float32) * 10 + 100
    observed = rng.random(values.shape) > 0.2
    observed[0, :20] = False  # left padding
    values[~observed] = np.nan  # NaN at unobserved points is fine for the graph
    embeds, pooled, channels = session.run(None, {"past_values": values, "past_observed_mask": observed})
    with torch.no_grad():
        out = model.time_series_model(torch.from_numpy(values), torch.from_numpy(observed), return_dict=True)
        expected = model.project_time_series(out.pooler_output)
    np.testing.assert_allclose(pooled, out.pooler_output.numpy(), atol=ATOL)
    np.testing.assert_allclose(channels, out.channel_embeddings.numpy(), atol=ATOL)
    np.testing.assert_allclose(embeds, expected.numpy(), atol=ATOL)
    np.testing.assert_allclose(np.linalg.norm(embeds, axis=1), 1.0, rtol=1e-5)


def test_onnx_encoder_embeds_raw_series_and_projects_text_as_the_model(exported):
    model, folder, _ = exported
    encoder = TraceOnnxEncoder(folder, threads=1)
    series = random_series()  # variable lengths: padded / cut by the same pad_or_truncate_series
    np.testing.assert_allclose(encoder.encode_time_series(series, batch_size=2), model.encode_time_series(series), atol=ATOL)
    sentences = torch.nn.functional.normalize(torch.randn(4, model.config.text_config.hidden_size), dim=-1)
    with torch.no_grad():
        expected = model.project_text(sentences).numpy()
    np.testing.assert_allclose(encoder.project_text(sentences.numpy()), expected, atol=ATOL)
    (projection,) = ort.InferenceSession(str(folder / "time_series_projection.onnx")).run(
        None, {"pooler_output": np.ones((2, model.config.d_model), dtype=np.float32)}
    )
    with torch.no_grad():
        np.testing.assert_allclose(projection, model.project_time_series(torch.ones(2, model.config.d_model)).numpy(), atol=ATOL)
    with pytest.raises(ValueError, match="output_value"):
        encoder.encode_time_series(series, output_value="logits")


def test_tower_alone_with_mean_pooling_and_no_cits(tmp_path):
    torch.manual_seed(1)
    tower = TraceTimeSeriesModel(tiny_config(pooling="mean", use_channel_identity_tokens=False, attention_type="full")).eval()
    manifest = export_onnx(tower, tmp_path)
    assert set(manifest["parts"]) == {"time_series"} and manifest["projection_dim"] is None
    assert all(diff < ATOL for diff in manifest["verification"]["max_abs_diff"].values()), manifest["verification"]
    encoder = TraceOnnxEncoder(tmp_path)
    series = random_series(seed=3)
    values, observed = (torch.from_numpy(a) for a in _padded(series, tower.config))
    with torch.no_grad():
        out = tower(values, observed, return_dict=True)
    np.testing.assert_allclose(encoder.encode_time_series(series, output_value="pooler_output"), out.pooler_output.numpy(), atol=ATOL)
    with pytest.raises(ValueError, match="no text_projection"):
        encoder.project_text(np.zeros((1, 32), dtype=np.float32))


def _padded(series, config):
    from modeling_trace.modeling_trace import pad_or_truncate_series

    return pad_or_truncate_series(series, config.context_length, config.num_input_channels)


def test_export_refuses_other_models_and_dtypes(tmp_path):
    with pytest.raises(TypeError, match="TraceModel or a TraceTimeSeriesModel"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path)
    with pytest.raises(ValueError, match="float32"):
        export_onnx(TraceTimeSeriesModel(tiny_config()).to(torch.bfloat16), tmp_path)


def test_opset_23_exports_attention_as_the_fused_op(tmp_path):
    torch.manual_seed(2)
    model = TraceModel(tiny_config()).eval()
    manifest = export_onnx(model, tmp_path, opset=23)
    assert manifest["opset"] == 23
    assert all(diff < ATOL for diff in manifest["verification"]["max_abs_diff"].values()), manifest["verification"]
    ops = {node.op_type for node in onnx.load(str(tmp_path / "time_series_model.onnx")).graph.node}
    assert "Attention" in ops and "Softmax" not in ops
    series = random_series(seed=4)
    np.testing.assert_allclose(TraceOnnxEncoder(tmp_path).encode_time_series(series), model.encode_time_series(series), atol=ATOL)


def test_export_graph_adds_pooled_statistics_as_the_model_does():
    """With `revin_statistics_position="pooled"` the export graph's `pooler_output` carries the statistics
    embedding exactly as `TraceTimeSeriesModel.forward` does (eager graph vs model, before any ONNX conversion)."""
    torch.manual_seed(0)
    config = tiny_config(revin_statistics_embedding=True, revin_statistics_position="pooled")
    tower = TraceTimeSeriesModel(config).eval()
    values = torch.from_numpy(np.stack(random_series(lengths=(48, 48, 48)))).float() * 40.0
    observed = ~torch.isnan(values)
    with torch.no_grad():
        expected = tower(values, observed)
        pooled, channels = TimeSeriesOnnxGraph(tower)(values, observed)
    torch.testing.assert_close(pooled, expected.pooler_output, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(channels, expected.channel_embeddings, atol=1e-5, rtol=1e-5)
    assert (expected.pooler_output - expected.cls_embedding).abs().max() > 1e-3  # the statistics are in it
