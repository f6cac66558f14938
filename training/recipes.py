"""Training recipes: YAML files with an explicit precedence, validated before any training starts.

Precedence (lowest to highest): the dataclass defaults < the recipe file < flags typed on the command line.
The reference implementation gave every argparse flag a default and so let CLI defaults silently override
the recipe; here every flag defaults to `argparse.SUPPRESS`, so only flags the user actually typed exist in the
parsed namespace and override the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

MIXED_PRECISION = ("no", "auto", "bf16", "fp16")
REPORT_TO = ("auto", "tensorboard", "jsonl", "none")
FINETUNE_MODES = ("linear_probe", "lora", "full")
FINETUNE_TASKS = ("classification", "forecasting")


class RecipeError(ValueError):
    """A recipe value is unknown, of the wrong type, or out of range; the message says what to change."""


@dataclass
class TrainingRecipe:
    """Fields shared by the pretraining, alignment and finetuning recipes (see `configuration/recipes/`)."""

    # model: a preset name ("trace-tiny"), a preset JSON path, or a checkpoint folder to start from
    model: str = "trace-tiny"
    model_overrides: dict = field(default_factory=dict)
    # data: a source understood by `training/data.py` ("timemmd", "ucr", "noaa", "ett") and its options
    dataset: str = "timemmd"
    dataset_config: dict = field(default_factory=dict)
    data_dir: str | None = None
    max_samples: int | None = None
    output_dir: str = "runs/trace"
    seed: int = 42
    # optimisation: AdamW + linear warmup + cosine decay
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    warmup_ratio: float = 0.1
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.0
    max_steps: int | None = None
    num_epochs: float = 1.0
    # samples per optimiser step over all processes and accumulation steps
    global_batch_size: int = 32
    gradient_accumulation_steps: int = 1
    max_grad_norm: float | None = 1.0
    mixed_precision: str = "auto"
    logging_steps: int = 10
    save_steps: int | None = None
    save_total_limit: int | None = 2
    # held-out loss on the validation split every `eval_steps` (None: no evaluation), over at most
    # `eval_max_samples` rows; convergence is read from this curve, not from the step count
    eval_steps: int | None = None
    eval_max_samples: int | None = 512
    report_to: str = "auto"
    num_workers: int = 0

    def per_device_batch_size(self, num_processes: int) -> int:
        """Samples per process and micro-step: `global_batch_size / (num_processes * gradient_accumulation_steps)`."""
        return self.global_batch_size // (num_processes * self.gradient_accumulation_steps)

    def schedule(self, steps_per_epoch: int) -> tuple[int, int]:
        """`(total_steps, warmup_steps)` of the optimiser: `max_steps` or `num_epochs` epochs, and `warmup_steps`
        or `warmup_ratio` of them."""
        total_steps = self.max_steps or max(1, math.ceil(self.num_epochs * steps_per_epoch))
        warmup = self.warmup_steps if self.warmup_steps is not None else int(round(self.warmup_ratio * total_steps))
        return total_steps, warmup

    def validate(self, num_processes: int = 1) -> TrainingRecipe:
        """Check types and ranges; raise `RecipeError` before anything is built or trained."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), hints[f.name])

        def positive(name, allow_none=False, allow_zero=False):
            value = getattr(self, name)
            if value is None and allow_none:
                return
            if value is None or value < 0 or (value == 0 and not allow_zero):
                bound = ">= 0" if allow_zero else "> 0"
                raise RecipeError(f"Recipe value {name} must be {bound}, got {value!r}. Fix it in the recipe or with --{name}.")

        check_model_overrides(self.model_overrides)
        positive("learning_rate")
        positive("weight_decay", allow_zero=True)
        positive("adam_epsilon")
        positive("global_batch_size")
        positive("gradient_accumulation_steps")
        positive("max_grad_norm", allow_none=True)
        positive("logging_steps")
        positive("save_steps", allow_none=True)
        positive("eval_steps", allow_none=True)
        positive("eval_max_samples", allow_none=True)
        positive("max_steps", allow_none=True)
        positive("num_epochs")
        positive("warmup_steps", allow_none=True, allow_zero=True)
        positive("max_samples", allow_none=True)
        positive("num_workers", allow_zero=True)
        for name in ("adam_beta1", "adam_beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise RecipeError(f"Recipe value {name} must be in [0, 1), got {getattr(self, name)!r}.")
        for name in ("warmup_ratio", "min_lr_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise RecipeError(f"Recipe value {name} must be in [0, 1], got {getattr(self, name)!r}.")
        if self.mixed_precision not in MIXED_PRECISION:
            raise RecipeError(f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}.")
        if self.report_to not in REPORT_TO:
            raise RecipeError(f"report_to must be one of {REPORT_TO}, got {self.report_to!r}.")
        divisor = num_processes * self.gradient_accumulation_steps
        if self.global_batch_size % divisor != 0:
            raise RecipeError(
                f"global_batch_size={self.global_batch_size} is not divisible by num_processes ({num_processes}) x "
                f"gradient_accumulation_steps ({self.gradient_accumulation_steps}) = {divisor}. Choose a "
                f"global_batch_size that is a multiple of {divisor} (e.g. {max(divisor, self.global_batch_size // divisor * divisor)}) "
                "or change the number of processes / accumulation steps."
            )
        return self


@dataclass
class PretrainRecipe(TrainingRecipe):
    """Stage 1: masked patch reconstruction (`TraceForPretraining`)."""

    mask_ratio: float = 0.3

    def validate(self, num_processes: int = 1):
        super().validate(num_processes)
        if not 0.0 < self.mask_ratio < 1.0:
            raise RecipeError(f"mask_ratio must be in (0, 1), got {self.mask_ratio!r}.")
        return self


@dataclass
class AlignRecipe(TrainingRecipe):
    """Stage 2: dual-level contrastive alignment with the frozen text tower (`TraceModel`)."""

    # sentence encoder folder / Hub id; None = the offline all-MiniLM-L6-v2 (sha256-checked)
    text_model: str | None = None
    num_hard_negatives: int | None = 32
    channel_loss_weight: float = 1.0
    text_cache_dir: str | None = None
    text_batch_size: int = 64

    def validate(self, num_processes: int = 1):
        super().validate(num_processes)
        if self.num_hard_negatives is not None and self.num_hard_negatives <= 0:
            raise RecipeError(f"num_hard_negatives must be > 0 or null (all negatives), got {self.num_hard_negatives!r}.")
        if self.channel_loss_weight < 0:
            raise RecipeError(f"channel_loss_weight must be >= 0, got {self.channel_loss_weight!r}.")
        if self.text_batch_size <= 0:
            raise RecipeError(f"text_batch_size must be > 0, got {self.text_batch_size!r}.")
        return self


@dataclass
class FinetuneRecipe(TrainingRecipe):
    """Task tuning with `transformers.Trainer`: linear probe, LoRA (PEFT) or full finetune."""

    task: str = "classification"
    mode: str = "lora"
    prediction_length: int | None = None
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    eval_batch_size: int = 64
    max_eval_samples: int | None = None

    def validate(self, num_processes: int = 1):
        super().validate(num_processes)
        if self.task not in FINETUNE_TASKS:
            raise RecipeError(f"task must be one of {FINETUNE_TASKS}, got {self.task!r}.")
        if self.mode not in FINETUNE_MODES:
            raise RecipeError(f"mode must be one of {FINETUNE_MODES}, got {self.mode!r}.")
        if self.task == "forecasting" and (self.prediction_length is None or self.prediction_length <= 0):
            raise RecipeError(
                f"task 'forecasting' needs a positive prediction_length, got {self.prediction_length!r}."
            )
        if self.lora_r <= 0 or self.lora_alpha <= 0:
            raise RecipeError(f"lora_r and lora_alpha must be > 0, got {self.lora_r!r} and {self.lora_alpha!r}.")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise RecipeError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}.")
        return self


# `PreTrainedConfig` keyword arguments that are not dataclass fields but are read by `__init__` / `from_pretrained`.
_CONFIG_KWARGS = frozenset({"num_labels", "output_attentions", "attn_implementation", "torch_dtype"})


def model_override_keys() -> set[str]:
    """The keys `model_overrides` may set: `TraceConfig` fields (and their aliases such as `hidden_size`) and the
    `PreTrainedConfig` arguments. (A config itself keeps unknown keys as attributes, as transformers does; a recipe
    refuses them, since a typo there would silently leave the value at its default.)"""
    from modeling_trace.configuration_trace import TraceConfig

    return {f.name for f in dataclasses.fields(TraceConfig)} | set(TraceConfig.attribute_map) | set(_CONFIG_KWARGS)


def _did_you_mean(unknown, known) -> str:
    """`'key' (did you mean 'closest'?)` for each of the `unknown` keys, comma-separated: the closest of the `known`
    names by difflib, where one is close enough."""
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ", ".join(hints)


def check_model_overrides(overrides: dict) -> None:
    """`RecipeError` naming each unknown key of `model_overrides`, with the closest valid name (difflib)."""
    known = model_override_keys()
    unknown = sorted(str(key) for key in overrides if key not in known)
    if unknown:
        raise RecipeError(
            f"Unknown key(s) in model_overrides: {_did_you_mean(unknown, known)}. model_overrides sets TraceConfig "
            f"values; valid keys: {', '.join(sorted(k for k in known if not k.startswith('_')))}."
        )


def _check_type(name, value, hint):
    origin = typing.get_origin(hint)
    options = typing.get_args(hint) if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) else (hint,)
    for option in options:
        if option is type(None) and value is None:
            return
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return
        if option in (str, bool, dict, list) and isinstance(value, option):
            return
    expected = " or ".join("null" if o is type(None) else o.__name__ for o in options)
    raise RecipeError(f"Recipe value {name} must be {expected}, got {value!r} ({type(value).__name__}).")


def recipe_from_dict(recipe_class: type[TrainingRecipe], values: dict, source: str = "recipe") -> TrainingRecipe:
    """Build a recipe, rejecting unknown keys with the closest valid names."""
    known = {f.name for f in dataclasses.fields(recipe_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise RecipeError(
            f"Unknown key(s) in {source} for {recipe_class.__name__}: {_did_you_mean(unknown, known)}. "
            f"Valid keys: {', '.join(sorted(known))}."
        )
    return recipe_class(**values)


def load_recipe_file(path: str | os.PathLike) -> dict:
    """The values of a YAML recipe file as a dict (a missing file or a non-mapping is an error)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Recipe file {path} does not exist; see configuration/recipes/ for the shipped ones.")
    with open(path) as handle:
        values = yaml.safe_load(handle) or {}
    if not isinstance(values, dict):
        raise RecipeError(f"Recipe file {path} must hold a mapping of key: value, got {type(values).__name__}.")
    return values


def _yaml_value(text: str):
    """Command-line values are parsed as YAML scalars/mappings: `1e-3`, `null`, `true`, `{dropout: 0}`."""
    return yaml.safe_load(text)


def _coerce_number(value, hint):
    # YAML 1.1 reads "1e-4" (no dot) as a string; numeric fields accept it as the number it obviously is.
    if not isinstance(value, str):
        return value
    options = typing.get_args(hint) or (hint,)
    for kind in (int, float):
        if kind in options:
            try:
                return kind(value)
            except ValueError:
                pass
    return value


def build_argument_parser(recipe_class: type[TrainingRecipe], description: str) -> argparse.ArgumentParser:
    """`--config FILE`, `--resume`, and one `--<field>` per recipe field, all defaulting to SUPPRESS."""
    parser = argparse.ArgumentParser(description=description, argument_default=argparse.SUPPRESS)
    parser.add_argument("--config", help="Recipe YAML (configuration/recipes/*.yaml).")
    parser.add_argument("--resume", action="store_true", help="Resume from the latest checkpoint in output_dir.")
    parser.add_argument(
        "--stop_at_step", type=int, help="Stop (as if interrupted) after this optimiser step; the schedule is unchanged."
    )
    for f in dataclasses.fields(recipe_class):
        parser.add_argument(f"--{f.name}", type=_yaml_value, metavar="VALUE", help=f"Overrides the recipe's {f.name}.")
    return parser


def parse_recipe(
    recipe_class: type[TrainingRecipe], argv: list[str] | None = None, description: str = ""
) -> tuple[TrainingRecipe, argparse.Namespace]:
    """Parse the command line into a recipe: defaults < `--config` file < typed flags. Not yet validated."""
    parser = build_argument_parser(recipe_class, description)
    args = parser.parse_args(argv)
    values = load_recipe_file(args.config) if getattr(args, "config", None) else {}
    recipe_keys = {f.name for f in dataclasses.fields(recipe_class)}
    hints = typing.get_type_hints(recipe_class)
    cli = {k: _coerce_number(v, hints[k]) for k, v in vars(args).items() if k in recipe_keys}
    recipe = recipe_from_dict(recipe_class, {**values, **cli}, source=getattr(args, "config", None) or "arguments")
    extras = argparse.Namespace(
        config=getattr(args, "config", None),
        resume=getattr(args, "resume", False),
        stop_at_step=getattr(args, "stop_at_step", None),
        overridden=sorted(cli),
    )
    return recipe, extras


def save_recipe(recipe: TrainingRecipe, path: str | os.PathLike) -> None:
    """Write every value of `recipe` to a YAML file that `load_recipe_file` reads back."""
    with open(path, "w") as handle:
        yaml.safe_dump(dataclasses.asdict(recipe), handle, sort_keys=False)


# Recipe values that may differ between a run and its `--resume`: where things are written and how often, how long
# the run is (`max_steps`; the LR schedule is then recomputed for the new total), and where the text cache lives
# (its file name hashes the tower and the texts). Every other value shapes the optimisation or the data, and the
# checkpoint's optimiser / scheduler state would silently keep the old one, so a change is refused.
RESUMABLE_KEYS = frozenset(
    {
        "output_dir",
        "max_steps",
        "logging_steps",
        "save_steps",
        "save_total_limit",
        "eval_steps",
        "eval_max_samples",
        "report_to",
        "num_workers",
        "text_cache_dir",
    }
)


def _normalised(values: dict) -> dict:
    import json

    return json.loads(json.dumps(values, default=str))


def check_resume_recipe(saved: dict, recipe: TrainingRecipe, source: str = "the checkpoint") -> dict:
    """Compare the recipe a checkpoint was trained with (`saved`, a dict) with the recipe of the resuming run.

    Returns `{key: (saved, new)}` for the changed keys of `RESUMABLE_KEYS`; raises `RecipeError` listing every
    other changed key (with both values) since the resumed run could not honour them.
    """
    current = _normalised(dataclasses.asdict(recipe))
    saved = _normalised(saved)
    missing = object()
    changed = {
        key: (saved.get(key, missing), current.get(key, missing))
        for key in sorted(set(saved) | set(current))
        if saved.get(key, missing) != current.get(key, missing)
    }
    refused = {k: v for k, v in changed.items() if k not in RESUMABLE_KEYS}
    if refused:
        shown = "; ".join(
            f"{key}: {'(absent)' if old is missing else repr(old)} -> {'(absent)' if new is missing else repr(new)}"
            for key, (old, new) in refused.items()
        )
        raise RecipeError(
            f"--resume: the recipe differs from the one {source} was trained with in {', '.join(refused)} ({shown}). "
            "A resumed run continues the saved optimiser and scheduler state and would not apply these values. Resume "
            "with the original values, or start a new run in another output_dir to use the new ones. Values that may "
            f"change on resume: {', '.join(sorted(RESUMABLE_KEYS))}."
        )
    return changed
