"""Throughput of the TRACE encoder vs transformers' PatchTST of the same size and patching, side by side.

    python -m benchmarks.encoder_throughput [--batch-sizes 32 64] [--modes infer train] [--rounds 5] [--steps 2] [--embeddings]
        [--baseline-rev HEAD] [--attn-implementations sdpa] [--compile] [--threads N]

Models: trace-small (6 layers, d_model 384, 6 heads, FFN 1536), 7 channels x 186 steps, patch 6 / stride 6, float32
on CPU, dropout 0 in both. TRACE attends over all channels at once (1 + 7 x 32 = 225 tokens with channel-biased
masking); PatchTST runs each channel as its own 31-patch sequence.

Modes: `infer` (eval mode, `torch.inference_mode`) and `train` (train mode, one forward + backward of the mean
squared last hidden state, gradients zeroed; no optimizer step). `--embeddings` adds TRACE asked for its pooled
outputs only ([CLS] and the CITs, `output_patch_embeddings=False`, what embedding and alignment training read; its
train step back-propagates their mean square). The models are timed interleaved — every round
times `--steps` steps of each model in turn (order reversed every other round), in one process — so machine load drifts hit all of them alike; the
table gives the median over rounds of samples/s and of the per-round ratio to PatchTST.

`--autocast bf16|fp16|auto` adds TRACE under CPU autocast (`auto`: bf16 only where oneDNN reports bf16 support
on this CPU, otherwise the row is left out; fp16 and bf16 without hardware support are emulated and slow).
`--baseline-rev REV` adds "TRACE @REV": the encoder code of that git revision (its `modeling_trace.py` and
`configuration_trace.py`, loaded as a remote-code package), with the same weights: the before/after figure in the
same run. `--compile` adds the encoder under `torch.compile` (compile time printed, not counted).

`--profile` prints, instead of the timings, where one step of each `--modes` value of each model spends its time
(torch.profiler self CPU time, summed by operator group: linear layers, the attention kernel, RoPE, activations,
norms, the rest; a training step's backward kernels join their group), at the first `--batch-sizes` value.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import PatchTSTConfig, PatchTSTModel

from modeling_trace import TraceTimeSeriesModel
from modeling_trace.presets import load_preset
from modeling_trace.tables import markdown_table

REPO_ROOT = Path(__file__).resolve().parent.parent


def load_revision_model_class(rev: str):
    """`TraceTimeSeriesModel` as defined at git revision `rev` (hub-side files only, imported as a package)."""
    folder = Path(tempfile.mkdtemp(prefix="trace_rev_"))
    package = folder / f"trace_rev_{abs(hash(rev)) % 10**8}"
    package.mkdir()
    for name in ("modeling_trace.py", "configuration_trace.py"):
        text = subprocess.run(
            ["git", "show", f"{rev}:modeling_trace/{name}"], cwd=REPO_ROOT, check=True, capture_output=True, text=True
        ).stdout
        (package / name).write_text(text)
    (package / "__init__.py").write_text("")
    # registered as a package from its folder (no sys.path edit): its relative imports resolve inside it
    spec = importlib.util.spec_from_file_location(
        package.name, package / "__init__.py", submodule_search_locations=[str(package)]
    )
    sys.modules[package.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sys.modules[package.name])
    module = importlib.import_module(f"{package.name}.modeling_trace")
    config_module = importlib.import_module(f"{package.name}.configuration_trace")
    return module.TraceTimeSeriesModel, config_module.TraceConfig


def cpu_bf16_supported() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX512-BF16 / AMX); decided before bf16 is picked."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def make_step(model, forward, mode: str, batch):
    if mode == "infer":
        model.eval()

        def step():
            with torch.inference_mode():
                forward(batch)

    else:
        model.train()

        def step():
            model.zero_grad(set_to_none=True)
            forward(batch).pow(2).mean().backward()

    return step


def run_interleaved(steps_by_name: dict, batch_size: int, rounds: int, steps: int, warmup: int = 1):
    """samples/s per model per round, timing every model in turn within each round."""
    for step in steps_by_name.values():
        for _ in range(warmup):
            step()
    results = {name: [] for name in steps_by_name}
    for round_index in range(rounds):
        order = list(steps_by_name.items())
        for name, step in order if round_index % 2 == 0 else order[::-1]:  # ABC, CBA, ...: no position bias
            start = time.perf_counter()
            for _ in range(steps):
                step()
            results[name].append(steps * batch_size / (time.perf_counter() - start))
    return results


# operator name fragments -> group (first match wins); everything else is "other"
PROFILE_GROUPS = (
    ("linear layers (addmm / mm / linear)", ("addmm", "aten::mm", "aten::linear", "aten::matmul", "aten::bmm")),
    ("attention kernel (SDPA / softmax)", ("scaled_dot_product", "flash_attention", "softmax")),
    ("RoPE (complex / cos-sin multiply)", ("view_as_complex", "view_as_real", "polar")),
    ("activation (GELU)", ("gelu",)),
    ("LayerNorm / BatchNorm", ("layer_norm", "batch_norm")),
)


def profile_steps(models: dict, batch: torch.Tensor, mode: str = "infer") -> list[list]:
    """Rows `[group, ms of model 1, ms of model 2, ...]`: self CPU time of one step of `mode` (`make_step`: an
    inference forward, or a training forward + backward), by operator group (backward kernels join their group)."""
    from torch.profiler import ProfilerActivity, profile

    totals = {}
    for name, (model, forward) in models.items():
        step = make_step(model, forward, mode, batch)
        step()  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        groups = {}
        for event in prof.key_averages():
            group = next((g for g, keys in PROFILE_GROUPS if any(k in event.key for k in keys)), "other")
            groups[group] = groups.get(group, 0.0) + event.self_cpu_time_total / 1000
        totals[name] = groups
    names = [g for g, _ in PROFILE_GROUPS] + ["other"]
    rows = [[group, *(f"{totals[m].get(group, 0.0):.1f}" for m in models)] for group in names]
    rows.append(["total", *(f"{sum(totals[m].values()):.1f}" for m in models)])
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--modes", nargs="+", choices=["infer", "train"], default=["infer", "train"])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=1, help="timed steps per model per round")
    parser.add_argument("--context-length", type=int, default=186)
    parser.add_argument("--baseline-rev", default=None, help="also time the encoder of this git revision")
    parser.add_argument(
        "--attn-implementations", nargs="+", default=["sdpa"], help="TRACE attention kernels to time (eager, sdpa, ...)"
    )
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(TRACE) (sdpa)")
    parser.add_argument("--autocast", choices=["none", "bf16", "fp16", "auto"], default="none")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--profile", action="store_true", help="print the time per operator group instead")
    parser.add_argument(
        "--embeddings",
        action="store_true",
        help="also time TRACE computing its pooled outputs only (output_patch_embeddings=False: embedding, alignment)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = load_preset("trace-small", context_length=args.context_length, dropout=0.0)
    trace = TraceTimeSeriesModel(copy.deepcopy(config))
    patchtst = PatchTSTModel(
        PatchTSTConfig(
            num_input_channels=config.num_input_channels,
            context_length=config.context_length,
            patch_length=config.patch_length,
            patch_stride=config.patch_stride,
            d_model=config.d_model,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            ffn_dim=config.ffn_dim,
            dropout=0.0,
            do_mask_input=False,
        )
    )
    models = {}  # name -> (model, forward returning a tensor)
    for implementation in args.attn_implementations:
        model = trace if implementation == args.attn_implementations[0] else TraceTimeSeriesModel(copy.deepcopy(config))
        model.load_state_dict(trace.state_dict())
        model.config._attn_implementation = implementation
        models[f"TRACE ({implementation})"] = (model, lambda x, m=model: m(x).last_hidden_state)
    if args.embeddings:
        # What embedding and alignment training read: [CLS] (the pooled output) and the CITs. The last layer then
        # computes those 8 tokens' states alone. PatchTST's embedding (the mean of its patch states) needs its
        # whole forward, so its row below is its embedding cost as well.
        models["TRACE (sdpa, embeddings only)"] = (
            trace,
            lambda x: torch.cat([(o := trace(x, output_patch_embeddings=False)).pooler_output[:, None], o.channel_embeddings], 1),
        )
    if args.baseline_rev:
        model_class, config_class = load_revision_model_class(args.baseline_rev)
        before = model_class(config_class(**config.to_diff_dict()))
        before.load_state_dict(trace.state_dict())
        models[f"TRACE @{args.baseline_rev}"] = (before, lambda x, m=before: m(x).last_hidden_state)
    compiled = None
    if args.compile:
        compiled = torch.compile(trace)
        models["TRACE (sdpa, torch.compile)"] = (trace, lambda x: compiled(x).last_hidden_state)
    autocast = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}.get(args.autocast)
    if args.autocast == "auto":
        autocast = torch.bfloat16 if cpu_bf16_supported() else None
        print(f"CPU bf16 support (oneDNN): {cpu_bf16_supported()}; autocast {'bf16' if autocast else 'off'}")
    if autocast is not None:

        def autocast_forward(x, dtype=autocast):
            with torch.autocast("cpu", dtype=dtype):
                return trace(x).last_hidden_state.float()

        models[f"TRACE (sdpa, autocast {str(autocast).split('.')[-1]})"] = (trace, autocast_forward)
    models["PatchTST (same size)"] = (patchtst, lambda x: patchtst(past_values=x).last_hidden_state)

    params = lambda m: sum(p.numel() for p in m.parameters()) / 1e6  # noqa: E731
    load = os.getloadavg()
    print(
        f"device: CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"{config.num_input_channels} channels x {config.context_length} steps; params TRACE {params(trace):.2f} M, "
        f"PatchTST {params(patchtst):.2f} M; tokens / sample TRACE {config.sequence_length}, PatchTST "
        f"{config.num_input_channels} x {config.num_patches}; {args.rounds} rounds x {args.steps} steps, interleaved"
    )
    if args.profile:
        batch = torch.randn(args.batch_sizes[0], config.context_length, config.num_input_channels)
        header = ["operator group", *(f"{name} ms" for name in models)]
        for mode in args.modes:
            what = "inference forward" if mode == "infer" else "training step (forward + backward)"
            print(f"self CPU time of one {what}, batch {args.batch_sizes[0]} (torch.profiler):")
            print(markdown_table(header, profile_steps(models, batch, mode), align="-" + "r" * len(models)))
        return
    # The table is printed row group by row group as the measurements finish; notes go below it.
    header = ["mode", "batch", "model", "samples/s (median)", "/ PatchTST (median of rounds)"]
    print(markdown_table(header, []))
    notes = []
    reference = "PatchTST (same size)"
    for mode in args.modes:
        for batch_size in args.batch_sizes:
            batch = torch.randn(batch_size, config.context_length, config.num_input_channels)
            steps = {name: make_step(model, forward, mode, batch) for name, (model, forward) in models.items()}
            if compiled is not None:
                start = time.perf_counter()
                steps["TRACE (sdpa, torch.compile)"]()
                took = time.perf_counter() - start
                notes.append(f"(torch.compile, {mode}, batch {batch_size}: first call {took:.1f} s)")
            results = run_interleaved(steps, batch_size, args.rounds, args.steps)
            rows = []
            for name, values in results.items():
                ratios = [v / r for v, r in zip(values, results[reference])]
                rows.append(
                    [mode, batch_size, name, f"{statistics.median(values):.1f}", f"{statistics.median(ratios):.2f}x"]
                )
            if args.baseline_rev:
                after, before = results[f"TRACE ({args.attn_implementations[0]})"], results[f"TRACE @{args.baseline_rev}"]
                speedup = statistics.median(a / b for a, b in zip(after, before))
                label = f"after / before (TRACE now / @{args.baseline_rev})"
                rows.append([mode, batch_size, label, "", f"{speedup:.2f}x"])
            print(markdown_table(header, rows, with_header=False), flush=True)
    for note in notes:
        print(note)
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
