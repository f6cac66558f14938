"""Classification on the shipped UCR/UEA sets: 1-NN ED / DTW (archive conventions), TRACE+SVM, linear probe, LoRA.

    python -m benchmarks.table4_classification [--datasets GunPoint ...] [--parts 1nn svm finetune] [--full]

1-NN: `benchmarks.classification.one_nn_results`, the library's `EuclideanScanSearcher` / `DTWSearcher` (full
window) with k=1 over the training split, under the convention that reproduces the archive's published figure
(shown beside it; see `benchmarks/classification.py`), plus the other conventions in a second table.
TRACE: an encoder pretrained by masked reconstruction (library stage-1 loop) on the set's training split only, one
per seed; then (a) TRACE+SVM: its frozen features (`frozen_embeddings`: per layer and channel the mean of the observed
patch tokens, plus each channel's RevIN mean and log standard deviation; the model's own padding/truncation) -> the
TS2Vec/MOMENT SVM protocol (`classification.svm_protocol`: RBF SVC, C by 5-fold CV on the training split); with
`--pretrain-steps-grid`, the pretraining length is chosen per set and seed by that SVM's fold accuracy on the
training split (on sets too small to search C, the hard-margin SVM's), and the table also gives the majority vote
of one SVM per candidate encoder and feature set (`classification.svm_vote`, ties by summed decision score), which
chooses nothing, and the vote of the k best-ranked candidates with k chosen by the vote's out-of-fold accuracy on the
training split (`classification.train_chosen_vote`); (b) tuned with the library's
Trainer/PEFT code (`linear_probe`: classifier only; `lora`: r=8 on q/k/v/o + classifier). Mean ± std over the
budget's seeds. Series are loaded at their own lengths (`load_ucr(pad=False)`); no NaN padding enters a distance.
UCR/UEA splits are the archive's fixed train/test sets of separate series (no timestamps), so the benchmark asserts
that no id is in both splits; the chronological check does not apply. Writes
`benchmarks/results/table4_classification.{md,csv}`.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import torch

from benchmarks import classification, harness
from modeling_trace.modeling_trace import observed_patch_mean

DATASETS = ("GunPoint", "ItalyPowerDemand", "BasicMotions", "PickupGestureWiimoteZ")
PARTS = ("1nn", "svm", "finetune")
# With several candidate feature sets (--pretrain-steps-grid / --segments-grid / --broad-encoder): the majority vote
# of one SVM per candidate (`classification.svm_vote`), beside the one candidate chosen by its fold accuracy.
VOTE = "TRACE+SVM, vote of all candidates"
# The vote of the k best candidates by CV accuracy, k chosen by the vote's out-of-fold accuracy on the training split
# (`classification.train_chosen_vote`): k = 1 is the chosen candidate, k = all the vote of all.
TOP_VOTE = "TRACE+SVM, vote of the k best (k chosen on train)"


def pretrain_encoder(name, train, budget, length, channels, cache_dir, seed=0) -> Path:
    from trace_training import PretrainRecipe
    from trace_training.loops import run_pretraining

    out = cache_dir / "ucr_encoders" / name / budget.model / f"p{budget.pretrain_steps}" / f"seed{seed}"
    if not (out / "final" / "config.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        recipe = PretrainRecipe(
            model=budget.model,
            model_overrides={"num_input_channels": channels, "channel_names": None, "context_length": length},
            output_dir=str(out),
            seed=seed,
            max_steps=budget.pretrain_steps,
            global_batch_size=min(32, len(train)),
            learning_rate=1e-3,
            mixed_precision="no",
            report_to="none",
            logging_steps=50,
            save_steps=None,
        ).validate()
        with harness._silenced():
            run_pretraining(recipe, train)
    return out / "final"


def tune(encoder_dir, mode, train, test, budget, num_labels, cache_dir, name, seed=0) -> float:
    from modeling_trace.metrics import classification_metrics
    from trace_training import FinetuneRecipe
    from trace_training.finetuning import apply_finetune_mode, build_finetune_model, build_trainer, predict

    recipe = FinetuneRecipe(
        task="classification",
        mode=mode,
        model=str(encoder_dir),
        model_overrides={"dropout": 0.0},
        output_dir=str(cache_dir / "ucr_finetune" / name / mode / f"seed{seed}"),
        seed=seed,
        max_steps=budget.finetune_steps,
        global_batch_size=min(16, len(train)),
        learning_rate=3e-3,
        weight_decay=0.01,
        warmup_ratio=0.1,
        logging_steps=10_000,
        mixed_precision="no",
        report_to="none",
        lora_r=8,
        lora_alpha=16,
    ).validate()
    torch.manual_seed(seed)
    model = build_finetune_model(recipe, num_labels=num_labels, id2label={i: str(i) for i in range(num_labels)})
    model = apply_finetune_mode(model, "classification", mode, recipe.lora_r, recipe.lora_alpha, recipe.lora_dropout)
    with harness._silenced():
        trainer = build_trainer(recipe, model, train)
        trainer.train()
    logits = predict(trainer.model, test, "classification")
    return classification_metrics(logits.argmax(-1).tolist(), list(test["label"]))["accuracy"]


def segment_patch_means(patch_states: torch.Tensor, patch_observed_mask: torch.Tensor, segments: int) -> torch.Tensor:
    """`(batch, channels, segments, d)`: the mean of each channel's observed patch tokens in each of `segments` equal
    runs of its observed patches, in time order (a series' own extent is cut into equal parts, so series of different
    lengths get comparable segments). A segment with no patch (a series with fewer observed patches than segments, or
    none) takes the channel's mean over all its observed patches (0 when there is none)."""
    mask = patch_observed_mask.to(patch_states.dtype)  # (B, C, N)
    count = mask.sum(-1, keepdim=True)  # (B, C, 1)
    rank = mask.cumsum(-1) - 1.0  # the patch's place among its channel's observed patches
    segment = torch.div(rank * segments, count.clamp(min=1.0), rounding_mode="floor").clamp(0, segments - 1).long()
    weights = torch.nn.functional.one_hot(segment, segments).to(patch_states.dtype) * mask[..., None]  # (B, C, N, S)
    sums = torch.einsum("bcns,bcnd->bcsd", weights, patch_states)
    sizes = weights.sum(2)[..., None]  # (B, C, S, 1)
    overall = observed_patch_mean(patch_states, patch_observed_mask, 2)[:, :, None]
    return torch.where(sizes > 0, sums / sizes.clamp(min=1.0), overall)


def frozen_embeddings(encoder_dir, series, batch_size: int = 64, segments: int = 1) -> np.ndarray:
    """[`frozen_feature_sets`] for one `segments` value."""
    return frozen_feature_sets(encoder_dir, series, (segments,), batch_size)[segments]


def frozen_feature_sets(encoder_dir, series, segments_grid=(1,), batch_size: int = 64) -> dict[int, np.ndarray]:
    """`{segments: features}` for every value of `segments_grid`, from one pass of the encoder over `series`.

    Frozen features of the pretrained encoder for the SVM, one vector per series (the same rule for every set):

    - for each layer's output and each channel, the mean of that channel's observed patch tokens (masked
      reconstruction trains the patch tokens only, not [CLS]/CIT: the MOMENT / PatchTST frozen-embedding
      convention; every layer, since the last one is shaped by the reconstruction head); with `segments` > 1, also
      the means over `segments` equal runs of the observed patches in time order ([`segment_patch_means`]: where in
      the series a shape occurs, which one mean over the whole series drops);
    - each channel's RevIN statistics, the mean and log standard deviation of its observed values, which the
      encoder divides out (they carry the amplitude of accelerometer channels, and are ~constant on z-normalised
      univariate sets).

    Series enter at their own lengths through the model's own padding/truncation (`pad_or_truncate_series`: the
    last `context_length` steps, shorter ones left-padded as unobserved); no NaN reaches the features. A
    channel-independent encoder (`num_input_channels == 1`, the broad encoder) embeds a multichannel series channel
    by channel and puts the channels' features side by side."""
    from transformers.utils import logging as transformers_logging

    from modeling_trace import TraceTimeSeriesModel
    from modeling_trace.modeling_trace import pad_or_truncate_series, split_token_states

    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # the load report lists the reconstruction head, unused here
    try:
        model = TraceTimeSeriesModel.from_pretrained(encoder_dir)
    finally:
        transformers_logging.set_verbosity(verbosity)
    model.eval()
    config = model.config
    num_series, channels = len(series), (series[0].shape[1] if len(series) else 1)
    if config.num_input_channels == 1 and channels > 1:
        # a channel-independent encoder (one input channel): every channel is embedded on its own, and a series'
        # features are its channels' features side by side (the reshape at the end)
        series = [s[:, [c]] for s in series for c in range(channels)]
    values, observed = pad_or_truncate_series(series, config.context_length, config.num_input_channels, dtype=np.float64)
    chunks = {segments: [] for segments in segments_grid}
    with torch.no_grad():
        for start in range(0, len(values), batch_size):
            out = model(
                torch.from_numpy(values[start : start + batch_size]),
                torch.from_numpy(observed[start : start + batch_size]),
                output_hidden_states=True,
                return_dict=True,
            )
            layers = [
                split_token_states(hidden, config.num_input_channels, config.use_channel_identity_tokens)[1]
                for hidden in out.hidden_states[1:]
            ]
            for segments, parts in chunks.items():
                features = []
                for patches in layers:
                    features.append(observed_patch_mean(patches, out.patch_observed_mask, 2).flatten(1))
                    if segments > 1:
                        features.append(segment_patch_means(patches, out.patch_observed_mask, segments).flatten(1))
                features += [out.loc[:, 0], torch.log(out.scale[:, 0])]
                parts.append(torch.cat(features, dim=-1).float())
    return {segments: torch.cat(parts).numpy().reshape(num_series, -1) for segments, parts in chunks.items()}


def trace_svm(
    encoder_dir, train_series, test_series, train_labels, test_labels, seed, segments_grid=(1,), cv_repeats: int = 1
) -> dict[int, dict]:
    """`{segments: svm_protocol result}` for every value of `segments_grid` (the encoder runs once per split)."""
    train = frozen_feature_sets(encoder_dir, train_series, segments_grid)
    test = frozen_feature_sets(encoder_dir, test_series, segments_grid)
    return {
        segments: classification.svm_protocol(
            train[segments], train_labels, test[segments], test_labels, seed=seed, cv_repeats=cv_repeats
        )
        for segments in segments_grid
    }


def _budget(args):
    budget = harness.budget_from_args(args)
    changes = {}
    if args.pretrain_steps is not None:
        changes["pretrain_steps"] = args.pretrain_steps
    if args.finetune_steps is not None:
        changes["finetune_steps"] = args.finetune_steps
    if args.model is not None:
        changes["model"] = args.model
    if args.pretrain_steps_grid:
        changes["pretrain_steps"] = max(args.pretrain_steps_grid)  # the longest candidate (the chosen one per seed: table)
    return dataclasses.replace(budget, **changes) if changes else budget


def main(argv=None):
    parser = harness.common_arguments(__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="which rows to compute")
    parser.add_argument("--pretrain-steps", type=int, default=None, help="override the budget's pretraining steps")
    parser.add_argument("--finetune-steps", type=int, default=None, help="override the budget's tuning steps")
    parser.add_argument("--model", default=None, help="override the budget's encoder preset (e.g. trace-mini)")
    parser.add_argument(
        "--pretrain-steps-grid", type=int, nargs="+", default=None, metavar="STEPS",
        help="pretrain one encoder per value and keep, per set and seed, the one whose SVM cross-validates best on the "
        "training split (ties: fewer steps); replaces --pretrain-steps for the TRACE rows",
    )  # fmt: skip
    parser.add_argument(
        "--segments-grid", type=int, nargs="+", default=[1], metavar="S",
        help="TRACE+SVM features: the whole-series patch means alone (1) or also the means over S equal runs of the "
        "observed patches; several values are chosen between per set and seed with --pretrain-steps-grid (the first "
        "value is used without it)",
    )  # fmt: skip
    parser.add_argument(
        "--cv-repeats", type=int, default=5,
        help="with --pretrain-steps-grid: the candidates are compared by their SVM's fold accuracy averaged over this "
        "many shufflings of the 5 folds (C is still chosen by one 5-fold search)",
    )  # fmt: skip
    parser.add_argument(
        "--broad-encoder", action="store_true",
        help="also offer, per set and seed, the channel-independent encoder pretrained on the broad corpus "
        "(`configuration/recipes/pretrain-broad.yaml`, one per seed, cached) to the choice on the training split; "
        "adds rows for each encoder kind alone",
    )  # fmt: skip
    parser.add_argument("--broad-steps", type=int, default=None, help="the broad encoder's pretraining steps (default: the recipe's)")
    parser.add_argument("--data-dir", type=Path, default=None, help="folder holding ucr/ (default: shared data)")
    args = parser.parse_args(argv)
    budget = _budget(args)
    clock = harness.RunClock("benchmarks.table4_classification", argv)
    from trace_datasets.ucr import describe_lengths, load_ucr

    rows, variant_rows, svm_rows, sizes, mismatches = [], [], [], [], []
    broad_notes = {}  # seed -> the broad encoder's held-out curve
    for name in args.datasets:
        dataset_dict = load_ucr(name, args.data_dir, pad=False)
        train, test = dataset_dict["train"], dataset_dict["test"]
        harness.assert_disjoint_ids(train, test)
        train_series, test_series = classification.series_of(train), classification.series_of(test)
        channels = train_series[0].shape[1]
        length = max(len(s) for s in train_series)  # the encoder's context length; longer test series are cut
        num_labels = train.features["label"].num_classes
        sizes.append(
            f"{name}: {len(train)} train / {len(test)} test, {describe_lengths(dataset_dict)}, {channels} channel(s), "
            f"{num_labels} classes"
        )
        source = classification.SOURCES.get(name, "")
        if "1nn" in args.parts:
            for result in classification.one_nn_results(name, args.data_dir):
                if result.archive:
                    published = "—" if result.published is None else f"{result.published:.3f} ({source})"
                    check = "—" if result.matches is None else ("yes" if result.matches else "**no**")
                    if result.matches is False:
                        mismatches.append(f"{name} {result.method}: {result.accuracy:.3f} vs {result.published:.3f}")
                    rows.append([name, result.method, f"{result.accuracy:.3f}", published, check, result.convention])
                else:
                    variant_rows.append([name, result.method, result.convention, f"{result.accuracy:.3f}"])
            print(f"[{name}] 1-NN done", flush=True)
        if {"svm", "finetune"} & set(args.parts):
            accuracy = {TOP_VOTE: [], VOTE: [], "TRACE+SVM (frozen)": [], "TRACE linear probe": [], "TRACE LoRA": []}
            broad_curves = {}
            for seed in budget.seeds:
                y_train, y_test = np.asarray(train["label"]), np.asarray(test["label"])
                if args.pretrain_steps_grid or args.broad_encoder:
                    # the encoder (per-set pretraining length, or the broad encoder) and, with --segments-grid, the
                    # feature segments, chosen on the training split only by the SVM's cross-validated accuracy;
                    # ties go to the per-set encoder, then fewer steps, then fewer segments
                    offers = []  # (encoder, broad, steps, label)
                    for steps in args.pretrain_steps_grid or [budget.pretrain_steps]:
                        step_budget = dataclasses.replace(budget, pretrain_steps=steps)
                        encoder = pretrain_encoder(name, train, step_budget, length, channels, args.cache_dir, seed)
                        offers.append((encoder, 0, steps, f"{steps}"))
                    if args.broad_encoder:
                        encoder = harness.pretrain_broad_encoder(args.cache_dir, seed, args.broad_steps)
                        broad_curves[seed] = harness.broad_curve(encoder)
                        offers.append((encoder, 1, 0, "broad"))
                    candidates = []  # (cv, -broad, -steps, -segments, label, encoder, svm)
                    for encoder, broad, steps, tag in offers:
                        per_segments = trace_svm(
                            encoder, train_series, test_series, y_train, y_test, seed, args.segments_grid, args.cv_repeats
                        )
                        for segments, svm in per_segments.items():
                            label = tag + ("" if len(args.segments_grid) == 1 else f"/S{segments}")
                            candidates.append((svm.get("cv_accuracy") or 0.0, -broad, -steps, -segments, label, encoder, svm))
                    if args.broad_encoder:
                        for method, broad in (("TRACE+SVM, per-set encoder only", 0), ("TRACE+SVM, broad encoder only", -1)):
                            own = [c for c in candidates if c[1] == broad]
                            accuracy.setdefault(method, []).append(max(own, key=lambda c: c[:4])[6]["accuracy"])
                    ranked = sorted(candidates, key=lambda c: c[:4], reverse=True)
                    best = ranked[0]
                    encoder, svm = best[5], best[6]
                    vote = classification.svm_vote([c[6] for c in candidates], y_test)
                    accuracy.setdefault(VOTE, []).append(vote)
                    svm_rows.append([name, seed, f"vote of all {len(candidates)}", f"{vote:.3f}", "—", "—"])
                    top = classification.train_chosen_vote([c[6] for c in ranked], y_train)
                    top_vote = classification.svm_vote([ranked[i][6] for i in top["members"]], y_test)
                    accuracy.setdefault(TOP_VOTE, []).append(top_vote)
                    svm_rows.append([
                        name,
                        seed,
                        f"vote of the best {top['k']}: " + ", ".join(ranked[i][4] for i in top["members"])
                        + " (out-of-fold accuracy for k = 1…: " + ", ".join(f"{a:.3f}" for a in top["oof_accuracy"]) + ")",
                        f"{top_vote:.3f}",
                        "—",
                        "—" if not top["oof_accuracy"] else f"{top['oof_accuracy'][top['k'] - 1]:.3f}",
                    ])
                    chosen = best[4] + " (CV " + ", ".join(f"{c[4]}: {c[0]:.3f}" for c in candidates) + ")"
                else:
                    segments = args.segments_grid[0]
                    encoder = pretrain_encoder(name, train, budget, length, channels, args.cache_dir, seed)
                    svm = (
                        trace_svm(encoder, train_series, test_series, y_train, y_test, seed, (segments,))[segments]
                        if "svm" in args.parts
                        else None
                    )
                    chosen = str(budget.pretrain_steps) + ("" if segments == 1 else f"/S{segments}")
                if "svm" in args.parts:
                    accuracy["TRACE+SVM (frozen)"].append(svm["accuracy"])
                    cv = "—" if svm["cv_accuracy"] is None else f"{svm['cv_accuracy']:.3f}" + ("" if svm["cross_validated"] else " (C = inf: too few to search C)")
                    svm_rows.append([name, seed, chosen, f"{svm['accuracy']:.3f}", f"{svm['C']:g}", cv])
                if "finetune" in args.parts:
                    for mode, method in (("linear_probe", "TRACE linear probe"), ("lora", "TRACE LoRA")):
                        accuracy[method].append(
                            tune(encoder, mode, train, test, budget, num_labels, args.cache_dir, name, seed)
                        )
                print(f"[{name}] seed {seed}: { {k: v[-1] for k, v in accuracy.items() if v} }", flush=True)
            for method, values in accuracy.items():
                if values:
                    rows.append(
                        [name, method, harness.mean_std(values), "—", "—", f"{len(values)} seeds {list(budget.seeds)}"]
                    )
            broad_notes.update(broad_curves)
    notes = [
        clock.line(),
        f"parts: {', '.join(args.parts)}",
        "; ".join(sizes),
        "1-NN: k=1 over the training split, full-window DTW; accuracy on the archive test split; `matches` = within "
        f"±{classification.TOLERANCE} of the published figure, under the archive's convention (last column)",
        "split check: archive train/test ids disjoint (no timestamps, so no chronological check)",
        harness.environment_line(),
    ]
    if {"svm", "finetune"} & set(args.parts):
        notes.insert(
            2,
            f"budget `{budget.name}`: encoder preset `{budget.model}`, seeds {list(budget.seeds)}; TRACE rows: pretraining "
            + (
                f"{budget.pretrain_steps} steps"
                if not args.pretrain_steps_grid
                else f"steps chosen from {list(args.pretrain_steps_grid)}"
                + ("" if len(args.segments_grid) == 1 else f" and feature segments S from {list(args.segments_grid)}")
                + f" by the SVM's 5-fold CV accuracy on the training split ({args.cv_repeats} shufflings of the folds)"
            )
            + " at batch min(32, train) on the "
            "set's training split, one encoder per seed; TRACE+SVM on its frozen features (per layer and channel the "
            "mean of the observed patch tokens"
            + ("" if args.segments_grid == [1] else ", with S > 1 also over S equal runs of them in time order")
            + ", and each channel's RevIN mean and log std)"
            + (
                f"; `{VOTE}`: the majority vote of one SVM per candidate (every encoder and S; ties go to the largest "
                "decision score summed over the SVMs), no choice; "
                f"`{TOP_VOTE}`: the candidates ranked by that CV accuracy, and the vote of the first k, k chosen by the "
                "vote's out-of-fold accuracy on the training split (each series predicted by the fold SVM that did not "
                "see it, folds of the first shuffling; the largest k on ties; k = 1 is the chosen candidate)"
                if args.pretrain_steps_grid or args.broad_encoder
                else ""
            )
            + "; linear probe / LoRA "
            f"{budget.finetune_steps} tuning steps at batch 16",
        )
    if broad_notes:
        notes.insert(
            3,
            "broad encoder: `trace-mini` with one input channel, context 512, patch 8, pretrained by "
            "`configuration/recipes/pretrain-broad.yaml` on `trace_datasets.corpus.build()` (every shipped series' "
            "training period, univariate windows; leak check against every benchmark's held-out rows passed), one "
            "per seed; multichannel series embedded channel by channel; held-out masked-reconstruction loss per seed: "
            + "; ".join(f"seed {seed}: {curve}" for seed, curve in sorted(broad_notes.items())),
        )
    if mismatches:
        notes.append("not reproduced within tolerance: " + "; ".join(mismatches))
    sections = []
    if variant_rows:
        sections.append(
            ("1-NN under other conventions", ["dataset", "method", "convention", "accuracy"], variant_rows)
        )
    if svm_rows:
        sections.append(
            (
                "TRACE+SVM per seed",
                ["dataset", "seed", "pretraining steps" + ("" if args.segments_grid == [1] else " / segments"), "test accuracy", "C", "CV accuracy (train)"],
                svm_rows,
            )
        )
    harness.write_table(
        "table4_classification",
        "Classification accuracy on the shipped UCR/UEA sets (archive test split)",
        notes,
        ["dataset", "method", "accuracy", "published", "matches", "convention"],
        rows,
        extra_sections=sections,
        results_dir=args.results_dir,
    )


if __name__ == "__main__":
    main()
