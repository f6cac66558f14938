"""Tests of datasets_scripts/ucr.py on the shipped .ts files and on small hand-written ones."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest

from trace_datasets.schema import COLUMNS
from trace_datasets.ucr import TsFormatError, describe_lengths, load_ucr, main, read_ts, series_lengths


def raw_cases(path: Path) -> tuple[list[str], list[list[str]]]:
    """Class names and the raw case lines (split on ':') of a .ts file, read without the loader."""
    names, cases, in_data = [], [], False
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.lower().startswith("@classlabel"):
            names = line.split()[2:]
        elif line.lower() == "@data":
            in_data = True
        elif in_data:
            cases.append(line.split(":"))
    return names, cases


@pytest.mark.parametrize("name", ["GunPoint", "ItalyPowerDemand", "BasicMotions"])
def test_shipped_sets_counts_labels_and_values(data_dir, name):
    dd = load_ucr(name, data_dir)
    assert set(dd) == {"train", "test"}
    for split in ("train", "test"):
        names, cases = raw_cases(data_dir / "ucr" / name / f"{name}_{split.upper()}.ts")
        ds = dd[split]
        assert list(ds.features) == list(COLUMNS)
        assert ds.features["label"].names == names
        assert len(ds) == len(cases)
        built = Counter(names[i] for i in ds["label"])
        assert built == Counter(case[-1] for case in cases)
        first = ds[0]
        channels = cases[0][:-1]
        assert len(first["channel_names"]) == len(channels)
        assert len(first["past_values"]) == len(channels[0].split(","))
        for j, channel in enumerate(channels):
            expected = [float(v) for v in channel.split(",")]
            assert [row[j] for row in first["past_values"]] == pytest.approx(expected, rel=1e-6)
        assert first["source"] == "ucr" and first["domain"] == name and first["future_values"] == []


@pytest.mark.parametrize("pad", [True, False])
def test_variable_length_set_loads_every_point_and_reports_lengths(data_dir, pad):
    name = "PickupGestureWiimoteZ"
    dd = load_ucr(name, data_dir, pad=pad)
    longest = 0
    for split in ("train", "test"):
        _, cases = raw_cases(data_dir / "ucr" / name / f"{name}_{split.upper()}.ts")
        expected = [len(case[0].split(",")) for case in cases]
        longest = max(longest, *expected)
        assert series_lengths(dd[split]).tolist() == expected  # no case truncated
        values = dd[split]["past_values"]
        for row, case in zip(values, cases):  # every point of the file, in order
            assert [v[0] for v in row[: len(case[0].split(","))]] == pytest.approx([float(v) for v in case[0].split(",")])
        if pad:
            assert {len(v) for v in values} == {361}
        else:
            assert [len(v) for v in values] == expected
            assert not any(math.isnan(x[0]) for row in values for x in row)
    assert longest == 361
    assert describe_lengths(dd) == "variable length 29-361 (train 29-361, test 37-324)"
    assert describe_lengths(load_ucr("GunPoint", data_dir)) == "length 150"


def test_equal_length_variant_files(data_dir):
    dd = load_ucr("PickupGestureWiimoteZ", data_dir, variant="eq")
    assert len(dd["train"]) == len(dd["test"]) == 50
    assert set(series_lengths(dd["train"])) == {361} and dd["train"][0]["id"].startswith("ucr/PickupGestureWiimoteZ_eq/")
    assert dd["train"].features["label"].names == ["1", "10", "2", "3", "4", "5", "6", "7", "8", "9"]
    with pytest.raises(FileNotFoundError, match="GunPoint_eq_TRAIN.ts"):
        load_ucr("GunPoint", data_dir, variant="eq")


def test_declared_series_length_is_checked(tmp_path):
    header = HEADER.replace("@equalLength false", "@equalLength true\n@seriesLength 2")
    data_dir = write_toy(tmp_path, "1,2:3,4:up\n1,2:3:down\n", header=header)
    with pytest.raises(TsFormatError, match="line 11.*@seriesLength 2"):
        load_ucr("Toy", data_dir)


def test_basicmotions_is_multivariate(data_dir):
    dd = load_ucr("BasicMotions", data_dir)
    row = dd["train"][0]
    assert len(row["past_values"][0]) == 6 and len(row["channel_names"]) == 6


HEADER = "@problemName Toy\n@timeStamps false\n@missing true\n@univariate false\n@dimensions 2\n@equalLength false\n@classLabel true up down\n@data\n"


def write_toy(tmp_path: Path, train_body: str, test_body: str = "1,2:3,4:down\n", header: str = HEADER) -> Path:
    folder = tmp_path / "ucr" / "Toy"
    folder.mkdir(parents=True)
    (folder / "Toy_TRAIN.ts").write_text(header + train_body)
    (folder / "Toy_TEST.ts").write_text(header + test_body)
    return tmp_path


def test_variable_length_and_missing_values_are_nan_padded(tmp_path):
    data_dir = write_toy(tmp_path, "1,2,3:4,?,6:up\n7,8:9:down\n")
    dd = load_ucr("Toy", data_dir)
    assert dd["train"].features["label"].names == ["up", "down"]
    assert dd["train"]["label"] == [0, 1]
    first, second = dd["train"][0]["past_values"], dd["train"][1]["past_values"]
    assert len(first) == len(second) == 3  # padded to the longest series of the dataset
    assert first[0] == [1.0, 4.0] and math.isnan(first[1][1])
    assert second[0] == [7.0, 9.0] and second[1][0] == 8.0 and math.isnan(second[1][1])
    assert all(math.isnan(v) for v in second[2])
    assert len(dd["test"][0]["past_values"]) == 3


@pytest.mark.parametrize(
    "header, body, message",
    [
        (HEADER.replace("@classLabel true up down", "@classLabel false"), "1:2:up\n", "@classLabel true"),
        (HEADER.replace("@classLabel true up down\n", ""), "1:2:up\n", "without a '@classLabel"),
        (HEADER.replace("@dimensions 2", "@dimensions two"), "1:2:up\n", "not an integer"),
        (HEADER, "1,2:3,4:up\n1,2:3,4:sideways\n", "line 10"),
        (HEADER, "1,2:3,4:up\n1,2,3", "truncated"),
        (HEADER, "1,x:3,4:up\n", "'x' is not a number"),
        (HEADER, "1,2:up\n", "1 channel"),
        (HEADER.replace("@data\n", ""), "", "no '@data'"),
        (HEADER, "", "no case after"),
    ],
)
def test_bad_files_name_file_and_line(tmp_path, header, body, message):
    data_dir = write_toy(tmp_path, body, header=header)
    with pytest.raises(TsFormatError, match=message) as info:
        load_ucr("Toy", data_dir)
    assert "Toy_TRAIN.ts" in str(info.value)


def test_read_ts_header(data_dir):
    ts = read_ts(data_dir / "ucr" / "GunPoint" / "GunPoint_TRAIN.ts")
    assert ts.problem_name == "GunPoint" and ts.class_names == ["1", "2"]


def test_cli_writes_dataset(data_dir, tmp_path, capsys):
    main(["--name", "ItalyPowerDemand", "--data-dir", str(data_dir), "--output-dir", str(tmp_path / "out")])
    assert (tmp_path / "out" / "README.md").is_file() and (tmp_path / "out" / "dataset_dict.json").is_file()
    _, cases = raw_cases(data_dir / "ucr" / "ItalyPowerDemand" / "ItalyPowerDemand_TEST.ts")
    assert f"test: {len(cases)} rows" in capsys.readouterr().out
    assert "length 24 (no series truncated)" in (tmp_path / "out" / "README.md").read_text()


def test_cli_without_padding_reports_variable_lengths(data_dir, tmp_path):
    out = tmp_path / "out"
    main(["--name", "PickupGestureWiimoteZ", "--data-dir", str(data_dir), "--output-dir", str(out), "--no-pad"])
    card = (out / "README.md").read_text()
    assert "variable length 29-361" in card and "each series at its own length" in card and "--no-pad" in card
