"""Publishing: the folder `push_folder_to_hub` uploads is complete (config with auto_map, safetensors, processor files,
a model card whose metadata validates), loads in a fresh process with `trust_remote_code`, and is exactly the folder
handed to `HfApi.upload_folder`; incomplete folders are refused before anything is uploaded."""

import json
import os

import numpy as np
import pytest
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.repocard_data import model_index_to_eval_results

from modeling_trace import TraceModel, TraceProcessor
from modeling_trace.cards import render_model_card, retrieval_eval_results, write_model_card
from tests.conftest import run_fresh_python, save_tiny_text_model, tiny_config
from trace_training.hub import IncompleteFolderError, check_folder, push_folder_to_hub, write_self_contained_folder

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Hand-chosen numbers standing for an evaluation's output (the card must carry exactly these).
MEASURED = {
    "text_to_ts_label_precision@1": 0.25,
    "text_to_ts_modality_mrr@10": 0.375,
    "ts_to_text_modality_precision@5": 0.125,
    "ts_to_ts_label_mrr@10": 0.8125,
    "ts_to_ts_seconds_per_1k_queries": 1.5,  # a timing: machine-dependent, left out of the model-index
}
SERIES = np.random.default_rng(0).normal(size=(3, 48, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """A tiny TraceModel saved with its tokenizer, processor and card (as the training scripts leave `final/`)."""
    text_dir = save_tiny_text_model(tmp_path_factory.mktemp("text"))
    model = TraceModel.from_time_series_text_pretrained(
        tiny_config(channel_names=["temperature", "humidity", "wind"]), text_model_name_or_path=text_dir
    ).eval()
    folder = tmp_path_factory.mktemp("model")
    model.save_pretrained(folder)
    TraceProcessor.from_model(model, max_length=64).save_pretrained(folder)
    write_model_card(
        folder,
        model_name="trace-test",
        eval_results=retrieval_eval_results(MEASURED, dataset_name="unit-test pairs", dataset_split="test"),
        datasets=["unit-test-pairs"],
        base_model="sentence-transformers/all-MiniLM-L6-v2",
    )
    return model, folder


class RecordingHfApi:
    """Stand-in for `huggingface_hub.HfApi` (the one place a stand-in is acceptable: tests cannot reach the Hub).
    It records every call, and at upload time snapshots the folder it is given."""

    calls = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, **kwargs):
        RecordingHfApi.calls.append(("create_repo", repo_id, kwargs))

    def create_branch(self, repo_id, **kwargs):
        RecordingHfApi.calls.append(("create_branch", repo_id, kwargs))

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        paths = [p for p in __import__("pathlib").Path(folder_path).rglob("*") if p.is_file()]
        files = sorted(str(p.relative_to(folder_path)) for p in paths)
        sizes = {str(p.relative_to(folder_path)): p.stat().st_size for p in paths}
        RecordingHfApi.calls.append(
            ("upload_folder", repo_id, {"folder_path": folder_path, "files": files, "sizes": sizes, **kwargs})
        )
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/0"})()


@pytest.fixture
def fake_hub(monkeypatch):
    import huggingface_hub

    RecordingHfApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingHfApi)
    return RecordingHfApi


def test_card_metadata_round_trips_and_carries_the_given_metrics(model_folder):
    _, folder = model_folder
    card = ModelCard.load(folder / "README.md")
    data = card.data
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "feature-extraction"
    assert data.license == "apache-2.0"
    assert {"time-series", "retrieval", "trace"} <= set(data.tags)
    assert data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert data.datasets == ["unit-test-pairs"]

    # the model-index parses back and holds exactly the non-timing metrics given
    model_name, results = model_index_to_eval_results(data.to_dict()["model-index"])
    assert model_name == "trace-test"
    expected = {k: v for k, v in MEASURED.items() if "seconds" not in k}
    assert {r.metric_type: r.metric_value for r in results} == expected
    assert all(r.dataset_name == "unit-test pairs" and r.dataset_split == "test" for r in results)
    # ModelCardData validates the metadata locally: rebuilding it from its own dict gives the same dict
    assert ModelCardData(**data.to_dict()).to_dict() == data.to_dict()
    # the usage section names what a user needs
    for snippet in ("trust_remote_code=True", "encode_text", "encode_time_series", "TraceRetrievalIndex", "q_proj"):
        assert snippet in card.text


def test_card_without_metrics_has_no_model_index_and_rejects_bad_values(model_folder):
    model, _ = model_folder
    card = render_model_card(model.config)
    assert "model-index" not in card.data.to_dict()
    with pytest.raises(ValueError, match="finite number"):
        retrieval_eval_results({"text_to_ts_label_mrr@10": float("nan")}, dataset_name="x")


def test_push_uploads_exactly_the_checked_folder_which_loads_in_a_fresh_process(model_folder, fake_hub, tmp_path):
    model, folder = model_folder
    info = push_folder_to_hub(folder, "someone/trace-test", private=True, revision="dev", commit_message="first")
    assert info.commit_url.startswith("https://huggingface.co/someone/trace-test")
    names = [c[0] for c in fake_hub.calls]
    assert names == ["create_repo", "create_branch", "upload_folder"]
    assert fake_hub.calls[0][2] == {"private": True, "repo_type": "model", "exist_ok": True}
    upload = fake_hub.calls[2][2]
    assert upload["folder_path"] == str(folder)
    assert upload["revision"] == "dev" and upload["commit_message"] == "first" and upload["repo_type"] == "model"
    files = set(upload["files"])
    assert {"config.json", "model.safetensors", "README.md", "processor_config.json", "tokenizer.json",
            "configuration_trace.py", "modeling_trace.py"} <= files
    config = json.loads((folder / "config.json").read_text())
    assert "AutoModel" in config["auto_map"]

    # what was uploaded loads without this package and embeds like the in-process model
    np.save(tmp_path / "series.npy", SERIES)
    expected = model.encode_time_series(SERIES)
    result = run_fresh_python(
        f"""
        import json, numpy as np
        from transformers import AutoModel, AutoProcessor
        from huggingface_hub import ModelCard
        model = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True)
        processor = AutoProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)
        card = ModelCard.load({str(folder / 'README.md')!r})
        emb = model.encode_time_series(np.load("series.npy"))
        inputs = processor(time_series=list(np.load("series.npy")), text=["a", "b", "c"])
        out = model(**inputs)
        print(json.dumps({{"emb": emb.tolist(), "card": card.data.library_name, "logits": list(out.logits_per_text.shape)}}))
        """,
        tmp_path,
    )
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(np.asarray(loaded["emb"]), expected, atol=1e-5)
    assert loaded["card"] == "transformers" and loaded["logits"] == [3, 3]


@pytest.mark.parametrize(
    "damage, message",
    [
        ("no_card", "no README.md model card"),
        ("bad_card", "does not parse as a model card"),
        ("no_auto_map", "no auto_map"),
        ("no_weights", "no model.safetensors"),
    ],
)
def test_incomplete_folders_are_refused_before_any_hub_call(model_folder, fake_hub, tmp_path, damage, message):
    import shutil

    _, folder = model_folder
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    if damage == "no_card":
        (copy / "README.md").unlink()
    elif damage == "bad_card":
        (copy / "README.md").write_text("---\nlicense: [unclosed\n---\n# card\n")
    elif damage == "no_auto_map":
        config = json.loads((copy / "config.json").read_text())
        del config["auto_map"]
        (copy / "config.json").write_text(json.dumps(config))
    else:
        (copy / "model.safetensors").unlink()
    with pytest.raises(IncompleteFolderError, match=message):
        push_folder_to_hub(copy, "someone/trace-test")
    assert fake_hub.calls == []


def test_bad_repo_id_type_mismatch_and_unknown_folder(model_folder, fake_hub, tmp_path):
    _, folder = model_folder
    with pytest.raises(ValueError, match="user/name"):
        push_folder_to_hub(folder, "no-slash")
    with pytest.raises(ValueError, match="repo_type"):
        push_folder_to_hub(folder, "someone/x", repo_type="dataset")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IncompleteFolderError, match="holds none of"):
        check_folder(tmp_path / "empty")
    assert fake_hub.calls == []


def test_a_saved_retrieval_index_is_verified_and_uploaded(fake_hub, tmp_path):
    from modeling_trace.retrieval import TraceRetrievalIndex

    rng = np.random.default_rng(0)
    index = TraceRetrievalIndex.from_embeddings(rng.normal(size=(6, 8)), rng.normal(size=(6, 8)))
    index.save(str(tmp_path / "index"))
    assert check_folder(tmp_path / "index") == "index"
    push_folder_to_hub(tmp_path / "index", "someone/trace-index")
    assert fake_hub.calls[-1][2]["folder_path"] == str(tmp_path / "index")
    # a truncated FAISS file is caught by the index's own sha256 check, before uploading
    faiss_file = next((tmp_path / "index").glob("*.faiss"))
    faiss_file.write_bytes(faiss_file.read_bytes()[:-8])
    fake_hub.calls.clear()
    with pytest.raises(ValueError):
        push_folder_to_hub(tmp_path / "index", "someone/trace-index")
    assert fake_hub.calls == []


def test_a_folder_referencing_its_tower_is_bundled_self_contained_and_pushed_so(fake_hub, tmp_path):
    """The repository's checkpoint leaves the frozen all-MiniLM-L6-v2 out (`save_text_model=False`); `trace bundle` /
    `write_self_contained_folder` and `push` put it back so the Hub copy needs no second download."""
    from safetensors import safe_open

    model = TraceModel.from_time_series_text_pretrained(tiny_config(channel_names=["a", "b", "c"])).eval()
    folder = tmp_path / "referenced"
    model.save_pretrained(folder, save_text_model=False)
    TraceProcessor.from_model(model, max_length=64).save_pretrained(folder)
    write_model_card(folder, model_name="trace-test", base_model="sentence-transformers/all-MiniLM-L6-v2")
    small = (folder / "model.safetensors").stat().st_size

    bundled = write_self_contained_folder(folder, tmp_path / "bundled")
    assert {p.name for p in folder.iterdir()} == {p.name for p in bundled.iterdir()}
    assert json.loads((bundled / "config.json").read_text())["text_model_reference"] is None
    with safe_open(bundled / "model.safetensors", "pt") as handle:
        assert any(key.startswith("text_model.") for key in handle.keys())
    np.testing.assert_allclose(
        TraceModel.from_pretrained(bundled).encode_text(["dry and calm"]), model.encode_text(["dry and calm"]), atol=1e-6
    )
    with pytest.raises(FileExistsError):
        write_self_contained_folder(folder, bundled)
    with pytest.raises(ValueError, match="holds its text tower already"):
        write_self_contained_folder(bundled, tmp_path / "again")

    push_folder_to_hub(folder, "someone/trace-test")
    upload = fake_hub.calls[-1][2]
    assert upload["folder_path"] != str(folder) and set(upload["files"]) == {p.name for p in folder.iterdir()}
    assert upload["sizes"]["model.safetensors"] > small + 80 * 2**20  # the 87 MB tower went up with it
