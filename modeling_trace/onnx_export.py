# Copyright 2025 The TRACE package authors. Licensed under the Apache License, Version 2.0.
"""ONNX export of the TRACE time-series tower and of the dual encoder's projection heads.

    >>> from modeling_trace import TraceModel
    >>> from modeling_trace.onnx_export import export_onnx, TraceOnnxEncoder
    >>> model = TraceModel.from_pretrained("path/to/checkpoint")
    >>> export_onnx(model, "trace-onnx")                 # or: trace export-onnx --model M --output trace-onnx
    >>> encoder = TraceOnnxEncoder("trace-onnx")         # onnxruntime, no torch forward
    >>> embeddings = encoder.encode_time_series(series)  # = model.encode_time_series(series) within ~1e-5

The folder is laid out as optimum writes a multi-part export: one `<part>.onnx` per graph, the model's
`config.json`, an `onnx_manifest.json` (inputs, outputs, shapes, opset, the check against PyTorch) and a README.md.

* `time_series_model.onnx`: `past_values` `(batch, context_length, channels)` float32 and `past_observed_mask`
  (same shape, bool; NaN values are treated as missing too) -> `time_series_embeds` `(batch, projection_dim)` (unit
  norm, what `encode_time_series` returns; only for a `TraceModel`), `pooler_output` `(batch, d_model)`,
  `channel_embeddings` `(batch, channels, d_model)`. The batch axis is dynamic; the length is the model's context
  (pad or cut raw series with `pad_or_truncate_series`, as `TraceOnnxEncoder` does).
* `time_series_projection.onnx`: `pooler_output` -> `time_series_embeds` (a `TraceModel` only).
* `text_projection.onnx`: `sentence_embeddings` `(batch, text_hidden)` (the frozen tower's mean-pooled, L2
  sentence embeddings) -> `text_embeds` `(batch, projection_dim)`, unit norm (a `TraceModel` only). The text tower
  itself is a standard BERT encoder: export it with optimum (`optimum-cli export onnx`) if it must run in ONNX too.

The graphs are traced from a wrapper that reuses the model's own modules (patch embedding, encoder layers, heads)
with the shapes fixed by the config, without the Python-side input checks and shortcuts of `forward` that a traced
graph cannot keep (they would be frozen to the example batch). RoPE runs as cos/sin (ONNX has no complex type).
Attention is the eager kernel (MatMul, Softmax) at the default opset 18, which any recent runtime runs; from opset 23
it is `scaled_dot_product_attention`, exported as ONNX's fused `Attention` op (onnxruntime >= 1.22; ~20% faster for
trace-small on CPU). Both compute what the PyTorch model computes, to float32 rounding.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .modeling_trace import (
    TraceModel,
    TraceTimeSeriesModel,
    TraceTokenLayout,
    additive_attention_mask,
    observed_patch_mean,
    pad_or_truncate_series,
    pooled_outputs_read_pooled_tokens_only,
    split_token_states,
    zscore_statistics,
)
from .tables import markdown_table

TIME_SERIES_FILE = "time_series_model.onnx"
TIME_SERIES_PROJECTION_FILE = "time_series_projection.onnx"
TEXT_PROJECTION_FILE = "text_projection.onnx"
MANIFEST_FILE = "onnx_manifest.json"
DEFAULT_OPSET = 18


class TimeSeriesOnnxGraph(nn.Module):
    """The time-series tower (and, for a dual encoder, its projection) as one traceable graph.

    Same computation as `TraceTimeSeriesModel.forward` + `TraceModel.project_time_series` in eval mode, for input
    of exactly `context_length` steps (shorter series are left-padded as unobserved beforehand).
    """

    def __init__(self, tower: TraceTimeSeriesModel, projection: nn.Module | None = None, fused_attention: bool = False):
        super().__init__()
        config = tower.config
        self.fused_attention = fused_attention
        self.tower = tower
        self.projection = projection
        self.config = config
        layout = TraceTokenLayout(config.num_input_channels, config.num_patches, config.use_channel_identity_tokens)
        self.register_buffer("rule", layout.attention_rule(config.attention_type), persistent=False)
        # [CLS] pooling with CITs reads [CLS] and the CITs alone: the last layer computes only their states.
        self.pooled_only = pooled_outputs_read_pooled_tokens_only(config)
        self.register_buffer("pooled_rows", layout.pooled_rows, persistent=False)
        inv_freq = tower.encoder.rotary_emb.inv_freq.float()
        angles = layout.rope_positions.float()[:, None] * inv_freq[None, :]
        self.register_buffer("rope_cos", angles.cos()[:, None, :], persistent=False)
        self.register_buffer("rope_sin", angles.sin()[:, None, :], persistent=False)
        # indices of the patches along time, (num_patches, patch_length): `patchify` without `unfold`
        length, size, stride = config.context_length, config.patch_length, config.patch_stride
        num_patches = (length - size) // stride + 1
        start = length - ((num_patches - 1) * stride + size)
        steps = start + torch.arange(num_patches)[:, None] * stride + torch.arange(size)[None, :]
        self.register_buffer("patch_steps", steps, persistent=False)

    def _patches(self, tensor: torch.Tensor) -> torch.Tensor:
        # (B, T, C) -> (B, N, P, C) -> (B, C, N, P)
        return tensor[:, self.patch_steps].permute(0, 3, 1, 2)

    def forward(self, past_values: torch.Tensor, past_observed_mask: torch.Tensor):
        config = self.config
        observed = past_observed_mask.bool() & ~torch.isnan(past_values)
        values = torch.where(observed, past_values, torch.zeros_like(past_values))
        loc = scale = None
        if config.revin:
            loc, scale = zscore_statistics(values, observed, dim=1, eps=config.revin_eps)
            normalized = torch.where(observed, (values.to(loc.dtype) - loc) / scale, 0.0).to(past_values.dtype)
        else:
            normalized = values
        value_patches, observed_patches = self._patches(normalized), self._patches(observed)
        patch_observed = observed_patches.any(dim=-1)  # (B, C, N)
        hidden_states = self.tower.embeddings(value_patches, observed_patches, loc=loc, scale=scale)
        batch_size = hidden_states.shape[0]
        token_valid = patch_observed
        if config.use_channel_identity_tokens:
            token_valid = nn.functional.pad(token_valid, (1, 0), value=True)
        token_valid = nn.functional.pad(token_valid.reshape(batch_size, -1), (1, 0), value=True)  # (B, L)
        mask = additive_attention_mask((self.rule[None] & token_valid[:, None, :])[:, None], hidden_states.dtype)
        rotations = (self.rope_cos.to(hidden_states.dtype), self.rope_sin.to(hidden_states.dtype))
        last = len(self.tower.encoder.layers) - 1
        for number, layer in enumerate(self.tower.encoder.layers):
            # output_attentions=True selects the eager kernel (plain matmul + softmax; the weights are dropped),
            # False the model's implementation (SDPA: ONNX Attention from opset 23)
            rows = self.pooled_rows if self.pooled_only and number == last else None
            hidden_states = layer(hidden_states, mask, rotations, not self.fused_attention, query_rows=rows)[0]
        if self.tower.encoder.layer_norm is not None:
            hidden_states = self.tower.encoder.layer_norm(hidden_states)
        if self.pooled_only:  # (B, 1 + C, d): [CLS], then the CITs
            channel_embeddings, patch_embeddings = hidden_states[:, 1:], None
        else:  # as TraceTimeSeriesModel.forward
            channel_embeddings, patch_embeddings = split_token_states(
                hidden_states, config.num_input_channels, config.use_channel_identity_tokens
            )
            if channel_embeddings is None:
                channel_embeddings = observed_patch_mean(patch_embeddings, patch_observed, 2)
        pooled = self.tower.embeddings.pool(hidden_states[:, 0], patch_embeddings, patch_observed, loc, scale)
        if self.projection is None:
            return pooled, channel_embeddings
        return self.projection(pooled, normalize=True), pooled, channel_embeddings


class _ProjectionGraph(nn.Module):
    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.head(embeddings, normalize=True)


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's chatter (torchvision ops it skips, pytree deprecations, axis renames) is not the user's."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        logger.setLevel(level)


def _export(module: nn.Module, args: tuple, path: Path, input_names, output_names, opset: int) -> None:
    with _quiet_exporter():
        _export_graph(module, args, path, input_names, output_names, opset)


def _export_graph(module: nn.Module, args: tuple, path: Path, input_names, output_names, opset: int) -> None:
    # torch.export-based exporter (onnxscript); the TorchScript one (dynamo=False) cannot export these graphs
    batch_dim = torch.export.Dim("batch", min=1)
    try:
        program = torch.onnx.export(
            module,
            args,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_shapes=tuple({0: batch_dim} for _ in input_names),
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    except ImportError as err:
        raise ImportError(
            f"torch.onnx.export needs the onnx and onnxscript packages ({err}); install the onnx extra: "
            "pip install 'trace-ts[onnx]' (onnx, onnxscript, onnxruntime)."
        ) from err
    program.save(str(path), external_data=False)


def _example_inputs(config, batch_size: int = 2, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    shape = (batch_size, config.context_length, config.num_input_channels)
    values = torch.randn(shape, generator=generator)
    observed = torch.ones(shape, dtype=torch.bool)
    observed[0, : config.context_length // 3, -1] = False  # a partly missing channel: the masks are exercised
    return values, observed


def export_onnx(model, folder: str | os.PathLike, *, opset: int = DEFAULT_OPSET, verify: bool = True) -> dict:
    """Export `model` (a `TraceModel`, or a `TraceTimeSeriesModel` alone) into `folder` as ONNX.

    Writes `time_series_model.onnx` (+ `time_series_projection.onnx` and `text_projection.onnx` for a dual
    encoder), `config.json`, `onnx_manifest.json` and `README.md`; every graph has a dynamic batch axis.

    Args:
        model: the model, on CPU or not (the export runs on a CPU copy of nothing: the graphs are traced in eval
            mode on the model's device and dtype float32).
        folder: output folder (created; existing files of the same names are replaced).
        opset: ONNX opset (default 18; 23 or later exports attention as the fused `Attention` op).
        verify: when onnxruntime is installed, run each graph on an example batch of another size than the one
            traced and record the largest absolute difference to PyTorch in the manifest.

    Returns:
        The manifest (also written to `onnx_manifest.json`).
    """
    if isinstance(model, TraceModel):
        tower, config = model.time_series_model, model.config
    elif isinstance(model, TraceTimeSeriesModel):
        tower, config = model, model.config
    else:
        raise TypeError(f"export_onnx takes a TraceModel or a TraceTimeSeriesModel, got {type(model).__name__}.")
    if next(model.parameters()).dtype != torch.float32:
        raise ValueError(f"export_onnx exports float32 graphs; the model is {next(model.parameters()).dtype}: call .float().")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    dual = isinstance(model, TraceModel)
    parts: dict[str, dict] = {}
    try:
        with torch.no_grad():
            projection = model.time_series_projection if dual else None
            graph = TimeSeriesOnnxGraph(tower, projection, fused_attention=opset >= 23).to(device).eval()
            values, observed = (t.to(device) for t in _example_inputs(config))
            outputs = (("time_series_embeds",) if dual else ()) + ("pooler_output", "channel_embeddings")
            _export(graph, (values, observed), folder / TIME_SERIES_FILE, ("past_values", "past_observed_mask"), outputs, opset)
            parts["time_series"] = {
                "file": TIME_SERIES_FILE,
                "inputs": {
                    "past_values": ["batch", config.context_length, config.num_input_channels],
                    "past_observed_mask": ["batch", config.context_length, config.num_input_channels],
                },
                "outputs": dict(
                    zip(
                        outputs,
                        ([["batch", config.projection_dim]] if dual else [])
                        + [["batch", config.d_model], ["batch", config.num_input_channels, config.d_model]],
                    )
                ),
            }
            if dual:
                for name, head, in_name, in_dim, out_name, file in (
                    ("time_series_projection", model.time_series_projection, "pooler_output", config.d_model,
                     "time_series_embeds", TIME_SERIES_PROJECTION_FILE),
                    ("text_projection", model.text_projection, "sentence_embeddings", config.text_config.hidden_size,
                     "text_embeds", TEXT_PROJECTION_FILE),
                ):  # fmt: skip
                    example = torch.randn(2, in_dim, generator=torch.Generator().manual_seed(1)).to(device)
                    _export(_ProjectionGraph(head).eval(), (example,), folder / file, (in_name,), (out_name,), opset)
                    parts[name] = {
                        "file": file,
                        "inputs": {in_name: ["batch", in_dim]},
                        "outputs": {out_name: ["batch", config.projection_dim]},
                    }
            checks = _verify(model, folder, parts, config) if verify else {}
    finally:
        model.train(was_training)
    config.to_json_file(str(folder / "config.json"))
    manifest = {
        "format": "trace-onnx-v1",
        "model_class": type(model).__name__,
        "source": config._name_or_path or None,
        "opset": opset,
        "torch_version": torch.__version__,
        "dtype": "float32",
        "context_length": config.context_length,
        "num_input_channels": config.num_input_channels,
        "channel_names": config.channel_names,
        "projection_dim": config.projection_dim if dual else None,
        "parts": parts,
        "verification": checks,
    }
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    (folder / "README.md").write_text(_readme(manifest))
    return manifest


def _verify(model, folder: Path, parts: dict, config) -> dict:
    """Largest absolute difference between onnxruntime and PyTorch per graph output, on a batch of 3."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return {"skipped": "onnxruntime is not installed"}
    values, observed = _example_inputs(config, batch_size=3, seed=7)
    device = next(model.parameters()).device
    sessions = {name: _session(folder / part["file"]) for name, part in parts.items()}
    feeds = {"past_values": values.numpy(), "past_observed_mask": observed.numpy()}
    got = dict(zip(parts["time_series"]["outputs"], sessions["time_series"].run(None, feeds)))
    with torch.no_grad():
        out = (model.time_series_model if isinstance(model, TraceModel) else model)(
            values.to(device), observed.to(device), return_dict=True
        )
        expected = {"pooler_output": out.pooler_output, "channel_embeddings": out.channel_embeddings}
        if isinstance(model, TraceModel):
            expected["time_series_embeds"] = model.project_time_series(out.pooler_output)
    checks = {f"time_series.{k}": float(np.abs(got[k] - v.cpu().numpy()).max()) for k, v in expected.items()}
    if isinstance(model, TraceModel):
        for name, head, dim in (
            ("time_series_projection", model.time_series_projection, config.d_model),
            ("text_projection", model.text_projection, config.text_config.hidden_size),
        ):
            x = torch.randn(3, dim, generator=torch.Generator().manual_seed(3))
            with torch.no_grad():
                reference = head(x.to(device), normalize=True).cpu().numpy()
            (result,) = sessions[name].run(None, {next(iter(parts[name]["inputs"])): x.numpy()})
            checks[name] = float(np.abs(result - reference).max())
    return {"batch_size": 3, "max_abs_diff": checks}


def _session(path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _readme(manifest: dict) -> str:
    lines = [
        "# TRACE ONNX export",
        "",
        f"Exported by `modeling_trace.onnx_export.export_onnx` from `{manifest['model_class']}`"
        + (f" ({manifest['source']})" if manifest["source"] else "")
        + f", opset {manifest['opset']}, torch {manifest['torch_version']}, float32. Batch axes are dynamic.",
        "",
    ]
    shape = lambda spec: ", ".join(f"`{k}` ({' x '.join(map(str, v))})" for k, v in spec.items())  # noqa: E731
    rows = [(f"`{p['file']}`", shape(p["inputs"]), shape(p["outputs"])) for p in manifest["parts"].values()]
    lines.append(markdown_table(["file", "inputs", "outputs"], rows))
    lines += [
        "",
        "`past_values` has exactly `context_length` steps (left-pad shorter series with unobserved points, keep the most",
        "recent steps of longer ones); `past_observed_mask` is 1 at observed points (NaN values count as missing).",
        "The embeddings are unit-norm: cosine similarity = dot product.",
        "",
        "```python",
        "from modeling_trace.onnx_export import TraceOnnxEncoder",
        "encoder = TraceOnnxEncoder('this-folder')",
        "embeddings = encoder.encode_time_series(series)  # list of (length, channels) arrays, NaN = missing",
        "```",
        "",
        f"Check against PyTorch: `{json.dumps(manifest['verification'])}`",
        "",
    ]
    return "\n".join(lines)


class TraceOnnxEncoder:
    """onnxruntime inference on a folder written by `export_onnx`: `encode_time_series` (the same input handling
    as `TraceModel.encode_time_series`) and `project_text` (sentence embeddings -> text embeddings)."""

    def __init__(self, folder: str | os.PathLike, *, threads: int | None = None):
        self.folder = Path(folder)
        self.manifest = json.loads((self.folder / MANIFEST_FILE).read_text())
        self.sessions = {name: _session(self.folder / part["file"], threads) for name, part in self.manifest["parts"].items()}

    def encode_time_series(self, series, batch_size: int = 64, output_value: str = "time_series_embeds") -> np.ndarray:
        """Embeddings `(n, dim)` of raw series (an array `(n, length, channels)` or a list of `(length_i, channels)`
        arrays, NaN = missing); `output_value` names a graph output (`pooler_output`, `channel_embeddings`)."""
        values, observed = pad_or_truncate_series(
            series, self.manifest["context_length"], self.manifest["num_input_channels"], allow_empty=False
        )
        names = list(self.manifest["parts"]["time_series"]["outputs"])
        if output_value not in names:
            raise ValueError(f"output_value must be one of {names}, got {output_value!r}.")
        position = names.index(output_value)
        session = self.sessions["time_series"]
        chunks = [
            session.run([names[position]], {"past_values": values[i : i + batch_size], "past_observed_mask": observed[i : i + batch_size]})[0]
            for i in range(0, len(values), batch_size)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)

    def project_text(self, sentence_embeddings) -> np.ndarray:
        """`text_embeds` `(n, projection_dim)` of the text tower's sentence embeddings."""
        if "text_projection" not in self.sessions:
            raise ValueError(f"{self.folder} holds no text_projection.onnx (exported from a TraceTimeSeriesModel).")
        return self.sessions["text_projection"].run(None, {"sentence_embeddings": np.asarray(sentence_embeddings, dtype=np.float32)})[0]
