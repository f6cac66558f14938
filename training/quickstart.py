"""TRACE quickstart: evaluate the shipped trained checkpoint, or (`--train`) train one from scratch, on a CPU.

    bash scripts/quickstart.sh                       # set up .venv, then evaluate checkpoints/trace-mini-noaa
    bash scripts/quickstart.sh --train               # set up .venv, then the whole training pipeline (trace-tiny)
    python -m trace_training.quickstart --smoke      # reduced sizes (about a minute)
    python -m trace_training.quickstart --help

By default (`run_checkpoint_quickstart`), in `<output-dir>` (default `quickstart_output/`): builds the test split the
shipped checkpoint was evaluated on (recorded in its `ship.json`: NOAA station windows and their describer texts),
indexes it with the checkpoint, evaluates Text->TS, TS->Text and TS->TS against a random ranking and a Euclidean scan
of z-normalised raw windows, checks the figures against those recorded in the checkpoint's card, and writes `index/`,
`evaluation.json`, `retrieval.png` and the results table. `bash scripts/train_mini.sh` retrains that checkpoint
(about an hour on 2 cores).

With `--train` (`run_quickstart`):

1. builds the NOAA storm-event pairs (`trace_datasets.noaa`) and the Time-MMD retrieval windows
   (`trace_datasets.timemmd`, the domains of `align-quick`) from the data folder, each saved with its dataset
   card under `data/`, and their union (labels: event types and Time-MMD domains) under `data/combined`;
2. stage 1, masked reconstruction (`python -m trace_training.pretrain` with `configuration/recipes/pretrain-quick.yaml`) and
   stage 2, alignment with the frozen all-MiniLM-L6-v2 (`python -m trace_training.align` with `align-quick.yaml`), both on
   the union's train split with the `trace-tiny` size, 96 steps, and one channel identity per channel *name* (the 7
   weather channels and Time-MMD's `OT`); held-out curves on the validation split;
3. indexes the test split (`TraceRetrievalIndex`) and evaluates it as above (`trace_training.evaluation`);
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

from modeling_trace.resources import configuration_dir, shipped_checkpoint

from .evaluation import MODES, TABLE_METRICS, evaluate, geometry_line, index_geometry, results_table, spread_rows  # noqa: F401 (public names)

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
    run_pretraining(pretrain, spread_rows(splits["train"], pretrain.max_samples), eval_dataset=splits.get("validation"))
    align = stage_recipe(
        AlignRecipe, "align-quick.yaml", runs["align"], vocabulary, settings, settings.align_steps,
        settings.align_max_samples, model=str(runs["pretrain"] / "final"), seed=seed,
    )  # fmt: skip
    align.model_overrides = {}  # the stage-1 checkpoint already has the vocabulary
    run_alignment(align, spread_rows(splits["train"], align.max_samples), eval_dataset=splits.get("validation"))
    for name, run in runs.items():
        if not (run / "final" / "config.json").is_file():
            raise QuickstartError(f"The {name} stage wrote no {run / 'final'}; see its output above.")
    return runs


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


class _Laps:
    """Wall and CPU seconds per stage, printed as each ends (`laps("index")`)."""

    def __init__(self):
        self.seconds, self.cpu_seconds = {}, {}
        self._started, self._cpu_started = time.perf_counter(), time.process_time()

    def __call__(self, name: str) -> None:
        now, cpu_now = time.perf_counter(), time.process_time()
        self.seconds[name] = round(now - self._started, 1)
        self.cpu_seconds[name] = round(cpu_now - self._cpu_started, 1)
        self._started, self._cpu_started = now, cpu_now
        print(f"[quickstart] {name} done in {self.seconds[name]:.1f} s ({self.cpu_seconds[name]:.1f} s CPU)", flush=True)


def run_checkpoint_quickstart(
    output_dir: str | Path = "quickstart_output",
    data_dir: str | Path | None = None,
    *,
    model: str | Path | None = None,
    smoke: bool = False,
    seed: int = 0,
) -> dict:
    """The default quickstart: evaluate the shipped trained checkpoint (`checkpoints/trace-mini-noaa`, or `model`, a
    folder written by `python -m trace_training.ship`) on the test split it was evaluated on, against the random and
    raw-Euclidean baselines, and check the figures against the ones recorded in its card.

    Writes `<output_dir>/index/` (the test split indexed by the checkpoint: `trace search --index` it),
    `evaluation.json`, `retrieval.png` and `summary.json`; prints the results table. `smoke` evaluates 120 test
    windows only (the figures then differ from the card's and are not compared).

    Returns:
        `{"evaluation", "geometry", "table", "recorded_max_abs_difference", "paths", "seconds", "cpu_seconds"}`.
    """
    from modeling_trace.modeling_trace import TraceModel
    from trace_datasets.paths import require_data_dir

    from .evaluation import evaluate_test_split
    from .ship import MARKER, retrieval_figure

    model_dir = Path(model) if model is not None else shipped_checkpoint()
    if not (model_dir / MARKER).is_file():
        raise QuickstartError(
            f"{model_dir} has no {MARKER}: give a folder written by `python -m trace_training.ship` (it records the "
            "dataset the checkpoint is evaluated on), or train one with `--train`."
        )
    record = json.loads((model_dir / MARKER).read_text())
    out = Path(output_dir).resolve()
    data_dir = require_data_dir(data_dir)
    _prepare_output(out)
    laps = _Laps()
    print(f"[quickstart] checkpoint {model_dir}; data from {data_dir}; output in {out}", flush=True)
    trace_model = TraceModel.from_pretrained(model_dir).eval()
    laps("loading the checkpoint")
    result = evaluate_test_split(
        trace_model, record["dataset"], record.get("dataset_config"), data_dir=data_dir, k=record.get("k", 10),
        seed=seed, max_rows=120 if smoke else None,
    )  # fmt: skip
    shutil.rmtree(out / "index", ignore_errors=True)
    result.index.save(str(out / "index"))
    laps("test split, index and evaluation")
    figure_path, figure = retrieval_figure(result.index, result.test, out / "retrieval.png")
    laps("figure")

    evaluation = result.evaluation
    (out / "evaluation.json").write_text(json.dumps(evaluation, indent=2))
    recorded_file = model_dir / "evaluation.json"
    difference = None
    if not smoke and seed == record.get("seed", 0) and recorded_file.is_file():
        recorded = json.loads(recorded_file.read_text())["evaluation"]
        difference = max(
            abs(float(value) - float(evaluation[method][key]))
            for method, metrics in recorded.items()
            for key, value in metrics.items()
            if "seconds" not in key
        )
    table = results_table(evaluation)
    print("\n" + table + "\n", flush=True)
    print(geometry_line(result.geometry), flush=True)
    print(
        f"retrieval.png: {figure['own_window_in_top4']}/{figure['queries']} test texts find their own window in the "
        "top 4",
        flush=True,
    )
    if difference is not None:
        verdict = "reproduces them" if difference <= 1e-6 else "differs (another machine or library version?)"
        print(f"largest difference to the metrics recorded in {recorded_file}: {difference:.2e} ({verdict})", flush=True)
    print("\n" + stage_table(laps.seconds, laps.cpu_seconds) + "\n", flush=True)
    summary = {
        "evaluation": evaluation,
        "geometry": result.geometry,
        "table": table,
        "recorded_max_abs_difference": difference,
        "test_rows": len(result.test),
        "paths": {
            "model": str(model_dir),
            "index": str(out / "index"),
            "evaluation": str(out / "evaluation.json"),
            "retrieval_png": str(figure_path),
        },
        "seconds": laps.seconds,
        "cpu_seconds": laps.cpu_seconds,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    trace = trace_command()
    print(
        f"[quickstart] next: {trace} search --index {out / 'index'} --text \"strong wind and heavy rain\" --plot hits.png\n"
        f"             {trace} bundle {model_dir} trace-mini-noaa-hub   # self-contained Hub folder (text tower included)\n"
        "             bash scripts/quickstart.sh --train                # train a trace-tiny model from scratch instead",
        flush=True,
    )
    return summary


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
    laps = _Laps()
    lap, seconds, cpu_seconds = laps, laps.seconds, laps.cpu_seconds

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
    test = spread_rows(test, settings.max_test_rows)
    test = align_dataset_channels(test, model.config.channel_names)
    index = TraceRetrievalIndex.build(test, model, show_progress_bar=False)
    index.save(str(out / "index"))
    lap("index")
    evaluation = evaluate(model, index, None, k=settings.k, seed=seed)
    geometry = index_geometry(index)  # how spread the test embeddings are (near 1 = one shared direction, a collapse)
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
    print(geometry_line(geometry) + "\n", flush=True)
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
    parser.add_argument("--train", action="store_true",
                        help="train a trace-tiny model from scratch (datasets -> pretrain -> align -> index -> evaluation "
                        "-> Hub-ready model/) instead of evaluating the shipped checkpoint")
    parser.add_argument("--model", default=None,
                        help="without --train: a folder written by `python -m trace_training.ship` (default: the "
                        "shipped checkpoints/trace-mini-noaa)")
    parser.add_argument("--smoke", action="store_true", help="reduced sizes (about a minute), as the tests run it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-overrides", type=json.loads, default=None, metavar="JSON",
                        help='with --train: TraceConfig values on top of trace-tiny\'s, e.g. \'{"embedding_centering": true}\'')
    args = parser.parse_args(argv)
    if args.train and args.model is not None:
        parser.error("--model names a trained checkpoint to evaluate; --train trains a new one: give one of them")
    if not args.train and args.model_overrides is not None:
        parser.error("--model-overrides sizes the model --train trains; add --train")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.train:
            settings = QuickstartSettings.smoke() if args.smoke else QuickstartSettings.full()
            settings.model_overrides = dict(args.model_overrides or {})
            run_quickstart(args.output_dir, args.data_dir, settings=settings, seed=args.seed)
        else:
            run_checkpoint_quickstart(args.output_dir, args.data_dir, model=args.model, smoke=args.smoke, seed=args.seed)
    except (QuickstartError, FileNotFoundError, NotADirectoryError) as err:
        print(f"quickstart: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
