"""The `trace` command never shows a traceback: each bad input ends with one stderr line and exit status 1 (errors)
or 2 (usage). Runs on a tiny untrained model and a six-row dataset (no training), so it stays fast."""

import json
import shutil

import datasets
import numpy as np
import pytest
import torch

from tests.conftest import save_tiny_text_model, tiny_config
from trace_training.cli import error_line, main


def run(capsys, *argv):
    """(exit status, stdout, stderr) of `trace argv`, usage errors (SystemExit) included."""
    try:
        code = main(list(argv))
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line(err, *fragments):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


def save_model(folder, seed):
    from modeling_trace import TraceModel

    text_dir = save_tiny_text_model(folder.parent / f"text{seed}")  # (seeds torch itself)
    torch.manual_seed(seed)
    model = TraceModel.from_time_series_text_pretrained(
        tiny_config(channel_names=["a", "b", "c"]), text_model_name_or_path=text_dir
    ).eval()
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_errors")
    save_model(root / "model", seed=0)
    save_model(root / "other_model", seed=1)  # same dimensions, other weights
    rng = np.random.default_rng(0)
    rows = datasets.Dataset.from_dict(
        {
            "id": [f"r{i}" for i in range(6)],
            "text": [f"a series number {i}" for i in range(6)],
            "label": [0, 1, 0, 1, 0, 1],
            "past_values": rng.normal(size=(6, 48, 3)).astype(np.float32).tolist(),
        }
    )
    datasets.DatasetDict({"test": rows}).save_to_disk(str(root / "data"))
    assert main(["index", "--model", str(root / "model"), "--dataset", str(root / "data"), "--output", str(root / "index")]) == 0
    return root


def test_non_positive_max_rows_and_batch_size_are_usage_errors(workspace, tmp_path, capsys):
    base = ["index", "--model", str(workspace / "model"), "--dataset", str(workspace / "data"), "--output", str(tmp_path / "i")]
    for flag, value in (("--max-rows", "-1"), ("--max-rows", "0"), ("--batch-size", "0"), ("--max-rows", "2.5")):
        code, out, err = run(capsys, *base, flag, value)
        assert code == 2
        assert_one_line(err, flag, "whole number >= 1")
    assert not (tmp_path / "i").exists()


def test_bad_k_is_a_usage_error_and_a_huge_k_shows_the_whole_index(workspace, capsys):
    base = ["search", "--model", str(workspace / "model"), "--index", str(workspace / "index"), "--text", "a series"]
    for value in ("1e11", "0", "-3", "five"):
        code, out, err = run(capsys, *base, "-k", value)
        assert code == 2
        assert_one_line(err, "-k", "whole number >= 1")
    code, out, err = run(capsys, *base, "-k", str(10**11))
    assert code == 0, err
    assert len(out.strip().splitlines()) == 3 + 6  # title, header, rule, every one of the 6 rows
    code, out, err = run(capsys, "evaluate", "--model", str(workspace / "model"), "--index", str(workspace / "index"), "-k", str(10**11))
    assert code == 0, err


def test_truncated_model_weights_name_the_folder(workspace, tmp_path, capsys):
    broken = tmp_path / "broken_model"
    shutil.copytree(workspace / "model", broken)
    weights = broken / "model.safetensors"
    for size in (3000, weights.stat().st_size // 2):  # header cut, then data cut
        weights.write_bytes((workspace / "model" / "model.safetensors").read_bytes()[:size])
        code, out, err = run(capsys, "search", "--model", str(broken), "--index", str(workspace / "index"), "--text", "x")
        assert code == 1
        assert_one_line(err, "Cannot load the model in", str(broken), "model.safetensors")


def test_invalid_yaml_recipe_names_the_file_and_line(tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("learning_rate: [1e-4\nmax_steps: {\n")
    code, out, err = run(capsys, "pretrain", "--config", str(recipe))
    assert code == 1
    assert_one_line(err, "trace pretrain: error: invalid YAML", "bad.yaml", "line")


def test_unknown_builder_is_a_usage_error(capsys):
    code, out, err = run(capsys, "build-dataset", "common")
    assert code == 2
    assert_one_line(err, "invalid choice: 'common'")


def test_search_on_an_empty_index_explains(workspace, tmp_path, capsys):
    index = tmp_path / "empty_index"
    shutil.copytree(workspace / "index", index)
    manifest = json.loads((index / "trace_index.json").read_text())
    manifest["num_rows"] = 0  # what an index saved from an empty corpus by an older version recorded
    (index / "trace_index.json").write_text(json.dumps(manifest))
    code, out, err = run(capsys, "search", "--model", str(workspace / "model"), "--index", str(index), "--text", "x")
    assert code == 1
    assert_one_line(err, "0 rows", "non-empty corpus")


def test_search_with_another_model_than_the_index_was_built_with(workspace, capsys):
    code, out, err = run(capsys, "search", "--model", str(workspace / "other_model"), "--index", str(workspace / "index"), "--text", "x")
    assert code == 1
    assert_one_line(err, "fingerprint", "rebuild the index")


def test_builder_option_errors_are_one_line(tmp_path, capsys, data_dir):
    out = tmp_path / "out"
    code, _, err = run(capsys, "build-dataset", "timemmd", "--domains", "Security", "--stride", "0", "--data-dir", str(data_dir), "--output-dir", str(out))
    assert code == 1
    assert_one_line(err, "stride must be a positive integer")
    code, _, err = run(capsys, "build-dataset", "noaa", "--radius-km", "-10", "--data-dir", str(data_dir))
    assert code == 1
    assert_one_line(err, "radius_km must be a positive number")
    stations = tmp_path / "stations.json"
    stations.write_text('{"stations": [')
    code, _, err = run(capsys, "build-dataset", "noaa", "--stations", str(stations), "--data-dir", str(data_dir))
    assert code == 1
    assert_one_line(err, str(stations), "not valid JSON")
    assert not out.exists()


def test_unexpected_exceptions_are_one_line_with_a_pointer_to_debug(workspace, monkeypatch, capsys):
    from modeling_trace.retrieval import TraceRetrievalIndex

    def broken_load(*args, **kwargs):
        raise AssertionError("something the code did not expect")

    monkeypatch.setattr(TraceRetrievalIndex, "load", broken_load)
    argv = ["search", "--model", str(workspace / "model"), "--index", str(workspace / "index"), "--text", "x"]
    code, out, err = run(capsys, *argv)
    assert code == 1
    assert_one_line(err, "internal error: AssertionError: something the code did not expect", "trace --debug search")
    with pytest.raises(AssertionError):
        main(["--debug", *argv])


def test_error_line_maps_common_errors():
    import yaml

    with pytest.raises(yaml.YAMLError) as info:
        yaml.safe_load("a: [1")
    assert error_line(info.value, "align").startswith("error: invalid YAML:")
    assert error_line(MemoryError(), "index").startswith("error: out of memory")
    assert error_line(KeyError("past_values"), "index") == "error: missing key 'past_values'"
    assert error_line(FileNotFoundError(2, "No such file or directory", "x.csv"), "search") == (
        "error: [Errno 2] No such file or directory: 'x.csv'"
    )
    assert error_line(ValueError("bad\nvalue"), "search") == "error: bad value"
    assert error_line(TypeError("oops"), "search").startswith("internal error: TypeError: oops")
