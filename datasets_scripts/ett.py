"""ETT-small (Zhou et al., Informer, AAAI 2021) -> plain split frames and the shared TRACE schema.

Files: ``<data_dir>/ett/ETTh1.csv`` … (repository ``zhouhaoyi/ETDataset``), columns ``date, HUFL,
HULL, MUFL, MULL, LUFL, LULL, OT``, hourly (ETTh) or every 15 minutes (ETTm).

Split convention (the standard one of Informer/Autoformer/PatchTST and SERAF): 12/4/4 months of
30 days — for ETTh rows ``[0, 8640)`` train, ``[8640, 11520)`` validation, ``[11520, 14400)`` test
(x4 for ETTm); rows after 14,400 (57,600 for ETTm) are not used. Standardisation is fitted on the
training rows only. A validation/test *window* may take its history from the previous split's
tail: with ``history_length=L`` the validation frame starts at row ``8640 - L`` and the test frame at
``11520 - L``, so the first validation window forecasts the first validation hour. Forecast targets
(the future part) always lie inside their own split. Window counts are then
``8640 - L - H + 1`` (train), ``2880 - H + 1`` (validation and test) for horizon ``H``, stride 1.

Two entry points:

* `load_ett_splits` -> ``{"train", "validation", "test"}`` pandas frames (raw values, ``date`` index),
  plus `EttScaler.fit` for train-fitted standardisation — for array-based forecasting code (SERAF).
* `build` -> a windowed `datasets.DatasetDict` in the TRACE schema (raw values; the scaler's
  statistics are in each split's ``info.description`` and in the dataset card).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from modeling_trace.modeling_trace import zscore_statistics

from .common import add_common_cli_args, finalize, parse_channels_arg, render_dataset_card, write_outputs
from .paths import require_data_dir

logger = logging.getLogger(__name__)

ETT_NAMES = ("ETTh1", "ETTh2", "ETTm1", "ETTm2")
COLUMNS = ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")
RAW_URL = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/{name}.csv"
CITATION = """@inproceedings{zhou2021informer,
  title     = {Informer: Beyond Efficient Transformer for Long Sequence Time-Series Forecasting},
  author    = {Zhou, Haoyi and Zhang, Shanghang and Peng, Jieqi and Zhang, Shuai and Li, Jianxin and Xiong, Hui
               and Zhang, Wancai},
  booktitle = {AAAI},
  year      = {2021}
}"""


class EttFormatError(ValueError):
    """An ETT CSV does not have the expected layout; the message names the file and row."""


def split_borders(name: str) -> dict[str, tuple[int, int]]:
    """Row ranges ``[start, stop)`` of the 12/4/4-month split (without history), e.g. ETTh: 0/8640/11520/14400."""
    if name not in ETT_NAMES:
        raise ValueError(f"Unknown ETT dataset {name!r}; expected one of {ETT_NAMES}.")
    per_hour = 4 if name.startswith("ETTm") else 1
    month = 30 * 24 * per_hour
    return {"train": (0, 12 * month), "validation": (12 * month, 16 * month), "test": (16 * month, 20 * month)}


def read_ett_csv(name: str, data_dir: str | Path | None = None) -> pd.DataFrame:
    """Read ``<data_dir>/ett/<name>.csv`` into a float frame indexed by ``date``, checking its layout."""
    path = require_data_dir(data_dir) / "ett" / f"{name}.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"ETT file {path} not found. Download it from {RAW_URL.format(name=name)} into {path.parent} "
            "(or run `python -m trace_datasets.ett --download`)."
        )
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise EttFormatError(f"Could not parse {path} as CSV ({err}); the file may be truncated.") from err
    missing = [c for c in ("date", *COLUMNS) if c not in df.columns]
    if missing:
        raise EttFormatError(
            f"{path} lacks column(s) {missing}; expected date, {', '.join(COLUMNS)}, found {list(df.columns)}."
        )
    dates = pd.to_datetime(df["date"], format="%Y-%m-%d %H:%M:%S", errors="coerce")
    if dates.isna().any():
        i = int(np.flatnonzero(dates.isna().to_numpy())[0])
        raise EttFormatError(
            f"{path}: data row {i + 1} (CSV line {i + 2}) has date={df['date'].iloc[i]!r}; expected "
            "'YYYY-MM-DD HH:MM:SS'."
        )
    values = {}
    for col in COLUMNS:
        numeric = pd.to_numeric(df[col], errors="coerce")
        if numeric.isna().any():
            i = int(np.flatnonzero(numeric.isna().to_numpy())[0])
            raise EttFormatError(
                f"{path}: data row {i + 1} (CSV line {i + 2}) has {col}={df[col].iloc[i]!r}; expected a number "
                "(a short last row means the file is truncated)."
            )
        values[col] = numeric.astype("float64").to_numpy()
    frame = pd.DataFrame(values, index=pd.DatetimeIndex(dates, name="date"))
    step = frame.index.to_series().diff().dropna()
    expected = pd.Timedelta(minutes=15 if name.startswith("ETTm") else 60)
    if not (step == expected).all():
        i = int(np.flatnonzero((step != expected).to_numpy())[0]) + 1
        raise EttFormatError(
            f"{path}: data row {i + 1} (CSV line {i + 2}, {frame.index[i]}) does not follow the previous row by "
            f"{expected}; ETT files are expected to be regular and sorted."
        )
    needed = split_borders(name)["test"][1]
    if len(frame) < needed:
        raise EttFormatError(
            f"{path} has {len(frame)} rows; the standard split needs at least {needed}. The file looks truncated."
        )
    return frame


def load_ett_splits(
    name: str = "ETTh1", data_dir: str | Path | None = None, history_length: int = 0
) -> dict[str, pd.DataFrame]:
    """The standard train/validation/test frames of one ETT file (raw values, ``date`` index).

    Args:
        name: ``"ETTh1"``, ``"ETTh2"`` (shipped), ``"ETTm1"``, ``"ETTm2"``.
        data_dir: folder holding ``ett/`` (default: `paths.default_data_dir()`).
        history_length: rows of history a window needs; validation and test frames then start that
            many rows early, in the previous split's tail (the standard protocol). ``0`` gives the
            disjoint 8640/2880/2880 row blocks.
    """
    frame = read_ett_csv(name, data_dir)
    borders = split_borders(name)
    if not 0 <= history_length <= borders["validation"][1] - borders["validation"][0]:
        raise ValueError(f"history_length must be in [0, {borders['validation'][1] - borders['validation'][0]}], got {history_length}.")
    out = {}
    for split, (lo, hi) in borders.items():
        start = lo if split == "train" else lo - history_length
        out[split] = frame.iloc[start:hi].copy()
    return out


@dataclass
class EttScaler:
    """Per-column z-score fitted on the training rows: the package's `zscore_statistics` (NaN ignored, ``std`` with
    ddof=0 as sklearn's StandardScaler, 1 for a constant column)."""

    mean: pd.Series
    std: pd.Series

    @classmethod
    def fit(cls, train: pd.DataFrame) -> EttScaler:
        loc, scale = zscore_statistics(train.to_numpy(dtype=np.float64), dim=0)
        return cls(mean=pd.Series(loc[0], index=train.columns), std=pd.Series(scale[0], index=train.columns))

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        return (frame - self.mean[frame.columns]) / self.std[frame.columns]

    def inverse_transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        return frame * self.std[frame.columns] + self.mean[frame.columns]

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {c: {"mean": float(self.mean[c]), "std": float(self.std[c])} for c in self.mean.index}


def load_ett_standardized(
    name: str = "ETTh1", data_dir: str | Path | None = None, history_length: int = 0
) -> tuple[dict[str, pd.DataFrame], EttScaler]:
    """`load_ett_splits` z-scored with an `EttScaler` fitted on the training rows; returns (splits, scaler)."""
    splits = load_ett_splits(name, data_dir, history_length)
    scaler = EttScaler.fit(splits["train"])
    return {k: scaler.transform(v) for k, v in splits.items()}, scaler


def build(
    name: str | Sequence[str] = "ETTh1",
    data_dir: str | Path | None = None,
    *,
    input_length: int = 96,
    horizon: int = 96,
    stride: int = 1,
    channels: str | Sequence[str] = "all",
    max_windows_per_split: int | None = None,
    seed: int = 0,
):
    """Windowed ETT in the TRACE schema: `past_values` (input_length x C), `future_values` (horizon x C).

    Args:
        name: one ETT name or a list (label = the ETT name, over all four `ETT_NAMES`).
        data_dir: folder holding ``ett/``.
        input_length, horizon, stride: window geometry (defaults: 96 -> 96, stride 1).
        channels: ``"all"`` (the 7 columns), ``"OT"`` or a list of column names.
        max_windows_per_split: keep at most this many windows per split, evenly spaced (quick runs, tests).
        seed: accepted for CLI symmetry; building is deterministic.
    """
    names = [name] if isinstance(name, str) else list(name)
    cols = list(COLUMNS) if channels == "all" else (["OT"] if channels == "OT" else list(channels))
    unknown = [c for c in cols if c not in COLUMNS]
    if unknown:
        raise ValueError(f"Unknown ETT channel(s) {unknown}; expected some of {COLUMNS}.")
    if input_length <= 0 or horizon <= 0 or stride <= 0:
        raise ValueError(f"input_length, horizon and stride must be positive, got {input_length}, {horizon}, {stride}.")
    records = {"train": [], "validation": [], "test": []}
    stats = {}
    for ett in names:
        splits = load_ett_splits(ett, data_dir, history_length=input_length)
        stats[ett] = EttScaler.fit(splits["train"][cols]).to_dict()
        freq = "15min" if ett.startswith("ETTm") else "1h"
        for split, frame in splits.items():
            values = frame[cols].to_numpy(dtype=np.float32)
            starts = np.arange(0, len(frame) - input_length - horizon + 1, stride)
            if max_windows_per_split is not None and len(starts) > max_windows_per_split:
                starts = starts[np.unique(np.linspace(0, len(starts) - 1, max_windows_per_split).round().astype(int))]
            for s in tqdm(starts, desc=f"{ett} {split}", leave=False):
                stamp = frame.index[s]
                records[split].append(
                    {
                        "id": f"ett/{ett}/L{input_length}H{horizon}/{stamp:%Y-%m-%dT%H:%M}",
                        "source": "ett",
                        "domain": ett,
                        "series_id": ett,
                        "start_timestamp": f"{stamp:%Y-%m-%dT%H:%M:%SZ}",
                        "freq": freq,
                        "past_values": values[s : s + input_length],
                        "channel_names": cols,
                        "future_values": values[s + input_length : s + input_length + horizon],
                        "text": "",
                        "channel_texts": [""] * len(cols),
                        "label": ett,
                        "event_type": "",
                        "source_file": f"ett/{ett}.csv",
                        "event_id": "",
                        "narrative_type": "",
                    }
                )
    dd = finalize(records, list(ETT_NAMES), desc="ett")
    description = json.dumps({"input_length": input_length, "horizon": horizon, "train_statistics": stats})
    for ds in dd.values():
        ds.info.description = description
    return dd


def dataset_card(dd, input_length: int, horizon: int) -> str:
    """Dataset card of a `build` result, with the train-fitted standardisation statistics."""
    stats = json.loads(next(iter(dd.values())).info.description)["train_statistics"]
    return render_dataset_card(
        dd,
        pretty_name="ETT-small (windowed) in the TRACE schema",
        source_description="Electricity Transformer Temperature, hourly / 15-minute loads and oil temperature, "
        "from https://github.com/zhouhaoyi/ETDataset (Zhou et al., 2021).",
        license="cc-by-nd-4.0",
        how_built=f"`python -m trace_datasets.ett --input-length {input_length} --horizon {horizon}`: standard "
        "12/4/4-month split; validation/test windows take their history from the previous split's tail, "
        "their future lies in the split. Raw values; z-score with the train statistics in `train_statistics`.",
        citation=CITATION,
        task_categories=("time-series-forecasting",),
        extra_metadata={"train_statistics": stats},
    )


def download_ett(dest: str | Path, names: Sequence[str] = ("ETTh1", "ETTh2")) -> Path:
    """Fetch ETT CSVs from the ETDataset GitHub repository into `dest` (for users online)."""
    import urllib.request

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        part = dest / f"{name}.csv.part"
        with urllib.request.urlopen(RAW_URL.format(name=name), timeout=60) as response, open(part, "wb") as fh:
            fh.write(response.read())
        part.rename(dest / f"{name}.csv")
    return dest


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m trace_datasets.ett --name ETTh1 ETTh2 --output-dir out/``."""
    parser = argparse.ArgumentParser(prog="python -m trace_datasets.ett", description=__doc__.split("\n")[0])
    parser.add_argument("--name", nargs="+", default=["ETTh1"], choices=ETT_NAMES)
    parser.add_argument("--input-length", type=int, default=96)
    parser.add_argument("--horizon", type=int, default=96)
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--channels", default="all", help="'all', 'OT' or comma-separated column names")
    parser.add_argument("--max-windows-per-split", type=int, default=None)
    parser.add_argument("--download", action="store_true", help="first fetch the CSVs into <data-dir>/ett")
    add_common_cli_args(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.download:
        from .paths import default_data_dir

        download_ett(Path(args.data_dir or default_data_dir()) / "ett", args.name)
    channels = parse_channels_arg(args.channels)
    dd = build(
        args.name,
        args.data_dir,
        input_length=args.input_length,
        horizon=args.horizon,
        stride=args.stride,
        channels=channels,
        max_windows_per_split=args.max_windows_per_split,
        seed=args.seed,
    )
    write_outputs(dd, dataset_card(dd, args.input_length, args.horizon), args)


if __name__ == "__main__":
    main()
