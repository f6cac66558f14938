"""The quickstart end to end at reduced size: a Hub-ready model folder whose card reports the evaluation it wrote,
an index, and readable figures."""

import json

import numpy as np
import pytest
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results
from PIL import Image


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    from trace_datasets.paths import default_data_dir
    from trace_training.quickstart import run_quickstart

    if not default_data_dir().is_dir():
        pytest.fail(f"Real data not found at {default_data_dir()}; set TRACE_DATA_DIR to the shared data folder.")
    out = tmp_path_factory.mktemp("quickstart")
    return out, run_quickstart(out, smoke=True)  # the --train pipeline


def test_model_folder_is_hub_ready(quickstart):
    from trace_training.hub import check_folder

    out, summary = quickstart
    model = out / "model"
    config = json.loads((model / "config.json").read_text())
    assert config["auto_map"]["AutoModel"].endswith("TraceModel")
    for name in ("model.safetensors", "processor_config.json", "tokenizer.json", "modeling_trace.py", "README.md"):
        assert (model / name).is_file(), name
    assert check_folder(model) == "model"
    assert summary["paths"]["model"] == str(model)


def test_card_metrics_equal_the_written_evaluation(quickstart):
    out, summary = quickstart
    written = json.loads((out / "evaluation.json").read_text())
    assert written == summary["evaluation"]
    assert set(written) == {"trace", "random", "euclidean"}
    _, results = model_index_to_eval_results(ModelCard.load(out / "model" / "README.md").data.to_dict()["model-index"])
    reported = {r.metric_type: r.metric_value for r in results}
    scores = {k: v for k, v in written["trace"].items() if "seconds" not in k and not k.endswith("num_queries")}
    assert reported == scores
    # all three modes, both matching kinds where they apply
    for key in ("text_to_ts_modality_mrr@10", "ts_to_text_label_precision@1", "ts_to_ts_label_mrr@10"):
        assert 0.0 <= reported[key] <= 1.0
    assert "ts_to_ts_label_precision@1" in written["euclidean"]
    assert "text_to_ts_label_precision@1" in written["random"]


def test_table_prints_every_mode_and_baseline(quickstart, capsys):
    _, summary = quickstart
    table = summary["table"]
    for line in ("| Text→TS | TRACE |", "| TS→Text | random |", "| TS→TS | Euclidean (raw) |"):
        assert line in table
    value = summary["evaluation"]["trace"]["ts_to_ts_label_mrr@10"]
    assert f"{value:.3f}" in table.split("| TS→TS | TRACE |")[1].splitlines()[0]


def test_index_loads_and_figures_are_valid_pngs(quickstart):
    from modeling_trace.retrieval import TraceRetrievalIndex

    out, _ = quickstart
    index = TraceRetrievalIndex.load(str(out / "index"))
    assert len(index) > 0 and set(index.indexes) == {"time_series", "text"}
    for name in ("retrieval.png", "training_curves.png"):
        with Image.open(out / name) as image:
            image.verify()
        with Image.open(out / name) as image:
            assert np.asarray(image.convert("L"), dtype=np.float32).std() > 5
    assert (out / "runs" / "align" / "train_log.jsonl").is_file()


def test_refuses_a_foreign_output_folder(tmp_path):
    from trace_training.quickstart import QuickstartError, run_quickstart

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(QuickstartError, match="not written by the quickstart"):
        run_quickstart(tmp_path, smoke=True)


@pytest.fixture(scope="module")
def checkpoint_quickstart(tmp_path_factory):
    from trace_datasets.paths import default_data_dir
    from trace_training.quickstart import run_checkpoint_quickstart

    if not default_data_dir().is_dir():
        pytest.fail(f"Real data not found at {default_data_dir()}; set TRACE_DATA_DIR to the shared data folder.")
    out = tmp_path_factory.mktemp("checkpoint_quickstart")
    return out, run_checkpoint_quickstart(out, smoke=True)


def test_default_quickstart_evaluates_the_shipped_checkpoint(checkpoint_quickstart):
    """The default mode indexes real test windows with the shipped checkpoint: the index loads, the written
    evaluation is the returned one, and the trained model finds pairs far above a random ranking."""
    from modeling_trace.resources import shipped_checkpoint
    from modeling_trace.retrieval import TraceRetrievalIndex

    out, summary = checkpoint_quickstart
    assert summary["paths"]["model"] == str(shipped_checkpoint())
    assert json.loads((out / "evaluation.json").read_text()) == summary["evaluation"]
    index = TraceRetrievalIndex.load(str(out / "index"))
    assert len(index) == summary["test_rows"] == 120
    trace, random = summary["evaluation"]["trace"], summary["evaluation"]["random"]
    for mode in ("text_to_ts", "ts_to_text"):
        assert trace[f"{mode}_modality_mrr@10"] > 5 * random[f"{mode}_modality_mrr@10"]
    assert summary["recorded_max_abs_difference"] is None  # a subset: not compared with the card's figures
    assert "| TS→TS |" not in summary["table"]  # station windows: no TS->TS label, no pair: no empty row
    with Image.open(out / "retrieval.png") as image:
        image.verify()


def test_quickstart_command_line_errors(tmp_path, capsys):
    from trace_training.quickstart import main

    with pytest.raises(SystemExit):
        main(["--train", "--model", str(tmp_path)])
    assert "give one of them" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--model-overrides", "{}"])
    assert "add --train" in capsys.readouterr().err
    assert main(["--model", str(tmp_path), "--output-dir", str(tmp_path / "out")]) == 1
    assert "ship.json" in capsys.readouterr().err
