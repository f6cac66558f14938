"""The `trace` command: every subcommand's happy path at tiny sizes, and bad input ending with a one-line error."""

import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results
from PIL import Image

from tests.conftest import tiny_config
from trace_training.cli import format_hits, main, warn_long_dataset_series

RECIPES = "configuration/recipes"
TINY_RUN = ["--max_samples", "32", "--max_steps", "2", "--global_batch_size", "16", "--save_steps", "null", "--report_to", "jsonl"]


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A Time-MMD retrieval dataset built by `trace build-dataset`, and a model aligned on it by `trace align`."""
    from trace_datasets.paths import default_data_dir

    data_dir = default_data_dir()
    if not data_dir.is_dir():
        pytest.fail(f"Real data not found at {data_dir}; set TRACE_DATA_DIR to the shared data folder.")
    root = tmp_path_factory.mktemp("cli")
    assert main(["build-dataset", "timemmd", "--config", "retrieval", "--domains", "Energy", "Health_US",
                 "--input-length", "24", "--stride", "24", "--data-dir", str(data_dir), "--output-dir", str(root / "data")]) == 0
    assert main(["align", "--config", f"{RECIPES}/align-quick.yaml", "--dataset", "disk",
                 "--dataset_config", json.dumps({"path": str(root / "data")}),
                 "--model_overrides", "{num_input_channels: 1, channel_names: [OT], context_length: 24}",
                 "--output_dir", str(root / "align"), *TINY_RUN]) == 0
    return root


@pytest.fixture(scope="module")
def indexed(workspace):
    assert main(["index", "--model", str(workspace / "align" / "final"), "--dataset", str(workspace / "data"),
                 "--split", "test", "--output", str(workspace / "index")]) == 0
    return workspace


def test_build_dataset_and_align_write_a_dataset_and_a_carded_model(workspace):
    from datasets import load_from_disk

    data = load_from_disk(str(workspace / "data"))
    assert set(data) >= {"train", "test"} and len(data["test"]) > 0
    final = workspace / "align" / "final"
    card = ModelCard.load(final / "README.md")  # written by training/align.py after its final save
    assert card.data.library_name == "transformers" and "trace" in card.data.tags
    assert json.loads((final / "config.json").read_text())["auto_map"]


def test_pretrain_and_finetune_delegate_and_card_their_folders(tmp_path, data_dir):
    assert main(["pretrain", "--config", f"{RECIPES}/pretrain-quick.yaml", "--dataset", "ucr",
                 "--dataset_config", "{name: ItalyPowerDemand}", "--data_dir", str(data_dir),
                 "--model_overrides", "{num_input_channels: 1, channel_names: null, context_length: 24}",
                 "--output_dir", str(tmp_path / "pre"), *TINY_RUN]) == 0
    assert ModelCard.load(tmp_path / "pre" / "final" / "README.md").data.pipeline_tag == "feature-extraction"
    assert main(["finetune", "--config", f"{RECIPES}/finetune-quick.yaml", "--data_dir", str(data_dir),
                 "--max_eval_samples", "32", "--output_dir", str(tmp_path / "ft"), *TINY_RUN[:6]]) == 0
    metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    for folder in ("adapter", "final"):
        _, results = model_index_to_eval_results(ModelCard.load(tmp_path / "ft" / folder / "README.md").data.to_dict()["model-index"])
        reported = {r.metric_type: r.metric_value for r in results}
        assert reported["accuracy"] == pytest.approx(metrics["test_accuracy"])


def test_search_by_text_and_by_csv_prints_a_table_and_plots(indexed, tmp_path, capsys):
    model, index = str(indexed / "align" / "final"), str(indexed / "index")
    code, out, err = run(capsys, "search", "--model", model, "--index", index, "--text", "influenza cases rising", "-k", "3")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("Text->TS") and lines[1].split() == ["rank", "id", "label", "score", "text"]
    assert len(lines) == 3 + 3  # title, header, rule, 3 hits
    scores = [float(re.findall(r"-?\d+\.\d{4}(?!\d)", line)[0]) for line in lines[3:]]  # 4 decimals
    assert scores == sorted(scores, reverse=True)

    csv = tmp_path / "series.csv"
    pd.DataFrame({"date": pd.date_range("2020-01-01", periods=24, freq="W").astype(str),
                  "OT": np.sin(np.arange(24) / 3.0)}).to_csv(csv, index=False)
    code, out, err = run(capsys, "search", "--model", model, "--index", index, "--csv", str(csv), "--target", "text",
                         "-k", "2", "--plot", str(tmp_path / "hits.png"))
    assert code == 0, err
    assert out.startswith("TS->Text") and "Figure:" in out
    with Image.open(tmp_path / "hits.png") as image:
        image.verify()


def test_evaluate_reports_trace_and_baselines(indexed, tmp_path, capsys):
    code, out, err = run(capsys, "evaluate", "--model", str(indexed / "align" / "final"), "--index", str(indexed / "index"),
                         "--output", str(tmp_path / "metrics.json"))
    assert code == 0, err
    assert "| TS→TS | Euclidean (raw) |" in out and "| Text→TS | random |" in out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    value = metrics["trace"]["text_to_ts_label_mrr@10"]
    assert 0.0 <= value <= 1.0 and f"{value:.3f}" in out


def test_push_checks_then_uploads(indexed, monkeypatch, capsys, tmp_path):
    import shutil

    import huggingface_hub

    uploads = []

    class RecordingHfApi:  # stand-in for the Hub (the one place a stand-in is acceptable: tests cannot reach it)
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **kwargs):
            pass

        def upload_folder(self, *, repo_id, folder_path, **kwargs):
            uploads.append((repo_id, folder_path))

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingHfApi)
    final = indexed / "align" / "final"
    code, out, err = run(capsys, "push", str(final), "me/trace-cli")
    assert code == 0, err
    assert uploads == [("me/trace-cli", str(final))]
    copy = tmp_path / "no_card"
    shutil.copytree(final, copy)
    (copy / "README.md").unlink()
    code, out, err = run(capsys, "push", str(copy), "me/trace-cli")
    assert code == 1 and len(err.strip().splitlines()) == 1 and "README.md" in err
    assert len(uploads) == 1


@pytest.mark.parametrize(
    "columns, message",
    [
        ({"temperature": [1.0, 2.0]}, "does not know"),  # unknown channel name
        ({"OT": ["a", "b"]}, "not numeric"),
        ({"date": ["2020-01-01"]}, "no channel columns"),
    ],
)
def test_bad_csv_gives_one_line_error(indexed, tmp_path, capsys, columns, message):
    csv = tmp_path / "bad.csv"
    pd.DataFrame(columns).to_csv(csv, index=False)
    code, out, err = run(capsys, "search", "--model", str(indexed / "align" / "final"), "--index", str(indexed / "index"), "--csv", str(csv))
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err


def _foreign_folder(folder):
    """Someone's project checkout: README.md, src/, .git/ (what a wrong --output would point at)."""
    (folder / "src").mkdir(parents=True)
    (folder / "README.md").write_text("# my project")
    (folder / "src" / "main.py").write_text("print('hi')")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main")
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_index_refuses_a_foreign_output_folder_before_any_work(tmp_path, capsys):
    checkout = tmp_path / "checkout"
    before = _foreign_folder(checkout)
    # the model path does not exist either: the output folder is checked first, before loading or encoding anything
    code, out, err = run(capsys, "index", "--model", str(tmp_path / "nope"), "--dataset", str(tmp_path / "nope"),
                         "--output", str(checkout))
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert str(checkout) in err and "--overwrite" in err and "not written by this project" in err
    assert sorted(str(p.relative_to(checkout)) for p in checkout.rglob("*")) == before
    assert os.listdir(tmp_path) == ["checkout"]


def test_index_replaces_its_own_output_and_a_foreign_folder_only_with_overwrite(indexed, tmp_path, capsys):
    from modeling_trace.retrieval import TraceRetrievalIndex
    from trace_datasets.common import OUTPUT_MARKER

    assert (indexed / "index" / OUTPUT_MARKER).is_file()  # written by `trace index` (the fixture)
    model, data = str(indexed / "align" / "final"), str(indexed / "data")
    checkout = tmp_path / "checkout"
    before = _foreign_folder(checkout)
    argv = ["index", "--model", model, "--dataset", data, "--output", str(checkout), "--max-rows", "8"]
    code, out, err = run(capsys, *argv)
    assert code == 1 and "--overwrite" in err
    assert sorted(str(p.relative_to(checkout)) for p in checkout.rglob("*")) == before  # nothing mixed in
    code, out, err = run(capsys, *argv, "--overwrite")
    assert code == 0, err
    assert not (checkout / "src").exists() and (checkout / OUTPUT_MARKER).is_file()
    assert len(TraceRetrievalIndex.load(str(checkout))) == 8
    # its own output is replaced without --overwrite, atomically (no temporary folder left beside it)
    code, out, err = run(capsys, *argv[:-1], "4")
    assert code == 0, err
    assert len(TraceRetrievalIndex.load(str(checkout))) == 4 and os.listdir(tmp_path) == ["checkout"]


def test_missing_files_and_bad_flags(indexed, tmp_path, capsys):
    model, index = str(indexed / "align" / "final"), str(indexed / "index")
    code, _, err = run(capsys, "search", "--model", model, "--index", index, "--csv", str(tmp_path / "nope.csv"))
    assert code == 1 and "does not exist" in err
    code, _, err = run(capsys, "index", "--model", str(tmp_path / "nope"), "--dataset", str(indexed / "data"), "--output", str(tmp_path / "i"))
    assert code == 1 and "not a folder" in err
    code, _, err = run(capsys, "index", "--model", model, "--dataset", str(indexed / "data"), "--split", "bogus", "--output", str(tmp_path / "i"))
    assert code == 1 and "available" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["search", "--model", model, "--index", index, "--text", "x", "--bogus-flag"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--bogus-flag" in err
    # a recipe value out of range is caught by the delegated script's validation: one line, exit 1
    code, _, err = run(capsys, "pretrain", "--config", f"{RECIPES}/pretrain-quick.yaml", "--learning_rate", "-1")
    assert code == 1 and "learning_rate" in err and len(err.strip().splitlines()) == 1


def test_console_script_errors_have_no_traceback_unless_debug(tmp_path):
    command = [sys.executable, "-m", "trace_training.cli", "search", "--model", str(tmp_path / "m"), "--index", "i", "--text", "x"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "Traceback" not in result.stderr
    debug = subprocess.run(command[:3] + ["--debug"] + command[3:], capture_output=True, text=True, timeout=120)
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    help_text = subprocess.run(command[:3] + ["--help"], capture_output=True, text=True, timeout=120).stdout
    for name in ("build-dataset", "pretrain", "align", "finetune", "index", "search", "evaluate", "push", "accelerate launch"):
        assert name in help_text


def test_a_csv_longer_than_the_context_warns_once_with_the_numbers(indexed, tmp_path, capsys):
    # the workspace model reads 24 steps (context_length); a 40-step series keeps its last 24
    csv = tmp_path / "long.csv"
    pd.DataFrame({"OT": np.sin(np.arange(40) / 3.0)}).to_csv(csv, index=False)
    argv = ["search", "--model", str(indexed / "align" / "final"), "--index", str(indexed / "index"), "--csv", str(csv)]
    code, out, err = run(capsys, *argv, "-k", "2")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "40 steps" in warnings[0] and "reads 24" in warnings[0] and "first 16" in warnings[0]
    assert out.startswith(f"TS->TS for {csv} (24 of 40 steps used)")
    short = tmp_path / "short.csv"
    pd.DataFrame({"OT": np.arange(10.0)}).to_csv(short, index=False)
    code, out, err = run(capsys, *argv[:-1], str(short))
    assert code == 0 and "warning" not in err and "(10 steps)" in out


def test_dataset_rows_longer_than_the_context_warn_once(capsys):
    from datasets import Dataset

    model = SimpleNamespace(config=SimpleNamespace(context_length=96))
    rows = Dataset.from_dict({"past_values": [np.zeros((168, 2)).tolist(), np.zeros((96, 2)).tolist(), np.zeros((170, 2)).tolist()]})
    for _ in range(2):
        warn_long_dataset_series(rows, model, "noaa [test]")
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["trace index: warning: 2 of the 3 series of noaa [test] have more steps (up to 170) than the model "
                   "reads (96, context_length): they are cut to their last 96 steps."]  # fmt: skip
    warn_long_dataset_series(rows.select([1]), model, "noaa [one]")
    assert capsys.readouterr().err == ""


def test_hits_table_is_compact_with_4_decimal_scores_and_cut_ids():
    long_id = "GHCND:USW00094728_2013-01-01T00:00_168h_window"
    hits = SimpleNamespace(rows=[[
        {"id": long_id, "label": "snow", "score": 0.912345678, "text": "Heavy   snow\nand ice " + "x" * 100},
        {"id": "w2", "label": None, "score": -0.05, "text": None},
    ]])  # fmt: skip
    lines = format_hits(hits).splitlines()
    assert lines[0].split() == ["rank", "id", "label", "score", "text"] and set(lines[1]) == {"-"}
    first = lines[2]
    assert long_id[:27] + "…" in first and long_id not in first  # 28 characters, the last an ellipsis
    assert "0.9123" in first and "0.91234" not in first and "-0.0500" in lines[3]
    assert "Heavy snow and ice" in first and first.endswith("…") and len(first.split("  ")[-1].strip()) <= 60
    # columns sit where the header puts them, whatever the cell widths
    assert first.index("snow") == lines[0].index("label") and lines[3].index("w2") == lines[0].index("id")
    assert lines[2].index("0.9123") + 6 == lines[0].index("score") + 5 == lines[3].index("-0.0500") + 7


def test_help_and_usage_errors_never_import_torch():
    """`trace --help`, `trace search --help`, `trace pretrain --help` and bad arguments answer without torch
    (checked with -X importtime, which lists every module the process imported)."""
    cases = [
        (["--help"], 0, "usage: trace "),
        (["search", "--help"], 0, "usage: trace search "),
        (["pretrain", "--help"], 0, "usage: trace pretrain "),
        (["search", "--model", "m", "--text", "x"], 2, "trace search: error: the following arguments are required: --index"),
        (["align", "--bogus-flag", "1"], 2, "trace align: error: unrecognized arguments: --bogus-flag"),
        (["export-onnx", "--model", "m"], 2, "trace export-onnx: error"),
    ]
    for argv, code, expected in cases:
        result = subprocess.run([sys.executable, "-X", "importtime", "-m", "trace_training.cli", *argv],
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
        messages = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
        assert result.returncode == code, (argv, result.stderr[-2000:])
        assert expected in (result.stdout if code == 0 else "\n".join(messages)), (argv, result.stdout[:500], messages)
        assert {"torch", "transformers", "accelerate"}.isdisjoint(imported), (argv, sorted(imported & {"torch", "transformers"}))
        assert "yaml" in imported or argv[0] not in ("pretrain", "align")  # the check sees what the stage parser loads
        if code == 2:
            assert len(messages) == 1, messages  # one line, no usage dump


def test_export_onnx_writes_the_folder_and_refuses_a_foreign_one(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from modeling_trace import TraceModel

    model_dir = tmp_path / "model"
    TraceModel(tiny_config()).save_pretrained(model_dir)
    code, out, err = run(capsys, "export-onnx", "--model", str(model_dir), "--output", str(tmp_path / "onnx"))
    assert code == 0, err
    assert {"time_series_model.onnx", "text_projection.onnx", "onnx_manifest.json", "config.json", "README.md"} <= {
        p.name for p in (tmp_path / "onnx").iterdir()
    }
    assert "time_series_model.onnx: past_values, past_observed_mask -> time_series_embeds" in out
    diff = float(re.search(r"max abs diff: (\S+)", out).group(1))
    assert diff < 1e-5
    foreign = tmp_path / "checkout"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    code, out, err = run(capsys, "export-onnx", "--model", str(model_dir), "--output", str(foreign))
    assert code == 1 and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
