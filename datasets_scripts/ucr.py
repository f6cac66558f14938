"""UCR/UEA classification archive (``.ts`` format) -> the shared TRACE schema.

A ``.ts`` file (the format of sktime/aeon and timeseriesclassification.com) is a header of
``@key value`` lines followed by ``@data`` and one case per line::

    @problemName BasicMotions
    @univariate false
    @dimensions 6
    @equalLength true
    @seriesLength 100
    @classLabel true Standing Running Walking Badminton
    @data
    0.07,0.07,...:0.39,0.39,...: ... :Standing

Channels are separated by ``:``, values by ``,``, and the class label comes last. ``?`` (or ``NaN``)
is a missing value. Label names are taken from the ``@classLabel`` header in its order.

Variable-length sets (``@equalLength false``, e.g. PickupGestureWiimoteZ, 29-361 steps) are read
without truncation: every case keeps all its points. With ``pad=True`` (the default) the series are
right-padded with NaN to the longest series of the dataset (train and test together) so every row
has the same shape; the model's observed mask treats the padding as missing. With ``pad=False``
each row keeps its own length, which is what the 1-NN baselines need (NaN padding must never enter
a distance). `series_lengths` gives the observed length of every row either way, and the builder
logs the range and writes it into the dataset card. A file that declares ``@equalLength true`` and
``@seriesLength n`` but holds a case of another length is refused (a truncated line).

Expected layout: ``<data_dir>/ucr/<Name>/<Name>_TRAIN.ts`` and ``<Name>_TEST.ts`` (as the UEA archive
zip files unpack); ``variant="eq"`` reads ``<Name>_eq_TRAIN.ts`` / ``<Name>_eq_TEST.ts`` from the same
folder (the archive's equal-length version of a variable-length set). Files with
``@timeStamps true`` are not supported.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modeling_trace.modeling_trace import pad_or_truncate_series

from .common import add_common_cli_args, finalize, render_dataset_card, write_outputs
from .paths import require_data_dir

logger = logging.getLogger(__name__)

ARCHIVE_URL = "https://www.timeseriesclassification.com/aeon-toolkit/{name}.zip"
CITATION = """@article{dau2019ucr,
  title   = {The UCR time series archive},
  author  = {Dau, Hoang Anh and Bagnall, Anthony and Kamgar, Kaveh and Yeh, Chin-Chia Michael and Zhu, Yan
             and Gharghabi, Shaghayegh and Ratanamahatana, Chotirat Ann and Keogh, Eamonn},
  journal = {IEEE/CAA Journal of Automatica Sinica},
  year    = {2019}
}"""
_MISSING = {"?", "nan", "NaN", "NA", ""}


class TsFormatError(ValueError):
    """A ``.ts`` file does not follow the format; the message names the file and line."""


@dataclass
class TsFile:
    """The parsed content of one ``.ts`` file.

    Attributes:
        path: the file read.
        header: ``@key`` -> raw value string (keys lower-cased).
        class_names: label names from ``@classLabel true …``, in header order.
        series: one float32 array (length, channels) per case, NaN = missing.
        labels: one label name per case.
    """

    path: Path
    header: dict[str, str] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    series: list[np.ndarray] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    @property
    def problem_name(self) -> str:
        return self.header.get("problemname", self.path.stem.rsplit("_", 1)[0])

    @property
    def lengths(self) -> list[int]:
        """The length of every case (its longest channel), as written in the file."""
        return [int(s.shape[0]) for s in self.series]


def _parse_value(token: str, path: Path, line_no: int) -> float:
    token = token.strip()
    if token in _MISSING:
        return float("nan")
    try:
        return float(token)
    except ValueError:
        raise TsFormatError(
            f"{path}, line {line_no}: value {token!r} is not a number; expected floats separated by ',' "
            "with '?' for missing values."
        ) from None


def read_ts(path: str | Path) -> TsFile:
    """Parse one ``.ts`` file (univariate or multivariate, equal or unequal length).

    Raises:
        TsFormatError: naming the file and line on a bad header (no ``@data``, ``@classLabel`` missing
            or ``false``, timestamps), a case with the wrong number of channels, a label not declared in
            the header, a non-numeric value, or a truncated file (no case after ``@data``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"UCR/UEA file {path} not found; expected <data_dir>/ucr/<Name>/<Name>_TRAIN.ts.")
    out = TsFile(path=path)
    in_data = False
    dimensions = None
    declared_length = None
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line_no, raw in enumerate(fh, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                if not line.startswith("@"):
                    raise TsFormatError(
                        f"{path}, line {line_no}: expected a '@key value' header line or '@data' before the "
                        f"cases, got {line[:60]!r}."
                    )
                key, _, value = line[1:].partition(" ")
                key = key.lower()
                if key == "data":
                    in_data = True
                    if "classlabel" not in out.header:
                        raise TsFormatError(
                            f"{path}, line {line_no}: '@data' reached without a '@classLabel true <names…>' "
                            "header; this loader needs class labels."
                        )
                    if out.header.get("timestamps", "false").lower() == "true":
                        raise TsFormatError(f"{path}: '@timeStamps true' files are not supported.")
                    if out.header.get("univariate", "").lower() == "true":
                        dimensions = 1
                    elif "dimensions" in out.header:
                        try:
                            dimensions = int(out.header["dimensions"])
                        except ValueError:
                            raise TsFormatError(
                                f"{path}: '@dimensions {out.header['dimensions']}' is not an integer."
                            ) from None
                    if out.header.get("equallength", "").lower() == "true" and "serieslength" in out.header:
                        try:
                            declared_length = int(out.header["serieslength"])
                        except ValueError:
                            raise TsFormatError(
                                f"{path}: '@seriesLength {out.header['serieslength']}' is not an integer."
                            ) from None
                    continue
                out.header[key] = value.strip()
                if key == "classlabel":
                    parts = value.split()
                    if not parts or parts[0].lower() != "true" or len(parts) < 2:
                        raise TsFormatError(
                            f"{path}, line {line_no}: expected '@classLabel true <name> <name> …', got {line!r}."
                        )
                    out.class_names = parts[1:]
                continue
            # A case: channels separated by ':', the last field is the class label.
            fields = line.split(":")
            if len(fields) < 2:
                raise TsFormatError(
                    f"{path}, line {line_no}: expected '<values>:…:<label>', got {line[:60]!r} (truncated file?)."
                )
            label = fields[-1].strip()
            if label not in out.class_names:
                raise TsFormatError(
                    f"{path}, line {line_no}: class label {label!r} is not among the header's "
                    f"{out.class_names} (truncated line?)."
                )
            channels = [[_parse_value(t, path, line_no) for t in f.split(",")] for f in fields[:-1]]
            if dimensions is not None and len(channels) != dimensions:
                raise TsFormatError(
                    f"{path}, line {line_no}: {len(channels)} channel(s), but the header declares {dimensions}."
                )
            length = max(len(c) for c in channels)
            if declared_length is not None and any(len(c) != declared_length for c in channels):
                raise TsFormatError(
                    f"{path}, line {line_no}: a case of {sorted({len(c) for c in channels})} point(s) per channel, "
                    f"but the header declares '@equalLength true' and '@seriesLength {declared_length}' "
                    "(truncated line?)."
                )
            arr = np.full((length, len(channels)), np.nan, dtype=np.float32)
            for j, c in enumerate(channels):
                arr[: len(c), j] = c
            out.series.append(arr)
            out.labels.append(label)
    if not in_data:
        raise TsFormatError(f"{path}: no '@data' line; the header is incomplete or the file is truncated.")
    if not out.series:
        raise TsFormatError(f"{path}: no case after '@data'; the file is empty or truncated.")
    return out


def series_lengths(rows) -> np.ndarray:
    """The observed length of every row of a `load_ucr` split (a `datasets.Dataset`, or a list of
    ``past_values``): the number of steps up to the last one with an observed value, so NaN padding added by
    ``pad=True`` is not counted (a case's own interior or leading gaps are). int64 array."""
    values = rows["past_values"] if hasattr(rows, "column_names") else rows
    out = []
    for v in values:
        observed = ~np.isnan(np.asarray(v, dtype=np.float32)).all(axis=-1) if len(v) else np.zeros(0, dtype=bool)
        out.append(len(observed) - int(np.argmax(observed[::-1])) if observed.any() else 0)
    return np.asarray(out, dtype=np.int64)


def describe_lengths(dataset_dict) -> str:
    """``"length 150"`` for an equal-length set, else ``"variable length 29-361 (train 29-361, test 37-324)"``."""
    per_split = {split: series_lengths(dataset_dict[split]) for split in dataset_dict}
    every = np.concatenate(list(per_split.values()))
    if every.min() == every.max():
        return f"length {int(every.max())}"
    parts = ", ".join(f"{split} {int(v.min())}-{int(v.max())}" for split, v in per_split.items())
    return f"variable length {int(every.min())}-{int(every.max())} ({parts})"


def load_ucr(name: str, data_dir: str | Path | None = None, pad: bool = True, variant: str | None = None):
    """Load ``<data_dir>/ucr/<name>/<name>_{TRAIN,TEST}.ts`` as a `datasets.DatasetDict` (train/test).

    Every case keeps all its points (no truncation); `series_lengths` / `describe_lengths` report them.

    Args:
        name: dataset name, e.g. ``"GunPoint"``, ``"BasicMotions"``, ``"ItalyPowerDemand"``.
        data_dir: folder holding ``ucr/`` (default: `paths.default_data_dir()`).
        pad: right-pad every series with NaN to the longest of the dataset (both splits); ``False`` keeps each
            series at its own length (variable-length sets then have rows of different lengths).
        variant: read ``<name>_<variant>_{TRAIN,TEST}.ts`` from the same folder instead, e.g. ``"eq"`` for the
            archive's equal-length version of a variable-length set.
    """
    folder = require_data_dir(data_dir) / "ucr" / name
    stem = f"{name}_{variant}" if variant else name
    files = {split: read_ts(folder / f"{stem}_{split.upper()}.ts") for split in ("train", "test")}
    label_names = files["train"].class_names
    if files["test"].class_names != label_names:
        raise TsFormatError(
            f"{files['test'].path}: @classLabel {files['test'].class_names} differs from the training file's "
            f"{label_names}; both splits must declare the same classes in the same order."
        )
    channels = {s.shape[1] for f in files.values() for s in f.series}
    if len(channels) != 1:
        raise TsFormatError(f"{folder}: cases have different channel counts {sorted(channels)}.")
    num_channels = channels.pop()
    longest = max(s.shape[0] for f in files.values() for s in f.series)
    channel_names = ["value"] if num_channels == 1 else [f"dim_{j}" for j in range(num_channels)]
    records = {}
    for split, ts in files.items():
        series_list = ts.series
        if pad:
            # UCR cases are aligned at their start: pad at the end (NaN = not observed).
            values, observed = pad_or_truncate_series(ts.series, longest, num_channels, padding_side="right")
            series_list = list(np.where(observed, values, np.nan))
        records[split] = [
            {
                "id": f"ucr/{stem}/{split}/{i:05d}",
                "source": "ucr",
                "domain": name,
                "series_id": f"{stem}/{split}/{i}",
                "start_timestamp": "",
                "freq": "",
                "past_values": series,
                "channel_names": channel_names,
                "future_values": [],
                "text": "",
                "channel_texts": [""] * num_channels,
                "label": label,
                "event_type": "",
                "source_file": f"ucr/{name}/{ts.path.name}",
                "event_id": "",
                "narrative_type": "",
            }
            for i, (series, label) in enumerate(zip(series_list, ts.labels))
        ]
    dataset_dict = finalize(records, label_names, desc=f"ucr {stem}")
    logger.info("ucr %s: %s, %d channel(s)", stem, describe_lengths(dataset_dict), num_channels)
    return dataset_dict


def dataset_card(dd, name: str, pad: bool = True) -> str:
    """Dataset card for a `load_ucr(name, pad=pad)` result."""
    return render_dataset_card(
        dd,
        pretty_name=f"UCR/UEA {name} in the TRACE schema",
        source_description=(
            f"{name} from the UCR/UEA time-series classification archive "
            "(https://www.timeseriesclassification.com), original train/test split."
        ),
        license="other",
        how_built=f"`python -m trace_datasets.ucr --name {name}{'' if pad else ' --no-pad'}` from `{name}_TRAIN.ts` / "
        f"`{name}_TEST.ts`; {describe_lengths(dd)} (no series truncated); "
        + ("series right-padded with NaN to the longest" if pad else "each series at its own length")
        + ", labels from the `@classLabel` header.",
        citation=CITATION,
        task_categories=("feature-extraction",),
        tags=("time-series", "time-series-classification", "trace"),
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m trace_datasets.ucr --name GunPoint --output-dir out/``."""
    parser = argparse.ArgumentParser(prog="python -m trace_datasets.ucr", description=__doc__.split("\n")[0])
    parser.add_argument("--name", required=True, help="dataset folder under <data-dir>/ucr, e.g. GunPoint")
    parser.add_argument("--no-pad", action="store_true", help="keep each series at its own length")
    add_common_cli_args(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    dd = load_ucr(args.name, args.data_dir, pad=not args.no_pad)
    write_outputs(dd, dataset_card(dd, args.name, pad=not args.no_pad), args)


if __name__ == "__main__":
    main()
