"""Forward throughput of the TRACE encoder vs transformers' PatchTST with the same size and patching.

    python -m benchmarks.encoder_throughput [--batch-size 64] [--steps 20] [--threads N]

Both models: trace-small (6 layers, d_model 384, 6 heads, FFN 1536), 7 channels x 186 steps, patch 6 / stride 6,
eval mode, no gradients, float32 on CPU. TRACE attends over all channels at once (1 + 7 x 32 = 225 tokens with
channel-biased masking); PatchTST runs each channel as its own 31-patch sequence. Prints samples/s and the ratio.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from transformers import PatchTSTConfig, PatchTSTModel

from modeling_trace import TraceTimeSeriesModel
from modeling_trace.presets import load_preset


def throughput(fn, batch, steps: int, warmup: int = 3) -> float:
    with torch.inference_mode():
        for _ in range(warmup):
            fn(batch)
        start = time.perf_counter()
        for _ in range(steps):
            fn(batch)
        elapsed = time.perf_counter() - start
    return steps * batch.shape[0] / elapsed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--context-length", type=int, default=186)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = load_preset("trace-small", context_length=args.context_length)
    trace = TraceTimeSeriesModel(config).eval()
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
    ).eval()
    batch = torch.randn(args.batch_size, config.context_length, config.num_input_channels)

    trace_sps = throughput(lambda x: trace(x), batch, args.steps)
    patchtst_sps = throughput(lambda x: patchtst(past_values=x), batch, args.steps)
    params = lambda m: sum(p.numel() for p in m.parameters()) / 1e6  # noqa: E731
    print(f"device: CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}; batch {args.batch_size}, {config.num_input_channels} channels x "
          f"{config.context_length} steps, {args.steps} timed steps")
    print("| model | params (M) | tokens / sample | samples/s |")
    print("|---|---|---|---|")
    print(f"| TRACE (trace-small) | {params(trace):.2f} | {config.sequence_length} | {trace_sps:.1f} |")
    print(f"| PatchTST (same size) | {params(patchtst):.2f} | {config.num_input_channels} x {config.num_patches} | {patchtst_sps:.1f} |")
    print(f"TRACE / PatchTST throughput ratio: {trace_sps / patchtst_sps:.2f}x")


if __name__ == "__main__":
    main()
