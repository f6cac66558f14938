"""The shipped checkpoint (`checkpoints/trace-mini-noaa`, written by `python -m trace_training.ship`): small, its text
tower referenced and not stored, no local path in any file, the library's own Hub-side code, loadable without this
package (offline), the CLI's default model, and its recorded evaluation is what the checkpoint gives today."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

import modeling_trace
from modeling_trace.resources import shipped_checkpoint
from tests.conftest import run_fresh_python
from trace_training.ship import _prepare_output

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FOLDER = shipped_checkpoint()
LIBRARY = Path(modeling_trace.__file__).resolve().parent
HUB_FILES = ("configuration_trace.py", "modeling_trace.py", "processing_trace.py")


def test_the_checkpoint_is_small_references_its_tower_and_holds_no_local_path():
    files = [path for path in FOLDER.rglob("*") if path.is_file()]
    assert sum(path.stat().st_size for path in files) <= 30 * 2**20
    with safe_open(FOLDER / "model.safetensors", "pt") as handle:
        keys = list(handle.keys())
    assert any(key.startswith("time_series_model.") for key in keys)
    assert not [key for key in keys if key.startswith("text_model.")]
    config = json.loads((FOLDER / "config.json").read_text())
    assert config["text_model_reference"] == "sentence-transformers/all-MiniLM-L6-v2"
    for path in files:
        if path.suffix in (".json", ".md", ".txt", ".yaml"):
            text = path.read_text(encoding="utf-8")
            for prefix in ("/work/", "/home/", "/tmp/", "/Users/", "C:\\"):
                assert prefix not in text, f"{path.name} holds a local path ({prefix}...)"


@pytest.mark.parametrize("name", HUB_FILES)
def test_its_remote_code_is_the_library_hub_file(name):
    """The copies save_pretrained wrote must be today's library files: re-ship after changing them."""
    assert (FOLDER / name).read_bytes() == (LIBRARY / name).read_bytes(), (
        f"checkpoints/trace-mini-noaa/{name} differs from modeling_trace/{name}; re-run "
        "`python -m trace_training.ship` (or copy the file) so that trust_remote_code loads today's code."
    )


def test_recorded_evaluation_is_what_the_checkpoint_gives_on_the_test_split(data_dir):
    from modeling_trace.data_collator import align_dataset_channels
    from modeling_trace.modeling_trace import TraceModel
    from modeling_trace.retrieval import RetrievalEvaluator, TraceRetrievalIndex
    from trace_training.cli import load_model
    from trace_training.data import load_training_splits

    recorded = json.loads((FOLDER / "evaluation.json").read_text())
    recipe = json.loads((FOLDER / "ship.json").read_text())
    model = load_model(None)  # the CLI's default model is this folder
    assert isinstance(model, TraceModel) and Path(model.config._name_or_path).resolve() == FOLDER.resolve()
    test = load_training_splits(recipe["dataset"], recipe["dataset_config"], splits=("test",), data_dir=data_dir)["test"]
    assert len(test) == recorded["test_windows"]
    test = align_dataset_channels(test, model.config.channel_names)
    index = TraceRetrievalIndex.build(test, model, show_progress_bar=False)
    metrics = RetrievalEvaluator(index.corpus, k=recipe["k"])(index, model=model)
    quality = {key: value for key, value in recorded["evaluation"]["trace"].items() if "seconds" not in key}
    assert quality and all(metrics[key] == pytest.approx(value, abs=1e-6) for key, value in quality.items()), {
        key: (metrics[key], value) for key, value in quality.items()
    }


def test_it_loads_with_remote_code_without_this_package_offline(tmp_path):
    from modeling_trace.modeling_trace import TraceModel

    series = np.random.default_rng(0).normal(size=(2, 168, 7)).astype(np.float32)
    texts = ["Weather: Rainy. Channels: temperature down (medium volatility)", "Weather: Clear."]
    model = TraceModel.from_pretrained(FOLDER).eval()
    expected = {"ts": model.encode_time_series(series), "text": model.encode_text(texts)}
    np.save(tmp_path / "series.npy", series)
    run_fresh_python(
        f"""
        import numpy as np
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(FOLDER)!r}, trust_remote_code=True).eval()
        np.savez("out.npz", ts=model.encode_time_series(np.load("series.npy")), text=model.encode_text({texts!r}))
        """,
        tmp_path,
    )
    got = np.load(tmp_path / "out.npz")
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-6, err_msg=key)


def test_ship_refuses_to_overwrite_a_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an earlier `ship` folder"):
        _prepare_output(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"
