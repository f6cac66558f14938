"""Retrieval speed of TRACE: FAISS over embeddings vs Euclidean and DTW scans over raw windows.

Part 1 — TS -> TS over >= 50,000 real windows (ETTh1/ETTh2, 7 channels, and the univariate `OT`
series of Time-MMD placed in channel 0 with the other channels missing), cut with stride 1:
  * `TraceRetrievalIndex` (exact `IndexFlatIP`) over the encoder's embeddings;
  * `EuclideanScanSearcher` over the z-normalised raw windows (NaN-aware);
  * `DTWSearcher` (dtaidistance, C) on a subset of queries x corpus windows, extrapolated
    linearly to the full query set and corpus (DTW cost is linear in the number of pairs).
Part 2 — an IVF (or HNSW) index over >= 1,000,000 synthetic unit embeddings sampled around cluster
centres: recall@10 against the exact index and milliseconds per query.

Run (trained checkpoint):
    python -m benchmarks.retrieval_speed --model path/to/trace-checkpoint
Run (no trained model yet; random-initialised encoder, timings only, said so in the output):
    python -m benchmarks.retrieval_speed --config configuration/models/trace-tiny.json --projection-dim 384

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import time

import numpy as np
import pandas as pd


DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="Folder of a trained TraceModel checkpoint.")
    source.add_argument("--config", help="Preset JSON (configuration/models/*.json): random-initialised encoder, timing only.")
    parser.add_argument("--projection-dim", type=int, default=None, help="Override projection_dim of --config.")
    parser.add_argument("--data-dir", default=os.environ.get("TRACE_DATA_DIR", DATA_DIR))
    parser.add_argument("--window-length", type=int, default=96)
    parser.add_argument("--num-windows", type=int, default=50_000)
    parser.add_argument("--num-queries", type=int, default=1_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--dtw-queries", type=int, default=10, help="Queries timed with DTW.")
    parser.add_argument("--dtw-corpus", type=int, default=2_000, help="Corpus windows timed with DTW.")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--large-size", type=int, default=1_000_000)
    parser.add_argument("--large-dim", type=int, default=None, help="Defaults to the encoder's embedding size.")
    parser.add_argument("--large-factory", default="IVF1024,Flat")
    parser.add_argument("--large-train-size", type=int, default=65_536)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--ef-search", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cluster-spread", type=float, default=1.0, help="Noise norm around each unit cluster centre.")
    parser.add_argument("--skip-large", action="store_true", help="Only the TS -> TS part.")
    parser.add_argument("--skip-windows", action="store_true", help="Only the large synthetic-index part.")
    return parser.parse_args()


def load_model(args):
    from modeling_trace import TraceConfig, TraceModel

    if args.model:
        return TraceModel.from_pretrained(args.model), f"trained checkpoint `{args.model}`"
    with open(args.config, encoding="utf-8") as f:
        preset = json.load(f)
    preset.pop("model_type", None)
    preset["context_length"] = args.window_length
    if args.projection_dim is not None:
        preset["projection_dim"] = args.projection_dim
    model = TraceModel(TraceConfig(**preset))
    note = (
        f"RANDOMLY INITIALISED encoder from preset `{args.config}` (no trained model): timings only, "
        "retrieval quality is meaningless"
    )
    return model, note


def cut_windows(data_dir: str, length: int, num_channels: int) -> tuple[np.ndarray, list[str]]:
    """Stride-1 windows `(N, length, num_channels)` from ETT (all 7 columns) and Time-MMD (`OT` only)."""
    windows, sources = [], []
    for path in sorted(glob.glob(os.path.join(data_dir, "ett", "ETT*.csv"))):
        frame = pd.read_csv(path).sort_values("date")
        values = frame.drop(columns=["date"]).to_numpy(np.float32)[:, :num_channels]
        if values.shape[1] < num_channels:
            values = np.pad(values, ((0, 0), (0, num_channels - values.shape[1])), constant_values=np.nan)
        view = np.lib.stride_tricks.sliding_window_view(values, length, axis=0).transpose(0, 2, 1)
        windows.append(view)
        sources.append(f"{os.path.basename(path)}: {len(view)}")
    for path in sorted(glob.glob(os.path.join(data_dir, "timemmd", "numerical", "*", "*.csv"))):
        frame = pd.read_csv(path)
        # Climate is newest-first and Economy unordered: order by the period start.
        order_column = "start_date" if "start_date" in frame.columns else "date"
        frame = frame.assign(_t=pd.to_datetime(frame[order_column], errors="coerce")).sort_values("_t")
        target = pd.to_numeric(frame["OT"], errors="coerce").to_numpy(np.float32)
        target[~np.isfinite(target)] = np.nan  # Health_AFR holds "inf" entries: treat them as missing
        if len(target) < length:
            continue
        values = np.full((len(target), num_channels), np.nan, dtype=np.float32)
        values[:, 0] = target
        view = np.lib.stride_tricks.sliding_window_view(values, length, axis=0).transpose(0, 2, 1)
        view = view[~np.isnan(view[:, :, 0]).all(axis=1)]
        windows.append(view)
        sources.append(f"{os.path.basename(path)}: {len(view)}")
    if not windows:
        raise FileNotFoundError(f"No ETT or Time-MMD CSV files under {data_dir}; pass --data-dir.")
    return np.concatenate(windows, axis=0), sources


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def clustered_unit_vectors(num: int, dim: int, centres: np.ndarray, rng, spread: float = 1.0, chunk: int = 100_000) -> np.ndarray:
    """Unit vectors around random cluster centres (a stand-in for embeddings of many similar windows)."""
    out = np.empty((num, dim), dtype=np.float32)
    for start in range(0, num, chunk):
        n = min(chunk, num - start)
        x = centres[rng.integers(0, len(centres), n)] + spread * rng.standard_normal((n, dim), dtype=np.float32) / np.sqrt(dim)
        out[start : start + n] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def main() -> None:
    args = parse_args()
    import faiss
    import torch

    from modeling_trace.retrieval import DTWSearcher, EuclideanScanSearcher, TraceRetrievalIndex

    rng = np.random.default_rng(args.seed)
    if args.skip_windows:
        run_large(args, args.large_dim or 384, rng)
        return
    model, model_note = load_model(args)
    model.eval()
    num_channels = model.config.num_input_channels

    all_windows, sources = cut_windows(args.data_dir, args.window_length, num_channels)
    if len(all_windows) < args.num_windows:
        raise ValueError(f"Only {len(all_windows)} windows available, fewer than --num-windows {args.num_windows}.")
    chosen = np.sort(rng.choice(len(all_windows), size=args.num_windows, replace=False))
    corpus_windows = np.ascontiguousarray(all_windows[chosen])
    query_rows = rng.choice(args.num_windows, size=args.num_queries, replace=False)
    query_windows = corpus_windows[query_rows]

    rows: list[tuple[str, str, str]] = []
    with torch.inference_mode():
        corpus_emb, encode_s = timed(
            model.encode_time_series, corpus_windows, batch_size=args.batch_size, show_progress_bar=False, convert_to_numpy=True
        )
        query_emb, query_encode_s = timed(
            model.encode_time_series, query_windows, batch_size=args.batch_size, show_progress_bar=False, convert_to_numpy=True
        )
    index, build_s = timed(TraceRetrievalIndex.from_embeddings, corpus_emb)
    hits, search_s = timed(index.search, query_emb, args.k, return_rows=False)
    self_first = float(np.mean(hits.indices[:, 0] == query_rows))

    euclid, euclid_build_s = timed(EuclideanScanSearcher, corpus_windows)
    euclid_hits, euclid_s = timed(euclid.search, query_windows, args.k, return_rows=False)

    dtw_corpus = corpus_windows[: args.dtw_corpus]
    dtw = DTWSearcher(dtw_corpus)
    _, dtw_s = timed(dtw.search, query_windows[: args.dtw_queries], args.k, return_rows=False)
    dtw_pairs = args.dtw_queries * len(dtw_corpus)
    dtw_full_s = dtw_s / dtw_pairs * args.num_queries * args.num_windows

    n, q = args.num_windows, args.num_queries
    per_1k = 1000.0 / q
    rows.append((f"TRACE embeddings, FAISS IndexFlatIP (exact), d={index.dim}", f"{search_s * per_1k:.3f}", f"{1000 * search_s / q:.3f}"))
    rows.append(
        (f"TRACE query encoding ({args.window_length}x{num_channels} windows)", f"{query_encode_s * per_1k:.3f}", f"{1000 * query_encode_s / q:.3f}")
    )
    rows.append((f"Euclidean scan, z-normalised raw windows ({args.window_length}x{num_channels})", f"{euclid_s * per_1k:.3f}", f"{1000 * euclid_s / q:.3f}"))
    rows.append(
        (
            f"DTW (dtaidistance C, {'dtw_ndim' if num_channels > 1 else 'dtw'}), extrapolated from "
            f"{args.dtw_queries} queries x {len(dtw_corpus)} windows",
            f"{dtw_full_s * per_1k:.1f}",
            f"{1000 * dtw_full_s / q:.1f}",
        )
    )

    print(f"# TRACE retrieval speed ({platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
          f"torch threads {torch.get_num_threads()}, faiss {faiss.__version__}, faiss threads {faiss.omp_get_max_threads()})")
    print()
    print(f"Encoder: {model_note}.")
    print(f"Corpus: {n} stride-1 windows of {args.window_length} steps sampled from {len(all_windows)} "
          f"({'; '.join(sources)}); {q} queries drawn from the corpus.")
    print(f"Corpus encoding: {encode_s:.1f} s ({1000 * encode_s / n:.1f} s per 1,000 windows); index build {build_s:.2f} s. "
          f"TS->TS query found itself at rank 1: {self_first:.3f}.")
    print()
    print(f"## TS -> TS, top-{args.k}, {q} queries over {n} windows")
    print()
    print("| method | seconds per 1,000 queries | ms per query |")
    print("| --- | ---: | ---: |")
    for name, s1k, ms in rows:
        print(f"| {name} | {s1k} | {ms} |")
    print()
    print(f"DTW timed on {dtw_pairs:,} pairs ({dtw_s:.2f} s) and extrapolated linearly to {q * n:,} pairs.")

    if not args.skip_large:
        run_large(args, args.large_dim or index.dim, rng)


def run_large(args, dim: int, rng) -> None:
    import faiss

    from modeling_trace.retrieval import TraceRetrievalIndex

    q = args.num_queries
    centres = rng.standard_normal((4096, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = clustered_unit_vectors(args.large_size, dim, centres, rng, args.cluster_spread)
    queries = clustered_unit_vectors(q, dim, centres, rng, args.cluster_spread)
    exact = faiss.IndexFlatIP(dim)
    exact.add(vectors)
    (_, truth), exact_s = timed(exact.search, queries, args.k)
    del exact
    large, large_build_s = timed(
        TraceRetrievalIndex.from_embeddings, vectors, index_factory=args.large_factory, train_size=args.large_train_size, seed=args.seed
    )
    print()
    print(f"## {args.large_size:,} synthetic unit embeddings (d={dim}, 4,096 clusters, spread {args.cluster_spread}), {q} queries, top-{args.k}")
    print()
    print(f"Index `{args.large_factory}` trained on {args.large_train_size:,} vectors and filled in {large_build_s:.1f} s.")
    print()
    print("| index | search parameter | recall@10 vs exact | ms per query |")
    print("| --- | --- | ---: | ---: |")
    print(f"| IndexFlatIP (exact) | - | 1.000 | {1000 * exact_s / q:.3f} |")
    params = ("nprobe", args.nprobe) if "IVF" in args.large_factory else ("ef_search", args.ef_search)
    for value in params[1]:
        large.set_search_parameters(**{params[0]: value})
        found, s = timed(large.search, queries, args.k, return_rows=False)
        recall = np.mean([len(set(a) & set(t)) / args.k for a, t in zip(found.indices, truth)])
        print(f"| {args.large_factory} | {params[0]}={value} | {recall:.3f} | {1000 * s / q:.3f} |")


if __name__ == "__main__":
    main()
