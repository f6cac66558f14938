"""Tests of datasets_scripts/ett.py on the shipped ETTh1/ETTh2 files and on broken copies of them."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from trace_datasets.ett import (
    EttFormatError,
    EttScaler,
    build,
    load_ett_splits,
    load_ett_standardized,
    main,
)
from trace_datasets.schema import COLUMNS

# The standard 12/4/4-month split in hours, as the Informer paper defines it (30-day months).
TRAIN, VAL, TEST = 12 * 30 * 24, 4 * 30 * 24, 4 * 30 * 24


def csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def etth1_rows() -> list[dict]:
    from trace_datasets.paths import default_data_dir

    return csv_rows(default_data_dir() / "ett" / "ETTh1.csv")


def test_splits_are_the_standard_blocks(data_dir, etth1_rows):
    splits = load_ett_splits("ETTh1", data_dir)
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [TRAIN, VAL, TEST]
    assert len(etth1_rows) >= TRAIN + VAL + TEST
    assert str(splits["train"].index[0]) == etth1_rows[0]["date"]
    assert str(splits["validation"].index[0]) == etth1_rows[TRAIN]["date"]
    assert str(splits["test"].index[-1]) == etth1_rows[TRAIN + VAL + TEST - 1]["date"]
    assert splits["train"].index[-1] < splits["validation"].index[0] <= splits["validation"].index[-1] < splits["test"].index[0]
    assert list(splits["train"].columns) == ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    assert splits["test"]["OT"].iloc[5] == pytest.approx(float(etth1_rows[TRAIN + VAL + 5]["OT"]))


def test_history_comes_from_previous_split_tail(data_dir, etth1_rows):
    splits = load_ett_splits("ETTh1", data_dir, history_length=96)
    assert len(splits["train"]) == TRAIN and len(splits["validation"]) == VAL + 96
    assert str(splits["validation"].index[0]) == etth1_rows[TRAIN - 96]["date"]
    assert str(splits["test"].index[0]) == etth1_rows[TRAIN + VAL - 96]["date"]


def test_scaler_fitted_on_train_rows(data_dir, etth1_rows):
    scaled, scaler = load_ett_standardized("ETTh1", data_dir)
    ot = np.array([float(r["OT"]) for r in etth1_rows[:TRAIN]])
    assert scaler.mean["OT"] == pytest.approx(ot.mean())
    assert scaler.std["OT"] == pytest.approx(ot.std())
    assert scaled["train"].mean().abs().max() < 1e-9
    raw = load_ett_splits("ETTh1", data_dir)["test"]
    np.testing.assert_allclose(scaler.inverse_transform(scaled["test"]).to_numpy(), raw.to_numpy(), rtol=1e-9, atol=1e-9)
    assert isinstance(scaler, EttScaler) and set(scaler.to_dict()) == set(raw.columns)


def test_windowed_build_counts_and_boundaries(data_dir, etth1_rows):
    L, H, stride = 48, 24, 97
    dd = build(["ETTh1", "ETTh2"], data_dir, input_length=L, horizon=H, stride=stride)
    expected = {
        "train": len(range(0, TRAIN - L - H + 1, stride)),
        "validation": len(range(0, VAL + L - L - H + 1, stride)),
        "test": len(range(0, TEST + L - L - H + 1, stride)),
    }
    for split, n in expected.items():
        ds = dd[split]
        assert list(ds.features) == list(COLUMNS)
        assert ds["domain"].count("ETTh1") == n and ds["domain"].count("ETTh2") == n
    first_val = dd["validation"].filter(lambda r: r["domain"] == "ETTh1")[0]
    # History from the train tail, future starting at the first validation hour.
    assert first_val["start_timestamp"] == etth1_rows[TRAIN - L]["date"].replace(" ", "T") + "Z"
    assert first_val["future_values"][0][-1] == pytest.approx(float(etth1_rows[TRAIN]["OT"]), rel=1e-6)
    assert len(first_val["past_values"]) == L and len(first_val["future_values"]) == H
    assert len(first_val["channel_names"]) == 7
    # No training future reaches into validation: the last train window ends before row TRAIN.
    last_train = max(dd["train"].filter(lambda r: r["domain"] == "ETTh1")["start_timestamp"])
    start_rows = {r["date"].replace(" ", "T") + "Z": i for i, r in enumerate(etth1_rows)}
    assert start_rows[last_train] + L + H <= TRAIN


def test_univariate_and_limited_build(data_dir):
    dd = build("ETTh2", data_dir, input_length=24, horizon=12, channels="OT", max_windows_per_split=5)
    assert {k: len(v) for k, v in dd.items()} == {"train": 5, "validation": 5, "test": 5}
    assert dd["train"][0]["channel_names"] == ["OT"]


def broken_copy(data_dir: Path, tmp_path: Path, edit) -> Path:
    lines = (data_dir / "ett" / "ETTh1.csv").read_text().splitlines(keepends=True)
    (tmp_path / "ett").mkdir()
    (tmp_path / "ett" / "ETTh1.csv").write_text("".join(edit(lines)))
    return tmp_path


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda lines: [line.rsplit(",", 1)[0] + "\n" for line in lines], r"lacks column\(s\) \['OT'\]"),
        (lambda lines: lines[:5000], "truncated"),
        (lambda lines: lines[:5000] + [lines[5000][:25]], "data row 5000 .CSV line 5001"),
        (lambda lines: lines[:10] + ["07/01/2016 10:00," + lines[10].split(",", 1)[1]] + lines[11:], "data row 10 .CSV line 11"),
        (lambda lines: lines[:10] + lines[11:], "does not follow"),
    ],
)
def test_malformed_files_name_file_and_row(data_dir, tmp_path, edit, message):
    broken = broken_copy(data_dir, tmp_path, edit)
    with pytest.raises(EttFormatError, match=message) as info:
        load_ett_splits("ETTh1", broken)
    assert "ETTh1.csv" in str(info.value)


def test_cli_failure_leaves_no_output(data_dir, tmp_path):
    broken = broken_copy(data_dir, tmp_path, lambda lines: lines[:100])
    out = tmp_path / "out"
    with pytest.raises(EttFormatError):
        main(["--data-dir", str(broken), "--output-dir", str(out)])
    assert not out.exists()
