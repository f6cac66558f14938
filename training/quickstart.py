"""TRACE quickstart: data -> pretraining -> alignment -> index -> evaluation -> Hub-ready folder, on a CPU.

    bash scripts/quickstart.sh                       # set up .venv, then run everything (measured: README, Results)
    python -m trace_training.quickstart --smoke      # reduced sizes (about a minute)
    python -m trace_training.quickstart --help

What it does, in `<output-dir>` (default `quickstart_output/`):

1. builds the NOAA storm-event pairs (`trace_datasets.noaa`) and the Time-MMD retrieval windows
   (`trace_datasets.timemmd`, the domains of `align-quick`) from the data folder, each saved with its dataset
   card under `data/`, and their union (labels: event types and Time-MMD domains) under `data/combined`;
2. stage 1, masked reconstruction (`python -m trace_training.pretrain` with `configuration/recipes/pretrain-quick.yaml`) and
   stage 2, alignment with the frozen all-MiniLM-L6-v2 (`python -m trace_training.align` with `align-quick.yaml`), both on the
   union's train split with the `trace-tiny` size, 96 steps, and one channel identity per channel *name* (the 7
   weather channels and Time-MMD's `OT`); held-out curves on the validation split;
3. indexes the test split (`TraceRetrievalIndex`) and evaluates Text->TS, TS->Text and TS->TS (`RetrievalEvaluator`)
   against a random ranking and, for TS->TS, a Euclidean scan of z-normalised raw windows;
4. writes `model/` (config.json with auto_map, model.safetensors, tokenizer and processor files, README.md card whose
   model-index holds the metrics of `evaluation.json`), `index/`, `retrieval.png`, `training_curves.png`, and
   prints the results table.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from modeling_trace.resources import configuration_dir

MODES = ("text_to_ts", "ts_to_text", "ts_to_ts")
TABLE_METRICS = (
    ("label P@1", "label_precision@1"),
    ("label P@5", "label_precision@5"),
    ("label MRR@10", "label_mrr@10"),
    ("modality P@1", "modality_precision@1"),
    ("modality MRR@10", "modality_mrr@10"),
)
logger = logging.getLogger("trace_training.quickstart")


@dataclass
class QuickstartSettings:
    """Sizes of a quickstart run. `full()` is the documented run; `smoke()` the reduced one the test uses."""

    noaa_resolutions: tuple = ("hourly", "4h", "daily")
    noaa_non_event_windows: int = 40
    timemmd_domains: tuple = ("Energy", "Health_US", "Environment", "Climate")
    # The quick recipes' 60 / 40 steps show the pipeline but leave Text->TS at chance; 300 steps of each over all
    # training windows (about 1,900) give a retriever well above the baselines in a few CPU minutes.
    # None = the quick recipe's value.
    pretrain_max_samples: int | None = 4096
    pretrain_steps: int | None = 300
    align_max_samples: int | None = 4096
    align_steps: int | None = 300
    batch_size: int | None = None  # None = the recipe's global batch
    max_test_rows: int | None = None
    k: int = 10
    # TraceConfig values on top of trace-tiny's (e.g. {"embedding_centering": true, "pooling": "mean"})
    model_overrides: dict = field(default_factory=dict)

    @classmethod
    def full(cls) -> QuickstartSettings:
        return cls()

    @classmethod
    def smoke(cls) -> QuickstartSettings:
        return cls(
            noaa_resolutions=("hourly",),
            noaa_non_event_windows=10,
            timemmd_domains=("Energy", "Health_US"),
            pretrain_max_samples=64,
            pretrain_steps=3,
            align_max_samples=64,
            align_steps=3,
            batch_size=16,
            max_test_rows=120,
        )


class QuickstartError(RuntimeError):
    """A quickstart step cannot run (no data folder, output folder not ours, ...); the message says what to do."""


# --------------------------------------------------------------------------------------------------------------
# 1. Data
# --------------------------------------------------------------------------------------------------------------


def _relabel(dataset, names: list[str]):
    """Re-encode the ClassLabel `label` of `dataset` into the label list `names` (by label name)."""
    from datasets import ClassLabel

    old = dataset.features["label"].names
    mapping = [names.index(name) for name in old]
    features = dataset.features.copy()
    features["label"] = ClassLabel(names=names)
    return dataset.map(
        lambda batch: {"label": [mapping[i] for i in batch["label"]]}, batched=True, features=features, desc="relabelling"
    )


def build_datasets(out: Path, data_dir, settings: QuickstartSettings, seed: int = 0) -> dict[str, Path]:
    """Build NOAA pairs and Time-MMD retrieval windows, save each with its card, and their union; return the paths."""
    import datasets

    from trace_datasets import noaa, timemmd
    from trace_datasets.common import render_dataset_card, save_dataset_dict

    noaa_dd = noaa.build(
        data_dir, resolutions=settings.noaa_resolutions, num_non_event_windows=settings.noaa_non_event_windows, seed=seed
    )
    # The `align-quick` recipe's Time-MMD options: univariate OT, 48 steps, stride 8, search texts.
    tmmd_dd = timemmd.build(
        "retrieval", list(settings.timemmd_domains), data_dir, input_length=48, stride=8, seed=seed
    )
    paths = {
        "noaa": save_dataset_dict(noaa_dd, out / "data" / "noaa", card=noaa.dataset_card(noaa_dd)),
        "timemmd": save_dataset_dict(tmmd_dd, out / "data" / "timemmd", card=timemmd.dataset_card(tmmd_dd, "retrieval")),
    }
    names = list(dict.fromkeys(noaa_dd["train"].features["label"].names + tmmd_dd["train"].features["label"].names))
    # Rows keep their own channels; training and indexing put them into the model's channel vocabulary by name.
    combined = datasets.DatasetDict(
        {
            split: datasets.concatenate_datasets([_relabel(noaa_dd[split], names), _relabel(tmmd_dd[split], names)])
            for split in ("train", "validation", "test")
            if split in noaa_dd and split in tmmd_dd
        }
    )
    card = render_dataset_card(
        combined,
        pretty_name="TRACE quickstart: NOAA storm events + Time-MMD",
        source_description=(
            "The union of the NOAA weather-station/storm-narrative pairs and the Time-MMD retrieval windows "
            f"({', '.join(settings.timemmd_domains)}), labels = NOAA event types and Time-MMD domains."
        ),
        license="other",
        how_built="Built by `python -m trace_training.quickstart` from `trace_datasets.noaa.build` and "
        "`trace_datasets.timemmd.build(config='retrieval', input_length=48, stride=8)`; splits are each source's own.",
    )
    paths["combined"] = save_dataset_dict(combined, out / "data" / "combined", card=card)
    return paths


# --------------------------------------------------------------------------------------------------------------
# 2. Training (the library loops, with the quick recipes' values)
# --------------------------------------------------------------------------------------------------------------


def channel_vocabulary(dataset) -> list[str]:
    """The channel names of a dataset in first-seen order: the model's channel vocabulary, one identity token per
    name. NOAA rows bring the seven weather channels, Time-MMD rows their target `OT`: each keeps its own slot, so
    no source's series is learned under another's channel (the flu curves never under `temperature`)."""
    return list(dict.fromkeys(str(name) for names in dataset["channel_names"] for name in names))


def stage_recipe(recipe_class, recipe_file: str, output_dir: Path, channel_names: list[str], settings, steps, max_samples, **values):
    """A recipe from a shipped quick recipe, sized by the quickstart settings, for the quickstart's own data."""
    from .recipes import load_recipe_file, recipe_from_dict

    merged = load_recipe_file(configuration_dir("recipes") / recipe_file)
    merged.update(
        dataset="disk",
        dataset_config={},
        # trace-tiny's size with the data's channel vocabulary (7 weather channels + Time-MMD's OT) and 96 steps
        model_overrides={
            "num_input_channels": len(channel_names),
            "channel_names": channel_names,
            "context_length": 96,
            **settings.model_overrides,
        },
        output_dir=str(output_dir),
        save_steps=None,  # no resumable checkpoints in a quickstart: only final/
        report_to="jsonl",
        eval_steps=max(1, (steps or merged.get("max_steps") or 10) // 10),
        **values,
    )
    if max_samples is not None:
        merged["max_samples"] = max_samples
    if steps is not None:
        merged.update(max_steps=steps, logging_steps=max(1, steps // 30))
    if settings.batch_size is not None:
        merged["global_batch_size"] = settings.batch_size
    return recipe_from_dict(recipe_class, merged, source=recipe_file).validate()


def _limit(dataset, max_samples):
    if max_samples is not None and len(dataset) > max_samples:
        dataset = dataset.select(np.linspace(0, len(dataset) - 1, max_samples).round().astype(int).tolist())
    return dataset


def train(out: Path, dataset_path: Path, settings: QuickstartSettings, seed: int = 0) -> dict[str, Path]:
    """Stage 1 then stage 2 through `run_pretraining` / `run_alignment` (held-out curves on the validation split);
    returns the run folders."""
    from datasets import load_from_disk

    from .loops import run_alignment, run_pretraining
    from .recipes import AlignRecipe, PretrainRecipe

    splits = load_from_disk(str(dataset_path))
    vocabulary = channel_vocabulary(splits["train"])
    runs = {"pretrain": out / "runs" / "pretrain", "align": out / "runs" / "align"}
    for run in runs.values():
        shutil.rmtree(run, ignore_errors=True)  # a fresh run each time (no stale logs or text caches)
    pretrain = stage_recipe(
        PretrainRecipe, "pretrain-quick.yaml", runs["pretrain"], vocabulary, settings, settings.pretrain_steps,
        settings.pretrain_max_samples, seed=seed,
    )  # fmt: skip
    run_pretraining(pretrain, _limit(splits["train"], pretrain.max_samples), eval_dataset=splits.get("validation"))
    align = stage_recipe(
        AlignRecipe, "align-quick.yaml", runs["align"], vocabulary, settings, settings.align_steps,
        settings.align_max_samples, model=str(runs["pretrain"] / "final"), seed=seed,
    )  # fmt: skip
    align.model_overrides = {}  # the stage-1 checkpoint already has the vocabulary
    run_alignment(align, _limit(splits["train"], align.max_samples), eval_dataset=splits.get("validation"))
    for name, run in runs.items():
        if not (run / "final" / "config.json").is_file():
            raise QuickstartError(f"The {name} stage wrote no {run / 'final'}; see its output above.")
    return runs


# --------------------------------------------------------------------------------------------------------------
# 3. Evaluation
# --------------------------------------------------------------------------------------------------------------


def evaluate(model, index, queries, k: int = 10, seed: int = 0) -> dict[str, dict[str, float]]:
    """Retrieval metrics of the TRACE index and of the baselines over `queries` (paired with the index corpus by id;
    `None` = the corpus itself, as the quickstart evaluates the test split against itself).

    Returns `{"trace": {...}, "random": {...}, "euclidean": {...}}` in `RetrievalEvaluator`'s key format.
    """
    from modeling_trace.modeling_trace import pad_or_truncate_series
    from modeling_trace.retrieval import EuclideanScanSearcher, RandomSearcher, RetrievalEvaluator

    corpus = index.corpus
    # The index corpus already holds the query rows' embeddings when queries == corpus: no second encoding.
    trace_queries = corpus if queries is None else queries
    results = {"trace": RetrievalEvaluator(trace_queries, k=k)(index, model=model)}

    # Baselines see the raw windows, padded / truncated to the model's context as the model sees them (NaN = missing).
    def raw_windows(dataset):
        values, observed = pad_or_truncate_series(
            [np.asarray(v, dtype=np.float32) for v in dataset["past_values"]],
            model.config.context_length,
            model.config.num_input_channels,
            fill_missing_channels=True,
        )
        return np.where(observed, values, np.nan)

    windows = raw_windows(corpus)
    query_windows = windows if queries is None else raw_windows(queries)
    # A random ranking ignores the query vectors; the raw windows (and empty text vectors) only give their count.
    raw = {"time_series": query_windows, "text": np.zeros((len(query_windows), 1), dtype=np.float32)}
    random_searcher = RandomSearcher(len(corpus), corpus=corpus, seed=seed)
    results["random"] = RetrievalEvaluator(trace_queries, k=k)(random_searcher, query_embeddings=raw)
    euclidean = EuclideanScanSearcher(windows, corpus=corpus)
    results["euclidean"] = RetrievalEvaluator(trace_queries, modes=("ts_to_ts",), k=k)(euclidean, query_embeddings=raw)
    return results


def results_table(evaluation: dict[str, dict[str, float]]) -> str:
    """A Markdown table: one row per (mode, method), the label/modality matching metrics as columns."""
    from modeling_trace.tables import markdown_table

    methods = {"trace": "TRACE", "random": "random", "euclidean": "Euclidean (raw)"}
    rows = []
    for mode in MODES:
        for method, label in methods.items():
            metrics = evaluation.get(method, {})
            if not any(key.startswith(mode + "_") for key in metrics):
                continue
            cells = [metrics.get(f"{mode}_{key}") for _, key in TABLE_METRICS]
            cells = [None if value is None else float(value) for value in cells]
            rows.append([mode.replace("_to_", "→").replace("ts", "TS").replace("text", "Text"), label, *cells])
    header = ["mode", "method", *(name for name, _ in TABLE_METRICS)]
    return markdown_table(header, rows, align=["-", "-", *["r"] * len(TABLE_METRICS)], float_format=".3f", missing="-")


# --------------------------------------------------------------------------------------------------------------
# 4. The pipeline
# --------------------------------------------------------------------------------------------------------------


def _prepare_output(out: Path) -> None:
    marker = out / ".trace_quickstart"
    if out.exists() and any(out.iterdir()) and not marker.is_file():
        raise QuickstartError(
            f"{out} exists, is not empty and was not written by the quickstart; choose another --output-dir."
        )
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text("written by python -m trace_training.quickstart\n")


def run_quickstart(
    output_dir: str | Path = "quickstart_output",
    data_dir: str | Path | None = None,
    *,
    smoke: bool = False,
    settings: QuickstartSettings | None = None,
    seed: int = 0,
) -> dict:
    """Run the whole quickstart (see the module docstring) and return a summary.

    Args:
        output_dir: where everything is written (created; must be empty or an earlier quickstart's).
        data_dir: the shared data folder (default `trace_datasets.paths.default_data_dir()`).
        smoke: reduced sizes (`QuickstartSettings.smoke()`), for tests.
        settings: explicit sizes (overrides `smoke`).
        seed: seed of the dataset sampling, both training stages and the random baseline.

    Returns:
        `{"evaluation": {method: metrics}, "table": markdown, "paths": {...}, "seconds": {...}}`; the same
        evaluation is in `<output_dir>/evaluation.json`.
    """
    from datasets import load_from_disk

    from modeling_trace.cards import retrieval_eval_results, write_model_card
    from modeling_trace.data_collator import align_dataset_channels
    from modeling_trace.modeling_trace import TraceModel
    from modeling_trace.plotting import plot_training_curves
    from modeling_trace.retrieval import TraceRetrievalIndex
    from trace_datasets.paths import require_data_dir

    settings = settings or (QuickstartSettings.smoke() if smoke else QuickstartSettings.full())
    out = Path(output_dir).resolve()
    data_dir = require_data_dir(data_dir)
    _prepare_output(out)
    seconds, cpu_seconds = {}, {}
    started, cpu_started = time.perf_counter(), time.process_time()

    def lap(name):
        nonlocal started, cpu_started
        now, cpu_now = time.perf_counter(), time.process_time()
        seconds[name], cpu_seconds[name] = round(now - started, 1), round(cpu_now - cpu_started, 1)
        started, cpu_started = now, cpu_now
        print(f"[quickstart] {name} done in {seconds[name]:.1f} s ({cpu_seconds[name]:.1f} s CPU)", flush=True)

    print(f"[quickstart] data from {data_dir}; output in {out}", flush=True)
    data_paths = build_datasets(out, data_dir, settings, seed)
    lap("datasets")
    runs = train(out, data_paths["combined"], settings, seed)
    lap("training")

    model_dir = out / "model"
    shutil.rmtree(model_dir, ignore_errors=True)
    shutil.copytree(runs["align"] / "final", model_dir)
    model = TraceModel.from_pretrained(model_dir)
    test = load_from_disk(str(data_paths["combined"]))["test"]
    if settings.max_test_rows is not None and len(test) > settings.max_test_rows:
        test = test.select(np.linspace(0, len(test) - 1, settings.max_test_rows).round().astype(int).tolist())
    test = align_dataset_channels(test, model.config.channel_names)
    index = TraceRetrievalIndex.build(test, model, show_progress_bar=False)
    index.save(str(out / "index"))
    lap("index")
    evaluation = evaluate(model, index, None, k=settings.k, seed=seed)
    import torch

    from .loops import embedding_geometry

    # how spread the test embeddings are (near 1 = one shared direction, a collapse)
    geometry = {
        **embedding_geometry(torch.from_numpy(index.embeddings("time_series")), "ts"),
        **embedding_geometry(torch.from_numpy(index.embeddings("text")), "text"),
    }
    table = results_table(evaluation)
    lap("evaluation")

    eval_name = "TRACE quickstart test split (NOAA storm events + Time-MMD)"
    recipes = {}
    import yaml

    for name, run in runs.items():
        recipes[name] = yaml.safe_load((run / "recipe.yaml").read_text())
    label_names = test.features["label"].names
    write_model_card(
        model_dir,
        model_name="trace-tiny-quickstart",
        description=(
            "A `trace-tiny` TRACE dual encoder (time series <-> text) trained by the package's CPU quickstart on NOAA "
            "weather-station windows paired with Storm Events narratives and on Time-MMD windows paired with their "
            "search texts. It demonstrates the pipeline; it is not a strong retriever."
        ),
        eval_results=retrieval_eval_results(
            evaluation["trace"], dataset_name=eval_name, dataset_type="trace-quickstart-noaa-timemmd"
        ),
        evaluation_notes=(
            f"Queries and corpus: the {len(test)} test rows (k={settings.k}); label matching counts a hit when its label "
            f"(one of {len(label_names)}: NOAA event types and Time-MMD domains) equals the query's, modality matching "
            "when the query's own pair is found; TS→TS leaves the query out. Baselines from the same run:\n\n"
            + results_table({k: v for k, v in evaluation.items() if k != "trace"})
        ),
        datasets=["noaa-storm-events (trace_datasets.noaa)", "Time-MMD (trace_datasets.timemmd)"],
        training_description=(
            "Stage 1: masked patch reconstruction (`configuration/recipes/pretrain-quick.yaml`); stage 2: dual-level "
            "contrastive alignment with the frozen all-MiniLM-L6-v2 (`align-quick.yaml`), both on CPU with the "
            "`trace-tiny` preset, run by `python -m trace_training.quickstart`."
        ),
        recipes=recipes,
    )
    (out / "evaluation.json").write_text(json.dumps(evaluation, indent=2))

    curves = plot_training_curves({name: run for name, run in runs.items()}, out / "training_curves.png", title="TRACE quickstart training")
    figure = _retrieval_figure(index, test, out / "retrieval.png", label_names)
    lap("card and figures")

    print("\n" + table + "\n", flush=True)
    print(
        "embedding geometry of the test split (mean pairwise cosine / norm of the mean unit vector; 1 = collapsed): "
        f"time series {geometry['ts_mean_cosine']:.3f} / {geometry['ts_mean_norm']:.3f}, "
        f"text {geometry['text_mean_cosine']:.3f} / {geometry['text_mean_norm']:.3f}\n",
        flush=True,
    )
    print(stage_table(seconds, cpu_seconds) + "\n", flush=True)
    summary = {
        "evaluation": evaluation,
        "geometry": geometry,
        "table": table,
        "paths": {
            "model": str(model_dir),
            "index": str(out / "index"),
            "evaluation": str(out / "evaluation.json"),
            "retrieval_png": str(figure),
            "training_curves_png": str(curves),
            **{f"data_{k}": str(v) for k, v in data_paths.items()},
        },
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "settings": asdict(settings),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"[quickstart] total {sum(seconds.values()):.1f} s. Model card: {model_dir / 'README.md'}", flush=True)
    trace = trace_command()
    print(
        "[quickstart] next: {t} search --model {m} --index {i} --text \"heavy snow and strong wind\" --plot hits.png\n"
        "             {t} push {m} <user>/trace-tiny-quickstart".format(t=trace, m=model_dir, i=out / "index"),
        flush=True,
    )
    return summary


def stage_table(seconds: dict, cpu_seconds: dict) -> str:
    """Markdown table of the stages' wall and CPU seconds (CPU > wall: several cores busy; CPU << wall: waiting)."""
    from modeling_trace.tables import markdown_table

    rows = [[name, float(seconds[name]), float(cpu_seconds.get(name, float("nan")))] for name in seconds]
    rows.append(["total", float(sum(seconds.values())), float(sum(cpu_seconds.values()))])
    return markdown_table(["stage", "wall s", "CPU s"], rows, align="-rr", float_format=".1f")


def trace_command() -> str:
    """How to run the `trace` CLI from a fresh shell: the venv's own script when it is not on the PATH."""
    import shutil as _shutil

    script = Path(sys.executable).parent / "trace"
    if script.is_file() and _shutil.which("trace") != str(script):
        return str(script)
    return "trace"


def _retrieval_figure(index, test, out: Path, label_names) -> Path:
    """Text->TS for one NOAA event narrative of the test split: its own series, then the top 4 series found."""
    from modeling_trace.plotting import plot_retrieval

    sources, labels = test["source"], test["label"]
    query_row = next(
        (i for i, (s, lab) in enumerate(zip(sources, labels)) if s == "noaa" and label_names[lab] not in ("none", "other")),
        next((i for i, s in enumerate(sources) if s == "noaa"), 0),
    )
    row = test[query_row]
    hits = index.search_by_text([row["text"]], k=4, columns=["id", "text", "label", "past_values", "channel_names"])
    for hit in hits.rows[0]:
        hit["label"] = label_names[hit["label"]]
    plot_retrieval(
        row["past_values"],
        hits,
        out,
        query_text=row["text"],
        query_label=f"{label_names[row['label']]}; its own series",
        channel_names=row["channel_names"],
        title="Text→TS: a test narrative (its own window in red) and the 4 windows TRACE retrieves (blue)",
    )
    return out


def main(argv=None) -> int:
    """Command line of the quickstart (`python -m trace_training.quickstart --help`)."""
    parser = argparse.ArgumentParser(prog="python -m trace_training.quickstart", description=__doc__.split("\n")[0],
                                     epilog="Multi-process training: see `trace pretrain --help` (accelerate launch).")
    parser.add_argument("--output-dir", default="quickstart_output", help="where to write everything (default: quickstart_output/)")
    parser.add_argument("--data-dir", default=None, help="shared data folder (default: $TRACE_DATA_DIR or ../shared/data)")
    parser.add_argument("--smoke", action="store_true", help="reduced sizes (about a minute), as the test runs it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-overrides", type=json.loads, default={}, metavar="JSON",
                        help='TraceConfig values on top of trace-tiny\'s, e.g. \'{"embedding_centering": true}\'')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = QuickstartSettings.smoke() if args.smoke else QuickstartSettings.full()
    settings.model_overrides = dict(args.model_overrides)
    try:
        run_quickstart(args.output_dir, args.data_dir, settings=settings, seed=args.seed)
    except (QuickstartError, FileNotFoundError, NotADirectoryError) as err:
        print(f"quickstart: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
