"""Before / after the embedding-collapse fix, on the quickstart: the same pipeline with and without
`embedding_centering`, three seeds each, side by side.

    python -m benchmarks.collapse_study                      # runs 2 variants x 3 seeds (about 2-6 min each on 2 cores)
    python -m benchmarks.collapse_study --output-root DIR    # where the runs go; a run made by the same commit is reused

Each run is `python -m trace_training.quickstart --output-dir DIR/<variant>_s<seed> --seed <seed> --model-overrides
'{"embedding_centering": <bool>}'` (reused only when made by the same clean commit with the same seed and values). The
table reports mean ± std over seeds of the test-split retrieval metrics and of the embedding geometry (mean pairwise
cosine and the norm of the mean unit vector of the test embeddings: near 1 when every item points one way).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

VARIANTS = {"plain": {"embedding_centering": False}, "centered": {"embedding_centering": True}}
METRICS = (
    ("Text→TS label P@1", "trace", "text_to_ts_label_precision@1"),
    ("Text→TS label MRR@10", "trace", "text_to_ts_label_mrr@10"),
    ("TS→Text label P@1", "trace", "ts_to_text_label_precision@1"),
    ("TS→Text label MRR@10", "trace", "ts_to_text_label_mrr@10"),
    ("TS→TS label P@1", "trace", "ts_to_ts_label_precision@1"),
    ("Text→TS modality MRR@10", "trace", "text_to_ts_modality_mrr@10"),
    ("TS→Text modality MRR@10", "trace", "ts_to_text_modality_mrr@10"),
    ("random Text→TS modality MRR@10", "random", "text_to_ts_modality_mrr@10"),
)
GEOMETRY = (("TS mean cosine", "ts_mean_cosine"), ("TS |mean|", "ts_mean_norm"), ("text mean cosine", "text_mean_cosine"), ("text |mean|", "text_mean_norm"))


def code_version() -> str:
    """The commit of the checkout, with `+dirty` when tracked files differ from it: runs are reused only when
    they were made by the same code."""
    root = Path(__file__).resolve().parent.parent
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True).stdout.strip()
    return commit + ("+dirty" if dirty else "")


def run(output: Path, seed: int, overrides: dict, reuse_existing: bool = False) -> dict:
    summary_path, stamp = output / "summary.json", output / "collapse_study_run.json"
    version = code_version()
    if summary_path.is_file() and stamp.is_file():
        made = json.loads(stamp.read_text())
        same_run = made.get("seed") == seed and made.get("model_overrides") == overrides
        if same_run and (reuse_existing or (made.get("code_version") == version and not version.endswith("+dirty"))):
            return {**json.loads(summary_path.read_text()), "code_version": made.get("code_version")}
    command = [
        sys.executable, "-m", "trace_training.quickstart", "--train", "--output-dir", str(output), "--seed", str(seed),
        "--model-overrides", json.dumps(overrides),
    ]  # fmt: skip
    subprocess.run(command, check=True)
    stamp.write_text(json.dumps({"code_version": version, "seed": seed, "model_overrides": overrides}))
    return {**json.loads(summary_path.read_text()), "code_version": version}


def mean_std(values) -> str:
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.3f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output-root", default="runs/collapse_study")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--reuse-existing", action="store_true",
                        help="reuse finished runs made by another commit too (each run's commit is printed)")
    args = parser.parse_args(argv)
    root = Path(args.output_root)
    summaries = {
        name: [run(root / f"{name}_s{seed}", seed, overrides, args.reuse_existing) for seed in args.seeds]
        for name, overrides in VARIANTS.items()
    }
    made_by = {f"{name}_s{seed}": s["code_version"] for name in VARIANTS for seed, s in zip(args.seeds, summaries[name])}
    print("runs made by: " + ", ".join(f"{run_name} @ {version}" for run_name, version in made_by.items()))
    from modeling_trace.tables import markdown_table

    def cells(value):  # mean ± std over the seeds of each variant
        return [mean_std([value(s) for s in summaries[name]]) for name in VARIANTS]

    centering = {name: VARIANTS[name]["embedding_centering"] for name in VARIANTS}
    header = ["metric (test split)", *(f"{name} (embedding_centering={centering[name]})" for name in VARIANTS)]
    rows = [[label, *cells(lambda s, m=method, k=key: s["evaluation"][m][k])] for label, method, key in METRICS]
    rows += [[label, *cells(lambda s, k=key: s["geometry"][k])] for label, key in GEOMETRY]
    rows.append(["training wall s", *cells(lambda s: s["seconds"]["training"])])
    print(f"seeds {args.seeds}; quickstart settings as in training/quickstart.py (trace-tiny size, 300 + 300 steps)\n")
    print(markdown_table(header, rows, align=["-", *["r"] * len(VARIANTS)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
