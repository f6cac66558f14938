"""Classification on the shipped UCR/UEA sets: TRACE linear probe and LoRA vs 1-NN DTW and 1-NN Euclidean, accuracy.

    python -m benchmarks.table4_classification [--datasets GunPoint ...] [--full]

TRACE: an encoder pretrained by masked reconstruction (library stage-1 loop) on the set's training split only, then
tuned with the library's Trainer/PEFT code (`linear_probe`: classifier only; `lora`: r=8 on q/k/v/o + classifier).
1-NN baselines use `EuclideanScanSearcher` / `DTWSearcher` (z-normalised series) with k=1 over the training split.
UCR/UEA splits are the archive's fixed train/test sets of separate series (no timestamps), so the benchmark asserts
that no id is in both splits; the chronological check does not apply. Writes `benchmarks/results/table4_classification.{md,csv}`.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from benchmarks import harness

DATASETS = ("GunPoint", "BasicMotions", "ItalyPowerDemand")


def pretrain_encoder(name, train, budget, length, channels, cache_dir, seed=0) -> Path:
    from trace_training import PretrainRecipe
    from trace_training.loops import run_pretraining

    out = cache_dir / "ucr_encoders" / name / budget.model / f"p{budget.pretrain_steps}" / f"seed{seed}"
    if not (out / "final" / "config.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        recipe = PretrainRecipe(
            model=budget.model, model_overrides={"num_input_channels": channels, "channel_names": None, "context_length": length},
            output_dir=str(out), seed=seed, max_steps=budget.pretrain_steps, global_batch_size=min(32, len(train)),
            learning_rate=1e-3, mixed_precision="no", report_to="none", logging_steps=50, save_steps=None,
        ).validate()
        with harness._silenced():
            run_pretraining(recipe, train)
    return out / "final"


def tune(encoder_dir, mode, train, test, budget, num_labels, cache_dir, name, seed=0) -> float:
    from modeling_trace.metrics import classification_metrics
    from trace_training import FinetuneRecipe
    from trace_training.finetuning import apply_finetune_mode, build_finetune_model, build_trainer, predict

    recipe = FinetuneRecipe(
        task="classification", mode=mode, model=str(encoder_dir), model_overrides={"dropout": 0.0},
        output_dir=str(cache_dir / "ucr_finetune" / name / mode), seed=seed, max_steps=budget.finetune_steps,
        global_batch_size=min(16, len(train)), learning_rate=3e-3, weight_decay=0.01, warmup_ratio=0.1,
        logging_steps=10_000, mixed_precision="no", report_to="none", lora_r=8, lora_alpha=16,
    ).validate()
    torch.manual_seed(seed)
    model = build_finetune_model(recipe, num_labels=num_labels, id2label={i: str(i) for i in range(num_labels)})
    model = apply_finetune_mode(model, "classification", mode, recipe.lora_r, recipe.lora_alpha, recipe.lora_dropout)
    with harness._silenced():
        trainer = build_trainer(recipe, model, train)
        trainer.train()
    logits = predict(trainer.model, test, "classification")
    return classification_metrics(logits.argmax(-1).tolist(), list(test["label"]))["accuracy"]


def one_nn(searcher_class, train_windows, test_windows, train_labels, test_labels) -> float:
    from modeling_trace.metrics import classification_metrics

    hits = searcher_class(train_windows).search(test_windows, k=1, return_rows=False)
    predictions = [train_labels[i] for i in hits.indices[:, 0]]
    return classification_metrics(predictions, list(test_labels))["accuracy"]


def main(argv=None):
    parser = harness.common_arguments(__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    args = parser.parse_args(argv)
    budget = harness.budget_from_args(args)
    from trace_datasets.ucr import load_ucr
    from modeling_trace.retrieval import DTWSearcher, EuclideanScanSearcher

    rows, sizes = [], []
    for name in args.datasets:
        dataset_dict = load_ucr(name)
        train, test = dataset_dict["train"], dataset_dict["test"]
        harness.assert_disjoint_ids(train, test)
        length = max(len(v) for v in train["past_values"])
        train_windows, test_windows = harness.pad_windows(train, length), harness.pad_windows(test, length)
        channels = train_windows.shape[2]
        num_labels = train.features["label"].num_classes
        encoder = pretrain_encoder(name, train, budget, length, channels, args.cache_dir)
        accuracy = {
            "TRACE linear probe": tune(encoder, "linear_probe", train, test, budget, num_labels, args.cache_dir, name),
            "TRACE LoRA": tune(encoder, "lora", train, test, budget, num_labels, args.cache_dir, name),
            "1-NN Euclidean": one_nn(EuclideanScanSearcher, train_windows, test_windows, train["label"], test["label"]),
            "1-NN DTW": one_nn(DTWSearcher, train_windows, test_windows, train["label"], test["label"]),
        }
        best = max(accuracy.values())
        for method, value in accuracy.items():
            rows.append([name, method, f"{value:.3f}" + (" (best)" if value == best else "")])
        sizes.append(f"{name}: {len(train)} train / {len(test)} test, length {length}, {channels} channel(s), {num_labels} classes")
        print(f"[{name}] {accuracy}", flush=True)
    harness.write_table(
        "table4_classification",
        "Classification accuracy on the shipped UCR/UEA sets (archive test split)",
        [
            f"{budget.describe()}; classification: pretraining {budget.pretrain_steps} steps at batch 32 on the set's "
            f"training split, then {budget.finetune_steps} tuning steps at batch 16, seed 0 (one run per cell)",
            "; ".join(sizes),
            "split check: archive train/test ids disjoint (no timestamps, so no chronological check)",
            harness.environment_line(),
        ],
        ["dataset", "method", "accuracy"],
        rows,
        results_dir=args.results_dir,
    )


if __name__ == "__main__":
    main()
