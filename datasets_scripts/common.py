"""Pieces every dataset builder shares: validation into the schema, atomic saving, cards, Hub upload, CLI.

A builder (`timemmd.py`, `ucr.py`, `ett.py`, `noaa.py`) only turns its source files into plain record
dicts; `finalize` checks them against `schema.py` and makes the `datasets.DatasetDict`,
`render_dataset_card` writes the card from the data itself, and `save_dataset_dict` /
`push_dataset_dict` put both on disk or on the Hub. `add_common_cli_args` + `write_outputs` keep
every builder's command line the same.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import datasets
from tqdm.auto import tqdm

from .schema import COLUMNS, RecordError, make_features, validate_record

logger = logging.getLogger(__name__)

__all__ = [
    "finalize",
    "OUTPUT_MARKER",
    "OutputDirError",
    "check_output_dir",
    "replace_output_dir",
    "save_dataset_dict",
    "render_dataset_card",
    "push_dataset_dict",
    "add_common_cli_args",
    "write_outputs",
    "size_category",
]

# The file every folder written through `replace_output_dir` carries (datasets, `trace index` output). Only a folder
# holding it is ours to replace; any other non-empty folder is refused unless the caller passes overwrite=True.
OUTPUT_MARKER = ".trace_output.json"


def _resolve_label(record: dict, label_names: Sequence[str], name_to_index: Mapping[str, int]) -> int:
    label = record.get("label")
    if isinstance(label, bool):
        raise RecordError(f"Record {record.get('id')!r}: label must be an int or a label name, got a bool.")
    if isinstance(label, str):
        if label not in name_to_index:
            raise RecordError(
                f"Record {record.get('id')!r}: label name {label!r} is not one of the dataset's labels "
                f"{list(label_names)}. Add it to label_names or fix the record."
            )
        return name_to_index[label]
    try:
        import numpy as np

        if isinstance(label, np.integer):
            label = int(label)
    except ImportError:  # pragma: no cover - numpy is a hard dependency of datasets
        pass
    if not isinstance(label, int):
        raise RecordError(
            f"Record {record.get('id')!r}: label must be an int index or a label name string, got "
            f"{type(label).__name__} {label!r}."
        )
    if not 0 <= label < len(label_names):
        raise RecordError(
            f"Record {record.get('id')!r}: label index {label} outside [0, {len(label_names)}) "
            f"for labels {list(label_names)}."
        )
    return label


def finalize(
    records_by_split: Mapping[str, Iterable[dict]],
    label_names: Sequence[str],
    *,
    desc: str = "",
) -> datasets.DatasetDict:
    """Validate records against the shared schema and build one `datasets.Dataset` per split.

    Args:
        records_by_split: split name (``"train"``, ``"validation"``, ``"test"``...) -> record dicts with
            exactly the columns of `schema.COLUMNS`. A split may be empty.
        label_names: names of the `ClassLabel`; a record's ``label`` may be an index into them or
            the name itself.
        desc: shown in the progress bar (e.g. ``"timemmd forecasting"``).

    Returns:
        A `datasets.DatasetDict` with the features of `schema.make_features(label_names)`.

    Raises:
        RecordError: naming the split and the record id when a record does not fit the schema or an
            id appears twice in the whole dataset.
    """
    features = make_features(label_names)
    name_to_index = {name: i for i, name in enumerate(label_names)}
    seen_ids: dict[str, str] = {}
    splits = {}
    for split, records in records_by_split.items():
        checked = []
        total = len(records) if hasattr(records, "__len__") else None
        bar = tqdm(records, total=total, desc=f"validating {desc} {split}".replace("  ", " "), leave=False)
        for position, record in enumerate(bar):
            try:
                if not isinstance(record, Mapping):
                    raise RecordError(f"expected a dict record, got {type(record).__name__}")
                extra = sorted(set(record) - set(COLUMNS))
                if extra:
                    raise RecordError(
                        f"Record {record.get('id')!r} has columns {extra} that are not in the schema "
                        f"{list(COLUMNS)}; drop them or add them to schema.py."
                    )
                record = dict(record)
                record["label"] = _resolve_label(record, label_names, name_to_index)
                row = validate_record(record, num_labels=len(label_names))
            except RecordError as err:
                raise RecordError(f"{desc + ': ' if desc else ''}split {split!r}, record #{position}: {err}") from err
            rid = row["id"]
            if rid in seen_ids:
                raise RecordError(
                    f"{desc + ': ' if desc else ''}record id {rid!r} appears twice (splits "
                    f"{seen_ids[rid]!r} and {split!r}); ids must be unique across the dataset."
                )
            seen_ids[rid] = split
            checked.append(row)
        if checked:
            splits[split] = datasets.Dataset.from_list(checked, features=features)
        else:
            splits[split] = datasets.Dataset.from_dict({c: [] for c in COLUMNS}, features=features)
    return datasets.DatasetDict(splits)


class OutputDirError(FileExistsError):
    """An output folder that the project did not write (or cannot replace); the message says what to do."""


def check_output_dir(path: str | os.PathLike, *, overwrite: bool = False, what: str = "output", option: str = "--overwrite") -> Path:
    """The one rule for replacing an output folder; returns its absolute path or raises `OutputDirError`.

    Allowed: a path that does not exist, an empty folder, or a folder holding `OUTPUT_MARKER` (written by
    `replace_output_dir`, i.e. an earlier output of this project). Any other existing folder is refused unless
    `overwrite` is true; a file, the filesystem root, the home folder and folders holding the current working
    directory are refused even then.

    Args:
        path: the destination folder.
        overwrite: replace a non-empty folder without the marker (what `option` asks for).
        what: what is being written, for the message (``"dataset"``, ``"index"``).
        option: the command-line option that sets `overwrite`, named in the message.
    """
    out = Path(path).expanduser().resolve()
    if not out.exists():
        return out
    if not out.is_dir():
        raise OutputDirError(f"Cannot write the {what} to {out}: it is a file, not a folder. Choose a new or empty folder.")
    entries = os.listdir(out)
    if not entries or (out / OUTPUT_MARKER).is_file():
        return out
    cwd = Path.cwd().resolve()
    if out == Path(out.anchor) or out == Path.home().resolve() or cwd == out or out in cwd.parents:
        raise OutputDirError(
            f"Refusing to replace {out} with the {what}: it is the filesystem root, the home folder or holds the "
            f"current directory ({cwd}), even with {option}. Choose a new or empty folder."
        )
    if overwrite:
        logger.warning("%s is not an output of this project; replacing it as asked (%s).", out, option)
        return out
    shown = ", ".join(sorted(entries)[:5]) + (", ..." if len(entries) > 5 else "")
    raise OutputDirError(
        f"Not writing the {what} to {out}: the folder exists, is not empty ({shown}) and was not written by this "
        f"project (no {OUTPUT_MARKER}). It would be deleted and replaced. Choose a new or empty folder, or pass "
        f"{option} to replace it and everything in it."
    )


@contextlib.contextmanager
def replace_output_dir(
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    what: str = "output",
    option: str = "--overwrite",
    written_by: str = "trace",
):
    """Write a folder all or nothing: yields an empty temporary folder beside `path`; on success it gets the
    `OUTPUT_MARKER` and replaces `path`, on any error it is removed and `path` is left as it was.

    `check_output_dir` decides (first) whether `path` may be replaced.

    Example:
        with replace_output_dir(out, what="index") as tmp:
            index.save(tmp)
    """
    out = check_output_dir(path, overwrite=overwrite, what=what, option=option)
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = out.parent / f".{out.name}.tmp-{tag}"
    old = out.parent / f".{out.name}.old-{tag}"
    try:
        tmp.mkdir()
        yield tmp
        marker = {
            "written_by": written_by,
            "what": what,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        (tmp / OUTPUT_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            out.rename(old)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not out.exists():
            old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def save_dataset_dict(
    dd: datasets.DatasetDict,
    out_dir: str | os.PathLike,
    card: str | None = None,
    parquet: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write `dd` (and its card as ``README.md``) to `out_dir`, all or nothing.

    Everything is first written to a temporary sibling folder, which is renamed to `out_dir` only once complete
    (see `replace_output_dir`); splits without rows are left out (neither loader accepts them); on any error the
    temporary folder is removed and `out_dir` is left as it was. An existing `out_dir` is replaced only when it is
    empty or was written by this project (it holds `OUTPUT_MARKER`); any other non-empty folder raises
    `OutputDirError` unless `overwrite` is true.

    Args:
        dd: the dataset to write.
        out_dir: destination folder.
        card: dataset card text (see `render_dataset_card`), written as ``README.md``.
        parquet: write ``data/<split>-00000-of-00001.parquet`` files (loadable with
            ``datasets.load_dataset(out_dir)``, the layout `push_to_hub` uses) instead of the Arrow
            layout of ``DatasetDict.save_to_disk`` (loadable with ``datasets.load_from_disk``).
        overwrite: replace `out_dir` even if it is a non-empty folder this project did not write.

    Returns:
        The absolute path of `out_dir`.
    """
    empty = [split for split, ds in dd.items() if len(ds) == 0]
    if empty:
        # `load_from_disk` and `load_dataset` both fail on a split with no rows (datasets 5.x).
        logger.warning("Not writing empty split(s) %s to %s.", empty, out_dir)
        dd = datasets.DatasetDict({split: ds for split, ds in dd.items() if len(ds)})
    writer = "trace_datasets.common.save_dataset_dict"
    with replace_output_dir(out_dir, overwrite=overwrite, what="dataset", written_by=writer) as tmp:
        if parquet:
            (tmp / "data").mkdir()
            for split, ds in dd.items():
                ds.to_parquet(str(tmp / "data" / f"{split}-00000-of-00001.parquet"))
        else:
            dd.save_to_disk(str(tmp))
        if card is not None:
            (tmp / "README.md").write_text(card, encoding="utf-8")
    out = Path(out_dir).expanduser().resolve()
    logger.info("Saved %s to %s", {k: len(v) for k, v in dd.items()}, out)
    return out


def size_category(num_rows: int) -> str:
    """The Hub's ``size_categories`` bucket for a row count (``"n<1K"``, ``"1K<n<10K"``, ...)."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]
    for bound, name in bounds:
        if num_rows < bound:
            return name
    return "1M<n<10M" if num_rows < 10_000_000 else "n>10M"


def _label_counts(ds: datasets.Dataset) -> Counter:
    names = ds.features["label"].names
    return Counter(names[i] for i in ds.data.column("label").to_pylist())


def _counts_table(dd: datasets.DatasetDict) -> str:
    """Markdown table of the rows per label (and in total) of every split of `dd`."""
    from modeling_trace.tables import markdown_table

    splits = list(dd.keys())
    label_names = next(iter(dd.values())).features["label"].names
    per_split = {s: _label_counts(dd[s]) for s in splits}
    rows = [[name, *(per_split[s].get(name, 0) for s in splits)] for name in label_names]
    rows.append(["**total**", *(len(dd[s]) for s in splits)])
    return markdown_table(["label", *splits], rows, align=["-", *["r"] * len(splits)])


_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ pretty_name }}

{{ source_description }}

## Structure

One row per window, in the shared TRACE schema: `past_values` (length x channels, float32, NaN =
missing), `channel_names`, `future_values` (horizon x channels, empty when there is no forecasting
target), `text`, `channel_texts`, `label` (ClassLabel), and provenance columns (`id`, `source`,
`domain`, `series_id`, `start_timestamp`, `freq`, `event_type`, `source_file`, `event_id`,
`narrative_type`).

## Rows per split and label

{{ counts_table }}

## How it was built

{{ how_built }}
{% if citation %}
## Citation

```bibtex
{{ citation }}
```
{% endif %}
"""


def render_dataset_card(
    dd: datasets.DatasetDict,
    *,
    pretty_name: str,
    source_description: str,
    license: str,
    how_built: str,
    citation: str = "",
    task_categories: Sequence[str] = ("time-series-forecasting", "feature-extraction"),
    tags: Sequence[str] = ("time-series", "multimodal", "trace"),
    extra_metadata: Mapping | None = None,
) -> str:
    """Render a Hub dataset card (``README.md`` text) whose counts are computed from `dd`.

    The YAML header carries `license`, `task_categories`, `size_categories` (from the total row
    count), `pretty_name`, `tags` and a ``configs`` entry pointing at ``data/<split>-*`` (the layout of
    both `save_dataset_dict(parquet=True)` and `DatasetDict.push_to_hub`). `extra_metadata` is added to
    the YAML header as is (e.g. normalisation statistics a builder wants to ship).
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    total = sum(len(ds) for ds in dd.values())
    card_data = DatasetCardData(
        license=license,
        pretty_name=pretty_name,
        task_categories=list(task_categories),
        size_categories=[size_category(total)],
        tags=list(tags),
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": split, "path": f"data/{split}-*"} for split, ds in dd.items() if len(ds)],
            }
        ],
        **dict(extra_metadata or {}),
    )
    card = DatasetCard.from_template(
        card_data,
        template_str=_CARD_TEMPLATE,
        pretty_name=pretty_name,
        source_description=source_description.strip(),
        counts_table=_counts_table(dd),
        how_built=how_built.strip(),
        citation=citation.strip(),
    )
    return str(card)


def push_dataset_dict(
    dd: datasets.DatasetDict,
    repo_id: str,
    card: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
):
    """Upload `dd` and its card to the Hub dataset repository `repo_id` (needs a login or ``HF_TOKEN``).

    `DatasetDict.push_to_hub` writes the parquet shards and a README holding ``dataset_info``; our card
    then replaces that README, keeping the ``dataset_info`` block it wrote so the Hub viewer still
    knows the features.
    """
    from huggingface_hub import DatasetCard

    dd.push_to_hub(
        repo_id,
        private=private,
        revision=revision,
        commit_message=commit_message or f"Upload {repo_id} built by trace-ts datasets_scripts",
    )
    new_card = DatasetCard(card)
    try:
        pushed = DatasetCard.load(repo_id, repo_type="dataset")
        info = pushed.data.to_dict().get("dataset_info")
        if info is not None:
            new_card.data.dataset_info = info
    except Exception as err:  # the card still goes up, only without the features block
        logger.warning("Could not read back the README written by push_to_hub (%s); pushing our card as is.", err)
    return new_card.push_to_hub(
        repo_id,
        repo_type="dataset",
        revision=revision,
        commit_message=commit_message or "Update dataset card",
    )


def parse_channels_arg(value: str):
    """`--channels` value: "all" or "OT" as they are, else a comma-separated list of column names."""
    return value if value in ("all", "OT") else value.split(",")


def add_common_cli_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the options every builder's CLI shares: data/output folders, seed, parquet, Hub upload."""
    group = parser.add_argument_group("common builder options")
    group.add_argument(
        "--data-dir",
        default=None,
        help="folder holding timemmd/, noaa/, ucr/, ett/ (default: $TRACE_DATA_DIR or ../shared/data)",
    )
    group.add_argument(
        "--output-dir",
        default=None,
        help="write the DatasetDict and its README.md card here (replaced atomically; an existing non-empty folder "
        f"only if an earlier build wrote it, i.e. it holds {OUTPUT_MARKER}); omit to only print counts",
    )
    group.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --output-dir even if it is a non-empty folder this project did not write (deletes its contents)",
    )
    group.add_argument("--seed", type=int, default=0, help="random seed for any sampling (default: 0)")
    group.add_argument(
        "--parquet",
        action="store_true",
        help="save parquet files under data/ (load_dataset layout) instead of the save_to_disk Arrow layout",
    )
    group.add_argument("--push-to-hub", metavar="REPO", default=None, help="also upload to this Hub dataset repo")
    group.add_argument("--private", action="store_true", help="create the Hub repository as private")
    return parser


def write_outputs(dd: datasets.DatasetDict, card: str, args: argparse.Namespace) -> None:
    """Print counts, then save and/or push as the common CLI options ask."""
    for split, ds in dd.items():
        counts = _label_counts(ds)
        print(f"{split}: {len(ds)} rows  " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    if getattr(args, "output_dir", None):
        path = save_dataset_dict(
            dd, args.output_dir, card=card, parquet=args.parquet, overwrite=getattr(args, "overwrite", False)
        )
        print(f"saved to {path}")
    if getattr(args, "push_to_hub", None):
        push_dataset_dict(dd, args.push_to_hub, card, private=args.private)
        print(f"pushed to https://huggingface.co/datasets/{args.push_to_hub}")
