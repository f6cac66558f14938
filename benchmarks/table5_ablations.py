"""Paper Table 5: ablations — CbA vs full vs causal attention, with vs without CIT, hard negatives K=32 vs all —
on cross-modal retrieval MRR@10 (Time-MMD retrieval corpus) and one forecasting task (Health_US, H=12, linear probe).

    python -m benchmarks.table5_ablations [--corpus timemmd|noaa] [--full]

Every variant is pretrained and aligned exactly as TRACE (same data, steps, seeds; encoders shared with Tables 1-4
through the cache); only the switch in the row name differs. Writes `benchmarks/results/table5_ablations.{md,csv}`.
"""

from __future__ import annotations

from benchmarks import harness
from benchmarks.table1_cross_modal_retrieval import evaluate_encoder
from benchmarks.table3_forecasting import run_task

ABLATIONS = ("trace", "full_attention", "causal_attention", "no_cit", "no_hard_negatives")
FORECAST_TASK = ("Health_US", 12)
KEYS = ("text_to_ts_label_mrr@10", "ts_to_text_label_mrr@10", "text_to_ts_modality_mrr@10", "ts_to_text_modality_mrr@10")


def main(argv=None):
    parser = harness.common_arguments(__doc__.split("\n")[0])
    parser.add_argument("--corpus", choices=sorted(harness.CORPORA), default="timemmd")
    args = parser.parse_args(argv)
    budget = harness.budget_from_args(args)
    spec = harness.CORPORA[args.corpus]
    dataset_dict = spec["load"](args.cache_dir)
    train, test = dataset_dict["train"], dataset_dict["test"]
    harness.assert_no_temporal_leakage(train, test)
    clock = harness.RunClock("benchmarks.table5_ablations", argv)
    rows, per_variant = [], {}
    for name in ABLATIONS:
        variant = harness.VARIANTS[name]
        scores, forecast = [], None
        for seed in budget.seeds:
            model, encoder_dir, took = harness.train_encoder(
                args.corpus, train, variant, seed, budget, spec["overrides"], args.cache_dir, spec.get("batch_size"),
                eval_dataset=dataset_dict.get("validation"),
            )  # fmt: skip
            sentences = harness.sentence_embeddings(model, test, f"{args.corpus}_test", args.cache_dir)
            scores.append(evaluate_encoder(model, test, sentences))
            print(f"[{name}] seed {seed}: trained in {took:.0f} s (0 = cached)", flush=True)
            if seed == budget.seeds[0] and args.corpus == "timemmd":
                forecast = run_task(*FORECAST_TASK, budget, args.cache_dir, encoder_dir, methods=("trace_lp",))[0]["trace_lp"]
        per_variant[name] = scores
        rows.append([
            variant.label,
            variant.attention_type,
            "yes" if variant.use_channel_identity_tokens else "no",
            "all" if variant.num_hard_negatives is None else variant.num_hard_negatives,
            *[harness.mean_ci([s[key] for s in scores]) for key in KEYS],
            "n/a" if forecast is None else f"{forecast['mse']:.3f}",
        ])
    # the direction of each switch: per-seed differences variant − TRACE (same seed, same data), with their CI
    delta_rows = [
        [harness.VARIANTS[name].label, *[
            harness.mean_ci([v[key] - t[key] for v, t in zip(per_variant[name], per_variant["trace"])]) for key in KEYS
        ]]
        for name in ABLATIONS if name != "trace"
    ]  # fmt: skip
    harness.write_table(
        "table5_ablations",
        "Table 5 — ablations: retrieval MRR@10 and forecasting MSE",
        [
            clock.line(),
            f"{budget.describe()}; retrieval: mean [95 % Student-t interval] over {len(budget.seeds)} seeds; forecasting: linear probe of the "
            f"seed-{budget.seeds[0]} encoder on Time-MMD {FORECAST_TASK[0]} H={FORECAST_TASK[1]} (standardised MSE, one run)",
            f"retrieval corpus `{args.corpus}`: {harness.describe_corpus(args.corpus, dataset_dict)}; leakage check passed",
            harness.environment_line(),
        ],
        ["variant", "attention", "CIT", "hard negatives K", "Text→TS label MRR", "TS→Text label MRR",
         "Text→TS modality MRR", "TS→Text modality MRR", f"{FORECAST_TASK[0]}-{FORECAST_TASK[1]} MSE (LP)"],
        rows,
        extra_sections=[(
            "Differences to TRACE (variant − TRACE, paired by seed; mean [95 % interval])",
            ["variant", "Text→TS label MRR", "TS→Text label MRR", "Text→TS modality MRR", "TS→Text modality MRR"],
            delta_rows,
        )],
        results_dir=args.results_dir,
    )  # fmt: skip


if __name__ == "__main__":
    main()
