"""Paper Table 11: TS -> TS retrieval, label-matching P@1 / P@5 / MRR@10 and seconds per 1,000 queries.

    python -m benchmarks.table2_ts_to_ts_retrieval [--corpus noaa timemmd] [--dtw-queries N] [--full]

Queries and corpus = the test split; each query is left out of its own results. TRACE uses the encoders of Table 1
(same cache; trained here when missing). Euclidean = `EuclideanScanSearcher`, DTW = `DTWSearcher` (dtaidistance,
dependent multivariate DTW), both on z-normalised windows left-padded to the encoder context. SAX runs only when
`tslearn` is importable. Writes `benchmarks/results/table2_ts_to_ts_retrieval.{md,csv}`.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks import harness

KEYS = ("label_precision@1", "label_precision@5", "label_mrr@10")


def score_hits(hits_ids, query_ids, labels_by_id, label_counts) -> dict:
    """Label matching as `RetrievalEvaluator` computes it for TS -> TS (query excluded, R = count - 1)."""
    from modeling_trace.metrics import retrieval_metrics

    query_labels = [labels_by_id[q] for q in query_ids]
    return retrieval_metrics(
        hits_ids,
        retrieved_labels=[[labels_by_id[i] for i in row if i is not None] for row in hits_ids],
        query_labels=query_labels,
        label_num_relevant=[label_counts[label] - 1 for label in query_labels],
    )


def raw_searcher_scores(searcher, windows, query_rows, ids, labels_by_id, label_counts) -> tuple[dict, float]:
    start = time.perf_counter()
    hits = searcher.search(windows[query_rows], k=10, exclude=[[ids[i]] for i in query_rows], return_rows=False)
    seconds = time.perf_counter() - start
    return score_hits(hits.ids, [ids[i] for i in query_rows], labels_by_id, label_counts), 1000.0 * seconds / len(query_rows)


def sax_searcher(windows, corpus):
    """SAX (tslearn) + its MINDIST as a `_RawWindowSearcher`, or a reason string when tslearn is missing."""
    try:
        from tslearn.piecewise import SymbolicAggregateApproximation
    except ImportError:
        return None
    from modeling_trace.retrieval import EuclideanScanSearcher

    class SaxSearcher(EuclideanScanSearcher):
        def __init__(self, windows, corpus):
            super().__init__(windows, corpus)
            length = windows.shape[1]
            self.sax = SymbolicAggregateApproximation(n_segments=max(1, length // 6), alphabet_size_avg=8)
            self.codes = self.sax.fit_transform(np.nan_to_num(windows[..., 0]))

        def _scores(self, queries):
            q = self.sax.transform(np.nan_to_num(queries[..., 0]))
            return -np.array([[self.sax.distance_sax(a, b) for b in self.codes] for a in q])

    return SaxSearcher(windows, corpus)


def main(argv=None):
    parser = harness.common_arguments(__doc__.split("\n")[0])
    parser.add_argument("--corpus", nargs="+", choices=sorted(harness.CORPORA), default=["noaa", "timemmd"])
    parser.add_argument("--dtw-queries", type=int, default=None, help="DTW on the first N queries only (default: all)")
    args = parser.parse_args(argv)
    budget = harness.budget_from_args(args)
    from modeling_trace.retrieval import DTWSearcher, EuclideanScanSearcher, RetrievalEvaluator, TraceRetrievalIndex

    rows, notes = [], []
    sax_note = None
    for corpus in args.corpus:
        spec = harness.CORPORA[corpus]
        dataset_dict = spec["load"](args.cache_dir)
        train, test = dataset_dict["train"], dataset_dict["test"]
        leakage = harness.assert_no_temporal_leakage(train, test)
        ids = list(test["id"])
        labels_by_id = dict(zip(ids, test["label"]))
        label_counts = {label: list(test["label"]).count(label) for label in set(test["label"])}
        # Raw-window baselines compare equal-length windows: the most recent `shortest` steps of each. Padding the
        # 36-step Time-MMD windows to 96 would put zeros (after z-normalisation) against real values and make any
        # short window the nearest neighbour of a long one.
        shortest = min(len(v) for v in test["past_values"])
        windows = harness.pad_windows(test, shortest)
        all_rows = np.arange(len(test))

        trace_scores, trace_search, trace_encode = [], [], []
        for seed in budget.seeds:
            model, _, _ = harness.train_encoder(corpus, train, harness.VARIANTS["trace"], seed, budget, spec["overrides"], args.cache_dir, spec.get("batch_size"))
            index = TraceRetrievalIndex.build(test, model, show_progress_bar=False, text_column=None)
            result = RetrievalEvaluator(test, modes=("ts_to_ts",))(index, model)
            trace_scores.append({k: result[f"ts_to_ts_{k}"] for k in KEYS})
            trace_search.append(result["ts_to_ts_seconds_per_1k_queries"])
            trace_encode.append(result["time_series_encode_seconds_per_1k_queries"])
        rows.append([corpus, "TRACE (FAISS exact, cosine)", *[harness.mean_std([s[k] for s in trace_scores]) for k in KEYS],
                     f"{np.mean(trace_search):.4f} search + {np.mean(trace_encode):.3f} encoding", f"all {len(test)}"])

        euclid, euclid_seconds = raw_searcher_scores(EuclideanScanSearcher(windows, test), windows, all_rows, ids, labels_by_id, label_counts)
        rows.append([corpus, "Euclidean (z-normalised scan)", *[f"{euclid[k]:.3f}" for k in KEYS], f"{euclid_seconds:.4f}", f"all {len(test)}"])

        dtw_rows = all_rows if args.dtw_queries is None else all_rows[: args.dtw_queries]
        dtw, dtw_seconds = raw_searcher_scores(DTWSearcher(windows, test), windows, dtw_rows, ids, labels_by_id, label_counts)
        rows.append([corpus, "DTW (dtaidistance, unconstrained)", *[f"{dtw[k]:.3f}" for k in KEYS], f"{dtw_seconds:.2f}",
                     f"{len(dtw_rows)} of {len(test)}" + (" (subset)" if len(dtw_rows) < len(test) else "")])

        sax = sax_searcher(windows, test) if windows.shape[2] == 1 else None
        if sax is not None:
            scores, seconds = raw_searcher_scores(sax, windows, all_rows, ids, labels_by_id, label_counts)
            rows.append([corpus, "SAX (tslearn, MINDIST)", *[f"{scores[k]:.3f}" for k in KEYS], f"{seconds:.4f}", f"all {len(test)}"])
        else:
            sax_note = (
                "SAX skipped: `tslearn` offers it (0.10.0 on PyPI, checked with `pip index versions`), but "
                "neither it nor `pyts` is installed in the project environment and the shared environment was not changed for this "
                "benchmark (tslearn pulls scikit-learn and numba); the script runs SAX on univariate corpora when "
                "`tslearn` is importable"
            )
        notes.append(f"`{corpus}`: raw-window baselines use the last {shortest} steps of every window (TRACE its whole window, left-padded to its context)")
        notes.append(f"`{corpus}`: {harness.describe_corpus(corpus, dataset_dict)}; leakage check passed ({leakage['test_windows']} test windows after {leakage['train_windows']} train windows)")
    notes.append(
        "seconds per 1,000 queries: time of the search over the test-split corpus divided by the number of queries, "
        "x1000 (corpus sizes 113 and 484, so absolute numbers are small; DTW grows with corpus size x length²); all "
        "queries were run for every method (no extrapolation needed at these sizes); TRACE search excludes query "
        "encoding, shown separately"
    )
    if sax_note:
        notes.append(sax_note)
    harness.write_table(
        "table2_ts_to_ts_retrieval",
        "Table 11 — TS→TS retrieval by label (test split, query left out)",
        [budget.describe() + f"; TRACE mean ± std over {len(budget.seeds)} seeds (the Table 1 encoders)", *notes, harness.environment_line()],
        ["corpus", "method", "P@1", "P@5", "MRR@10", "seconds per 1k queries", "queries"],
        rows,
        results_dir=args.results_dir,
    )


if __name__ == "__main__":
    main()
