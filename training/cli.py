"""The `trace` command: one entry point for every stage of the TRACE package.

    trace build-dataset noaa --output-dir out/noaa          # datasets_scripts builders (noaa, timemmd, ucr, ett)
    trace pretrain --config configuration/recipes/pretrain-quick.yaml
    trace align --config configuration/recipes/align-quick.yaml --model runs/pretrain-quick/final
    trace finetune --config configuration/recipes/finetune-quick.yaml
    trace index --model MODEL --dataset out/noaa --split test --output storm_index
    trace search --model MODEL --index storm_index --text "heavy snow" -k 5 --plot hits.png
    trace search --model MODEL --index storm_index --csv series.csv --target text
    trace evaluate --model MODEL --index storm_index
    trace export-onnx --model MODEL --output MODEL-onnx      # onnxruntime graphs of the time-series side
    trace push MODEL user/trace-tiny-noaa

`pretrain`, `align` and `finetune` run the training scripts in this process (one process). For several processes
(CPU gloo, GPUs, FSDP) launch the scripts themselves with Accelerate, e.g.
`accelerate launch --config_file configuration/accelerate/multi_gpu_ddp.yaml -m trace_training.align --config ...`.

Errors never end in a traceback: bad options end with exit status 2 and one usage line; expected errors (missing or
damaged files, invalid YAML/JSON, bad CSV columns, unknown channels, invalid values, an index that does not match its
model) with exit status 1 and one line on stderr naming what and where; an unexpected exception (a bug) also prints one
line, with its type and a pointer to `--debug`, which shows the traceback instead. `--help` and usage errors, of the
stages too, never import torch: they are answered before any model code is loaded.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import sys
import types
from pathlib import Path

BUILDERS = ("noaa", "timemmd", "ucr", "ett")
STAGES = ("pretrain", "align", "finetune")
STAGE_RECIPES = {"pretrain": "PretrainRecipe", "align": "AlignRecipe", "finetune": "FinetuneRecipe"}
ID_WIDTH, LABEL_WIDTH, TEXT_WIDTH = 28, 18, 60
TIME_COLUMNS = ("date", "time", "timestamp", "datetime")


class CliError(Exception):
    """An expected problem with the user's input; printed as one line, without traceback."""


def _positive_int(text: str) -> int:
    """argparse type of counts (-k, --batch-size, --max-rows): a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    # argparse prints the whole usage before its error line; one line (and a pointer to --help) is easier to read.
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------


_WARNED: set[str] = set()


def warn_once(command: str, message: str) -> None:
    """One `trace <command>: warning: ...` line on stderr, printed once per message and process."""
    if message not in _WARNED:
        _WARNED.add(message)
        print(f"trace {command}: warning: {message}", file=sys.stderr)


def _cut(text, width: int) -> str:
    """`text` on one line, at most `width` characters: a longer one ends with an ellipsis."""
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _existing_dir(path: str, what: str) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise CliError(f"{what} {path!r} is not a folder; give the directory written by {_WRITERS.get(what, 'the package')}.")
    return folder


_WRITERS = {
    "model": "save_pretrained (e.g. runs/align-quick/final or quickstart_output/model)",
    "index": "`trace index` (TraceRetrievalIndex.save)",
    "dataset": "`trace build-dataset ... --output-dir` (save_to_disk)",
}


def load_model(path: str | None):
    """A `TraceModel` from a checkpoint folder (must hold the tokenizer for text queries); `None`: the shipped one."""
    from transformers.utils import logging as transformers_logging

    from modeling_trace.modeling_trace import TraceModel

    # the weight-loading bar would precede every result and error line; the package's own bars stay on
    transformers_logging.disable_progress_bar()
    if path is None:
        from modeling_trace.resources import shipped_checkpoint

        path = str(shipped_checkpoint())
    folder = _existing_dir(path, "model")
    if not (folder / "config.json").is_file():
        raise CliError(f"Model folder {path!r} has no config.json; give a folder written by save_pretrained.")
    try:
        return TraceModel.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError, RuntimeError, *_optional_error_types(("safetensors", "SafetensorError"))) as err:
        # a truncated model.safetensors raises SafetensorError, a damaged config.json a JSON or Value error, missing
        # or mis-shaped weights RuntimeError/OSError: none of them says which folder it was reading
        raise CliError(
            f"Cannot load the model in {path} ({type(err).__name__}: {_one_line(err)}); its config.json or weights "
            "(model.safetensors) are damaged or not a TRACE checkpoint. Save it again with save_pretrained, or copy "
            "the folder again."
        ) from err


def load_split(path: str, split: str):
    """One split of a saved DatasetDict (or a saved Dataset)."""
    from datasets import Dataset, DatasetDict, load_from_disk

    folder = _existing_dir(path, "dataset")
    try:
        data = load_from_disk(str(folder))
    except (OSError, ValueError, KeyError, IndexError, *_optional_error_types(("pyarrow", "ArrowException"))) as err:
        raise CliError(
            f"Cannot read the dataset in {path} ({type(err).__name__}: {_one_line(err)}); give a folder written by "
            "`trace build-dataset ... --output-dir` (save_to_disk), or build it again."
        ) from err
    if isinstance(data, DatasetDict):
        if split not in data:
            raise CliError(f"Split {split!r} is not in {path}; available: {', '.join(data)}. Pass --split.")
        return data[split]
    assert isinstance(data, Dataset)
    return data


def read_series_csv(path: str, model):
    """A CSV with one column per channel (named as `model.config.channel_names`; an optional date/time column is
    ignored) -> `(length, channels)` float32 array in model order, NaN = missing / absent channel."""
    import numpy as np
    import pandas as pd

    from modeling_trace.processing_trace import TraceFeatureExtractor

    file = Path(path)
    if not file.is_file():
        raise CliError(f"CSV file {path!r} does not exist.")
    try:
        frame = pd.read_csv(file)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise CliError(f"Cannot read {path} as CSV: {err}") from err
    frame = frame.drop(columns=[c for c in frame.columns if str(c).strip().lower() in TIME_COLUMNS])
    names = model.config.channel_names
    if frame.shape[1] == 0 or len(frame) == 0:
        raise CliError(f"{path} has no channel columns or no rows; expected columns {names or 'one per channel'} and one row per time step.")
    non_numeric = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise CliError(f"Columns {non_numeric} of {path} are not numeric; channel values must be numbers (empty = missing).")
    if names is None and frame.shape[1] != model.config.num_input_channels:
        raise CliError(
            f"{path} has {frame.shape[1]} columns {list(frame.columns)}, the model takes {model.config.num_input_channels} "
            "unnamed channels in order."
        )
    context_length = model.config.context_length
    if len(frame) > context_length:
        # the model reads the most recent context_length steps (pad_or_truncate_series): say so, with the numbers
        warn_once(
            "search",
            f"{path} has {len(frame)} steps but the model reads {context_length} (context_length): the last "
            f"{context_length} steps are used, the first {len(frame) - context_length} are dropped.",
        )
    if names is None:
        frame.columns = [str(i) for i in range(frame.shape[1])]
        return frame.to_numpy(dtype=np.float32)
    extractor = TraceFeatureExtractor(
        context_length=max(len(frame), 1), num_input_channels=len(names), channel_names=list(names)
    )
    try:
        batch = extractor(frame, return_tensors="np", fill_missing_channels=True)
    except ValueError as err:
        raise CliError(f"{path}: {err}") from err
    return np.where(batch["past_observed_mask"][0], batch["past_values"][0], np.nan).astype(np.float32)


def warn_long_dataset_series(dataset, model, what: str, column: str = "past_values") -> None:
    """Warn once when rows of `dataset` hold more steps than the model reads (they are cut to the last
    `context_length` steps when encoded). Reads only the list lengths (Arrow), never the values."""
    if column not in dataset.column_names:
        return
    try:
        import pyarrow.compute as pc

        lengths = pc.list_value_length(dataset.with_format("arrow")[column])
        longest = pc.max(lengths).as_py()
        num_long = pc.sum(pc.greater(lengths, model.config.context_length)).as_py() or 0
    except Exception:  # an unusual column layout: the encoder reports real problems itself
        return
    context_length = model.config.context_length
    if longest is not None and longest > context_length:
        warn_once(
            "index",
            f"{num_long} of the {len(dataset)} series of {what} have more steps (up to {longest}) than the model reads "
            f"({context_length}, context_length): they are cut to their last {context_length} steps.",
        )


def _label_name(features, value):
    label = features.get("label") if features is not None else None
    if label is not None and hasattr(label, "int2str") and isinstance(value, int) and value >= 0:
        return label.int2str(value)
    return value


def format_hits(hits, features=None, width: int = TEXT_WIDTH) -> str:
    """A compact plain-text table of one query's hits: rank, id, label, score (4 decimals), the head of the text.

    Columns are as wide as their widest cell; ids longer than 28 characters, labels longer than 18 and texts longer
    than `width` are cut with an ellipsis."""
    rows = []
    for rank, row in enumerate(hits.rows[0], start=1):
        label = _label_name(features, row.get("label"))
        rows.append(
            (
                str(rank),
                _cut(row.get("id", ""), ID_WIDTH),
                _cut("" if label is None else label, LABEL_WIDTH),
                f"{row['score']:.4f}",
                _cut(row.get("text") or "", width),
            )
        )
    header = ("rank", "id", "label", "score", "text")
    widths = [max([len(header[i])] + [len(r[i]) for r in rows]) for i in range(4)]

    def line(cells) -> str:
        rank, id_, label, score, text = cells
        return (
            f"{rank:>{widths[0]}}  {id_:<{widths[1]}}  {label:<{widths[2]}}  {score:>{widths[3]}}  {text}".rstrip()
        )

    table = [line(header)]
    table.append("-" * max(len(table[0]), *(len(line(r)) for r in rows)) if rows else "-" * len(table[0]))
    table += [line(r) for r in rows]
    return "\n".join(table)


# --------------------------------------------------------------------------------------------------------------
# Subcommands
# --------------------------------------------------------------------------------------------------------------


def cmd_build_dataset(args) -> int:
    import importlib

    module = importlib.import_module(f"trace_datasets.{args.source}")
    module.main(args.args)
    return 0


def cmd_stage(args) -> int:
    import importlib

    module = importlib.import_module(f"trace_training.{args.command}")
    module.main(args.args)
    return 0


def _module_docstring(name: str) -> str:
    """The docstring of module `name`, read from its source without importing it (a stage's module imports torch)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin:
        return ""
    return ast.get_docstring(ast.parse(Path(spec.origin).read_text(encoding="utf-8"))) or ""


def stage_parser(stage: str) -> argparse.ArgumentParser:
    """The argument parser of `trace <stage>` (the stage script's own, from `build_argument_parser`), named
    `trace <stage>` in its usage and ending errors with one line, built without importing the stage's module."""
    from . import recipes

    parser = recipes.build_argument_parser(getattr(recipes, STAGE_RECIPES[stage]), _module_docstring(f"trace_training.{stage}"))
    parser.prog = f"trace {stage}"
    parser.error = types.MethodType(_Parser.error, parser)
    return parser


def cmd_index(args) -> int:
    from modeling_trace.retrieval import TraceRetrievalIndex
    from trace_datasets.common import check_output_dir, replace_output_dir

    overwrite = getattr(args, "overwrite", False)
    # The datasets' rule for output folders: new, empty, or an earlier `trace index` output (it holds the marker);
    # anything else only with --overwrite. Checked before the model is loaded and the rows encoded.
    check_output_dir(args.output, overwrite=overwrite, what="index")
    model = load_model(args.model)
    dataset = load_split(args.dataset, args.split)
    if args.max_rows is not None and len(dataset) > args.max_rows:
        dataset = dataset.select(range(args.max_rows))
    warn_long_dataset_series(dataset, model, f"{args.dataset} [{args.split}]")
    index = TraceRetrievalIndex.build(
        dataset, model, batch_size=args.batch_size, show_progress_bar=True, index_factory=args.index_factory,
        precision=args.precision,
    )  # fmt: skip
    # saved into a temporary folder beside --output, then renamed into place: a crash leaves the old index intact
    with replace_output_dir(args.output, overwrite=overwrite, what="index", written_by="trace index") as tmp:
        index.save(str(tmp))
    stored = "" if args.precision == "float32" else f", {args.precision} vectors"
    print(f"Indexed {len(index)} rows of {args.dataset} [{args.split}] (dim {index.dim}{stored}) -> {args.output}")
    return 0


def cmd_search(args) -> int:
    from modeling_trace.retrieval import TraceRetrievalIndex

    model = load_model(args.model)
    index = TraceRetrievalIndex.load(str(_existing_dir(args.index, "index")), model=model)
    columns = [c for c in ("id", "text", "label", "past_values", "channel_names") if c in index.corpus.column_names]
    series = None
    if args.text is not None:
        if args.target == "text":
            raise CliError("--target text with --text would be Text->Text, which TRACE does not index; use --csv for TS->Text.")
        hits = index.search_by_text([args.text], k=args.k, columns=columns)
        what = f"Text->TS for {args.text!r}"
    else:
        series = read_series_csv(args.csv, model)
        hits = index.search_by_time_series([series], k=args.k, target=args.target, columns=columns)
        context_length = model.config.context_length
        steps = (
            f"{context_length} of {series.shape[0]} steps used" if series.shape[0] > context_length
            else f"{series.shape[0]} steps"
        )  # fmt: skip
        what = f"TS->{'Text' if args.target == 'text' else 'TS'} for {args.csv} ({steps})"
    print(what)
    print(format_hits(hits, index.corpus.features))
    if args.plot:
        from modeling_trace.plotting import plot_retrieval

        for row in hits.rows[0]:
            row["label"] = _label_name(index.corpus.features, row.get("label"))
        if "past_values" not in columns:
            raise CliError("The index corpus has no past_values column to draw; --plot needs it.")
        plot_retrieval(series, hits, args.plot, query_text=args.text, channel_names=model.config.channel_names)
        print(f"Figure: {args.plot}")
    return 0


def cmd_evaluate(args) -> int:
    from modeling_trace.retrieval import TraceRetrievalIndex

    from .evaluation import evaluate, results_table

    model = load_model(args.model)
    index = TraceRetrievalIndex.load(str(_existing_dir(args.index, "index")), model=model)
    queries = load_split(args.queries, args.split) if args.queries else None
    # no search returns more than the corpus holds (the index clamps k too; the raw baselines would allocate k)
    evaluation = evaluate(model, index, queries, k=min(args.k, len(index)), seed=args.seed)
    print(results_table(evaluation))
    if args.output:
        Path(args.output).write_text(json.dumps(evaluation, indent=2))
        print(f"Metrics: {args.output}")
    return 0


def cmd_export_onnx(args) -> int:
    output = Path(args.output)
    if output.is_file() or (output.is_dir() and any(output.iterdir()) and not (output / "onnx_manifest.json").is_file()):
        if not args.overwrite:
            raise CliError(
                f"--output {args.output!r} exists and is not an earlier `trace export-onnx` folder; give a new or empty "
                "folder, or pass --overwrite to write the ONNX files into it anyway."
            )
    try:
        from modeling_trace.onnx_export import export_onnx
    except ImportError as err:
        raise CliError(f"ONNX export needs torch's exporter ({err}); install the onnx extra: pip install 'trace-ts[onnx]'.") from err
    model = load_model(args.model)
    try:
        manifest = export_onnx(model, output, opset=args.opset, verify=not args.no_verify)
    except ImportError as err:
        raise CliError(f"ONNX export needs onnx and onnxscript ({err}); install the onnx extra: pip install 'trace-ts[onnx]'.") from err
    for part in manifest["parts"].values():
        print(f"{part['file']}: {', '.join(part['inputs'])} -> {', '.join(part['outputs'])}")
    diffs = manifest["verification"].get("max_abs_diff")
    if diffs:
        print(f"onnxruntime vs PyTorch, max abs diff: {max(diffs.values()):.2e} (batch {manifest['verification']['batch_size']})")
    elif manifest["verification"]:
        print(f"not verified: {manifest['verification'].get('skipped')}")
    print(f"Exported {args.model or 'the shipped checkpoint'} -> {args.output}")
    return 0


def cmd_bundle(args) -> int:
    from trace_training.hub import write_self_contained_folder

    try:
        output = write_self_contained_folder(args.model, args.output)
    except (ValueError, FileExistsError) as err:
        raise CliError(str(err)) from err
    size = sum(path.stat().st_size for path in output.rglob("*") if path.is_file())
    print(f"Wrote {output} ({size / 2**20:.1f} MiB, text tower included): upload it with `trace push {output} user/name`")
    return 0


def cmd_push(args) -> int:
    from trace_training.hub import push_folder_to_hub

    info = push_folder_to_hub(
        args.folder, args.repo_id, private=args.private, revision=args.revision, commit_message=args.message,
        repo_type=args.repo_type,
    )  # fmt: skip
    print(f"Pushed {args.folder} -> {getattr(info, 'commit_url', None) or args.repo_id}")
    return 0


# --------------------------------------------------------------------------------------------------------------
# Parser and entry point
# --------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="trace",
        description="TRACE: time series <-> text embedding and retrieval. Build datasets, train, index, search, "
        "evaluate and publish.",
        epilog="Multi-process training: accelerate launch --config_file configuration/accelerate/<x>.yaml "
        "-m trace_training.<stage> --config <recipe>. Quickstart: bash scripts/quickstart.sh",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("build-dataset", help="build a dataset in the TRACE schema (delegates to trace_datasets.<source>)",
                       description="Build a dataset; every option after the source goes to `python -m trace_datasets.<source>` "
                       "(see `trace build-dataset <source> --help`).")
    p.add_argument("source", choices=BUILDERS)
    p.add_argument("args", nargs=argparse.REMAINDER, help="options of the builder, e.g. --output-dir out/noaa")
    p.set_defaults(func=cmd_build_dataset)

    for stage, text in (("pretrain", "stage 1: masked reconstruction"), ("align", "stage 2: contrastive alignment"),
                        ("finetune", "task tuning with Trainer / PEFT")):
        p = sub.add_parser(stage, help=f"{text} (trace_training.{stage}, one process)",
                           description=f"{text}. Runs trace_training.{stage} in this process; options go to it (see "
                           f"`trace {stage} --help`, e.g. --config configuration/recipes/{stage}-quick.yaml). Several "
                           f"processes: accelerate launch --config_file configuration/accelerate/<x>.yaml -m trace_training.{stage} ...",
                           add_help=False)
        p.add_argument("args", nargs=argparse.REMAINDER)
        p.set_defaults(func=cmd_stage)

    p = sub.add_parser("index", help="encode a saved dataset with a model and save a retrieval index")
    p.add_argument("--model", default=None, help="TRACE checkpoint folder (default: the shipped checkpoints/trace-mini-noaa)")
    p.add_argument("--dataset", required=True, help="saved DatasetDict folder (trace build-dataset ... --output-dir)")
    p.add_argument("--split", default="test", help="split to index (default: test)")
    p.add_argument("--output", required=True, help="index folder to write (new, empty, or an earlier `trace index` output)")
    p.add_argument("--overwrite", action="store_true", help="replace --output even if it is a non-empty folder "
                   "`trace index` did not write (deletes its contents)")
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument("--index-factory", default=None, help="FAISS factory string, e.g. IVF1024,Flat (default: exact)")
    p.add_argument("--precision", choices=("float32", "int8", "binary"), default="float32",
                   help="how the index stores the vectors: float32 (exact), int8 (scalar-quantised, 4x smaller) or "
                   "binary (sign bits, Hamming search, 32x smaller); the corpus keeps float32 embeddings")
    p.add_argument("--max-rows", type=_positive_int, default=None, help="index only the first N rows (N >= 1)")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="top-k of a text or of a series (CSV) in an index",
                       description="Search an index with a text (Text->TS) or a CSV series (TS->TS, or TS->Text with "
                       "--target text). The CSV has one column per channel, named as the model's channel_names (absent "
                       "channels are missing; a date/time column is ignored), one row per step.")
    p.add_argument("--model", default=None, help="TRACE checkpoint folder (default: the shipped checkpoints/trace-mini-noaa)")
    p.add_argument("--index", required=True)
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", help="query text (Text->TS)")
    query.add_argument("--csv", help="query series as CSV")
    p.add_argument("-k", "--k", type=_positive_int, default=5, help="results (default 5; at most the index size are shown)")
    p.add_argument("--target", choices=("time_series", "text"), default="time_series", help="what to find for a CSV query")
    p.add_argument("--plot", metavar="OUT.png", help="also draw the query and hits")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("evaluate", help="retrieval metrics of a model + index vs random / Euclidean baselines")
    p.add_argument("--model", default=None, help="TRACE checkpoint folder (default: the shipped checkpoints/trace-mini-noaa)")
    p.add_argument("--index", required=True)
    p.add_argument("--queries", default=None, help="saved dataset of queries (default: the index corpus itself)")
    p.add_argument("--split", default="test")
    p.add_argument("-k", "--k", type=_positive_int, default=10)
    p.add_argument("--seed", type=int, default=0, help="seed of the random baseline")
    p.add_argument("--output", default=None, help="write the metrics as JSON")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export-onnx", help="export the time-series tower and the projection heads to ONNX",
                       description="Write time_series_model.onnx (series -> embeddings), time_series_projection.onnx and "
                       "text_projection.onnx (sentence embeddings -> text embeddings), config.json, onnx_manifest.json "
                       "and README.md into --output, with a dynamic batch axis, checked against PyTorch with onnxruntime.")
    p.add_argument("--model", default=None, help="TRACE checkpoint folder (default: the shipped checkpoints/trace-mini-noaa)")
    p.add_argument("--output", required=True, help="folder to write (new, empty, or an earlier export)")
    p.add_argument("--opset", type=_positive_int, default=18, help="ONNX opset (default 18)")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check against PyTorch")
    p.add_argument("--overwrite", action="store_true", help="write into --output even if it holds other files")
    p.set_defaults(func=cmd_export_onnx)

    p = sub.add_parser(
        "bundle", help="write a self-contained copy of a model folder that references its text tower (for the Hub)"
    )
    p.add_argument("model", help="model folder saved with save_text_model=False (e.g. the shipped checkpoint)")
    p.add_argument("output", help="new or empty folder")
    p.set_defaults(func=cmd_bundle)

    p = sub.add_parser("push", help="check a folder (model, processor, adapter, index, dataset) and upload it to the Hub")
    p.add_argument("folder")
    p.add_argument("repo_id", help="user/name")
    p.add_argument("--private", action="store_true")
    p.add_argument("--revision", default=None, help="branch (created if needed)")
    p.add_argument("--message", default=None, help="commit message")
    p.add_argument("--repo-type", choices=("model", "dataset"), default="model")
    p.set_defaults(func=cmd_push)
    return parser


def main(argv=None) -> int:
    """Entry point of the `trace` console script; returns the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = argv[:1] == ["--debug"]
    rest = argv[1:] if debug else argv
    # Delegated commands hand everything after them to the script's own parser untouched (argparse's REMAINDER
    # would swallow or reject leading options such as --config or --help).
    if rest[:1] and rest[0] in STAGES:
        # `--help` and usage errors are answered here, by the stage's own parser, before torch is imported
        stage_parser(rest[0]).parse_args(rest[1:])
        args = argparse.Namespace(debug=debug, command=rest[0], args=rest[1:], func=cmd_stage)
    elif rest[:1] == ["build-dataset"] and len(rest) > 1 and rest[1] in BUILDERS:
        args = argparse.Namespace(debug=debug, command="build-dataset", source=rest[1], args=rest[2:], func=cmd_build_dataset)
    else:
        args = parser.parse_args(argv)
    if args.debug:
        return args.func(args)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("trace: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # every exception ends as one line (see error_line); --debug shows the traceback
        print(f"trace {args.command}: {error_line(err, args.command)}", file=sys.stderr)
        return 1


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _optional_error_types(*names: tuple[str, str]) -> tuple[type, ...]:
    """The exception classes `module.name` of modules already imported (never imports one: `trace --help` stays
    light, and an exception of a module that was never imported cannot have been raised)."""
    found = []
    for module_name, name in names:
        cls = getattr(sys.modules.get(module_name), name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)


def error_line(err: Exception, command: str) -> str:
    """The one stderr line (after `trace <command>: `) for an exception that ended a command.

    Expected errors — the project's error classes (CliError, RetrievalIndexIntegrityError, NoaaDataError,
    RecipeError... all ValueErrors but CliError and QuickstartError), OS errors (missing, unreadable or damaged files),
    invalid YAML, damaged safetensors / Arrow files, running out of memory — give `error: <message>`; the messages
    name the file and what to do. Anything else is a bug or an unchecked input: `internal error: <Type>: <message>`
    and how to get the traceback, never silently swallowed.
    """
    message = _one_line(err)
    yaml_errors = _optional_error_types(("yaml", "YAMLError"))
    if yaml_errors and isinstance(err, yaml_errors):
        return f"error: invalid YAML: {message}. Fix the syntax at that line (a recipe is a YAML mapping of option: value)."
    if isinstance(err, MemoryError):
        return f"error: out of memory ({message or 'MemoryError'}); ask for less (smaller -k, --batch-size, --max-rows)."
    if isinstance(err, KeyError):
        return f"error: missing key {err.args[0]!r}" if err.args else "error: missing key"
    expected = (CliError, ValueError, OSError, ImportError) + _optional_error_types(
        ("safetensors", "SafetensorError"),
        ("pyarrow", "ArrowException"),
        ("trace_training.quickstart", "QuickstartError"),
    )
    if isinstance(err, expected):
        return f"error: {message}"
    return (
        f"internal error: {type(err).__name__}: {message} (an unexpected failure, likely a bug; run "
        f"`trace --debug {command} ...` to see the traceback)"
    )


if __name__ == "__main__":
    sys.exit(main())
