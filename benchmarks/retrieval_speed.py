"""Retrieval speed of TRACE: FAISS over embeddings vs Euclidean and DTW scans over raw windows.

Part 1 — TS -> TS over >= 50,000 real windows cut with stride 1, `--windows`:
  * `ett_timemmd`: ETTh1/ETTh2 (7 channels) and the univariate `OT` series of Time-MMD placed in channel 0 with the
    other channels missing (a speed corpus: these series are not the weather channels' own);
  * `stations`: every shipped NOAA station (`trace_datasets.noaa`) at every resolution (hourly, 4-hourly, daily),
    its seven weather channels in the model's channel order — the series the shipped checkpoint was trained for;
  `--num-windows 0` takes every window. On them:
  * `TraceRetrievalIndex` (exact `IndexFlatIP`) over the encoder's embeddings;
  * exact top-k on the same embeddings with torch (one matmul + topk: the path the RAG model uses);
  * `TraceRetrievalIndex` with an ANN index (`--ts-factory`, default `IVF256,Flat`, `--ts-nprobe`), recall@k
    against the exact search;
  * `EuclideanScanSearcher` over the z-normalised raw windows (NaN-aware);
  * `DTWSearcher` (dtaidistance, C) on a subset of queries x corpus windows, extrapolated
    linearly to the full query set and corpus (DTW cost is linear in the number of pairs).
Part 2 — ANN indexes over >= 1,000,000 synthetic unit embeddings sampled around cluster centres (or, with
`--large-source real`, over Part 1's real corpus embeddings, every window, with its 1,000 queries): every
`--large-factories` entry is built through `TraceRetrievalIndex.from_embeddings` (build time printed) and
searched over its parameter sweep (IVF `--nprobe`, HNSW `--ef-search`; an HNSW coarse quantizer gets
`quantizer_efSearch = max(--quantizer-ef-search, nprobe)`, a refine stage `k_factor_rf = --k-factor-rf`),
recall@10 against the exact top-10 (torch matmul + topk) and milliseconds per query. The benchmark then
chooses the fastest configuration with recall >= `--target-recall` (0.95) at <= `--target-ms` (5 ms/query).

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

# Candidate ANN indexes of the 1M part: the former default (exact k-means quantizer), an HNSW coarse quantizer (fast
# assignment when adding), and 4-bit fast-scan product quantization with exact re-ranking of k_factor_rf x k
# candidates (RFlat).
DEFAULT_LARGE_FACTORIES = ("IVF1024,Flat", "IVF1024_HNSW32,Flat", "IVF1024_HNSW32,PQ96x4fs,RFlat")
DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="Folder of a trained TraceModel checkpoint.")
    source.add_argument("--config", help="Preset JSON (configuration/models/*.json): random-initialised encoder, timing only.")
    parser.add_argument("--projection-dim", type=int, default=None, help="Override projection_dim of --config.")
    parser.add_argument("--data-dir", default=os.environ.get("TRACE_DATA_DIR", DATA_DIR))
    parser.add_argument("--window-length", type=int, default=96)
    parser.add_argument("--windows", choices=("ett_timemmd", "stations"), default="ett_timemmd", help="Part 1's real series")
    parser.add_argument("--num-windows", type=int, default=50_000, help="corpus windows drawn (0: every window)")
    parser.add_argument("--num-queries", type=int, default=1_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--dtw-queries", type=int, default=10, help="Queries timed with DTW.")
    parser.add_argument("--dtw-corpus", type=int, default=2_000, help="Corpus windows timed with DTW.")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--large-size", type=int, default=1_000_000)
    parser.add_argument("--large-dim", type=int, default=None, help="Defaults to the encoder's embedding size.")
    parser.add_argument(
        "--large-factories", nargs="+", default=list(DEFAULT_LARGE_FACTORIES), help="FAISS factory strings to compare"
    )
    parser.add_argument("--large-train-size", type=int, default=65_536)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--ef-search", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--quantizer-ef-search", type=int, default=64, help="efSearch of an HNSW coarse quantizer")
    parser.add_argument("--k-factor-rf", type=int, default=32, help="candidates re-ranked exactly per result (RFlat)")
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--target-ms", type=float, default=5.0)
    parser.add_argument("--time-flat-exact", action="store_true", help="also time FAISS IndexFlatIP on the large set")
    parser.add_argument("--ts-factory", default="IVF256,Flat", help="ANN index of the TS -> TS part")
    parser.add_argument("--ts-nprobe", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cluster-spread", type=float, default=1.0, help="Noise norm around each unit cluster centre.")
    parser.add_argument(
        "--large-source", choices=("synthetic", "real"), default="synthetic",
        help="Part 2 over --large-size synthetic vectors, or over Part 1's real corpus embeddings",
    )
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


def cut_station_windows(data_dir: str, length: int, channel_names) -> tuple[np.ndarray, list[str]]:
    """Stride-1 windows `(N, length, channels)` of every shipped NOAA station at every resolution, channels by name in
    the model's order (`channel_names`); windows with no observed value are left out."""
    from trace_datasets.noaa import CHANNELS, RESOLUTIONS, load_stations, read_station, resample

    unknown = [name for name in channel_names if name not in CHANNELS]
    if unknown:
        raise ValueError(f"The model's channels {unknown} are not NOAA weather channels {list(CHANNELS)}: use --windows ett_timemmd.")
    windows, sources = [], []
    for station in load_stations():
        hourly = read_station(station, data_dir)
        for resolution in RESOLUTIONS:
            values = resample(hourly, resolution)[list(channel_names)].to_numpy(np.float32)
            if len(values) < length:
                continue
            view = np.lib.stride_tricks.sliding_window_view(values, length, axis=0).transpose(0, 2, 1)
            view = view[~np.isnan(view).all(axis=(1, 2))]
            windows.append(view)
            sources.append(f"{station['id']} {resolution}: {len(view)}")
    if not windows:
        raise FileNotFoundError(f"No station series of {length} steps under {data_dir}/noaa; pass --data-dir.")
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
    from modeling_trace.tables import markdown_table

    rng = np.random.default_rng(args.seed)
    if args.skip_windows:
        run_large(args, args.large_dim or 384, rng)
        return
    model, model_note = load_model(args)
    model.eval()
    num_channels = model.config.num_input_channels

    if args.windows == "stations":
        all_windows, sources = cut_station_windows(args.data_dir, args.window_length, model.config.channel_names)
    else:
        all_windows, sources = cut_windows(args.data_dir, args.window_length, num_channels)
    total_windows = len(all_windows)
    num_windows = args.num_windows or total_windows
    if total_windows < num_windows:
        raise ValueError(f"Only {total_windows} windows available, fewer than --num-windows {num_windows}.")
    if num_windows == total_windows:
        corpus_windows = np.ascontiguousarray(all_windows)
    else:
        chosen = np.sort(rng.choice(total_windows, size=num_windows, replace=False))
        corpus_windows = np.ascontiguousarray(all_windows[chosen])
    del all_windows
    query_rows = rng.choice(num_windows, size=args.num_queries, replace=False)
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

    # Exact top-k with torch on the same embeddings (what the RAG model does on its device).
    from modeling_trace.modeling_rag import top_k_inner_product

    corpus_t = torch.nn.functional.normalize(torch.from_numpy(np.ascontiguousarray(corpus_emb, dtype=np.float32)), dim=-1)
    query_t = torch.nn.functional.normalize(torch.from_numpy(np.ascontiguousarray(query_emb, dtype=np.float32)), dim=-1)
    with torch.inference_mode():
        top_k_inner_product(query_t[:10], corpus_t, args.k)  # warm-up
        (_, torch_indices), torch_s = timed(top_k_inner_product, query_t, corpus_t, args.k)
    torch_recall = recall_at_k(torch_indices.numpy(), hits.indices, args.k)
    ann, ann_build_s = timed(
        TraceRetrievalIndex.from_embeddings, corpus_emb, index_factory=args.ts_factory, nprobe=args.ts_nprobe, seed=args.seed
    )
    ann_hits, ann_s = timed(ann.search, query_emb, args.k, return_rows=False)
    ann_recall = recall_at_k(ann_hits.indices, hits.indices, args.k)

    euclid, euclid_build_s = timed(EuclideanScanSearcher, corpus_windows)
    euclid_hits, euclid_s = timed(euclid.search, query_windows, args.k, return_rows=False)

    dtw_corpus = corpus_windows[: args.dtw_corpus]
    dtw = DTWSearcher(dtw_corpus)
    _, dtw_s = timed(dtw.search, query_windows[: args.dtw_queries], args.k, return_rows=False)
    dtw_pairs = args.dtw_queries * len(dtw_corpus)
    dtw_full_s = dtw_s / dtw_pairs * args.num_queries * num_windows

    n, q = num_windows, args.num_queries
    per_1k = 1000.0 / q
    rows.append((f"TRACE embeddings, FAISS IndexFlatIP (exact), d={index.dim}", f"{search_s * per_1k:.3f}", f"{1000 * search_s / q:.3f}"))
    rows.append(
        (
            f"TRACE embeddings, torch matmul + topk (exact; recall@{args.k} {torch_recall:.3f} vs FAISS exact)",
            f"{torch_s * per_1k:.3f}",
            f"{1000 * torch_s / q:.3f}",
        )
    )
    rows.append(
        (
            f"TRACE embeddings, FAISS `{args.ts_factory}` nprobe={args.ts_nprobe} (recall@{args.k} {ann_recall:.3f}, "
            f"built in {ann_build_s:.1f} s)",
            f"{ann_s * per_1k:.3f}",
            f"{1000 * ann_s / q:.3f}",
        )
    )
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
    print(f"Corpus: {n} stride-1 windows of {args.window_length} steps ({args.windows}; "
          f"{'every window' if n == total_windows else f'sampled from {total_windows}'} of "
          f"{'; '.join(sources)}); {q} queries drawn from the corpus.")
    print(f"Corpus encoding: {encode_s:.1f} s ({1000 * encode_s / n:.1f} s per 1,000 windows); index build {build_s:.2f} s. "
          f"TS->TS query found itself at rank 1: {self_first:.3f}.")
    print()
    print(f"## TS -> TS, top-{args.k}, {q} queries over {n} windows")
    print()
    print(markdown_table(["method", "seconds per 1,000 queries", "ms per query"], rows, align="-rr"))
    print()
    print(f"DTW timed on {dtw_pairs:,} pairs ({dtw_s:.2f} s) and extrapolated linearly to {q * n:,} pairs.")
    print(
        f"Speed-up over the Euclidean scan (same run): FAISS exact {euclid_s / search_s:.1f}x, torch exact "
        f"{euclid_s / torch_s:.1f}x, FAISS `{args.ts_factory}` {euclid_s / ann_s:.1f}x."
    )

    if args.skip_large:
        return
    if args.large_source == "real":
        title = (f"{n:,} real TRACE embeddings (d={index.dim}, every window of Part 1, {args.windows}), "
                 f"its {q} queries")
        ann_sweep(np.ascontiguousarray(corpus_t.numpy()), np.ascontiguousarray(query_t.numpy()), title, args)
    else:
        run_large(args, args.large_dim or index.dim, rng)


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean share of the exact top-k found (recall@k)."""
    return float(np.mean([len(set(a[:k]) & set(t[:k])) / k for a, t in zip(found, truth)]))


def search_sweep(factory: str, args) -> list[dict]:
    """The search parameters swept for one factory string (faiss ParameterSpace names)."""
    if "IVF" in factory:
        sweep = []
        for nprobe in args.nprobe:
            params = {"nprobe": nprobe}
            if "_HNSW" in factory:
                params["quantizer_efSearch"] = max(args.quantizer_ef_search, nprobe)
            if "RFlat" in factory or "Refine" in factory:
                params["k_factor_rf"] = args.k_factor_rf
            sweep.append(params)
        return sweep
    if "HNSW" in factory:
        return [{"efSearch": ef} for ef in args.ef_search]
    return [{}]


def run_large(args, dim: int, rng) -> None:
    """Part 2 over `--large-size` synthetic unit vectors around 4,096 cluster centres."""
    centres = rng.standard_normal((4096, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = clustered_unit_vectors(args.large_size, dim, centres, rng, args.cluster_spread)
    queries = clustered_unit_vectors(args.num_queries, dim, centres, rng, args.cluster_spread)
    title = f"{args.large_size:,} synthetic unit embeddings (d={dim}, 4,096 clusters, spread {args.cluster_spread})"
    ann_sweep(vectors, queries, title, args)


def ann_sweep(vectors: np.ndarray, queries: np.ndarray, title: str, args) -> None:
    """Build every `--large-factories` index over unit `vectors`, sweep its search parameters, print recall@k against
    the exact top-k and ms per query, and the fastest configuration meeting the targets."""
    import faiss
    import torch

    from modeling_trace.modeling_rag import top_k_inner_product
    from modeling_trace.retrieval import TraceRetrievalIndex
    from modeling_trace.tables import markdown_table

    q, dim = len(queries), vectors.shape[1]
    with torch.inference_mode():
        (_, truth), exact_s = timed(top_k_inner_product, torch.from_numpy(queries), torch.from_numpy(vectors), args.k)
    truth = truth.numpy()
    table = [("exact: torch matmul + topk", "-", "-", 1.0, 1000 * exact_s / q)]
    if args.time_flat_exact:
        exact = faiss.IndexFlatIP(dim)
        exact.add(vectors)
        (_, flat_truth), flat_s = timed(exact.search, queries, args.k)
        del exact
        table.append(("exact: FAISS IndexFlatIP", "-", "-", recall_at_k(flat_truth, truth, args.k), 1000 * flat_s / q))
    for factory in args.large_factories:
        large, build_s = timed(
            TraceRetrievalIndex.from_embeddings, vectors, index_factory=factory, train_size=args.large_train_size, seed=args.seed
        )
        faiss_index = large.indexes["time_series"]
        for params in search_sweep(factory, args):
            for name, value in params.items():
                faiss.ParameterSpace().set_index_parameter(faiss_index, name, value)
            found, s = timed(large.search, queries, args.k, return_rows=False)
            label = ", ".join(f"{name}={value}" for name, value in params.items()) or "-"
            table.append((factory, label, f"{build_s:.1f}", recall_at_k(found.indices, truth, args.k), 1000 * s / q))
        del large, faiss_index

    print()
    print(
        f"## {title}, {q} queries, top-{args.k}, faiss threads {faiss.omp_get_max_threads()}, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print()
    print(f"Trainable indexes are trained on {args.large_train_size:,} of the vectors; build = train + add, through "
          "`TraceRetrievalIndex.from_embeddings`.")
    print()
    header = ["index", "search parameters", "build (s)", "recall@10 vs exact", "ms per query"]
    print(markdown_table(header, table, align="--rrr", float_format=".3f"))
    eligible = [row for row in table[1:] if row[2] != "-" and row[3] >= args.target_recall and row[4] <= args.target_ms]
    print()
    if eligible:
        factory, label, build, recall, ms = min(eligible, key=lambda row: row[4])
        print(
            f"Chosen (fastest with recall@10 >= {args.target_recall} at <= {args.target_ms} ms/query): `{factory}` with "
            f"{label}: recall@10 {recall:.3f}, {ms:.3f} ms/query, built in {build} s."
        )
    else:
        print(f"No configuration reached recall@10 >= {args.target_recall} at <= {args.target_ms} ms/query.")


if __name__ == "__main__":
    main()
