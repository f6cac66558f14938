"""Paper Table 1: cross-modal retrieval (Text -> TS, TS -> Text), label and modality matching P@1, P@5, MRR@10.

    python -m benchmarks.table1_cross_modal_retrieval                  # reduced CPU budget, both corpora
    python -m benchmarks.table1_cross_modal_retrieval --corpus noaa    # one corpus
    python -m benchmarks.table1_cross_modal_retrieval --full           # paper-sized encoder and training

Every encoder is pretrained (masked reconstruction) and aligned (dual-level contrastive loss) on the same training
split by the library loops; only the variant switches differ. Corpus and queries = the test split; the paired item
of a query is its own row's other modality. Writes `benchmarks/results/table1_cross_modal_retrieval.{md,csv}`.
"""

from __future__ import annotations

import json

import numpy as np

from benchmarks import harness

METHODS = ("trace", "mean_pooled", "no_hard_negatives")
DIRECTIONS = {"text_to_ts": "Text→TS", "ts_to_text": "TS→Text"}
# the held-out curves printed as convergence evidence: (stage, logged key, which end is better)
CURVES = (("pretrain", "loss", "min"), ("align", "loss", "min"), ("align", "ts_to_text_mrr@10", "max"),
          ("align", "text_to_ts_mrr@10", "max"))
KEYS = ("label_precision@1", "label_precision@5", "label_mrr@10", "modality_precision@1", "modality_precision@5", "modality_mrr@10")


def embed_test_split(model, test, sentence_embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(time-series, text)` embeddings of the test rows: series encoded by `model`, texts = the frozen tower's
    sentence embeddings projected by `model` (what `encode_text` computes)."""
    import torch

    series = [np.asarray(v, dtype=np.float32) for v in test["past_values"]]
    ts = model.encode_time_series(series, batch_size=128, show_progress_bar=False)
    with torch.no_grad():
        text = model.project_text(torch.from_numpy(sentence_embeddings)).float().numpy()
    return ts, text


def score_embeddings(ts: np.ndarray, text: np.ndarray, test, modes=tuple(DIRECTIONS)) -> dict:
    """Index `test`'s rows with their embeddings and score them with `RetrievalEvaluator` (the queries are the
    indexed rows, so no model is needed)."""
    from modeling_trace.retrieval import RetrievalEvaluator, TraceRetrievalIndex

    index = TraceRetrievalIndex.from_embeddings(ts, text, corpus=test.select_columns(["id", "label"]))
    return RetrievalEvaluator(modes=modes)(index)


def evaluate_encoder(model, test, sentence_embeddings: np.ndarray, modes=tuple(DIRECTIONS)) -> dict:
    """Embed the test split with `model` (`embed_test_split`) and score it (`score_embeddings`)."""
    return score_embeddings(*embed_test_split(model, test, sentence_embeddings), test, modes)


def evaluate_random(test, seed: int, dim: int = 64, modes=tuple(DIRECTIONS)) -> dict:
    """Chance level: random unit embeddings for both modalities, scored by the same evaluator."""
    rng = np.random.default_rng(seed)
    ts = rng.standard_normal((len(test), dim)).astype(np.float32)
    text = rng.standard_normal((len(test), dim)).astype(np.float32)
    return score_embeddings(ts, text, test, modes)


def within_label_modality(ts: np.ndarray, text: np.ndarray, test, seed: int) -> dict:
    """`{label name: {"rows": n, direction: (TRACE, random)}}`: modality MRR@10 when corpus and queries are the test
    rows of one label only (their rows of the test split's embeddings `ts` / `text`): whether an encoder finds a
    window's own text among windows of its own kind, or only tells the kinds apart (the all-rows modality MRR@10
    rises above random by either)."""
    labels = np.asarray(test["label"])
    names = test.features["label"].names
    out = {}
    for label in sorted(set(labels.tolist())):
        rows = np.flatnonzero(labels == label)
        if len(rows) < 2:
            continue
        subset = test.select(rows)
        trace = score_embeddings(ts[rows], text[rows], subset)
        random = evaluate_random(subset, seed)
        out[names[label]] = {"rows": len(rows)} | {
            mode: (trace[f"{mode}_modality_mrr@10"], random[f"{mode}_modality_mrr@10"]) for mode in DIRECTIONS
        }
    return out


def run_corpus(
    corpus: str, budget, cache_dir, methods=METHODS, modes=tuple(DIRECTIONS), encoder_overrides: dict | None = None
) -> tuple[dict, dict, dict]:
    """`({method: [metrics per seed]}, {method: [train seconds]}, {method: [held-out curves per seed]}, leakage
    summary, {seed: TRACE's within-label modality scores})` for one corpus; `encoder_overrides`: TraceConfig fields
    on top of the corpus' for every encoder (cached apart)."""
    spec = harness.CORPORA[corpus]
    overrides = {**spec["overrides"], **(encoder_overrides or {})}
    dataset_dict = spec["load"](cache_dir)
    train, test = dataset_dict["train"], dataset_dict["test"]
    leakage = harness.assert_no_temporal_leakage(train, test)
    pretrain_corpus = spec.get("pretrain_corpus")
    if pretrain_corpus is not None:  # stage 1 is shared with that corpus: it must see exactly these windows
        shared = harness.CORPORA[pretrain_corpus]["load"](cache_dir)["train"]
        length = max(len(v) for v in train["past_values"])
        same = shared["id"] == train["id"] and np.array_equal(
            harness.pad_windows(shared, length), harness.pad_windows(train, length), equal_nan=True
        )
        if not same:
            raise ValueError(f"`{corpus}` shares stage 1 with `{pretrain_corpus}`, whose training windows differ.")
        pretrain_corpus = harness.encoder_cache_name(pretrain_corpus, encoder_overrides)
    scores = {"random": [evaluate_random(test, seed, modes=modes) for seed in budget.seeds]}
    sentence_embeddings = None
    seconds, curves, within = {}, {}, {}
    for name in methods:
        variant = harness.VARIANTS[name]
        for seed in budget.seeds:
            model, final, took = harness.train_encoder(
                harness.encoder_cache_name(corpus, encoder_overrides), train, variant, seed, budget, overrides,
                cache_dir, spec.get("batch_size"),
                eval_dataset=dataset_dict.get("validation"), pretrain_corpus=pretrain_corpus,
            )  # fmt: skip
            curves.setdefault(name, []).append(harness.held_out_curve(final))
            if sentence_embeddings is None:  # the tower is frozen and shared: encode the test texts once
                sentence_embeddings = harness.sentence_embeddings(model, test, f"{corpus}_test", cache_dir)
            ts, text = embed_test_split(model, test, sentence_embeddings)
            scores.setdefault(name, []).append(score_embeddings(ts, text, test, modes))
            if name == "trace":
                within[seed] = within_label_modality(ts, text, test, seed)
            seconds.setdefault(name, []).append(took)
            print(f"[{corpus}] {name} seed {seed}: trained in {took:.0f} s (0 = cached)", flush=True)
    return scores, seconds, curves, leakage, within


def method_label(name: str) -> str:
    return "Random embeddings" if name == "random" else harness.VARIANTS[name].label


def main(argv=None):
    parser = harness.common_arguments(__doc__.split("\n")[0])
    parser.add_argument("--corpus", nargs="+", choices=sorted(harness.CORPORA), default=["noaa", "timemmd"])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="encoders to train and score")
    harness.encoder_overrides_argument(parser)
    args = parser.parse_args(argv)
    budget = harness.budget_from_args(args)
    clock = harness.RunClock("benchmarks.table1_cross_modal_retrieval", argv)
    rows, notes, within_rows = [], [], []
    if args.encoder_overrides:
        notes.append(f"every encoder with {json.dumps(args.encoder_overrides)} on top of the corpus settings")
    for corpus in args.corpus:
        scores, seconds, curves, leakage, within = run_corpus(
            corpus, budget, args.cache_dir, args.methods, encoder_overrides=args.encoder_overrides
        )
        for label in next(iter(within.values()), {}):
            for mode, direction in DIRECTIONS.items():
                per_seed = [w[label][mode] for w in within.values()]
                within_rows.append([
                    corpus, label, next(iter(within.values()))[label]["rows"], direction,
                    harness.mean_std([p[0] for p in per_seed]), harness.mean_std([p[1] for p in per_seed]),
                ])  # fmt: skip
        notes.append(
            f"`{corpus}`: {harness.describe_corpus(corpus, harness.CORPORA[corpus]['load'](args.cache_dir))}; leakage check passed ({leakage['train_windows']} train / "
            f"{leakage['test_windows']} test windows, {leakage['groups']} series: test strictly after train, no overlap)"
            + (f"; batch {spec_batch} for this corpus" if (spec_batch := harness.CORPORA[corpus].get("batch_size")) else "")
        )
        for name in ("random", *args.methods):
            for mode, direction in DIRECTIONS.items():
                rows.append([corpus, method_label(name), direction, *[harness.mean_std([s[f"{mode}_{k}"] for s in scores[name]]) for k in KEYS]])
        trained = {n: v for n, v in seconds.items() if any(v)}
        if trained:
            notes.append(f"`{corpus}` training seconds per encoder (pretrain + align, this run): " + ", ".join(
                f"{n} {np.mean(v):.0f}" for n, v in trained.items()))
        for name, per_seed in curves.items():
            for stage, key, best in CURVES:
                described = [harness.describe_curve(c[stage], key, best) for c in per_seed if stage in c]
                if any(d != "—" for d in described):
                    notes.append(f"`{corpus}` {name} held-out {stage} {key} (validation split), per seed: " + "; ".join(described))
    header = ["corpus", "method", "direction", "label P@1", "label P@5", "label MRR@10", "modality P@1", "modality P@5", "modality MRR@10"]
    harness.write_table(
        "table1_cross_modal_retrieval",
        "Table 1 — cross-modal retrieval (test split as corpus and queries)",
        [
            clock.line(),
            budget.describe() + f"; mean ± std over {len(budget.seeds)} seeds",
            *notes,
            "label matching: a retrieved item is relevant when its label equals the query's; modality matching: "
            "only the query's own pair is relevant (MRR@10 = 0 when it is not in the top 10)",
            harness.environment_line(),
        ],
        header,
        rows,
        extra_sections=[(
            "TRACE modality MRR@10 within one label (corpus and queries: the test rows of that label)",
            ["corpus", "label", "rows", "direction", "TRACE", "random embeddings"],
            within_rows,
        )],
        results_dir=args.results_dir,
    )


if __name__ == "__main__":
    main()
