"""The broad pretraining corpus: every shipped real series, cut into univariate windows from training periods only.

    python -m trace_datasets.corpus --output-dir corpus [--sources ucr ett timemmd noaa] [--data-dir ...]

One row per (window, channel), in the shared schema with one channel each (`channel_names` keeps the source's name
of the channel), for a channel-independent encoder (`num_input_channels=1`, as PatchTST and MOMENT pretrain): a
multichannel series gives one row per channel, so every source fits one model whatever its channel set, and no
series is poured into another source's channel slot.

Sources and what each contributes (`train` split; `validation` from the sources that have one, for the held-out
curve):

* ``ucr`` — every case of the training split of every set shipped under ``ucr/`` (each channel of a multivariate
  case), at its own length. No validation rows (the archive has none).
* ``ett`` — ETTh1 and ETTh2, the 7 columns of the first 12 months (the standard training rows); validation: the
  next 4 months.
* ``timemmd`` — every numeric column of every domain, the first 70 % of its steps (the builder's training
  period, `timemmd.split_bounds`); validation: the next 10 %.
* ``noaa`` — every channel of every station window of the stations' training periods
  (`noaa.build_station_windows`, windows not overlapping), ending before the first split boundary of the Storm
  Events windows (`noaa.build`: their validation and test windows start there), so neither NOAA benchmark's
  held-out windows are seen. No validation rows.

Long training periods are cut into non-overlapping windows of each length in `window_lengths` (short and long
windows alike, so the encoder sees both the left-padded short series of UCR and full contexts); windows with
fewer than `min_observed_fraction` observed points or a constant channel are dropped.

Leakage: [`check_leak_free`] compares the built rows with the held-out rows of every benchmark split it knows
(UCR test cases by value, ETT / Time-MMD / NOAA by time span per series) and raises on any overlap; `build` runs it
on the result.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .common import add_common_cli_args, finalize, render_dataset_card, write_outputs
from .paths import require_data_dir

logger = logging.getLogger(__name__)

SOURCES = ("ucr", "ett", "timemmd", "noaa")
WINDOW_LENGTHS = (64, 128, 256, 512)
ETT_NAMES = ("ETTh1", "ETTh2")
# The Storm Events windows' split fractions used by every benchmark and the quickstart (`noaa.build` default).
NOAA_EVENT_SPLIT_FRACTIONS = (0.5, 0.25, 0.25)


class LeakageError(AssertionError):
    """A corpus row overlaps a held-out (validation or test) row of a benchmark split."""


def _record(rid, source, domain, series_id, start, freq, values, channel, source_file):
    return {
        "id": rid,
        "source": source,
        "domain": domain,
        "series_id": series_id,
        "start_timestamp": start,
        "freq": freq,
        "past_values": np.asarray(values, dtype=np.float32).reshape(-1, 1).tolist(),
        "channel_names": [channel],
        "future_values": [],
        "text": "",
        "channel_texts": [""],
        "label": "none",
        "event_type": "",
        "source_file": source_file,
        "event_id": "",
        "narrative_type": "",
    }


def _usable(values: np.ndarray, min_observed_fraction: float) -> bool:
    observed = np.isfinite(values)
    if observed.mean() < min_observed_fraction:
        return False
    finite = values[observed]
    return bool(finite.max() > finite.min())


def _iso(ts) -> str:
    return pd.Timestamp(ts).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cut(frame: pd.DataFrame, window_lengths, min_observed_fraction, make_record) -> list[dict]:
    """Non-overlapping windows of every length in `window_lengths`, per column of `frame` (rows: steps, in time
    order, a DatetimeIndex); `make_record(column, start, length, values)`."""
    rows = []
    for column in frame.columns:
        values = frame[column].to_numpy(dtype=np.float64)
        for length in window_lengths:
            for start in range(0, len(values) - length + 1, length):
                window = values[start : start + length]
                if _usable(window, min_observed_fraction):
                    rows.append(make_record(column, start, length, window))
    return rows


def ucr_rows(data_dir, min_observed_fraction: float) -> list[dict]:
    from .ucr import load_ucr

    rows = []
    for folder in sorted(p for p in (require_data_dir(data_dir) / "ucr").iterdir() if p.is_dir()):
        train = load_ucr(folder.name, data_dir, pad=False)["train"]
        for row in train:
            values = np.asarray(row["past_values"], dtype=np.float64)
            for c, channel in enumerate(row["channel_names"]):
                if _usable(values[:, c], min_observed_fraction):
                    rows.append(
                        _record(f"corpus/{row['id']}/{channel}", "ucr", row["domain"], row["series_id"], "", "",
                                values[:, c], channel, row["source_file"])
                    )  # fmt: skip
    return rows


def ett_rows(data_dir, window_lengths, min_observed_fraction: float) -> dict[str, list[dict]]:
    from .ett import load_ett_splits

    out = {"train": [], "validation": []}
    for name in ETT_NAMES:
        splits = load_ett_splits(name, data_dir)
        for split in out:
            frame = splits[split]

            def make(column, start, length, window, frame=frame, split=split, name=name):
                stamp = _iso(frame.index[start])
                return _record(f"corpus/ett/{name}/{column}/{length}/{stamp}", "ett", name, name, stamp, "1h",
                               window, column, f"ett/{name}.csv")  # fmt: skip

            out[split] += _cut(frame, window_lengths, min_observed_fraction, make)
    return out


def timemmd_rows(data_dir, window_lengths, min_observed_fraction: float) -> dict[str, list[dict]]:
    from .timemmd import DOMAIN_SETTINGS, DOMAINS, read_numeric, split_bounds

    out = {"train": [], "validation": []}
    for domain in DOMAINS:
        target = read_numeric(domain, data_dir, "OT")  # the frame every Time-MMD benchmark splits
        frame = read_numeric(domain, data_dir, "all").drop(columns="end_date")
        bounds = split_bounds(len(target))
        for split in out:
            lo, hi = bounds[split]
            first, last = target.index[lo], target.index[hi - 1]
            part = frame.loc[(frame.index >= first) & (frame.index <= last)]
            lengths = [n for n in window_lengths if n <= len(part)] or [len(part)]

            def make(column, start, length, window, part=part, domain=domain):
                stamp = _iso(part.index[start])
                return _record(f"corpus/timemmd/{domain}/{column}/{length}/{stamp}", "timemmd", domain, domain,
                               stamp, DOMAIN_SETTINGS[domain].freq, window, column,
                               f"timemmd/numerical/{domain}/{domain}.csv")  # fmt: skip

            out[split] += _cut(part, lengths, min_observed_fraction, make)
    return out


def noaa_event_cutoff(data_dir) -> pd.Timestamp:
    """The first split boundary of the Storm Events windows (`noaa.build` defaults): every validation and test
    window of theirs starts at or after it, whatever its seed or resolutions."""
    return _noaa_event_cutoff(str(require_data_dir(data_dir)))


@functools.lru_cache(maxsize=4)
def _noaa_event_cutoff(data_dir: str) -> pd.Timestamp:
    from . import noaa

    _, stats = noaa.build(data_dir, resolutions=(), num_non_event_windows=0,
                          split_fractions=NOAA_EVENT_SPLIT_FRACTIONS, return_stats=True)  # fmt: skip
    boundary = stats["split_boundaries"][0]
    return pd.Timestamp.max if boundary is None else _naive(boundary)


def _naive(value) -> pd.Timestamp:
    """A timestamp (string, datetime or Timestamp; UTC when zoned) as a tz-naive `pd.Timestamp`, the one form spans
    and rows are compared in."""
    stamp = pd.Timestamp(value)
    return stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo is not None else stamp


def _end_of(row) -> pd.Timestamp:
    """The timestamp of a row's last step (its start and `freq`, calendar-aware: "1MS" is a month)."""
    start = _naive(row["start_timestamp"])
    return pd.date_range(start, periods=len(row["past_values"]), freq=row["freq"])[-1]


def noaa_rows(data_dir, min_observed_fraction: float) -> list[dict]:
    from . import noaa

    cutoff = noaa_event_cutoff(data_dir)
    train = noaa.build_station_windows(data_dir, stride_fraction=1.0)["train"]
    rows = []
    for row in train:
        if _end_of(row) >= cutoff:
            continue
        values = np.asarray(row["past_values"], dtype=np.float64)
        for c, channel in enumerate(row["channel_names"]):
            if _usable(values[:, c], min_observed_fraction):
                rows.append(
                    _record(f"corpus/{row['id']}/{channel}", "noaa", row["domain"], row["series_id"],
                            row["start_timestamp"], row["freq"], values[:, c], channel, row["source_file"])
                )  # fmt: skip
    return rows


def _fingerprint(values) -> str:
    """A series' values (one channel) as a hash of their float32 bytes, NaN included."""
    return hashlib.sha1(np.ascontiguousarray(np.asarray(values, dtype=np.float32)).tobytes()).hexdigest()


def held_out_spans(data_dir, sources: Sequence[str] = SOURCES) -> dict:
    """What every benchmark holds out, per source: `{"ucr": {fingerprints of every test channel}, "ett" / "timemmd"
    / "noaa": {series_id: [(first, last) tz-naive timestamps of a held-out period or window]}}`.

    ETT: the standard validation + test rows (RAG / SERAF tables); Time-MMD: each domain's validation + test steps
    (Tables 1, 3, 5, RAG); NOAA: everything from the Storm Events windows' first split boundary on, at every station
    (their validation and test windows: Tables 1, 2, the quickstart's `--train` mode), and each station's
    validation and test periods (the station windows of the shipped checkpoint)."""
    spans: dict = {}
    if "ucr" in sources:
        from .ucr import load_ucr

        prints = set()
        for folder in sorted(p for p in (require_data_dir(data_dir) / "ucr").iterdir() if p.is_dir()):
            variants = {None} | {f.name[len(folder.name) + 1 : -len("_TEST.ts")] for f in folder.glob(f"{folder.name}_*_TEST.ts")}
            for variant in variants:
                for row in load_ucr(folder.name, data_dir, pad=False, variant=variant)["test"]:
                    values = np.asarray(row["past_values"], dtype=np.float64)
                    prints.update(_fingerprint(values[:, c]) for c in range(values.shape[1]))
        spans["ucr"] = prints
    if "ett" in sources:
        from .ett import load_ett_splits

        spans["ett"] = {}
        for name in ETT_NAMES:
            splits = load_ett_splits(name, data_dir)
            spans["ett"][name] = [(_naive(splits[s].index[0]), _naive(splits[s].index[-1])) for s in ("validation", "test")]
    if "timemmd" in sources:
        from .timemmd import DOMAINS, read_numeric, split_bounds

        spans["timemmd"] = {}
        for domain in DOMAINS:
            target = read_numeric(domain, data_dir, "OT")
            lo = split_bounds(len(target))["validation"][0]
            spans["timemmd"][domain] = [(_naive(target.index[lo]), _naive(target.index[-1]))]
    if "noaa" in sources:
        from . import noaa

        # Storm Events windows: every held-out one starts at or after the first boundary, at every station;
        # station windows: each station's validation and test periods
        cutoff = noaa_event_cutoff(data_dir)
        spans["noaa"] = {}
        for meta in noaa.load_stations():
            periods = noaa.station_split_periods(noaa.read_station(meta, data_dir))
            spans["noaa"][meta["id"]] = [(cutoff, pd.Timestamp.max)] + [
                (_naive(periods[s][0]), _naive(periods[s][1])) for s in ("validation", "test")
            ]
    return spans


def check_leak_free(dataset, spans: dict) -> int:
    """Raise `LeakageError` naming the first row of `dataset` (corpus rows) that is a held-out UCR case or overlaps
    a held-out period of its series in `spans` ([`held_out_spans`]); return the number of rows checked."""
    columns = dataset.select_columns(["id", "source", "series_id", "start_timestamp", "freq", "past_values"])
    for row in columns:
        source = row["source"]
        if source not in spans:
            continue
        if source == "ucr":
            values = np.asarray(row["past_values"], dtype=np.float64)[:, 0]
            if _fingerprint(values) in spans["ucr"]:
                raise LeakageError(f"Corpus row {row['id']!r} is a held-out UCR/UEA test case.")
            continue
        start = _naive(row["start_timestamp"])
        end = _end_of(row)
        for first, last in spans[source].get(row["series_id"], []):
            if start <= last and first <= end:
                raise LeakageError(
                    f"Corpus row {row['id']!r} ({start} .. {end}) overlaps a held-out {source} period of "
                    f"{row['series_id']!r} ({first} .. {last})."
                )
    return len(columns)


def build(
    data_dir: str | Path | None = None,
    sources: Sequence[str] = SOURCES,
    window_lengths: Sequence[int] = WINDOW_LENGTHS,
    min_observed_fraction: float = 0.5,
    check: bool = True,
):
    """The corpus as a `datasets.DatasetDict` (train, validation) of one-channel rows; see the module docstring.
    With `check`, [`check_leak_free`] runs over the training split against every benchmark's held-out rows (the
    validation rows are themselves cut from held-out periods: they only give the pretraining's held-out curve)."""
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown or not sources:
        raise ValueError(f"sources must be a non-empty subset of {SOURCES}, got {list(sources)}.")
    if not window_lengths or any(int(n) < 2 for n in window_lengths):
        raise ValueError(f"window_lengths must be lengths >= 2, got {list(window_lengths)}.")
    if not 0 < min_observed_fraction <= 1:
        raise ValueError(f"min_observed_fraction must be in (0, 1], got {min_observed_fraction}.")
    records = {"train": [], "validation": []}
    if "ucr" in sources:
        records["train"] += ucr_rows(data_dir, min_observed_fraction)
    if "ett" in sources:
        for split, rows in ett_rows(data_dir, window_lengths, min_observed_fraction).items():
            records[split] += rows
    if "timemmd" in sources:
        for split, rows in timemmd_rows(data_dir, window_lengths, min_observed_fraction).items():
            records[split] += rows
    if "noaa" in sources:
        records["train"] += noaa_rows(data_dir, min_observed_fraction)
    dataset_dict = finalize(records, ["none"], desc="corpus")
    if check:
        spans = held_out_spans(data_dir, sources)
        check_leak_free(dataset_dict["train"], spans)
        logger.info("corpus: leak check passed over %d training rows", len(dataset_dict["train"]))
    return dataset_dict


def describe(dataset_dict) -> str:
    """Rows per split and source, as markdown."""
    from modeling_trace.tables import markdown_table

    rows = []
    for split, dataset in dataset_dict.items():
        counts = pd.Series(dataset["source"]).value_counts().sort_index()
        rows += [[split, source, str(n)] for source, n in counts.items()]
    return markdown_table(["split", "source", "rows"], rows)


def dataset_card(dataset_dict) -> str:
    """Hub dataset card of a [`build`] result."""
    return render_dataset_card(
        dataset_dict,
        pretty_name="TRACE broad pretraining corpus (univariate windows, training periods only)",
        source_description="UCR/UEA training splits, ETTh1/ETTh2, Time-MMD (all domains and numeric columns) and NOAA "
        "station observations shipped with the project; each source keeps its own licence (public statistics, "
        "public-domain NOAA data, the UCR/UEA archive's terms).",
        license="other",
        how_built=__doc__ + "\n\n" + describe(dataset_dict),
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_cli_args(parser)
    parser.add_argument("--sources", nargs="+", choices=SOURCES, default=list(SOURCES))
    parser.add_argument("--window-lengths", type=int, nargs="+", default=list(WINDOW_LENGTHS))
    args = parser.parse_args(argv)
    dataset_dict = build(args.data_dir, args.sources, args.window_lengths)
    print(describe(dataset_dict))
    write_outputs(dataset_dict, dataset_card(dataset_dict), args)


if __name__ == "__main__":
    main()
