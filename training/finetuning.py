"""Task tuning with `transformers.Trainer`: linear probe, LoRA (PEFT) or full finetune of a TRACE head model.

LoRA targets the attention projections `q_proj`/`k_proj`/`v_proj`/`o_proj` (separate linears in the modeling file
so PEFT can find them); the task head (`classifier` / `forecast_head`) is trained in full via `modules_to_save`.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from modeling_trace.data_collator import TraceDataCollator, align_dataset_channels
from modeling_trace.modeling_trace import TraceForClassification, TraceForForecasting
from modeling_trace.presets import load_preset
from modeling_trace.processing_trace import TraceFeatureExtractor

from .loops import collate_once, is_checkpoint_folder, resolve_mixed_precision
from .optimization import cache_accelerate_package_checks, create_optimizer, create_scheduler
from .recipes import FinetuneRecipe

LORA_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]
HEAD_MODULES = {"classification": "classifier", "forecasting": "forecast_head"}
LABEL_NAMES = {"classification": ["labels"], "forecasting": ["future_values"]}


def build_finetune_model(recipe: FinetuneRecipe, num_labels: int | None = None, id2label: dict | None = None):
    """The head model of the recipe's task, from a checkpoint folder (any TRACE stage) or a preset."""
    model_class = TraceForClassification if recipe.task == "classification" else TraceForForecasting
    if recipe.task == "classification":
        task_values = {"num_labels": num_labels, "id2label": id2label, "label2id": {v: k for k, v in (id2label or {}).items()}}
    else:
        task_values = {"prediction_length": recipe.prediction_length}
    if is_checkpoint_folder(recipe.model):
        return model_class.from_pretrained(recipe.model, **recipe.model_overrides, **task_values)
    return model_class(load_preset(recipe.model, **recipe.model_overrides, **task_values))


def apply_finetune_mode(model, task: str, mode: str, lora_r: int = 8, lora_alpha: int = 16, lora_dropout: float = 0.0):
    """Make only what the mode trains trainable; LoRA returns a `peft.PeftModel` wrapping `model`."""
    head = HEAD_MODULES[task]
    if mode == "full":
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        return model
    if mode == "linear_probe":
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name.startswith(head + "."))
        return model
    if mode == "lora":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            target_modules=list(LORA_TARGET_MODULES),
            modules_to_save=[head],
        )
        return get_peft_model(model, config)  # (PEFT's read of `is_gradient_checkpointing`: see the model class)
    raise ValueError(f"mode must be 'linear_probe', 'lora' or 'full', got {mode!r}.")


def count_parameters(model) -> tuple[int, int]:
    """`(trainable, total)` parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def _keep_predictions(logits, labels):
    # Trainer gathers every output tensor; keep only what the metrics need (logits / prediction_outputs).
    return logits[0] if isinstance(logits, (tuple, list)) else logits


def make_compute_metrics(task: str):
    """`compute_metrics` from the local evaluate modules (`trace_classification` / `trace_forecasting`)."""
    from modeling_trace.metrics import load_metric

    metric = load_metric("trace_classification" if task == "classification" else "trace_forecasting")

    def compute_metrics(eval_prediction):
        predictions = eval_prediction.predictions
        references = eval_prediction.label_ids
        if task == "classification":
            return metric.compute(
                predictions=np.asarray(predictions).argmax(-1).tolist(), references=np.asarray(references).tolist()
            )
        n = len(predictions)
        return metric.compute(
            predictions=np.asarray(predictions, dtype=np.float64).reshape(n, -1).tolist(),
            references=np.asarray(references, dtype=np.float64).reshape(n, -1).tolist(),
        )

    return compute_metrics


class _Batch(dict):
    """A batch already sliced by `CollatedRows.__getitems__` (`stack_rows` passes it on)."""


class CollatedRows(torch.utils.data.Dataset):
    """A dataset's rows collated once into tensors (`collate_once`), served row by row or, through the DataLoader's
    batched fetch (`__getitems__`), a batch at a time by one index. `stack_rows` is its collator. The Trainer then
    samples the same indices and sees the same batches as with the Arrow rows and `TraceDataCollator`, without
    decoding and padding them again at every step."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = tensors
        self._length = len(next(iter(tensors.values())))

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[index] for key, value in self.tensors.items()}

    def __getitems__(self, indices: list[int]) -> list[_Batch]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return [_Batch({key: value.index_select(0, index) for key, value in self.tensors.items()})]


def stack_rows(rows: list) -> dict[str, torch.Tensor]:
    """The collator of `CollatedRows`: a batch sliced by `__getitems__` as it is, or single rows stacked."""
    if len(rows) == 1 and isinstance(rows[0], _Batch):
        return dict(rows[0])
    return {key: torch.stack([row[key] for row in rows]) for key in rows[0]}


def build_trainer(
    recipe: FinetuneRecipe, model, train_dataset, eval_dataset=None, num_processes: int = 1, precollate: bool = True
):
    """A `transformers.Trainer` with the recipe's batch, AdamW + warmup/cosine, label names and metrics."""
    from transformers import TrainingArguments

    config = model.config
    # any forecasting/classification model whose config has context_length / num_input_channels (TRACE, or a
    # baseline such as transformers' PatchTST); only TRACE configs name their channels
    channel_names = getattr(config, "channel_names", None)
    train_dataset = align_dataset_channels(train_dataset, channel_names, strict=False)
    if eval_dataset is not None:
        eval_dataset = align_dataset_channels(eval_dataset, channel_names, strict=False)
    collator = TraceDataCollator(
        config.context_length,
        config.num_input_channels,
        prediction_length=config.prediction_length if recipe.task == "forecasting" else None,
        with_labels=recipe.task == "classification",
    )
    if precollate:
        # collate the (small) training and evaluation sets once: the same batches, no per-step Arrow decoding
        columns = ["past_values", *(["future_values"] if recipe.task == "forecasting" else ["label"])]
        collated = {name: collate_once(collator, dataset, columns) for name, dataset in (("train", train_dataset), ("eval", eval_dataset)) if dataset is not None}
        if all(tensors is not None for tensors in collated.values()):
            train_dataset = CollatedRows(collated["train"])
            eval_dataset = CollatedRows(collated["eval"]) if "eval" in collated else None
            collator = stack_rows
    per_device = recipe.per_device_batch_size(num_processes)
    steps_per_epoch = max(1, len(train_dataset) // recipe.global_batch_size)
    total_steps, warmup = recipe.schedule(steps_per_epoch)
    precision = resolve_mixed_precision(recipe.mixed_precision)
    report_to = "none" if recipe.report_to in ("none", "jsonl") else ("tensorboard" if recipe.report_to == "tensorboard" else "all")
    if report_to == "all":
        try:
            import tensorboard  # noqa: F401

            report_to = "tensorboard"
        except ImportError:
            report_to = "none"
    args = TrainingArguments(
        output_dir=recipe.output_dir,
        per_device_train_batch_size=per_device,
        per_device_eval_batch_size=recipe.eval_batch_size,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps,
        max_steps=total_steps,
        logging_steps=recipe.logging_steps,
        save_strategy="steps" if recipe.save_steps else "no",
        save_steps=recipe.save_steps or 500,
        save_total_limit=recipe.save_total_limit,
        eval_strategy="no",
        max_grad_norm=recipe.max_grad_norm if recipe.max_grad_norm is not None else 0.0,
        seed=recipe.seed,
        data_seed=recipe.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        label_names=LABEL_NAMES[recipe.task],
        remove_unused_columns=False,
        dataloader_num_workers=recipe.num_workers,
        # pinned memory only helps copies to an accelerator; on a CPU-only machine torch warns that it is unused
        dataloader_pin_memory=torch.cuda.is_available() or torch.backends.mps.is_available(),
        report_to=report_to,
        disable_tqdm=False,
    )
    optimizer = create_optimizer(
        model, recipe.learning_rate, recipe.weight_decay, (recipe.adam_beta1, recipe.adam_beta2), recipe.adam_epsilon
    )
    scheduler = create_scheduler(optimizer, total_steps, warmup, recipe.min_lr_ratio)
    cache_accelerate_package_checks()
    return trace_trainer_class()(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        compute_metrics=make_compute_metrics(recipe.task),
        preprocess_logits_for_metrics=_keep_predictions,
        optimizers=(optimizer, scheduler),
    )


@functools.cache
def trace_trainer_class():
    """`transformers.Trainer` whose FLOP estimate counts the model's parameters once per run instead of at every
    step (`Trainer.floating_point_ops` calls `model.num_parameters`, which walks every module, at each step: about
    0.6 ms of a 12 ms step on 2 cores). Same formula, same `total_flos`: 6 x elements of the model's main input x
    non-embedding parameters. Defined on first use so that importing this module does not import the Trainer."""
    from transformers import Trainer

    class TraceTrainer(Trainer):
        _flos_parameters = None

        def floating_point_ops(self, inputs):
            main_input = getattr(self.model, "main_input_name", "input_ids")
            if main_input not in inputs or not hasattr(self.model, "num_parameters"):
                return super().floating_point_ops(inputs)
            if self._flos_parameters is None:  # the parameters are fixed once training has started
                self._flos_parameters = self.model.num_parameters(exclude_embeddings=True)
            return 6 * inputs[main_input].numel() * self._flos_parameters

    return TraceTrainer


def save_finetuned(model, output_dir: str | Path, mode: str) -> dict[str, Path]:
    """Save the adapter (LoRA) and a merged, standalone model folder `final/` loadable by the Auto classes."""
    output_dir = Path(output_dir)
    folders = {}
    if mode == "lora":
        model.save_pretrained(output_dir / "adapter")
        folders["adapter"] = output_dir / "adapter"
        merged = model.merge_and_unload()
    else:
        merged = model
    merged.save_pretrained(output_dir / "final")
    TraceFeatureExtractor.from_model_config(merged.config).save_pretrained(output_dir / "final")
    folders["final"] = output_dir / "final"
    return folders


@torch.no_grad()
def predict(model, dataset, task: str, batch_size: int = 256) -> np.ndarray:
    """Logits (classification) or forecasts (forecasting) of `model` in eval mode, as a numpy array."""
    config = model.config
    dataset = align_dataset_channels(dataset, getattr(config, "channel_names", None), strict=False)
    collator = TraceDataCollator(config.context_length, config.num_input_channels)
    was_training = model.training
    model.eval()
    outputs = []
    for start in range(0, len(dataset), batch_size):
        rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        batch = collator(rows)
        out = model(past_values=batch["past_values"], past_observed_mask=batch["past_observed_mask"])
        outputs.append((out.logits if task == "classification" else out.prediction_outputs).float().cpu().numpy())
    model.train(was_training)
    return np.concatenate(outputs)
