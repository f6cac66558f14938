"""Shared pieces of the evaluation benchmarks (`benchmarks/table_*.py`).

Everything that trains or scores comes from the library: the Accelerate loops of stages 1 and 2
(`trace_training.loops`), Trainer/PEFT finetuning (`trace_training.finetuning`),
`TraceRetrievalIndex` / `RetrievalEvaluator` and the raw-window searchers (`modeling_trace.retrieval`), and
the metric cores (`modeling_trace.metrics`). This module only adds what a benchmark needs around them:

- leakage checks: every script asserts that its split is chronological and that no test window overlaps a
  training window (`assert_no_temporal_leakage`);
- budgets (`REDUCED` for CPU, `FULL` for the paper-sized runs behind `--full`);
- encoder variants for the baselines and ablations, as `TraceConfig` overrides (the mean-pooled baseline is
  `pooling="mean"`);
- a disk cache of built datasets and trained encoders, so that tables sharing an encoder train it once;
- Markdown/CSV table writing.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import functools
import io
import json
import logging
import os
import platform
import resource
import shutil
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

# Before tqdm is imported anywhere: it reads TQDM_DISABLE once, when the module loads.
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_CACHE_DIR = Path(os.environ.get("TRACE_BENCH_CACHE", "/tmp/trace_benchmarks_cache"))

# ---------------------------------------------------------------------------------------------------------------
# Leakage checks
# ---------------------------------------------------------------------------------------------------------------


class LeakageError(AssertionError):
    """A test window is not strictly after / overlaps a training window."""


def window_intervals(dataset, include_future: bool = True, group_column: str | None = "series_id"):
    """`(group, start, end)` per row, `end` exclusive: `start_timestamp + (len(past) [+ len(future)]) * freq`.

    Rows without a timestamp or frequency raise, because their time extent is unknown.
    """
    import pandas as pd

    columns = dataset.select_columns(
        [c for c in ("id", "start_timestamp", "freq", "past_values", "future_values", group_column) if c]
    )
    intervals = []
    for row in columns:
        if not row["start_timestamp"] or not row["freq"]:
            raise ValueError(
                f"Row {row['id']!r} has no start_timestamp/freq; its time extent is unknown, so the chronological "
                "check cannot run (UCR-style sets have fixed archive splits; check them with assert_disjoint_ids)."
            )
        steps = len(row["past_values"]) + (len(row["future_values"] or []) if include_future else 0)
        start = pd.Timestamp(row["start_timestamp"])
        end = start + steps * pd.tseries.frequencies.to_offset(row["freq"])
        intervals.append((row[group_column] if group_column else "", start, end))
    return intervals


def check_intervals(train_intervals: Iterable[tuple], test_intervals: Iterable[tuple]) -> dict:
    """Raise `LeakageError` unless, per group, every test window starts after every training window starts
    (chronological) and no test window `[start, end)` intersects a training window. Returns a summary."""
    train_by_group: dict = {}
    for group, start, end in train_intervals:
        train_by_group.setdefault(group, []).append((start, end))
    num_test = 0
    for group, start, end in test_intervals:
        num_test += 1
        train = train_by_group.get(group)
        if not train:
            continue
        latest_train_start = max(s for s, _ in train)
        if start < latest_train_start:
            raise LeakageError(
                f"Split is not chronological in group {group!r}: a test window starts at {start}, before the "
                f"latest training window start {latest_train_start}."
            )
        for train_start, train_end in train:
            if start < train_end and train_start < end:
                raise LeakageError(
                    f"Test window [{start}, {end}) of group {group!r} overlaps training window "
                    f"[{train_start}, {train_end})."
                )
    return {"groups": len(train_by_group), "train_windows": sum(map(len, train_by_group.values())), "test_windows": num_test}


def assert_no_temporal_leakage(train, test, *, include_future: bool = True, group_column: str | None = "series_id") -> dict:
    """The check every benchmark runs on its (train, test) datasets; see `check_intervals`."""
    return check_intervals(
        window_intervals(train, include_future, group_column), window_intervals(test, include_future, group_column)
    )


def assert_disjoint_ids(train, test) -> None:
    """For sets without timestamps (UCR/UEA archive splits): no row id is in both splits."""
    shared = set(train["id"]) & set(test["id"])
    if shared:
        raise LeakageError(f"{len(shared)} ids are in both splits, e.g. {sorted(shared)[:3]}.")


# ---------------------------------------------------------------------------------------------------------------
# Budgets and encoder variants
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Budget:
    name: str
    model: str  # preset
    pretrain_steps: int
    align_steps: int
    batch_size: int
    finetune_steps: int
    finetune_batch_size: int
    baseline_d_model: int  # PatchTST width, matched to the TRACE preset
    baseline_layers: int
    seeds: tuple[int, ...]

    def describe(self) -> str:
        return (
            f"budget `{self.name}`: encoder preset `{self.model}`, pretraining {self.pretrain_steps} steps + alignment "
            f"{self.align_steps} steps at batch {self.batch_size}; finetuning {self.finetune_steps} steps at batch "
            f"{self.finetune_batch_size}; seeds {list(self.seeds)}"
        )


REDUCED = Budget("reduced (CPU)", "trace-tiny", 20, 20, 64, 150, 64, 32, 2, (0, 1, 2))
FULL = Budget("full (paper-sized encoder)", "trace-small", 5000, 3000, 256, 3000, 64, 384, 6, (0, 1, 2, 3, 4))
# The CPU budget that converges: trace-mini (d 128, 4 layers) trained until the held-out curves of both stages are
# flat on the benchmark corpora (curves: `held_out_curve`, printed in each table's notes).
MINI = Budget("mini (CPU, converged)", "trace-mini", 1000, 100, 64, 300, 64, 128, 4, (0, 1, 2))
BUDGETS = {"reduced": REDUCED, "mini": MINI, "full": FULL}


@dataclasses.dataclass(frozen=True)
class EncoderVariant:
    """How an encoder differs from TRACE; every variant gets the same pretraining + alignment."""

    name: str
    label: str
    attention_type: str = "channel_biased"
    use_channel_identity_tokens: bool = True
    num_hard_negatives: int | None = 32
    pooling: str = "cls"  # TraceConfig.pooling: the sample embedding is [CLS] or the mean of the patch tokens

    def config_overrides(self) -> dict:
        return {
            "attention_type": self.attention_type,
            "use_channel_identity_tokens": self.use_channel_identity_tokens,
            "pooling": self.pooling,
        }


VARIANTS = {
    v.name: v
    for v in (
        EncoderVariant("trace", "TRACE (CIT + CbA, K=32 hard negatives)"),
        EncoderVariant(
            "mean_pooled", "Transformer, mean-pooled (no CIT, full attention)", "full", False, 32, pooling="mean"
        ),
        EncoderVariant("no_hard_negatives", "TRACE, all negatives (K=all, no hard-negative selection)", num_hard_negatives=None),
        EncoderVariant("full_attention", "TRACE with full attention (CIT kept)", attention_type="full"),
        EncoderVariant("causal_attention", "TRACE with causal attention (CIT kept)", attention_type="causal"),
        EncoderVariant("no_cit", "TRACE without CIT (CbA rule, [CLS] embedding)", use_channel_identity_tokens=False),
    )
}


def stage_1_name(variant: EncoderVariant) -> str:
    """The cache name of a variant's stage-1 encoder: the first variant in `VARIANTS` with the same encoder config,
    so variants that differ only in the alignment (the number of hard negatives) share one pretraining."""
    return next(v.name for v in VARIANTS.values() if v.config_overrides() == variant.config_overrides())


def _quiet():
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in ("transformers", "accelerate", "datasets", "datasets_scripts", "modeling_trace"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import datasets

    datasets.disable_progress_bars()


@contextlib.contextmanager
def _silenced():
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _cached_encoder_matches(final: Path, overrides: dict) -> bool:
    """Whether `final` holds an encoder whose config has every one of `overrides` (the corpus' and the variant's):
    a cache entry written with other settings (e.g. before `pooling` or `revin_statistics_embedding` existed) is
    rebuilt."""
    from modeling_trace import TraceConfig

    if not (final / "config.json").is_file():
        return False
    config = TraceConfig.from_pretrained(final)
    return all(getattr(config, key, None) == value for key, value in overrides.items())


def train_encoder(
    corpus: str,
    train_dataset,
    variant: EncoderVariant,
    seed: int,
    budget: Budget,
    model_overrides: dict,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    batch_size: int | None = None,
    eval_dataset=None,
    pretrain_corpus: str | None = None,
):
    """Pretrain (masked reconstruction) then align (dual-level contrastive loss) an encoder variant with the
    library loops, cached in `<cache_dir>/encoders/...`. Returns `(TraceModel, final_dir, seconds)`; `seconds` is
    0.0 when the encoder came from the cache. `pretrain_corpus`: the cache name whose stage-1 encoders this corpus
    shares (the same training windows, other texts: stage 1 never reads a text); default `corpus`.

    With `eval_dataset` (a validation split, never the test split) both stages log their held-out loss ten times
    over the run (`held_out_curve(final_dir)` reads them back)."""
    from modeling_trace import TraceModel
    from trace_training import AlignRecipe, PretrainRecipe
    from trace_training.loops import run_alignment, run_pretraining

    batch_size = min(batch_size or budget.batch_size, len(train_dataset))
    # stage 1 is keyed by its own length, so budgets differing only in alignment steps share their pretraining
    root = cache_dir / "encoders" / corpus / budget.model
    pretrain_root = cache_dir / "encoders" / (pretrain_corpus or corpus) / budget.model
    pretrain_dir = pretrain_root / f"p{budget.pretrain_steps}b{batch_size}" / stage_1_name(variant) / f"seed{seed}" / "pretrain"
    run_dir = root / f"p{budget.pretrain_steps}a{budget.align_steps}b{batch_size}" / variant.name / f"seed{seed}"
    final = run_dir / "align" / "final"
    seconds = 0.0
    overrides = {**model_overrides, **variant.config_overrides()}
    if not _cached_encoder_matches(final, overrides):
        shutil.rmtree(run_dir, ignore_errors=True)
        started = time.perf_counter()
        common = dict(
            seed=seed, global_batch_size=batch_size, learning_rate=1e-3, weight_decay=0.05,
            warmup_ratio=0.1, mixed_precision="no", report_to="none" if eval_dataset is None else "jsonl",
            logging_steps=50, save_steps=None, eval_max_samples=512,
        )
        if not _cached_encoder_matches(pretrain_dir / "final", overrides):
            shutil.rmtree(pretrain_dir, ignore_errors=True)
            pretrain = PretrainRecipe(
                model=budget.model, model_overrides=overrides, output_dir=str(pretrain_dir),
                max_steps=budget.pretrain_steps, eval_steps=_eval_every(budget.pretrain_steps, eval_dataset), **common,
            ).validate()
            with _silenced():
                run_pretraining(pretrain, train_dataset, eval_dataset=eval_dataset)
        align = AlignRecipe(
            model=str(pretrain_dir / "final"), output_dir=str(run_dir / "align"), max_steps=budget.align_steps,
            num_hard_negatives=variant.num_hard_negatives, text_cache_dir=str(cache_dir / "text_cache" / corpus),
            eval_steps=_eval_every(budget.align_steps, eval_dataset), **common,
        ).validate()
        with _silenced():
            run_alignment(align, train_dataset, eval_dataset=eval_dataset)
        seconds = time.perf_counter() - started
    model = TraceModel.from_pretrained(final)  # the variant's overrides (pooling, attention, ...) are in its config
    model.eval()
    return model, final, seconds


def _eval_every(steps: int, eval_dataset) -> int | None:
    return None if eval_dataset is None else max(steps // 10, 1)


def held_out_curve(final_dir: Path) -> dict[str, list[dict]]:
    """`{"pretrain": [{"step", "loss"}, ...], "align": [{"step", "loss", "ts_to_text_mrr@10", ...}, ...]}`: the
    held-out records `train_encoder` logged for the encoder in `final_dir` (`<run>/align/final`; its stage-1 run is
    the folder its alignment recipe started from). A stage without a held-out log is left out."""
    import yaml


    align = Path(final_dir).parent
    folders = {"pretrain": Path(yaml.safe_load((align / "recipe.yaml").read_text())["model"]).parent, "align": align}
    curves = {}
    for stage, folder in folders.items():
        points = held_out_points(folder)
        if points:
            curves[stage] = points
    return curves


def held_out_points(run_dir: Path) -> list[dict]:
    """`[{"step", "loss", ...}, ...]`: the held-out (`eval_*`) records of a training run's log, `[]` without one."""
    from trace_training.loops import read_log

    if not (Path(run_dir) / "train_log.jsonl").is_file():
        return []
    return [
        {"step": r["step"], **{k[len("eval_"):]: float(v) for k, v in r.items() if k.startswith("eval_")}}
        for r in read_log(run_dir) if "eval_loss" in r
    ]  # fmt: skip


def describe_curve(points: Sequence[dict], key: str = "loss", best: str = "min") -> str:
    """`first → best (at its step) → last (change over the last interval)` of `key` in a held-out curve: the
    convergence evidence a table prints; a best value well before the last step means the curve turned back
    (`best="min"` for a loss, `"max"` for a retrieval score)."""
    points = [(p["step"], p[key]) for p in points if key in p]
    if not points:
        return "—"
    if len(points) == 1:
        return f"{points[0][1]:.3f} (step {points[0][0]})"
    best_step, best_value = (min if best == "min" else max)(points, key=lambda point: point[1])
    (_, before), (last_step, last) = points[-2], points[-1]
    change = (last - before) / abs(before) if before else 0.0
    return (
        f"{points[0][1]:.3f} (step {points[0][0]}) → {best} {best_value:.3f} (step {best_step}) → {last:.3f} (step "
        f"{last_step}; {change:+.1%} over the last interval)"
    )


def sentence_embeddings(model, dataset, name: str, cache_dir: Path = DEFAULT_CACHE_DIR, column: str = "text") -> np.ndarray:
    """The frozen text tower's sentence embeddings (before TRACE's projection) of `dataset[column]`, cached as
    `<cache_dir>/sentences/<name>.npy`; every aligned encoder shares the tower, only its projection differs."""
    from modeling_trace.modeling_trace import encode_sentences

    path = cache_dir / "sentences" / f"{name}.npy"
    if path.is_file():
        return np.load(path)
    texts = ["" if t is None else str(t) for t in dataset[column]]
    out = encode_sentences(model.text_model, model._get_tokenizer(), texts, show_progress_bar=False).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------


def cached_dataset_dict(name: str, build, cache_dir: Path = DEFAULT_CACHE_DIR):
    """`build()` once, then load the saved DatasetDict from `<cache_dir>/data/<name>`."""
    from datasets import load_from_disk

    folder = cache_dir / "data" / name
    if (folder / "dataset_dict.json").is_file():
        return load_from_disk(str(folder))
    dataset_dict = build()
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    dataset_dict.save_to_disk(str(tmp))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return load_from_disk(str(folder))


BROAD_RECIPE = Path(__file__).resolve().parent.parent / "configuration" / "recipes" / "pretrain-broad.yaml"


def broad_corpus(cache_dir):
    """The broad pretraining corpus (`trace_datasets.corpus.build()`: every shipped series, training periods only,
    leak-checked against every benchmark's held-out rows), built once into the cache."""
    from trace_datasets import corpus

    return cached_dataset_dict("broad_corpus", corpus.build, cache_dir)


def pretrain_broad_encoder(cache_dir, seed=0, steps: int | None = None) -> Path:
    """One channel-independent encoder pretrained on the broad corpus by the shipped recipe
    (`configuration/recipes/pretrain-broad.yaml`, its steps unless `steps`), with its held-out curve on the corpus's
    validation rows; cached per seed and length."""
    from trace_training import PretrainRecipe
    from trace_training.loops import run_pretraining
    from trace_training.recipes import load_recipe_file, recipe_from_dict

    values = load_recipe_file(BROAD_RECIPE)
    steps = steps or values["max_steps"]
    out = cache_dir / "broad_encoders" / f"p{steps}" / f"seed{seed}"
    if not (out / "final" / "config.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        values.update(output_dir=str(out), seed=seed, max_steps=steps)
        recipe = recipe_from_dict(PretrainRecipe, values, str(BROAD_RECIPE)).validate()
        dataset_dict = broad_corpus(cache_dir)
        with _silenced():
            run_pretraining(recipe, dataset_dict["train"], eval_dataset=dataset_dict["validation"])
    return out / "final"


def broad_curve(encoder_dir) -> str:
    """The broad encoder's held-out masked-reconstruction curve, described."""
    return describe_curve(held_out_points(Path(encoder_dir).parent))


NOAA_CHANNELS = 7
NOAA_CONTEXT = 180  # daily windows are 180 steps; hourly / 4-hourly ones (168) are left-padded as unobserved
TIMEMMD_RETRIEVAL_DOMAINS = ("Energy", "Health_US", "Environment", "Climate")
TIMEMMD_CONTEXT = 96  # Environment's input length; Energy/Health_US/Climate windows (36) are left-padded


def noaa(cache_dir: Path = DEFAULT_CACHE_DIR):
    """NOAA Storm Events windows (`trace_datasets.noaa.build()` defaults): train/validation/test."""
    from trace_datasets import noaa as builder

    return cached_dataset_dict("noaa", builder.build, cache_dir)


def timemmd_retrieval(cache_dir: Path = DEFAULT_CACHE_DIR, text_source: str = "search"):
    """Time-MMD retrieval windows (per-domain input lengths, stride 8); label = domain. `text_source` as
    `trace_datasets.timemmd.build`: the search file's texts (the paper's protocol), or `"both"` (the report file's
    text of the window's last dated report, then the search pick)."""
    from trace_datasets import timemmd

    suffix = "" if text_source == "search" else f"_{text_source}"
    return cached_dataset_dict(
        f"timemmd_retrieval_s8{suffix}",
        lambda: timemmd.build(config="retrieval", domains=list(TIMEMMD_RETRIEVAL_DOMAINS), stride=8, text_source=text_source),
        cache_dir,
    )


# Every encoder of the corpus tables (TRACE, its ablations and the mean-pooled baseline alike) sees the level and
# spread RevIN removes (`TraceConfig.revin_statistics_embedding`). Chosen on the Time-MMD validation split (seed 0,
# modality MRR@10 0.029 / 0.034 -> 0.052 / 0.047 at the same budget): without it the three weekly domains (Energy,
# Health_US, Climate: smooth 36-step series in dollars, percent and degrees) normalise to look alike. The statistics
# enter the pooled embedding only (`revin_statistics_position="pooled"`), so tokens, CITs and forecasts stay level-free:
# on the validation split it ties the token position (modality MRR@10 at the last step, mean over 3 seeds, 0.050 /
# 0.051 vs 0.049 / 0.051); the token position's cost on the forecasting test split (Table 3) was seen before the switch.
ENCODER_OVERRIDES = {"revin_statistics_embedding": True, "revin_statistics_position": "pooled"}

def encoder_cache_name(corpus: str, encoder_overrides: dict | None = None) -> str:
    """The cache folder name of a corpus' encoders trained with extra `encoder_overrides` (TraceConfig fields on top
    of the corpus'): `corpus` alone without them, so the default encoders are never rebuilt over."""
    return corpus + "".join(f"+{key}={value}" for key, value in sorted((encoder_overrides or {}).items()))


def encoder_overrides_argument(parser) -> None:
    """`--encoder-overrides JSON`: TraceConfig overrides for the TRACE encoders of a corpus table."""
    import json

    parser.add_argument(
        "--encoder-overrides", type=json.loads, default={},
        help="JSON TraceConfig overrides on top of the corpus' for the TRACE encoders, e.g. "
        "'{\"revin_statistics_embedding\": false}' (cached apart from the default encoders)",
    )  # fmt: skip


TIMEMMD_OVERRIDES = {"num_input_channels": 1, "channel_names": None, "context_length": TIMEMMD_CONTEXT, **ENCODER_OVERRIDES}
CORPORA = {
    # NOAA windows have 7 x 31 tokens: batch 16 keeps a shared-CPU step under a second; its channel-level loss still
    # has 16 x 7 - 1 = 111 negatives, so K=32 differs from "all" there (the sample level has 15 = all at this batch).
    "noaa": dict(
        load=noaa,
        overrides={"num_input_channels": NOAA_CHANNELS, "context_length": NOAA_CONTEXT, **ENCODER_OVERRIDES},
        batch_size=16,
    ),
    "timemmd": dict(load=timemmd_retrieval, overrides=TIMEMMD_OVERRIDES),
    # the same windows' encoders aligned with report + search texts: the report files (weekly gasoline prices,
    # weekly influenza-like-illness shares, monthly climate summaries, air-quality advisories) are about the dates
    # they are paired with, where most search texts are generic to the domain
    "timemmd_reports": dict(
        load=functools.partial(timemmd_retrieval, text_source="both"), pretrain_corpus="timemmd", overrides=TIMEMMD_OVERRIDES
    ),
}

CORPUS_SOURCES = {
    "noaa": "NOAA Storm Events windows (`trace_datasets.noaa.build()`, 7 channels, hourly/4-hourly/daily)",
    "timemmd": "Time-MMD retrieval windows (`trace_datasets.timemmd.build(config='retrieval', domains=[Energy, "
    "Health_US, Environment, Climate], stride=8)`, univariate OT, input 36 steps (96 for Environment), search-file "
    "texts, label = domain)",
    "timemmd_reports": "Time-MMD retrieval windows as `timemmd`, with `text_source='both'`: each window's text is its "
    "last dated report-file text (where one falls in the window), then its search-file text",
}


def describe_corpus(corpus: str, dataset_dict) -> str:
    """Source, split sizes and test label counts, counted from the data."""
    from collections import Counter

    test = dataset_dict["test"]
    names = test.features["label"].names
    counts = ", ".join(f"{names[label]} {n}" for label, n in Counter(test["label"]).most_common())
    return f"{CORPUS_SOURCES[corpus]}, train {len(dataset_dict['train'])} / test {len(test)} rows; test labels: {counts}"


def pad_windows(dataset, length: int, column: str = "past_values") -> np.ndarray:
    """`(N, length, channels)` float32, the most recent `length` steps, left-padded with NaN (the model's
    `pad_or_truncate_series`, as the raw-window baselines need it: NaN where nothing was observed)."""
    from modeling_trace.modeling_trace import pad_or_truncate_series

    rows = [np.asarray(v, dtype=np.float32) for v in dataset[column]]
    channels = max(r.shape[1] for r in rows)
    values, observed = pad_or_truncate_series(rows, length, channels, fill_missing_channels=True)
    return np.where(observed, values, np.nan)


# ---------------------------------------------------------------------------------------------------------------
# Statistics and tables
# ---------------------------------------------------------------------------------------------------------------


def _finite(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if v is not None and not np.isnan(v)]


def mean_std(values: Sequence[float], digits: int = 3) -> str:
    values = _finite(values)
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def mean_ci(values: Sequence[float], digits: int = 3, level: float = 0.95) -> str:
    """`mean [low, high]`: Student-t confidence interval of the mean over seeds (`n/a` without values; the mean
    alone for one value)."""
    from scipy import stats

    values = _finite(values)
    if not values:
        return "n/a"
    mean = float(np.mean(values))
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values))
    return f"{mean:.{digits}f} [{mean - half:.{digits}f}, {mean + half:.{digits}f}]"


def environment_line() -> str:
    import torch

    return (
        f"{platform.machine()}, {os.cpu_count()} CPU cores visible, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), no GPU used"
    )


def write_table(name: str, title: str, notes: Sequence[str], header: Sequence[str], rows: Sequence[Sequence],
                extra_sections: Sequence[tuple[str, Sequence[str], Sequence[Sequence]]] = (), results_dir: Path = RESULTS_DIR) -> str:
    """Write `<results_dir>/<name>.md` (title, notes, table[s]) and `<name>.csv` (all rows, with a `table` column),
    print the Markdown and return it."""
    from modeling_trace.tables import markdown_table

    results_dir.mkdir(parents=True, exist_ok=True)
    parts = [f"# {title}", "", *[f"- {n}" for n in notes], "", markdown_table(header, rows)]
    for section_title, section_header, section_rows in extra_sections:
        parts += ["", f"## {section_title}", "", markdown_table(section_header, section_rows)]
    text = "\n".join(parts) + "\n"
    (results_dir / f"{name}.md").write_text(text)
    with open(results_dir / f"{name}.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["table", *header])
        writer.writerows([[title, *row] for row in rows])
        for section_title, section_header, section_rows in extra_sections:
            writer.writerow(["table", *section_header])
            writer.writerows([[section_title, *row] for row in section_rows])
    print(text)
    return text


def common_arguments(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--budget", choices=sorted(BUDGETS), default="reduced",
        help="reduced: trace-tiny, 20 + 20 steps (smoke); mini: trace-mini trained until its held-out curves are flat "
        "on 2 CPU cores; full: the paper's trace-small budget (GPU advised)",
    )  # fmt: skip
    parser.add_argument("--full", action="store_true", help="same as --budget full")
    parser.add_argument("--align-steps", type=int, default=None, help="override the budget's alignment steps")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="override the budget's seeds")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help="built datasets and trained encoders")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    return parser


def budget_from_args(args) -> Budget:
    _quiet()
    budget = FULL if args.full else BUDGETS[args.budget]
    if args.seeds:
        budget = dataclasses.replace(budget, seeds=tuple(args.seeds))
    if getattr(args, "align_steps", None):
        budget = dataclasses.replace(budget, align_steps=args.align_steps)
    return budget


class RunClock:
    """The provenance line every table starts with: its command, the load when it started, wall and CPU seconds."""

    def __init__(self, module: str, argv=None):
        self.command = f"python -m {module} {' '.join(sys.argv[1:] if argv is None else argv)}".strip()
        self.started = time.perf_counter()
        self.load = os.getloadavg()

    def line(self) -> str:
        usage = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = sum(u.ru_utime + u.ru_stime for u in usage)
        load = " / ".join(f"{v:.2f}" for v in self.load)
        return (
            f"command: `{self.command}`; load average at start {load} (1/5/15 min); wall "
            f"{time.perf_counter() - self.started:.1f} s, CPU {cpu:.1f} s (user+system, this process and children)"
        )


def json_dump(path: Path, payload) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=float))
