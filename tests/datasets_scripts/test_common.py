"""Tests of datasets_scripts/common.py: validation into the schema, atomic saving, cards, CLI options."""

from __future__ import annotations

import argparse
import json
import math
import os

import datasets
import pytest
from huggingface_hub import DatasetCard

from trace_datasets import common
from trace_datasets.common import add_common_cli_args, finalize, render_dataset_card, save_dataset_dict
from trace_datasets.schema import COLUMNS, RecordError

LABELS = ["calm", "storm"]


def record(i: int, label, **overrides) -> dict:
    row = {
        "id": f"test/{i}",
        "source": "ett",
        "domain": "unit",
        "series_id": "s0",
        "start_timestamp": "2020-01-01T00:00:00Z",
        "freq": "1h",
        "past_values": [[1.0, 2.0], [float("nan"), 3.0], [4.0, 5.0]],
        "channel_names": ["a", "b"],
        "future_values": [[6.0, 7.0]],
        "text": f"text {i}",
        "channel_texts": ["", ""],
        "label": label,
        "event_type": "",
        "source_file": "unit.csv",
        "event_id": "",
        "narrative_type": "",
    }
    row.update(overrides)
    return row


@pytest.fixture
def small_dd() -> datasets.DatasetDict:
    return finalize(
        {"train": [record(0, "calm"), record(1, 1), record(2, "storm")], "test": [record(3, 0)]}, LABELS, desc="unit"
    )


def test_finalize_schema_and_labels(small_dd):
    assert set(small_dd) == {"train", "test"}
    assert list(small_dd["train"].features) == list(COLUMNS)
    assert small_dd["train"].features["label"].names == LABELS
    assert small_dd["train"]["label"] == [0, 1, 1]
    row = small_dd["train"][0]
    assert math.isnan(row["past_values"][1][0]) and row["past_values"][2] == [4.0, 5.0]
    assert row["future_values"] == [[6.0, 7.0]]


def test_finalize_empty_split():
    dd = finalize({"train": [record(0, 0)], "test": []}, LABELS)
    assert len(dd["test"]) == 0 and list(dd["test"].features) == list(COLUMNS)


@pytest.mark.parametrize(
    "bad, message",
    [
        (record(5, "hail"), "label name 'hail'"),
        (record(5, 7), "label index 7"),
        (record(5, 0, past_values=[[1.0, 2.0]], channel_names=["a"]), "channel_names"),
        (record(5, 0, past_values=[[float("inf"), 1.0]]), "inf"),
        ({k: v for k, v in record(5, 0).items() if k != "text"}, "lacks columns"),
        (dict(record(5, 0), extra=1), "not in the schema"),
    ],
)
def test_finalize_rejects_bad_records_naming_them(bad, message):
    with pytest.raises(RecordError, match=message) as info:
        finalize({"train": [record(0, 0)], "validation": [bad]}, LABELS, desc="unit")
    assert "validation" in str(info.value) and "#0" in str(info.value)


def test_finalize_rejects_duplicate_ids_across_splits():
    with pytest.raises(RecordError, match="appears twice"):
        finalize({"train": [record(0, 0)], "test": [record(0, 1)]}, LABELS)


def test_card_counts_come_from_the_data(small_dd):
    text = render_dataset_card(
        small_dd, pretty_name="Unit", source_description="src", license="mit", how_built="by hand", citation="@x{y}"
    )
    card = DatasetCard(text)
    assert card.data.license == "mit"
    assert card.data.size_categories == ["n<1K"]
    assert [c["split"] for c in card.data.configs[0]["data_files"]] == ["train", "test"]
    # Counted from the records of `small_dd`: train has calm, 1 (= storm), storm; test has 0 (= calm).
    assert "| calm | 1 | 1 |" in text
    assert "| storm | 2 | 0 |" in text
    assert "| **total** | 3 | 1 |" in text
    assert common.size_category(999) == "n<1K" and common.size_category(1000) == "1K<n<10K"


@pytest.mark.parametrize("parquet", [False, True])
def test_save_round_trip(small_dd, tmp_path, parquet):
    out = tmp_path / "built"
    save_dataset_dict(small_dd, out, card="---\nlicense: mit\n---\n# card\n", parquet=parquet)
    assert (out / "README.md").read_text().startswith("---")
    if parquet:
        loaded = datasets.load_dataset(str(out))
    else:
        loaded = datasets.load_from_disk(str(out))
    assert {k: len(v) for k, v in loaded.items()} == {"train": 3, "test": 1}
    assert loaded["train"].features["label"].names == LABELS
    assert os.listdir(tmp_path) == ["built"]  # no temporary sibling left behind


def test_save_failure_leaves_nothing_half_written(small_dd, tmp_path, monkeypatch):
    out = tmp_path / "built"

    def exploding_save(self, path, **kwargs):
        with open(os.path.join(path, "partial.arrow"), "w") as fh:
            fh.write("x")
        raise OSError("disk full")

    monkeypatch.setattr(datasets.DatasetDict, "save_to_disk", exploding_save)
    with pytest.raises(OSError, match="disk full"):
        save_dataset_dict(small_dd, out, card="card")
    assert os.listdir(tmp_path) == []

    # An earlier complete build (it carries the marker) survives a failed rebuild untouched.
    out.mkdir()
    (out / "README.md").write_text("old build")
    (out / common.OUTPUT_MARKER).write_text("{}")
    with pytest.raises(OSError, match="disk full"):
        save_dataset_dict(small_dd, out, card="card")
    assert os.listdir(tmp_path) == ["built"] and (out / "README.md").read_text() == "old build"


def test_save_refuses_foreign_folder(small_dd, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not written by this project"):
        save_dataset_dict(small_dd, tmp_path)
    assert os.listdir(tmp_path) == ["notes.txt"]


def _project_checkout(folder):
    """A folder that merely looks like a dataset (README.md, even data/ and dataset_dict.json) but is someone's work."""
    folder.mkdir()
    (folder / "README.md").write_text("# my project")
    (folder / "src").mkdir()
    (folder / "src" / "main.py").write_text("print('hi')")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main")
    (folder / "data").mkdir()
    (folder / "dataset_dict.json").write_text("{}")
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def test_save_never_deletes_a_folder_it_did_not_write(small_dd, tmp_path):
    out = tmp_path / "checkout"
    before = _project_checkout(out)
    with pytest.raises(common.OutputDirError) as info:
        save_dataset_dict(small_dd, out, card="card")
    message = str(info.value)
    assert str(out) in message and "--overwrite" in message and common.OUTPUT_MARKER in message
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before
    assert (out / "src" / "main.py").read_text() == "print('hi')"
    assert os.listdir(tmp_path) == ["checkout"]  # nothing written beside it either

    # --overwrite (overwrite=True) is the explicit way to replace it.
    save_dataset_dict(small_dd, out, card="card", overwrite=True)
    assert not (out / "src").exists() and (out / common.OUTPUT_MARKER).is_file()
    assert os.listdir(tmp_path) == ["checkout"]


def test_save_replaces_its_own_output_and_accepts_empty_folders(small_dd, tmp_path):
    out = tmp_path / "built"
    out.mkdir()  # an empty folder is fine
    save_dataset_dict(small_dd, out, card="first")
    marker = json.loads((out / common.OUTPUT_MARKER).read_text())
    assert marker["written_by"] == "trace_datasets.common.save_dataset_dict" and marker["what"] == "dataset"
    save_dataset_dict(small_dd, out, card="second", parquet=True)  # its own output: replaced, no flag needed
    assert (out / "README.md").read_text() == "second" and not (out / "dataset_dict.json").exists()
    assert os.listdir(tmp_path) == ["built"]
    assert {k: len(v) for k, v in datasets.load_dataset(str(out)).items()} == {"train": 3, "test": 1}


def test_replace_output_dir_refuses_dangerous_targets_even_with_overwrite(tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "file.txt").write_text("x")
    monkeypatch.chdir(tmp_path / "work")
    for target in (tmp_path / "work", tmp_path):  # the current directory and a folder holding it
        with pytest.raises(common.OutputDirError, match="current directory"):
            common.check_output_dir(target, overwrite=True)
    with pytest.raises(common.OutputDirError, match="is a file"):
        common.check_output_dir(tmp_path / "work" / "file.txt", overwrite=True)
    assert (tmp_path / "work" / "file.txt").read_text() == "x"


def test_builder_cli_refuses_foreign_output_dir_unless_overwrite(tmp_path, data_dir, capsys):
    from trace_datasets import ucr

    out = tmp_path / "checkout"
    before = _project_checkout(out)
    argv = ["--name", "ItalyPowerDemand", "--data-dir", str(data_dir), "--output-dir", str(out)]
    with pytest.raises(FileExistsError, match="--overwrite"):
        ucr.main(argv)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before
    ucr.main(argv + ["--overwrite"])
    assert (out / common.OUTPUT_MARKER).is_file() and not (out / "src").exists()
    assert len(datasets.load_from_disk(str(out))["train"]) > 0


def test_common_cli_args():
    parser = add_common_cli_args(argparse.ArgumentParser())
    args = parser.parse_args(["--data-dir", "d", "--output-dir", "o", "--seed", "3", "--parquet", "--push-to-hub", "me/x", "--private"])
    assert (args.data_dir, args.output_dir, args.seed, args.parquet, args.push_to_hub, args.private) == (
        "d", "o", 3, True, "me/x", True,
    )
    defaults = parser.parse_args([])
    assert defaults.output_dir is None and defaults.push_to_hub is None and defaults.seed == 0
    assert defaults.overwrite is False and parser.parse_args(["--overwrite"]).overwrite is True
