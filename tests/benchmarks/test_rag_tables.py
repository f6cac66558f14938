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
    argv = ["--data-dir", str(data_dir), "--seeds", "1", "--seraf-epochs", "1", "ett", "--input-length", "24"]
    argv += ["--horizons", "4", "8", "--max-train-windows", "64", "--cache-dir", str(tmp_path / "cache")]
    rag_tables.main(argv + ["--figure-dir", str(tmp_path / "figures")])
    report = capsys.readouterr().out
    assert HashEmbedder.calls == 2  # the database and the test windows, once for both horizons
    for horizon in (4, 8):
        assert f"**ETTh1 (H={horizon};" in report and (tmp_path / "figures" / f"seraf_ETTh1_H{horizon}.png").stat().st_size > 0
        assert f"**ETTh1 (H={horizon}): the retrieved futures alone as forecasts (seed-0 SERAF; its fusion weight w = " in report
    assert "**ETTh1, average over H = 4, 8**" in report and "| Linear (no retrieval) |" in report

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
    assert HashEmbedder.calls == 2 and "loaded from cache" in again
    assert all(f"| {name} |" in again for name in rag_tables.seraf_variants())
    for title in ("ETTh1 (H=4;", "ETTh1 (H=8;", "ETTh1 (H=8): the retrieved", "ETTh1, average over"):
        for model in ("SERAF (full)", "Linear (no retrieval)", "Pearson top-K futures (F̂_T)"):
            if f"| {model} |" in report.split(f"**{title}")[1].split("**")[0]:
                assert mse(again, title, model) == mse(report, title, model)
