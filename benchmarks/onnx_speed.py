"""CPU speed of the ONNX export of the TRACE time-series encoder: onnxruntime vs PyTorch eager, batch 32.

For each preset (random-initialised weights: the speed does not depend on them), the dual encoder's time-series
side (tower + projection, what `encode_time_series` runs per batch) is exported with `export_onnx` and timed on the
same batch in both runtimes, with the same number of threads. Reports the median of `--repeats` runs after warm-up,
the ratio torch / onnxruntime (> 1: onnxruntime is faster) and the largest difference of the embeddings.

    python -m benchmarks.onnx_speed                       # trace-tiny and trace-small, 1 thread
    python -m benchmarks.onnx_speed --threads 2 --presets trace-small --repeats 30
    python -m benchmarks.onnx_speed --opset 23              # attention as ONNX's fused Attention op

The figures depend on the machine and its load: the script prints the CPU count and the load average next to them.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np
import torch

from modeling_trace.tables import markdown_table


def _median_seconds(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure(preset: str, batch_size: int, threads: int, repeats: int, opset: int = 18) -> dict:
    from modeling_trace.modeling_trace import TraceModel
    from modeling_trace.onnx_export import TraceOnnxEncoder, export_onnx
    from modeling_trace.presets import load_preset

    torch.manual_seed(0)
    config = load_preset(preset, dropout=0.0)
    model = TraceModel(config).eval()
    rng = np.random.default_rng(0)
    values = rng.normal(size=(batch_size, config.context_length, config.num_input_channels)).astype(np.float32)
    observed = np.ones(values.shape, dtype=bool)
    observed[: batch_size // 4, : config.context_length // 3] = False  # some left padding, as in real batches
    with tempfile.TemporaryDirectory() as folder:
        export_onnx(model, folder, verify=False, opset=opset)
        session = TraceOnnxEncoder(folder, threads=threads).sessions["time_series"]
        feeds = {"past_values": values, "past_observed_mask": observed}
        torch_values, torch_mask = torch.from_numpy(values), torch.from_numpy(observed)

        def run_torch():
            with torch.no_grad():
                return model.get_time_series_features(torch_values, torch_mask)

        def run_onnx():
            return session.run(["time_series_embeds"], feeds)[0]

        diff = float(np.abs(run_onnx() - run_torch().numpy()).max())
        torch_s = _median_seconds(run_torch, repeats)
        onnx_s = _median_seconds(run_onnx, repeats)
    return {"preset": preset, "torch_ms": 1000 * torch_s, "onnx_ms": 1000 * onnx_s, "ratio": torch_s / onnx_s, "max_abs_diff": diff}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["trace-tiny", "trace-small"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--opset", type=int, default=18)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import onnxruntime

    rows = [measure(p, args.batch_size, args.threads, args.repeats, args.opset) for p in args.presets]
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("n/a",)
    print(
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average {load[0]:.2f}; "
        f"threads {args.threads}; batch {args.batch_size}; opset {args.opset}; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}"
    )
    header = ["preset", "torch ms/batch", "onnxruntime ms/batch", "torch / onnxruntime", "max abs diff"]
    cells = [
        [r["preset"], f"{r['torch_ms']:.2f}", f"{r['onnx_ms']:.2f}", f"{r['ratio']:.2f}x", f"{r['max_abs_diff']:.1e}"]
        for r in rows
    ]
    print(markdown_table(header, cells))


if __name__ == "__main__":
    main()
