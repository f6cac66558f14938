"""Time-MMD (Liu et al., NeurIPS 2024 Datasets & Benchmarks) -> the shared TRACE schema.

Source layout (repository `AdityaLab/Time-MMD`, shipped under ``<data_dir>/timemmd``)::

    numerical/<Domain>/<Domain>.csv            OT + other columns, start_date, end_date
    textual/<Domain>/<Domain>_report.csv       ,start_date,end_date,fact,preds
    textual/<Domain>/<Domain>_search.csv       ,start_date,end_date,fact,preds

Two configurations:

* ``"forecasting"`` — per domain, sliding windows of `input_length` steps (`past_values`) followed by
  `horizon` steps (`future_values`), cut from a chronological 70/10/20 split of the domain's time
  steps; a window's past *and* future lie entirely inside one split (no window crosses a split
  boundary, so validation/test windows never see training values in their history either).
  Values are kept raw; `train_statistics` gives the per-channel z-score statistics of the training
  steps (also stored in the dataset card and in ``Dataset.info.description``) so evaluation can
  report MSE on standardised values as the paper does.
* ``"retrieval"`` — windows of `input_length` steps with their paired text; ``label`` is the domain
  (the ClassLabel is the list of domains in both configurations). Windows without any text are
  dropped by default.

Input lengths and horizons (`DOMAIN_SETTINGS`): the paper's horizons are Health 12/48 weeks,
Energy 12/48 weeks and Environment 48/336 days; other domains follow the same short/long idea.
Input lengths are chosen so that at least one window fits into the 10 % validation split of even the
smallest domain (Security: 309 months -> 30 validation months):

=============================================  =====  ============  ======================
domains                                         freq   input_length  horizons (short, long)
=============================================  =====  ============  ======================
Climate, Energy, Health_AFR, Health_US          7D     36            12, 48
Environment                                     1D     96            48, 336
Agriculture, Economy, SocialGood, Traffic       1MS    24            6, 12
Security                                        1MS    12            6, 12
=============================================  =====  ============  ======================

Text pairing rule (`pair_texts`): a window covers ``[window_start, window_end]`` where
``window_start`` is the ``start_date`` of its first input step and ``window_end`` the ``end_date``
of its last input step (the horizon is never looked at). A text row is a candidate when its
``end_date`` falls inside that span, ``window_start <= text.end_date <= window_end``, and its
``fact`` is not missing. The window takes the candidate with the latest ``end_date``; ties go to the
latest ``start_date``, then to the row appearing last in the file. With ``text_source="both"`` the
report and the search pick are joined (report first) by a blank line. The text is the ``fact``
column; ``preds`` (LLM predictions of the future) is left out unless ``include_preds=True`` since it
talks about the horizon.

Data quirks handled here: Climate is stored newest-first and Economy unordered (rows are sorted by
``start_date``); Health_AFR names its start column ``date`` twice (the second is ``start_date``);
Health_US gives MMWR week 53 and the next week 1 the same date and skips a week a little later
(its rows are consecutive weeks, so they are re-dated one week apart, keeping the first and last
dates); missing weeks/months are re-inserted as NaN rows so
every step is one period; leading/trailing rows without an ``OT`` value are trimmed; texts
``NA``/``NA;NA``/empty are missing (Security's report file has no text at all); a few Traffic
report rows end one year before they start (year typo in the source: one year is added);
Health_AFR's OT holds ``inf`` where its ratio had a zero denominator (read as missing).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from modeling_trace.modeling_trace import zscore_statistics
from modeling_trace.tables import markdown_table

from .common import add_common_cli_args, finalize, parse_channels_arg, render_dataset_card, write_outputs
from .paths import require_data_dir

logger = logging.getLogger(__name__)

DOMAINS = (
    "Agriculture",
    "Climate",
    "Economy",
    "Energy",
    "Environment",
    "Health_AFR",
    "Health_US",
    "Security",
    "SocialGood",
    "Traffic",
)

GITHUB_RAW = "https://raw.githubusercontent.com/AdityaLab/Time-MMD/main"
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
TEXT_SOURCES = ("search", "report", "both")

CITATION = """@inproceedings{liu2024timemmd,
  title     = {Time-MMD: Multi-Domain Multimodal Dataset for Time Series Analysis},
  author    = {Liu, Haoxin and Xu, Shangqing and Zhao, Zhiyuan and Kong, Lingkai and Kamarthi, Harshavardhan
               and Sasanur, Aditya B. and Sharma, Megha and Cui, Jiaming and Wen, Qingsong and Zhang, Chao
               and Prakash, B. Aditya},
  booktitle = {Advances in Neural Information Processing Systems, Datasets and Benchmarks Track},
  year      = {2024}
}"""


@dataclass(frozen=True)
class DomainSetting:
    """Step frequency (pandas alias), default input length and the (short, long) horizons of a domain."""

    freq: str
    input_length: int
    horizons: tuple[int, int]


DOMAIN_SETTINGS = {
    "Agriculture": DomainSetting("1MS", 24, (6, 12)),
    "Climate": DomainSetting("7D", 36, (12, 48)),
    "Economy": DomainSetting("1MS", 24, (6, 12)),
    "Energy": DomainSetting("7D", 36, (12, 48)),
    "Environment": DomainSetting("1D", 96, (48, 336)),
    "Health_AFR": DomainSetting("7D", 36, (12, 48)),
    "Health_US": DomainSetting("7D", 36, (12, 48)),
    "Security": DomainSetting("1MS", 12, (6, 12)),
    "SocialGood": DomainSetting("1MS", 24, (6, 12)),
    "Traffic": DomainSetting("1MS", 24, (6, 12)),
}

# Numeric columns that are identifiers or calendar fields, not measurements.
_NOT_CHANNELS = {"CBSA Code", "YEAR", "WEEK", "MapDate", "StatisticFormatID"}
_MISSING_TEXT = re.compile(r"^\s*(NA|N/A)\b", re.IGNORECASE)


class TimeMMDFormatError(ValueError):
    """A Time-MMD file does not have the expected layout; the message names the file and row."""


# --------------------------------------------------------------------------------------------------
# Download (for users online; the tests use the shipped copy)
# --------------------------------------------------------------------------------------------------


def download_timemmd(dest: str | Path, domains: Sequence[str] | None = None, overwrite: bool = False) -> Path:
    """Fetch the numerical and textual CSVs of `domains` from the Time-MMD GitHub repository.

    Files land in ``<dest>/numerical/<Domain>/<Domain>.csv`` and ``<dest>/textual/<Domain>/…`` — the
    layout `build` reads with ``data_dir=<parent of dest>`` when `dest` ends in ``timemmd``. Each
    file is written to a ``.part`` file first and renamed when complete.
    """
    dest = Path(dest)
    domains = _check_domains(domains)
    relpaths = []
    for domain in domains:
        relpaths.append(f"numerical/{domain}/{domain}.csv")
        relpaths += [f"textual/{domain}/{domain}_{kind}.csv" for kind in ("report", "search")]
    for rel in tqdm(relpaths, desc="downloading Time-MMD"):
        target = dest / rel
        if target.exists() and not overwrite:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_suffix(".csv.part")
        with urllib.request.urlopen(f"{GITHUB_RAW}/{rel}", timeout=60) as response, open(part, "wb") as fh:
            fh.write(response.read())
        part.rename(target)
    return dest


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


def _check_domains(domains: Sequence[str] | str | None) -> list[str]:
    if domains is None:
        return list(DOMAINS)
    if isinstance(domains, str):
        domains = [domains]
    unknown = [d for d in domains if d not in DOMAINS]
    if unknown:
        raise ValueError(f"Unknown Time-MMD domain(s) {unknown}; expected some of {list(DOMAINS)}.")
    return list(domains)


def _read_header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        try:
            return next(csv.reader(fh))
        except StopIteration:
            raise TimeMMDFormatError(f"{path} is empty; expected a CSV header.") from None


def _parse_dates(values: pd.Series, path: Path, column: str, row_label: str = "data row") -> pd.Series:
    parsed = pd.to_datetime(values, format="%Y-%m-%d", errors="coerce")
    bad = parsed.isna()
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        hint = " It is the last row: the file looks truncated." if first == len(values) - 1 else ""
        raise TimeMMDFormatError(
            f"{path}: {row_label} {first + 1} has {column}={values.iloc[first]!r}; expected a YYYY-MM-DD date "
            f"({int(bad.sum())} bad value(s) in total).{hint} Fix or re-download the file."
        )
    return parsed


def _read_csv(path: Path, **kwargs) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(
            f"Time-MMD file {path} not found. Point --data-dir at the folder holding timemmd/, or run "
            "`python -m trace_datasets.timemmd --download` to fetch it."
        )
    try:
        return pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise TimeMMDFormatError(f"Could not parse {path} as CSV ({err}); the file may be truncated.") from err


def read_numeric(
    domain: str, data_dir: str | Path | None = None, channels: str | Sequence[str] = "OT"
) -> pd.DataFrame:
    """Read one domain's numeric series as a regular, sorted frame indexed by ``start_date``.

    Args:
        domain: one of `DOMAINS`.
        data_dir: folder holding ``timemmd/`` (default: `paths.default_data_dir()`).
        channels: ``"OT"`` (the paper's univariate target), ``"all"`` (OT first, then every other
            numeric measurement column) or an explicit list of column names.

    Returns:
        A frame with columns ``end_date`` plus one float column per channel, one row per period of
        ``DOMAIN_SETTINGS[domain].freq`` (missing periods are NaN rows).
    """
    path = require_data_dir(data_dir) / "timemmd" / "numerical" / domain / f"{domain}.csv"
    header = _read_header(path) if path.is_file() else None
    df = _read_csv(path, low_memory=False)
    if header is not None and header.count("date") > 1:
        # Health_AFR's header is `date,date,end_date,OT`: the second `date` is the start date.
        df = df.rename(columns={"date.1": "start_date"})
    needed = ["start_date", "end_date", "OT"]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise TimeMMDFormatError(
            f"{path} lacks column(s) {missing}; expected at least {needed}, found {list(df.columns)}."
        )
    if df.empty:
        raise TimeMMDFormatError(f"{path} has a header but no data rows.")
    df["start_date"] = _parse_dates(df["start_date"], path, "start_date")
    df["end_date"] = _parse_dates(df["end_date"], path, "end_date")

    if channels == "OT":
        names = ["OT"]
    elif channels == "all":
        names = ["OT"]
        for col in df.columns:
            if col in ("OT", "start_date", "end_date", "date", "Date") or col in _NOT_CHANNELS:
                continue
            numeric = pd.to_numeric(df[col], errors="coerce")
            if numeric.notna().mean() > 0.5:  # text columns (Category, CBSA name...) are mostly NaN here
                names.append(col)
    else:
        names = list(channels)
        absent = [c for c in names if c not in df.columns]
        if absent:
            raise ValueError(f"{path} has no column(s) {absent}; available: {list(df.columns)}.")
    values = {}
    for col in names:
        raw = df[col]
        numeric = pd.to_numeric(raw, errors="coerce")
        if col == "OT":
            bad = numeric.isna() & raw.notna()
            if bad.any():
                first = int(np.flatnonzero(bad.to_numpy())[0])
                raise TimeMMDFormatError(
                    f"{path}: data row {first + 1} (CSV line {first + 2}) has OT={raw.iloc[first]!r}; expected "
                    "a number (or an empty cell for a missing value)."
                )
        numeric = numeric.astype("float64")
        infinite = np.isinf(numeric.to_numpy())
        if infinite.any():
            # Health_AFR's OT is a ratio with `inf` where its denominator was 0: a missing value.
            logger.info("%s: %d infinite %s value(s) read as missing.", path, int(infinite.sum()), col)
            numeric[infinite] = np.nan
        values[col] = numeric
    out = pd.DataFrame({"start_date": df["start_date"], "end_date": df["end_date"], **values})
    out["_row"] = np.arange(len(out))
    # Climate is newest-first and Economy unordered; a stable sort keeps file order for equal dates.
    out = out.sort_values(["start_date", "_row"], kind="stable").reset_index(drop=True)

    freq = DOMAIN_SETTINGS[domain].freq
    dup = out["start_date"].duplicated()
    if dup.any() and freq == "7D":
        step = pd.Timedelta(days=7)
        span = out["start_date"].iloc[-1] - out["start_date"].iloc[0]
        if span == step * (len(out) - 1):
            # Health_US: the source turned (YEAR, WEEK) into dates so that MMWR week 53 and the next
            # week 1 share a date and a week is skipped a few weeks later; the rows themselves are
            # consecutive weeks in file order, so they are re-dated one week apart from the first row
            # (first and last dates unchanged).
            new_start = out["start_date"].iloc[0] + step * np.arange(len(out))
            out["start_date"] = new_start
            out["end_date"] = new_start + pd.Timedelta(days=6)
        dup = out["start_date"].duplicated()
    if dup.any():
        first = out.loc[dup, "start_date"].iloc[0]
        raise TimeMMDFormatError(
            f"{path}: {int(dup.sum())} row(s) repeat a start_date (first: {first.date()}); expected one row per period."
        )
    out = out.drop(columns="_row").set_index("start_date")

    grid = pd.date_range(out.index[0], out.index[-1], freq=freq.removeprefix("1"))
    if out.index.isin(grid).all():
        out = out.reindex(grid)
        gap = out["end_date"].isna()
        # Re-inserted periods end the day before the next period starts.
        next_start = pd.Series(grid[1:].append(pd.DatetimeIndex([grid[-1] + (grid[-1] - grid[-2])])), index=grid)
        out.loc[gap, "end_date"] = next_start[gap] - pd.Timedelta(days=1)
    else:
        logger.warning("%s: dates are not on a regular %s grid; keeping the rows as they are.", path, freq)
    out.index.name = "start_date"

    observed = out["OT"].notna().to_numpy()
    if not observed.any():
        raise TimeMMDFormatError(f"{path}: column OT has no value at all.")
    first, last = np.flatnonzero(observed)[[0, -1]]
    return out.iloc[first : last + 1]


def is_missing_text(text) -> bool:
    """True for Time-MMD's placeholders of a missing text: empty, ``NA``, ``NA;NA``, ``NA\\n\\nNote: …``."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return True
    text = str(text)
    return not text.strip() or bool(_MISSING_TEXT.match(text))


def read_texts(domain: str, kind: str, data_dir: str | Path | None = None, include_preds: bool = False) -> pd.DataFrame:
    """Read one domain's ``report`` or ``search`` texts.

    Returns a frame with ``start_date``, ``end_date``, ``text`` (``""`` when missing), ``row`` (the
    file's own index column) and ``position`` (0-based data row), in file order.
    """
    if kind not in ("report", "search"):
        raise ValueError(f"kind must be 'report' or 'search', got {kind!r}.")
    path = require_data_dir(data_dir) / "timemmd" / "textual" / domain / f"{domain}_{kind}.csv"
    # keep_default_na=False: "NA" must stay a string so is_missing_text sees it (and "NaN" in prose stays prose).
    df = _read_csv(path, keep_default_na=False, dtype=str)
    needed = ["start_date", "end_date", "fact"]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise TimeMMDFormatError(
            f"{path} lacks column(s) {missing}; expected header ',start_date,end_date,fact,preds', "
            f"found {list(df.columns)}."
        )
    start = _parse_dates(df["start_date"], path, "start_date", row_label="text row")
    end = _parse_dates(df["end_date"], path, "end_date", row_label="text row")
    # Traffic's report has rows like 2022-12-26 .. 2022-01-01: the end year is one too small.
    typo = (end < start) & (end + pd.DateOffset(years=1) >= start)
    end = end.where(~typo, end + pd.DateOffset(years=1))
    backwards = end < start
    if backwards.any():
        logger.warning("%s: dropping %d text row(s) that end before they start.", path, int(backwards.sum()))

    def _text(fact: str, preds: str) -> str:
        fact = "" if is_missing_text(fact) else fact.strip()
        if include_preds and fact:
            kept = [p.strip() for p in preds.split(";") if not is_missing_text(p)]
            if kept:
                fact = fact + "\n" + " ".join(kept)
        return fact

    index_col = df.columns[0] if df.columns[0] not in needed else None
    out = pd.DataFrame(
        {
            "start_date": start,
            "end_date": end,
            "text": [_text(f, p) for f, p in zip(df["fact"], df["preds"] if "preds" in df else [""] * len(df))],
            "row": df[index_col].astype(str) if index_col is not None else pd.Series(range(len(df))).astype(str),
            "position": np.arange(len(df)),
        }
    )
    return out[~backwards.to_numpy()].reset_index(drop=True)


def pair_texts(
    texts: pd.DataFrame, window_starts: Sequence, window_ends: Sequence
) -> list[int | None]:
    """For each window ``[window_starts[i], window_ends[i]]`` return the position (into `texts`) of its text.

    The rule (see the module docstring): among texts with a non-empty ``text`` whose ``end_date`` lies
    inside the window span, take the latest ``end_date``, then the latest ``start_date``, then the last
    row of the file. ``None`` when no text qualifies.
    """
    usable = texts[texts["text"] != ""]
    if usable.empty:
        return [None] * len(window_starts)
    order = usable.sort_values(["end_date", "start_date", "position"], kind="stable")
    ends = order["end_date"].to_numpy(dtype="datetime64[ns]")
    idx = order.index.to_numpy()
    starts_arr = np.asarray(pd.DatetimeIndex(window_starts), dtype="datetime64[ns]")
    ends_arr = np.asarray(pd.DatetimeIndex(window_ends), dtype="datetime64[ns]")
    # Last text (in the tie-broken order) whose end_date <= window_end.
    pos = np.searchsorted(ends, ends_arr, side="right") - 1
    result: list[int | None] = []
    for p, ws in zip(pos, starts_arr):
        result.append(int(idx[p]) if p >= 0 and ends[p] >= ws else None)
    return result


def split_bounds(num_steps: int, fractions: Sequence[float] = SPLIT_FRACTIONS) -> dict[str, tuple[int, int]]:
    """Chronological ``[start, stop)`` step ranges of train/validation/test (70/10/20 by default)."""
    n_train = int(num_steps * fractions[0])
    n_val = int(num_steps * fractions[1])
    return {"train": (0, n_train), "validation": (n_train, n_train + n_val), "test": (n_train + n_val, num_steps)}


def train_statistics(
    domains: Sequence[str] | None = None, data_dir: str | Path | None = None, channels: str | Sequence[str] = "OT"
) -> dict[str, dict[str, dict[str, float]]]:
    """Per-domain, per-channel mean and standard deviation over the training steps (NaN ignored).

    Use them to z-score `past_values`/`future_values` and predictions before computing the
    standardised MSE the paper reports: ``(x - mean) / std``.
    """
    stats = {}
    for domain in _check_domains(domains):
        frame = read_numeric(domain, data_dir, channels)
        lo, hi = split_bounds(len(frame))["train"]
        train = frame.iloc[lo:hi].drop(columns="end_date")
        stats[domain] = _channel_statistics(train.to_numpy(dtype=np.float64), list(train.columns))
    return stats


def _channel_statistics(values: np.ndarray, channel_names: Sequence[str]) -> dict[str, dict[str, float]]:
    """`{channel: {"mean", "std"}}` over the rows of `values` `(steps, channels)`, NaN ignored (the package's one
    z-score, `zscore_statistics`: population std, 1 for a constant channel)."""
    loc, scale = zscore_statistics(values, dim=0)
    return {c: {"mean": float(loc[0, j]), "std": float(scale[0, j])} for j, c in enumerate(channel_names)}


def standardize(dataset, statistics: dict):
    """Z-score `past_values` / `future_values` of built rows with training statistics (`load_statistics(train)`),
    looked up by each row's `domain` and `channel_names`: the standardised space the paper reports MSE in."""

    def apply(row):
        stats = statistics[row["domain"]]
        mean = np.array([stats[c]["mean"] for c in row["channel_names"]], dtype=np.float64)
        std = np.array([stats[c]["std"] for c in row["channel_names"]], dtype=np.float64)
        for column in ("past_values", "future_values"):
            values = np.asarray(row[column], dtype=np.float64).reshape(len(row[column]), len(mean))
            row[column] = ((values - mean) / std).astype(np.float32).tolist()
        return row

    return dataset.map(apply, desc="standardising")


def load_statistics(dataset) -> dict:
    """The `train_statistics` a built split carries in ``info.description`` (JSON)."""
    info = json.loads(dataset.info.description or "{}")
    if "train_statistics" not in info:
        raise ValueError("This dataset has no Time-MMD train_statistics in info.description; rebuild it with build().")
    return info["train_statistics"]


# --------------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------------


def _iso(ts: pd.Timestamp) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def build(
    config: str = "forecasting",
    domains: Sequence[str] | None = None,
    data_dir: str | Path | None = None,
    *,
    text_source: str = "search",
    channels: str | Sequence[str] = "OT",
    input_length: int | dict[str, int] | None = None,
    horizon: str | int | dict[str, int] = "short",
    stride: int | None = None,
    include_preds: bool = False,
    drop_windows_without_text: bool | None = None,
    max_windows_per_split: int | None = None,
    seed: int = 0,
) -> datasets.DatasetDict:  # noqa: F821
    """Build Time-MMD in the TRACE schema.

    Args:
        config: ``"forecasting"`` (past + future windows) or ``"retrieval"`` (past windows + text).
        domains: subset of `DOMAINS` (default: all ten).
        data_dir: folder holding ``timemmd/`` (default: `paths.default_data_dir()`).
        text_source: ``"search"`` (paper protocol), ``"report"`` or ``"both"``.
        channels: ``"OT"`` (paper protocol, univariate), ``"all"`` (OT plus the domain's other numeric
            columns) or a list of column names.
        input_length: window length in steps; an int for all domains, a per-domain dict, or ``None``
            for `DOMAIN_SETTINGS`.
        horizon: forecasting only — ``"short"``/``"long"`` (the paper's pair per domain, see
            `DOMAIN_SETTINGS`), an int, or a per-domain dict.
        stride: steps between window starts, a positive int; default (`None`) 1 for forecasting,
            `input_length` (no overlap) for retrieval.
        include_preds: append the file's ``preds`` column (LLM forecasts) to the text.
        drop_windows_without_text: default ``False`` for forecasting, ``True`` for retrieval.
        max_windows_per_split: keep at most this many windows (a positive int) per domain and split,
            chosen evenly spaced in time (for quick experiments and tests).
        seed: accepted for CLI symmetry; building is deterministic.

    Returns:
        `datasets.DatasetDict` with ``train``/``validation``/``test``; ``label`` is the domain.
    """
    if config not in ("forecasting", "retrieval"):
        raise ValueError(f"config must be 'forecasting' or 'retrieval', got {config!r}.")
    if text_source not in TEXT_SOURCES:
        raise ValueError(f"text_source must be one of {TEXT_SOURCES}, got {text_source!r}.")
    domains = _check_domains(domains)
    stride = _positive_or_none(stride, "stride")
    max_windows_per_split = _positive_or_none(max_windows_per_split, "max_windows_per_split")
    forecasting = config == "forecasting"
    if drop_windows_without_text is None:
        drop_windows_without_text = not forecasting
    kinds = ["report", "search"] if text_source == "both" else [text_source]

    records = {"train": [], "validation": [], "test": []}
    stats = {}
    for domain in domains:
        setting = DOMAIN_SETTINGS[domain]
        length = _per_domain(input_length, domain, setting.input_length, "input_length")
        if forecasting:
            if horizon in ("short", "long"):
                h = setting.horizons[0 if horizon == "short" else 1]
            else:
                h = _per_domain(horizon, domain, None, "horizon")
        else:
            h = 0
        step = stride if stride is not None else (1 if forecasting else length)
        frame = read_numeric(domain, data_dir, channels)
        channel_names = [c for c in frame.columns if c != "end_date"]
        values = frame[channel_names].to_numpy(dtype=np.float32)
        starts = frame.index
        ends = pd.DatetimeIndex(frame["end_date"])
        texts = {kind: read_texts(domain, kind, data_dir, include_preds) for kind in kinds}
        numeric_file = f"timemmd/numerical/{domain}/{domain}.csv"
        bounds = split_bounds(len(frame))
        lo, hi = bounds["train"]
        stats[domain] = _channel_statistics(values[lo:hi], channel_names)
        for split, (lo, hi) in bounds.items():
            window_starts = list(range(lo, hi - length - h + 1, step))
            if not window_starts:
                logger.warning(
                    "%s %s: %d steps cannot hold one window of %d+%d steps; the split gets no %s windows.",
                    domain, split, hi - lo, length, h, domain,
                )
                continue
            picks = {
                kind: pair_texts(texts[kind], starts[window_starts], ends[[s + length - 1 for s in window_starts]])
                for kind in kinds
            }
            chosen = range(len(window_starts))
            if max_windows_per_split is not None and len(window_starts) > max_windows_per_split:
                chosen = np.unique(np.linspace(0, len(window_starts) - 1, max_windows_per_split).round().astype(int))
            for k in tqdm(chosen, desc=f"Time-MMD {domain} {split}", leave=False):
                s = window_starts[k]
                past = values[s : s + length]
                future = values[s + length : s + length + h] if forecasting else np.zeros((0, len(channel_names)))
                if np.isnan(past).all() or (forecasting and np.isnan(future).all()):
                    continue
                parts, provenance, paired_kinds = [], [numeric_file], []
                for kind in kinds:
                    p = picks[kind][k]
                    if p is not None:
                        row = texts[kind].loc[p]
                        parts.append(row["text"])
                        paired_kinds.append(kind)
                        provenance.append(f"timemmd/textual/{domain}/{domain}_{kind}.csv#{row['row']}")
                if not parts and drop_windows_without_text:
                    continue
                records[split].append(
                    {
                        "id": f"timemmd/{domain}/{config}/L{length}H{h}/{_iso(starts[s])[:10]}",
                        "source": "timemmd",
                        "domain": domain,
                        "series_id": domain,
                        "start_timestamp": _iso(starts[s]),
                        "freq": setting.freq,
                        "past_values": past,
                        "channel_names": channel_names,
                        "future_values": future if forecasting else [],
                        "text": "\n\n".join(parts),
                        "channel_texts": [""] * len(channel_names),
                        "label": domain,
                        "event_type": "",
                        "source_file": ";".join(provenance),
                        "event_id": "",
                        "narrative_type": "+".join(paired_kinds),
                    }
                )
    dd = finalize(records, list(DOMAINS), desc=f"timemmd {config}")
    description = json.dumps({"config": config, "text_source": text_source, "train_statistics": stats})
    for ds in dd.values():
        ds.info.description = description
    return dd


def _positive_or_none(value, name: str) -> int | None:
    """`value` as an int when it is a positive integer, `None` for `None`; ValueError otherwise (0 is refused, not
    taken as "use the default")."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer (or omitted for the default), got {value!r}.")
    return int(value)


def _per_domain(value, domain: str, default, name: str) -> int:
    if value is None:
        if default is None:
            raise ValueError(f"{name} is needed for domain {domain}.")
        return default
    if isinstance(value, dict):
        if domain not in value:
            if default is None:
                raise ValueError(f"{name} dict has no entry for domain {domain}: {value}.")
            return default
        value = value[domain]
    value = int(value)
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value} for {domain}.")
    return value


def dataset_card(dd, config: str, text_source: str = "search") -> str:
    """The dataset card of a `build` result, with the training z-score statistics in its metadata."""
    stats = load_statistics(next(iter(dd.values())))
    rows = [
        [domain, channel, float(s["mean"]), float(s["std"])]
        for domain, per_channel in stats.items()
        for channel, s in per_channel.items()
    ]
    table = markdown_table(["domain", "channel", "train mean", "train std"], rows, align="--rr", float_format=".6g")
    how = f"""`python -m trace_datasets.timemmd --config {config} --text-source {text_source}` from the Time-MMD
CSV files. Chronological 70/10/20 split of each domain's time steps; no window crosses a split
boundary. Text: the `fact` of the most recent {text_source} text whose end date falls inside the
input window (see `datasets_scripts/timemmd.py`). Values are raw; z-score them with the training
statistics below (also in `info.description` and in this card's `train_statistics` metadata) to
report standardised MSE as the paper does.

{table}"""
    return render_dataset_card(
        dd,
        pretty_name=f"Time-MMD ({config}) in the TRACE schema",
        source_description=(
            "Time-MMD: ten domains of public numeric series (target column `OT`) paired with report and "
            "web-search texts, from https://github.com/AdityaLab/Time-MMD (Liu et al., 2024)."
        ),
        license="odc-by",
        how_built=how,
        citation=CITATION,
        task_categories=("time-series-forecasting", "text-retrieval"),
        extra_metadata={"train_statistics": stats},
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m trace_datasets.timemmd --config forecasting --output-dir out/``."""
    parser = argparse.ArgumentParser(prog="python -m trace_datasets.timemmd", description=__doc__.split("\n")[0])
    parser.add_argument("--config", choices=("forecasting", "retrieval"), default="forecasting")
    parser.add_argument("--domains", nargs="+", choices=DOMAINS, default=None, help="default: all domains")
    parser.add_argument("--text-source", choices=TEXT_SOURCES, default="search")
    parser.add_argument("--channels", default="OT", help="'OT' (paper), 'all', or comma-separated column names")
    parser.add_argument("--input-length", type=int, default=None, help="default: per domain, see DOMAIN_SETTINGS")
    parser.add_argument("--horizon", default="short", help="'short', 'long' (paper pairs) or a number of steps")
    parser.add_argument("--stride", type=int, default=None)
    parser.add_argument("--include-preds", action="store_true", help="append the LLM `preds` column to the text")
    parser.add_argument("--max-windows-per-split", type=int, default=None)
    parser.add_argument("--download", action="store_true", help="first fetch the CSVs from GitHub into <data-dir>/timemmd")
    add_common_cli_args(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.download:
        from .paths import default_data_dir

        download_timemmd(Path(args.data_dir or default_data_dir()) / "timemmd", args.domains)
    channels = parse_channels_arg(args.channels)
    horizon = args.horizon if args.horizon in ("short", "long") else int(args.horizon)
    dd = build(
        args.config,
        args.domains,
        args.data_dir,
        text_source=args.text_source,
        channels=channels,
        input_length=args.input_length,
        horizon=horizon,
        stride=args.stride,
        include_preds=args.include_preds,
        max_windows_per_split=args.max_windows_per_split,
        seed=args.seed,
    )
    write_outputs(dd, dataset_card(dd, args.config, args.text_source), args)


if __name__ == "__main__":
    main()
