"""Task tuning of a TRACE encoder with `transformers.Trainer`: linear probe, LoRA (PEFT) or full finetune.

    python -m trace_training.finetune --config configuration/recipes/finetune.yaml [--mode lora] [--model runs/align/final]
    accelerate launch --config_file configuration/accelerate/multi_gpu_ddp.yaml -m trace_training.finetune --config ...

Writes `<output_dir>/base` (the model before tuning; the LoRA adapter's base), `adapter/` (LoRA),
`final/` (merged, loadable with `AutoModelForTimeSeriesPrediction` / `AutoModelForTimeSeriesClassification`)
and `metrics.json`. Values come from the recipe; only typed flags override it.
"""

import json
from pathlib import Path

from .entry import EntryPoint
from .finetuning import (
    apply_finetune_mode,
    build_finetune_model,
    build_trainer,
    count_parameters,
    save_finetuned,
)
from .recipes import FinetuneRecipe


def main(argv=None):
    entry = EntryPoint(FinetuneRecipe, argv, __doc__)
    recipe, state = entry.recipe, entry.state
    splits = entry.load_splits(
        ("train", "test"), max_samples={"train": recipe.max_samples, "test": recipe.max_eval_samples}
    )
    if "test" not in splits:
        raise ValueError(f"The {recipe.dataset} dataset has no test split to evaluate the tuned model on.")
    train, test = splits["train"], splits["test"]
    label_feature = train.features["label"]
    id2label = {i: name for i, name in enumerate(label_feature.names)}
    model = build_finetune_model(recipe, num_labels=len(id2label), id2label=id2label)
    if state.is_main_process:
        model.save_pretrained(Path(recipe.output_dir) / "base")
    model = apply_finetune_mode(model, recipe.task, recipe.mode, recipe.lora_r, recipe.lora_alpha, recipe.lora_dropout)
    trainable, total = count_parameters(model)
    print(f"{recipe.mode}: {trainable:,} trainable of {total:,} parameters")
    trainer = build_trainer(recipe, model, train, test, num_processes=state.num_processes)
    before = trainer.evaluate(metric_key_prefix="before")
    trainer.train()
    after = trainer.evaluate(metric_key_prefix="test")
    if state.is_main_process:
        folders = save_finetuned(trainer.model, recipe.output_dir, recipe.mode)
        metrics = {**before, **after, "trainable_parameters": trainable, "total_parameters": total}
        (Path(recipe.output_dir) / "metrics.json").write_text(json.dumps(metrics, indent=2))
        print(json.dumps(metrics, indent=2))
        from modeling_trace.cards import metric_eval_results, write_model_card  # README.md card in each saved folder

        for folder in folders.values():
            write_model_card(folder, config=trainer.model.config, model_name=Path(recipe.output_dir).name,
                             datasets=[recipe.dataset], recipes={"finetune": vars(recipe)},
                             training_description=f"Task tuning ({recipe.task}, mode {recipe.mode}) with transformers.Trainer.",
                             eval_results=metric_eval_results(after, task_type=f"time-series-{recipe.task}",
                                                              task_name=recipe.task, dataset_name=recipe.dataset, strip_prefix="test_"))
        print(f"Saved {', '.join(str(p) for p in folders.values())}")


if __name__ == "__main__":
    main()
