"""Retrieval figures and training curves are written as valid, non-blank PNGs with one panel per (row, channel)."""

import json

import numpy as np
import pytest
from PIL import Image

from modeling_trace.plotting import plot_retrieval, plot_training_curves
from modeling_trace.retrieval import RetrievalResults


def _rows(k=3, channels=2, length=40):
    rng = np.random.default_rng(0)
    return [
        {"id": f"r{i}", "text": "Heavy rain " * (25 + i), "label": "Flood", "score": 0.9 - 0.1 * i,
         "past_values": rng.normal(size=(length, channels)).tolist(), "channel_names": ["temperature", "wind_u"]}
        for i in range(k)
    ]


def _check_png(path, min_size=(300, 200)):
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1]
        pixels = np.asarray(image.convert("L"), dtype=np.float32)
    assert pixels.std() > 5, "the image is blank"


def test_plot_retrieval_draws_query_and_hits_as_small_multiples(tmp_path):
    query = np.random.default_rng(1).normal(size=(40, 2))
    query[:, 1] = np.nan  # an all-missing channel is drawn as "missing", not as an empty line
    results = RetrievalResults(scores=np.array([[0.9, 0.8, 0.7]]), indices=np.array([[0, 1, 2]]), rows=[_rows()])
    fig = plot_retrieval(query, results, tmp_path / "hits.png", query_text="Flooding after heavy rain", k=2)
    # one text panel + 2 channel panels per row; rows = query + k hits
    assert len(fig.axes) == (1 + 2) * (1 + 2)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["temperature", "wind_u"]
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("score 0.900" in t for t in texts) and any("missing" == t for t in texts)
    assert all(len(line) <= 38 for t in texts for line in t.splitlines())  # wrapped
    assert any(t.endswith("…") for t in texts)  # long texts truncated
    _check_png(tmp_path / "hits.png")


def test_plot_retrieval_errors_name_the_missing_column(tmp_path):
    rows = [{"id": "a", "text": "x", "score": 1.0}]
    with pytest.raises(ValueError, match="past_values"):
        plot_retrieval(None, rows, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_plot_training_curves_from_jsonl_and_records(tmp_path):
    log = tmp_path / "run" / "train_log.jsonl"
    log.parent.mkdir()
    log.write_text("\n".join(json.dumps({"step": s, "loss": 2.0 / s, "learning_rate": 1e-3}) for s in range(1, 9)))
    records = [{"step": s, "loss": 5 - 0.1 * s, "sample_loss": 2.5, "channel_loss": 2.4} for s in range(1, 6)]
    out = plot_training_curves({"pretrain": log.parent, "align": records}, tmp_path / "curves.png")
    _check_png(out)
    with pytest.raises(ValueError, match="no records"):
        plot_training_curves([{"step": 1, "learning_rate": 0.1}], tmp_path / "none.png")
    with pytest.raises(FileNotFoundError, match="train_log.jsonl"):
        plot_training_curves(tmp_path / "missing", tmp_path / "none.png")
