"""Tests of modeling_trace/retrieval.py: the FAISS corpus index, its persistence checks, exclusion,
approximate indexes, the evaluator and the raw-window baselines.

The encoder here is a small stand-in with the `TraceModel` encoding interface (random projections
of z-normalised series and of hashed bags of words), so these tests do not depend on a trained model.
"""

import json
import os
import shutil
import zlib

import datasets
import numpy as np
import pytest

from modeling_trace.retrieval import (
    DTWSearcher,
    EuclideanScanSearcher,
    RandomSearcher,
    RetrievalEvaluator,
    RetrievalIndexIntegrityError,
    TraceRetrievalIndex,
    znormalize_windows,
)

LENGTH, CHANNELS, DIM = 24, 2, 16


class RandomProjectionEncoder:
    """Stand-in for `TraceModel.encode_time_series` / `encode_text`: fixed random projections."""

    def __init__(self, dim=DIM, seed=0):
        rng = np.random.default_rng(seed)
        self.ts_proj = rng.standard_normal((LENGTH * CHANNELS, dim)).astype(np.float32)
        self.text_proj = rng.standard_normal((64, dim)).astype(np.float32)
        self.calls = []

    def encode_time_series(self, series, batch_size=64, show_progress_bar=None, convert_to_numpy=True):
        self.calls.append(("time_series", len(series), batch_size))
        x = znormalize_windows(np.stack([np.asarray(s, dtype=np.float32) for s in series])) @ self.ts_proj
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def encode_text(self, texts, batch_size=64, show_progress_bar=None, convert_to_numpy=True):
        self.calls.append(("text", len(texts), batch_size))
        bags = np.zeros((len(texts), 64), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.split():
                bags[i, zlib.crc32(word.encode()) % 64] += 1.0
        x = bags @ self.text_proj
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_dataset(num_rows=60, seed=0):
    """Three shapes (rising, falling, oscillating) with noise; the text names the shape."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, LENGTH)
    shapes = {"rising": t, "falling": 1 - t, "oscillating": np.sin(8 * np.pi * t)}
    names = list(shapes)
    ids, labels, texts, values = [], [], [], []
    for i in range(num_rows):
        label = names[i % 3]
        base = shapes[label]
        series = np.stack([base * (1 + c) + 0.1 * rng.standard_normal(LENGTH) for c in range(CHANNELS)], axis=1)
        series[rng.integers(LENGTH), 0] = np.nan
        ids.append(f"w{i:03d}")
        labels.append(label)
        texts.append(f"a {label} series number {i}")
        values.append(series.astype(np.float32))
    return datasets.Dataset.from_dict({"id": ids, "label": labels, "text": texts, "past_values": values})


@pytest.fixture(scope="module")
def dataset():
    return make_dataset()


@pytest.fixture(scope="module")
def encoder():
    return RandomProjectionEncoder()


@pytest.fixture(scope="module")
def index(dataset, encoder):
    return TraceRetrievalIndex.build(dataset, encoder, batch_size=16, show_progress_bar=False)


def test_build_encodes_both_modalities_and_stores_unit_embeddings(index, dataset, encoder):
    assert ("time_series", len(dataset), 16) in encoder.calls and ("text", len(dataset), 16) in encoder.calls
    assert len(index) == len(dataset) and index.dim == DIM
    for modality in ("time_series", "text"):
        vectors = index.embeddings(modality)
        assert vectors.dtype == np.float32 and vectors.shape == (len(dataset), DIM)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    # The stored text embeddings are the encoder's, row for row.
    np.testing.assert_allclose(index.embeddings("text", [5]), encoder.encode_text([dataset[5]["text"]]), rtol=1e-5)


def test_ts_to_ts_returns_query_itself_first(index, dataset):
    series = [np.asarray(v, dtype=np.float32) for v in dataset.select(range(10))["past_values"]]
    hits = index.search_by_time_series(series, k=5)
    assert hits.indices[:, 0].tolist() == list(range(10))
    assert hits.ids[3][0] == "w003"
    np.testing.assert_allclose(hits.scores[:, 0], 1.0, atol=1e-5)
    assert np.all(np.diff(hits.scores, axis=1) <= 1e-6)  # best first
    row = hits.rows[0][0]
    assert row["id"] == "w000" and row["label"] == "rising" and "ts_embedding" not in row and "past_values" not in row


def brute_force_ranking(queries, corpus):
    """Indices and scores of every corpus row by cosine similarity, best first (float64, no FAISS)."""
    queries = np.asarray(queries, dtype=np.float64)
    corpus = np.asarray(corpus, dtype=np.float64)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    corpus = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
    scores = queries @ corpus.T
    order = np.argsort(-scores, axis=1, kind="stable")
    return order, np.take_along_axis(scores, order, axis=1)


def test_text_to_ts_and_ts_to_text_rank_by_cosine_across_modalities(index, dataset, encoder):
    # The stand-in encoder's two towers are unrelated random projections, so which series a text finds is
    # arbitrary; what the index must do is rank the other modality's stored vectors by cosine similarity.
    texts = dataset.select(range(6))["text"]
    hits = index.search_by_text(texts, k=5)
    order, scores = brute_force_ranking(encoder.encode_text(texts), encoder.encode_time_series(dataset["past_values"]))
    np.testing.assert_allclose(hits.scores, scores[:, :5], atol=1e-5)
    assert [ids[:1] for ids in hits.ids] == [[f"w{i:03d}"] for i in order[:, 0]]

    series = [np.asarray(v, dtype=np.float32) for v in dataset.select([4, 9])["past_values"]]
    to_text = index.search_by_time_series(series, k=60, target="text")
    order, scores = brute_force_ranking(encoder.encode_time_series(series), encoder.encode_text(dataset["text"]))
    assert sorted(to_text.indices[0].tolist()) == list(range(60))  # k = corpus size returns every text once
    np.testing.assert_allclose(to_text.scores, scores, atol=1e-5)
    assert to_text.indices[:, 0].tolist() == order[:, 0].tolist()


def test_exclusion_by_ids_matrix_and_callable(index):
    queries = index.embeddings("time_series", [0, 1, 2])
    by_id = index.search(queries, k=4, exclude=[["w000"], "w001", None])
    assert 0 not in by_id.indices[0] and 1 not in by_id.indices[1] and by_id.indices[2, 0] == 2
    assert (by_id.indices >= 0).all()
    plain = index.search(queries, k=5)
    # Dropping the first hit shifts the others up by one.
    assert by_id.indices[0].tolist() == plain.indices[0, 1:5].tolist()

    matrix = np.zeros((3, len(index)), dtype=bool)
    matrix[:, :30] = True
    masked = index.search(queries, k=4, exclude=matrix)
    assert (masked.indices >= 30).all()

    # "Windows overlapping the query": rows within 10 of the query row, which needs several fetches.
    overlapping = index.search(queries, k=5, exclude=lambda q, rows: np.abs(rows - q) <= 10)
    assert all(abs(i - q) > 10 for q, row in enumerate(overlapping.indices) for i in row)
    assert (overlapping.indices >= 0).all()
    # Excluding everything leaves padding, not an error.
    empty = index.search(queries[:1], k=3, exclude=lambda q, rows: np.ones(rows.shape, dtype=bool))
    assert empty.indices.tolist() == [[-1, -1, -1]] and np.isneginf(empty.scores).all() and empty.rows == [[]]
    with pytest.raises(ValueError, match="one entry"):
        index.search(queries, k=2, exclude=[["w000"]])


def test_save_load_roundtrip_gives_identical_top_k(index, tmp_path, encoder):
    index.save(str(tmp_path / "idx"))
    loaded = TraceRetrievalIndex.load(str(tmp_path / "idx"), model=encoder)
    queries = index.embeddings("time_series")[:20]
    for target in ("time_series", "text"):
        a, b = index.search(queries, k=7, target=target), loaded.search(queries, k=7, target=target)
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_allclose(a.scores, b.scores)
    assert loaded.corpus["id"] == index.corpus["id"]
    assert loaded.search_by_text(["a falling series"], k=3).ids == index.search_by_text(["a falling series"], k=3).ids


def test_truncated_or_modified_index_file_is_a_clear_error(index, tmp_path):
    directory = str(tmp_path / "idx")
    index.save(directory)
    path = os.path.join(directory, "ts_index.faiss")
    with open(path, "rb") as f:
        content = f.read()
    with open(path, "wb") as f:
        f.write(content[: len(content) // 2])
    with pytest.raises(RetrievalIndexIntegrityError, match=r"ts_index\.faiss.*truncated.*Rebuild"):
        TraceRetrievalIndex.load(directory)
    # Same size, one byte flipped: caught by the sha256.
    with open(path, "wb") as f:
        f.write(content[:-1] + bytes([content[-1] ^ 0xFF]))
    with pytest.raises(RetrievalIndexIntegrityError, match=r"ts_index\.faiss.*sha256"):
        TraceRetrievalIndex.load(directory)
    os.remove(path)
    with pytest.raises(RetrievalIndexIntegrityError, match="missing"):
        TraceRetrievalIndex.load(directory)
    with pytest.raises(RetrievalIndexIntegrityError, match="not a saved TraceRetrievalIndex"):
        TraceRetrievalIndex.load(str(tmp_path))


def test_count_mismatch_between_corpus_and_index_is_a_clear_error(index, dataset, encoder, tmp_path):
    big, small = str(tmp_path / "big"), str(tmp_path / "small")
    index.save(big)
    TraceRetrievalIndex.build(dataset.select(range(40)), encoder, show_progress_bar=False).save(small)
    shutil.rmtree(os.path.join(big, "corpus"))
    shutil.copytree(os.path.join(small, "corpus"), os.path.join(big, "corpus"))
    with pytest.raises(RetrievalIndexIntegrityError, match="40 rows.*60"):
        TraceRetrievalIndex.load(big)
    # Index file swapped in from another save (manifest still matches the corpus).
    shutil.copy(os.path.join(small, "text_index.faiss"), os.path.join(small, "text_index.faiss.bak"))
    shutil.copy(os.path.join(big, "text_index.faiss"), os.path.join(small, "text_index.faiss"))
    with pytest.raises(RetrievalIndexIntegrityError, match="text_index.faiss"):
        TraceRetrievalIndex.load(small)
    with pytest.raises(ValueError, match="60 vectors but the corpus has 40 rows"):
        TraceRetrievalIndex(dataset.select(range(40)), index.indexes)


@pytest.mark.parametrize("factory, params", [("IVF64,Flat", {"nprobe": 8}), ("HNSW16", {"ef_search": 64})])
def test_approximate_factories_recall_vs_exact(factory, params):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((50, 32))
    vectors = (centres[rng.integers(0, 50, 4000)] + 0.5 * rng.standard_normal((4000, 32))).astype(np.float32)
    queries = vectors[:200] + 0.1 * rng.standard_normal((200, 32)).astype(np.float32)
    exact = TraceRetrievalIndex.from_embeddings(vectors).search(queries, k=10, return_rows=False)
    approx_index = TraceRetrievalIndex.from_embeddings(vectors, index_factory=factory, **params)
    approx = approx_index.search(queries, k=10, return_rows=False)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx.indices, exact.indices)])
    print(f"{factory} {params}: recall@10 vs exact = {recall:.3f}")
    assert recall > 0.7
    assert approx_index.index_factory == factory


def test_ivf_with_too_few_vectors_explains(index):
    with pytest.raises(ValueError, match="IVF lists"):
        TraceRetrievalIndex.from_embeddings(index.embeddings("time_series"), index_factory="IVF128,Flat")


def test_missing_modality_and_bad_inputs_explain(dataset, encoder):
    ts_only = TraceRetrievalIndex.build(dataset, encoder, text_column=None, show_progress_bar=False)
    with pytest.raises(ValueError, match="no text embeddings"):
        ts_only.search_by_time_series(query_embeddings=np.ones((1, DIM)), target="text")
    with pytest.raises(ValueError, match="dimension 3"):
        ts_only.search(np.ones((1, 3)))
    bare = TraceRetrievalIndex.from_embeddings(ts_only.embeddings("time_series"))
    with pytest.raises(ValueError, match="need an encoder"):
        bare.search_by_text(["rain"])
    with pytest.raises(ValueError, match="not in the dataset"):
        TraceRetrievalIndex.build(dataset, encoder, text_column="narrative")


def test_retrieval_evaluator_reports_paper_metrics(index):
    results = RetrievalEvaluator(k=10, name="toy")(index)
    for mode in ("text_to_ts", "ts_to_text"):
        assert 0.0 <= results[f"toy_{mode}_modality_mrr@10"] <= 1.0
        assert results[f"toy_{mode}_modality_num_queries"] == len(index)
        assert f"toy_{mode}_label_ndcg@10" in results
    assert "toy_ts_to_ts_modality_mrr@10" not in results
    assert results["toy_ts_to_ts_seconds_per_1k_queries"] > 0
    # The toy series are well separated by shape: TS->TS label matching is near perfect and far
    # above a random ranking.
    assert results["toy_ts_to_ts_label_precision@1"] > 0.9
    labels = np.array(index.corpus["label"])
    # The same numbers from a brute-force float64 ranking: TS->TS leaves the query itself out; Text->TS modality
    # MRR@10 is the reciprocal rank of the text's own series (0 beyond rank 10).
    ts, text = index.embeddings("time_series"), index.embeddings("text")
    order, _ = brute_force_ranking(ts, ts)
    first_other = [next(j for j in row if j != q) for q, row in enumerate(order)]
    assert results["toy_ts_to_ts_label_precision@1"] == pytest.approx(np.mean(labels[first_other] == labels))
    order, _ = brute_force_ranking(text, ts)
    ranks = np.array([row.tolist().index(q) + 1 for q, row in enumerate(order)])
    assert results["toy_text_to_ts_modality_mrr@10"] == pytest.approx(np.mean(np.where(ranks <= 10, 1.0 / ranks, 0.0)))
    assert results["toy_text_to_ts_modality_precision@1"] == pytest.approx(np.mean(ranks == 1))
    random_hits = RandomSearcher(len(index), corpus=index.corpus, seed=0).search(np.zeros(len(index)), k=1)
    assert np.mean(labels[random_hits.indices[:, 0]] == labels) < 0.6


def test_retrieval_evaluator_encodes_raw_queries(index, dataset, encoder):
    queries = dataset.select(range(0, 60, 4))
    results = RetrievalEvaluator(queries, modes=("ts_to_ts",))(index, model=encoder)
    assert results["ts_to_ts_label_num_queries"] == len(queries)
    assert results["time_series_encode_seconds_per_1k_queries"] > 0
    # Raw queries are encoded with the model, so they give the numbers of the stored embeddings of the same rows.
    stored = RetrievalEvaluator(modes=("ts_to_ts",))(index)
    labels = np.array(index.corpus["label"])
    rows = list(range(0, 60, 4))
    order, _ = brute_force_ranking(index.embeddings("time_series", rows), index.embeddings("time_series"))
    first_other = [next(j for j in ranking if j != q) for q, ranking in zip(rows, order)]
    assert results["ts_to_ts_label_precision@1"] == pytest.approx(np.mean(labels[first_other] == labels[rows]))
    assert stored["ts_to_ts_label_num_queries"] == len(index)


def test_baselines_share_result_type_and_exclusion(dataset):
    windows = np.stack(dataset["past_values"]).astype(np.float32)
    for searcher in (EuclideanScanSearcher(windows, corpus=dataset), DTWSearcher(windows[:30], corpus=dataset.select(range(30)))):
        hits = searcher.search(windows[:3], k=3)
        assert hits.indices[:, 0].tolist() == [0, 1, 2]  # each window is closest to itself
        assert hits.rows[0][0]["id"] == "w000"
        excluded = searcher.search(windows[:3], k=3, exclude=[["w000"], ["w001"], ["w002"]])
        assert all(q not in row for q, row in enumerate(excluded.indices))
        labels = np.array(dataset["label"])
        assert (labels[excluded.indices[:, 0]] == labels[:3]).all()


def test_euclidean_scan_matches_direct_distance():
    rng = np.random.default_rng(1)
    windows = rng.standard_normal((50, 10)).astype(np.float32)
    windows[3, 4] = np.nan
    z = znormalize_windows(windows)
    assert not np.isnan(z).any()
    np.testing.assert_allclose(z[0].mean(), 0, atol=1e-5)
    np.testing.assert_allclose(z[0].std(), 1, atol=1e-4)
    hits = EuclideanScanSearcher(windows).search(windows[:2], k=50, return_rows=False)
    expected = np.linalg.norm(z[:2, None, :] - z[None, :, :], axis=-1)
    np.testing.assert_allclose(-hits.scores, np.sort(expected, axis=1), atol=1e-3)


def test_evaluator_scores_a_raw_window_baseline_with_given_query_vectors(dataset):
    windows = np.stack([np.asarray(v, dtype=np.float32) for v in dataset["past_values"]])
    searcher = EuclideanScanSearcher(windows, corpus=dataset)
    evaluator = RetrievalEvaluator(dataset, modes=("ts_to_ts",), k=5)
    result = evaluator(searcher, query_embeddings={"time_series": windows})
    assert result["ts_to_ts_label_precision@1"] > 0.9  # the three shapes are far apart after z-normalisation
    hits = searcher.search(windows, 5, exclude=[[i] for i in dataset["id"]], return_rows=False)
    first = np.array(dataset["label"])[hits.indices[:, 0]]
    assert result["ts_to_ts_label_precision@1"] == pytest.approx(np.mean(first == np.array(dataset["label"])))
    with pytest.raises(ValueError, match="no model was given"):
        evaluator(searcher)


# --- sizes and k -----------------------------------------------------------------------------------------------


def test_k_is_a_positive_int_and_is_clamped_to_the_corpus_size(index, encoder):
    queries = index.embeddings("time_series")[:3]
    for bad in (2.5, "5", True, None):
        with pytest.raises(TypeError, match="`k` must be a positive integer"):
            index.search(queries, k=bad)
    for bad in (0, -1, np.int64(0)):
        with pytest.raises(ValueError, match="`k` must be >= 1"):
            index.search(queries, k=bad)
    calls = len(encoder.calls)
    with pytest.raises(TypeError, match="`k` must be a positive integer"):
        index.search_by_text(["a rising series"], k=2.5)  # refused before the texts are encoded
    assert len(encoder.calls) == calls
    assert index.search(queries, k=np.int64(3)).indices.shape == (3, 3)
    # k larger than the corpus: min(k, corpus size) columns, no TiB allocation
    huge = index.search(queries, k=10**12, return_rows=False)
    full = index.search(queries, k=len(index), return_rows=False)
    assert huge.indices.shape == huge.scores.shape == (3, len(index))
    np.testing.assert_array_equal(huge.indices, full.indices)
    # a query whose exclusion leaves fewer candidates is padded with -1 / -inf inside those columns
    excluded = index.search(queries, k=10**12, exclude=[["w000"], None, None], return_rows=False)
    assert excluded.indices.shape == (3, len(index))
    assert excluded.indices[0, -1] == -1 and excluded.scores[0, -1] == -np.inf and (excluded.indices[1] >= 0).all()
    assert len(excluded.ids[0]) == len(index) - 1


def test_batch_size_must_be_positive(index):
    queries = index.embeddings("time_series")[:3]
    for bad in (0, -5):
        with pytest.raises(ValueError, match="`batch_size` must be >= 1"):
            index.search(queries, k=2, batch_size=bad)
        with pytest.raises(ValueError, match="`batch_size` must be >= 1"):
            index.search_by_time_series(query_embeddings=queries, k=2, search_batch_size=bad)
    with pytest.raises(TypeError, match="`batch_size` must be a positive integer"):
        index.search(queries, k=2, batch_size=1.5)
    with pytest.raises(ValueError, match="`k` must be >= 1"):
        RetrievalEvaluator(k=0)
    with pytest.raises(TypeError, match="`k` must be a positive integer"):
        RetrievalEvaluator(k="10")


def test_an_empty_corpus_is_refused_and_an_empty_index_explains(dataset, encoder, tmp_path):
    import faiss

    with pytest.raises(ValueError, match="holds no rows"):
        TraceRetrievalIndex.from_embeddings(np.zeros((0, DIM), dtype=np.float32))
    with pytest.raises(ValueError, match="The corpus holds no rows"):
        TraceRetrievalIndex.from_embeddings(corpus=datasets.Dataset.from_dict({"id": [], "ts_embedding": []}))
    with pytest.raises(ValueError, match="The dataset passed to TraceRetrievalIndex.build holds no rows"):
        TraceRetrievalIndex.build(dataset.select([]), encoder, show_progress_bar=False)
    # an empty index assembled by hand: searching and saving it are clear errors, nothing is written
    empty = TraceRetrievalIndex(dataset.select([]), {"time_series": faiss.IndexFlatIP(DIM)})
    with pytest.raises(ValueError, match="index is empty"):
        empty.search(np.ones((1, DIM), dtype=np.float32), k=3)
    with pytest.raises(ValueError, match="holds no rows.*Nothing was written"):
        empty.save(str(tmp_path / "empty"))
    assert not (tmp_path / "empty").exists()


def test_an_index_saved_empty_by_an_older_version_is_a_clear_error(index, tmp_path):
    directory = tmp_path / "idx"
    index.save(str(directory))
    manifest_path = directory / "trace_index.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["num_rows"] = 0
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(RetrievalIndexIntegrityError, match="records an index of 0 rows.*non-empty corpus"):
        TraceRetrievalIndex.load(str(directory))


# --- integrity of saved indexes --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_models():
    """Two tiny TraceModels with the same embedding dimension and different weights."""
    import torch

    from modeling_trace import TraceModel
    from tests.conftest import tiny_config

    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(TraceModel(tiny_config()).eval())
    return models


def test_model_fingerprint_is_deterministic_and_tells_models_apart(two_models):
    import copy

    from modeling_trace.retrieval.index import model_fingerprint

    first, second = two_models
    assert model_fingerprint(first) == model_fingerprint(first) == model_fingerprint(copy.deepcopy(first))
    assert model_fingerprint(first).startswith("sha256:") and model_fingerprint(first) != model_fingerprint(second)
    assert model_fingerprint(None) is None and model_fingerprint(RandomProjectionEncoder()) is None


def test_load_with_another_model_of_the_same_dimension_is_refused(index, two_models, tmp_path):
    first, second = two_models
    directory = str(tmp_path / "idx")
    TraceRetrievalIndex(index.corpus, index.indexes, model=first).save(directory)
    assert TraceRetrievalIndex.load(directory, model=first).model is first
    with pytest.raises(RetrievalIndexIntegrityError) as info:
        TraceRetrievalIndex.load(directory, model=second)
    from modeling_trace.retrieval.index import model_fingerprint

    assert model_fingerprint(first) in str(info.value) and model_fingerprint(second) in str(info.value)
    assert "verify=False" in str(info.value)
    assert TraceRetrievalIndex.load(directory, model=second, verify=False).model is second
    assert TraceRetrievalIndex.load(directory).model is None  # no model: nothing to compare


def test_old_manifest_without_fingerprint_or_corpus_checksums_loads_with_warnings(index, two_models, tmp_path):
    directory = tmp_path / "idx"
    TraceRetrievalIndex(index.corpus, index.indexes, model=two_models[0]).save(str(directory))
    manifest_path = directory / "trace_index.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["model_fingerprint"], manifest["corpus"]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.warns(UserWarning) as record:
        loaded = TraceRetrievalIndex.load(str(directory), model=two_models[1])
    messages = " ".join(str(w.message) for w in record)
    assert "no model fingerprint" in messages and "no checksums of the corpus files" in messages
    assert len(loaded) == len(index)


def test_a_swapped_or_modified_corpus_of_the_same_row_count_is_detected(index, tmp_path):
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    index.save(first)
    other = TraceRetrievalIndex.from_embeddings(
        index.embeddings("time_series")[::-1].copy(), corpus=index.corpus.select(range(len(index) - 1, -1, -1))
    )
    other.save(second)
    shutil.rmtree(os.path.join(first, "corpus"))
    shutil.copytree(os.path.join(second, "corpus"), os.path.join(first, "corpus"))
    with pytest.raises(RetrievalIndexIntegrityError, match=r"corpus data file .*data-00000-of-00001\.arrow.*sha256"):
        TraceRetrievalIndex.load(first)
    TraceRetrievalIndex.load(first, verify=False)  # the checks are skipped on request
    # one byte changed in place (same size, same rows)
    index.save(first)
    arrow = os.path.join(first, "corpus", "data-00000-of-00001.arrow")
    content = bytearray(open(arrow, "rb").read())
    position = content.find(b"a rising series number 0")
    content[position] = ord("A")
    with open(arrow, "wb") as f:
        f.write(bytes(content))
    with pytest.raises(RetrievalIndexIntegrityError, match="corpus was modified or replaced"):
        TraceRetrievalIndex.load(first)


def _rewrite_manifest(directory, change):
    path = os.path.join(directory, "trace_index.json")
    with open(path) as f:
        manifest = json.load(f)
    change(manifest)
    with open(path, "w") as f:
        json.dump(manifest, f)
    return path


def test_manifest_paths_outside_the_index_folder_are_refused(index, tmp_path):
    directory = str(tmp_path / "idx")
    index.save(directory)
    shutil.copy(os.path.join(directory, "ts_index.faiss"), tmp_path / "outside.faiss")  # a readable file outside
    for value in ("../outside.faiss", str(tmp_path / "outside.faiss"), "corpus/../../outside.faiss"):
        index.save(directory)
        _rewrite_manifest(directory, lambda m, v=value: m["indexes"]["time_series"].update(file=v))
        with pytest.raises(RetrievalIndexIntegrityError, match="trace_index.json gives indexes.time_series.file") as info:
            TraceRetrievalIndex.load(directory, verify=False)
        assert "outside" in str(info.value) or "relative to the index folder" in str(info.value)
    index.save(directory)
    os.symlink(tmp_path / "outside.faiss", os.path.join(directory, "link.faiss"))
    _rewrite_manifest(directory, lambda m: m["indexes"]["time_series"].update(file="link.faiss"))
    with pytest.raises(RetrievalIndexIntegrityError, match="outside the index folder"):
        TraceRetrievalIndex.load(directory)
    index.save(directory)
    _rewrite_manifest(directory, lambda m: m["corpus"].update(data_files={"../../outside.faiss": {"sha256": "x", "num_bytes": 1}}))
    with pytest.raises(RetrievalIndexIntegrityError, match="outside the index folder"):
        TraceRetrievalIndex.load(directory)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{", "Cannot read the manifest .*JSONDecodeError"),
        (b"\xff\xfe\x00", "Cannot read the manifest .*UnicodeDecodeError"),
        ("[1, 2]", "holds a JSON list, expected an object"),
        ({"format_version": 1, "indexes": {}}, "num_rows is None"),
        ({"format_version": 1, "num_rows": 3}, "indexes is None"),
        ({"format_version": 1, "num_rows": 3, "indexes": {"audio": {}}}, "entry 'audio'"),
        ({"format_version": 1, "num_rows": 3, "indexes": {"text": []}}, r"indexes.text is \[\]"),
        ({"format_version": 1, "num_rows": 3, "indexes": {"text": {"sha256": "x"}}}, "indexes.text lacks 'file'"),
        (
            {"format_version": 1, "num_rows": 3, "indexes": {"text": {"file": "t", "sha256": "x", "num_bytes": "12", "num_vectors": 3, "dim": 4}}},
            "indexes.text.num_bytes is '12'",
        ),
        ({"format_version": 1, "num_rows": True, "indexes": {}}, "num_rows is True"),
        ({"format_version": 1, "num_rows": 3, "corpus": [], "indexes": {"text": {"file": "t", "sha256": "x", "num_bytes": 1, "num_vectors": 3, "dim": 4}}}, "corpus is"),
    ],
)
def test_broken_manifests_name_the_file_and_the_problem(tmp_path, content, message):
    directory = tmp_path / "idx"
    directory.mkdir()
    path = directory / "trace_index.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(RetrievalIndexIntegrityError, match=message) as info:
        TraceRetrievalIndex.load(str(directory))
    assert str(path) in str(info.value)


# --- raw-series baselines on variable-length and un-normalised series -------------------------------------------


def _variable_length_series(seed=0, lengths=(12, 20, 31, 17, 25), channels=2):
    rng = np.random.default_rng(seed)
    return [np.cumsum(rng.standard_normal((n, channels)), axis=0) * (1 + c) for c, n in enumerate(lengths)]


def test_list_of_equal_length_series_searches_like_the_array():
    rng = np.random.default_rng(2)
    windows = rng.standard_normal((20, 16, 3)).astype(np.float32)
    for cls in (EuclideanScanSearcher, DTWSearcher):
        from_array = cls(windows).search(windows[:4], k=5, return_rows=False)
        from_list = cls(list(windows)).search(list(windows[:4]), k=5, return_rows=False)
        np.testing.assert_array_equal(from_array.indices, from_list.indices)
        # Squared distances agree to float32 rounding. The distances themselves need not near 0: the array path's
        # float32 |q|^2 + |v|^2 - 2 q.v carries ~1e-5 of rounding, whose square root is ~3e-3 for a self-match.
        np.testing.assert_allclose(from_array.scores**2, from_list.scores**2, rtol=1e-4, atol=1e-4)


def test_euclidean_on_variable_length_resamples_to_the_longest_corpus_series():
    series = _variable_length_series()
    queries = _variable_length_series(seed=1, lengths=(9, 40))
    searcher = EuclideanScanSearcher(series, znormalize=False)
    assert searcher.length == 31 and searcher.lengths.tolist() == [12, 20, 31, 17, 25]

    def resampled(x, n=31):
        grid = np.linspace(0, len(x) - 1, n)
        return np.stack([np.interp(grid, np.arange(len(x)), x[:, c]) for c in range(x.shape[1])], axis=1).ravel()

    expected = np.array([[np.linalg.norm(resampled(q) - resampled(s)) for s in series] for q in queries])
    hits = searcher.search(queries, k=5, return_rows=False)
    np.testing.assert_allclose(-hits.scores, np.sort(expected, axis=1), rtol=1e-5)
    np.testing.assert_array_equal(hits.indices, np.argsort(expected, axis=1))
    assert EuclideanScanSearcher(series, length=50).vectors.shape == (5, 100)


def test_dtw_on_variable_length_compares_the_series_at_their_own_lengths():
    from dtaidistance import dtw, dtw_ndim

    series = _variable_length_series()
    queries = _variable_length_series(seed=3, lengths=(8, 33))
    dependent = DTWSearcher(series, znormalize=False).search(queries, k=5, return_rows=False)
    expected = np.array([[dtw_ndim.distance(q, s) for s in series] for q in queries])
    np.testing.assert_allclose(-dependent.scores, np.sort(expected, axis=1), rtol=1e-5)
    independent = DTWSearcher(series, znormalize=False, multivariate="independent").search(queries, k=5, return_rows=False)
    per_channel = np.array([[sum(dtw.distance(q[:, c], s[:, c]) for c in range(2)) for s in series] for q in queries])
    np.testing.assert_allclose(-independent.scores, np.sort(per_channel, axis=1), rtol=1e-5)
    univariate = [s[:, 0] for s in series]  # (length,) arrays are one channel
    hits = DTWSearcher(univariate, znormalize=False).search([q[:, 0] for q in queries], k=1, return_rows=False)
    assert -hits.scores[0, 0] == pytest.approx(min(dtw.distance(queries[0][:, 0], s) for s in univariate), rel=1e-5)
    with pytest.raises(ValueError, match="dependent"):
        DTWSearcher(series, multivariate="both")


def test_znormalisation_is_per_series_and_channel_and_optional():
    series = _variable_length_series()
    shifted = [s * 7.0 + 100.0 for s in series]
    for cls in (EuclideanScanSearcher, DTWSearcher):
        plain = cls(series).search(series[:2], k=5, return_rows=False)
        scaled = cls(shifted).search(shifted[:2], k=5, return_rows=False)  # z-normalisation removes offset and scale
        np.testing.assert_allclose(plain.scores, scaled.scores, rtol=1e-4, atol=1e-6)
        raw = cls(shifted, znormalize=False).search(shifted[:2], k=5, return_rows=False)
        assert raw.scores[0, 1] < 5 * plain.scores[0, 1]  # raw distances keep the scale of the values


def test_nan_padding_never_enters_a_distance():
    series = _variable_length_series()
    padded = [np.concatenate([np.full((3, 2), np.nan), s, np.full((40 - len(s) - 3, 2), np.nan)]) for s in series]
    for cls in (EuclideanScanSearcher, DTWSearcher):
        for znormalize in (True, False):
            clean = cls(series, znormalize=znormalize).search(series, k=5, return_rows=False)
            from_padded = cls(padded, znormalize=znormalize).search(padded, k=5, return_rows=False)
            np.testing.assert_array_equal(clean.indices, from_padded.indices)
            np.testing.assert_allclose(clean.scores, from_padded.scores, rtol=1e-6)
    gappy = [s.copy() for s in series]
    gappy[0][4, 1] = np.nan  # an interior gap is filled by linear interpolation in time
    filled = [s.copy() for s in gappy]
    filled[0][4, 1] = (filled[0][3, 1] + filled[0][5, 1]) / 2
    for cls in (EuclideanScanSearcher, DTWSearcher):
        a = cls(gappy, znormalize=False).search(gappy[:1], k=5, return_rows=False)
        b = cls(filled, znormalize=False).search(filled[:1], k=5, return_rows=False)
        assert np.isfinite(a.scores).all()
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)


def test_raw_arrays_refuse_nan_and_shapes_are_checked():
    windows = np.random.default_rng(4).standard_normal((6, 10, 2))
    hits = EuclideanScanSearcher(windows, znormalize=False).search(windows[:1], k=2, return_rows=False)
    expected = np.sort(np.linalg.norm((windows[:1] - windows).reshape(6, -1), axis=1))[:2]
    np.testing.assert_allclose(-hits.scores[0], expected, rtol=1e-5, atol=1e-5)
    with_nan = windows.copy()
    with_nan[0, 3, 1] = np.nan
    for cls in (EuclideanScanSearcher, DTWSearcher):
        with pytest.raises(ValueError, match="NaN must not enter a distance"):
            cls(with_nan, znormalize=False)
        with pytest.raises(ValueError, match="different shapes"):
            cls(windows).search([windows[0], windows[1][:5]], k=1)
        with pytest.raises(ValueError, match="1 channel"):
            cls(list(windows)).search([windows[0][:, :1]], k=1)
        with pytest.raises(ValueError, match="no observed value"):
            cls([windows[0], np.full((4, 2), np.nan)])
        with pytest.raises(ValueError, match="different channel counts"):
            cls([windows[0], windows[1][:, :1]])


def test_variable_length_baselines_keep_ids_and_exclusion(dataset):
    series = [np.asarray(v, dtype=np.float32)[: 12 + i % 10] for i, v in enumerate(dataset["past_values"])]
    for searcher in (EuclideanScanSearcher(series, corpus=dataset), DTWSearcher(series[:30], corpus=dataset.select(range(30)))):
        hits = searcher.search(series[:3], k=3)
        assert hits.indices[:, 0].tolist() == [0, 1, 2]
        excluded = searcher.search(series[:3], k=3, exclude=[["w000"], ["w001"], ["w002"]])
        assert all(q not in row for q, row in enumerate(excluded.indices))


# ---------------------------------------------------------------- quantised index vectors (precision=)

# Recall@10 of the quantised indexes against the exact float32 search on isotropic random unit vectors (d=384, the
# trace-small / MiniLM width; 5,000 items; queries near corpus items): the hardest case for quantisation, since
# random high-dimensional neighbours are nearly tied. Measured: int8 0.99, binary 0.30 (0.22 ranking by Hamming
# alone). The floors below are what the index module documents.
RECALL_FLOORS = {"int8": 0.95, "binary": 0.2}


@pytest.fixture(scope="module")
def random_unit_vectors():
    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((5000, 384))
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    queries = corpus[rng.choice(5000, 200, replace=False)] + rng.standard_normal((200, 384)) / np.sqrt(384)
    return corpus.astype(np.float32), queries.astype(np.float32)


@pytest.mark.parametrize("precision", ["int8", "binary"])
def test_quantised_index_recall_at_10_vs_float32(random_unit_vectors, precision):
    corpus, queries = random_unit_vectors
    exact = TraceRetrievalIndex.from_embeddings(corpus).search(queries, k=10, return_rows=False)
    quantised = TraceRetrievalIndex.from_embeddings(corpus, precision=precision)
    hits = quantised.search(queries, k=10, return_rows=False)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(hits.indices, exact.indices)])
    print(f"precision={precision}: recall@10 vs float32 = {recall:.3f}")
    assert recall >= RECALL_FLOORS[precision]
    assert quantised.precision == precision and f"precision={precision!r}" in repr(quantised)
    assert np.all(np.diff(hits.scores, axis=1) <= 1e-6) and np.all(np.abs(hits.scores) <= 1.0 + 1e-5)


def test_binary_index_stores_sign_bits_and_round_trips(index, dataset, tmp_path):
    import faiss

    from modeling_trace.retrieval.index import BinaryHammingIndex, quantize_binary

    binary = TraceRetrievalIndex.from_embeddings(corpus=index.corpus, precision="binary", model=index.model)
    stored = binary.indexes["time_series"]
    assert isinstance(stored, BinaryHammingIndex) and isinstance(stored.index, faiss.IndexBinaryFlat)
    assert stored.index.code_size == DIM // 8  # one bit per dimension
    np.testing.assert_array_equal(stored.index.reconstruct_n(0, len(index)), quantize_binary(index.embeddings()))
    # Hamming alone: score = 1 - 2 * hamming / d; a query's own sign code is at distance 0
    stored.rescore_multiplier = 1
    scores, rows = stored.search(index.embeddings("time_series", [3]), 1)
    assert rows[0, 0] == 3 and scores[0, 0] == 1.0
    stored.rescore_multiplier = 4
    series = [np.asarray(v, dtype=np.float32) for v in dataset.select(range(6))["past_values"]]
    before = binary.search_by_time_series(series, k=5, exclude=[[f"w{i:03d}"] for i in range(6)], return_rows=False)
    binary.save(str(tmp_path / "binary"))
    manifest = json.loads((tmp_path / "binary" / "trace_index.json").read_text())
    assert manifest["precision"] == "binary" and manifest["metric"] == "hamming"
    loaded = TraceRetrievalIndex.load(str(tmp_path / "binary"), model=index.model)
    assert loaded.precision == "binary" and isinstance(loaded.indexes["text"], BinaryHammingIndex)
    after = loaded.search_by_time_series(series, k=5, exclude=[[f"w{i:03d}"] for i in range(6)], return_rows=False)
    np.testing.assert_array_equal(after.indices, before.indices)
    assert all(f"w{i:03d}" not in ids for i, ids in enumerate(after.ids))
    with pytest.raises(ValueError, match="no `nprobe`"):
        loaded.set_search_parameters(nprobe=4)


def test_int8_index_round_trips_and_precision_options_are_checked(index, tmp_path):
    import faiss

    int8 = TraceRetrievalIndex.from_embeddings(corpus=index.corpus, precision="int8")
    assert isinstance(int8.indexes["text"], faiss.IndexScalarQuantizer)
    queries = index.embeddings("text", range(10))
    before = int8.search(queries, k=5, return_rows=False)
    # scalar quantisation keeps the scores close to the float32 cosines
    exact = index.search(queries, k=5, return_rows=False)
    np.testing.assert_allclose(before.scores[:, 0], exact.scores[:, 0], atol=0.02)
    int8.save(str(tmp_path / "int8"))
    loaded = TraceRetrievalIndex.load(str(tmp_path / "int8"))
    assert loaded.precision == "int8"
    np.testing.assert_array_equal(loaded.search(queries, k=5, return_rows=False).indices, before.indices)
    with pytest.raises(ValueError, match="precision must be one of"):
        TraceRetrievalIndex.from_embeddings(corpus=index.corpus, precision="float16")
    with pytest.raises(ValueError, match="IVF256,SQ8"):
        TraceRetrievalIndex.from_embeddings(corpus=index.corpus, precision="int8", index_factory="HNSW16")
    with pytest.raises(ValueError, match="multiple of 8"):
        TraceRetrievalIndex.from_embeddings(np.eye(12, dtype=np.float32), precision="binary")
    _rewrite_manifest(str(tmp_path / "int8"), lambda m: m.update(precision="int4"))
    with pytest.raises(RetrievalIndexIntegrityError, match="precision is 'int4'"):
        TraceRetrievalIndex.load(str(tmp_path / "int8"))


def test_retrieval_evaluator_returns_sentence_transformers_metric_names(index):
    results = RetrievalEvaluator(k=5)(index)
    for mode, family in (("text_to_ts", "modality"), ("ts_to_text", "label"), ("ts_to_ts", "label")):
        for metric in ("accuracy@1", "accuracy@3", "accuracy@5", "accuracy@10", "precision@1", "precision@3",
                       "precision@5", "precision@10", "recall@1", "recall@10", "ndcg@10", "mrr@10", "map@100"):
            assert f"{mode}_{family}_{metric}" in results, f"{mode}_{family}_{metric}"
    # the old keys are still there (training/quickstart.py reads these)
    for key in ("label_precision@1", "label_mrr@10", "modality_precision@1", "modality_mrr@10"):
        assert f"text_to_ts_{key}" in results
    # the search goes as deep as map@100 needs (the 60-row corpus), not only k=5 deep: with one pair per text,
    # MAP@100 is the mean reciprocal rank of the pair over the whole ranking, and accuracy@10 its hit rate
    ts, text = index.embeddings("time_series"), index.embeddings("text")
    order, _ = brute_force_ranking(text, ts)
    ranks = np.array([row.tolist().index(q) + 1 for q, row in enumerate(order)])
    assert results["text_to_ts_modality_map@100"] == pytest.approx(np.mean(1.0 / ranks))
    assert results["text_to_ts_modality_accuracy@10"] == pytest.approx(np.mean(ranks <= 10))
    assert results["text_to_ts_modality_recall@10"] == pytest.approx(np.mean(ranks <= 10))
    assert results["text_to_ts_modality_precision@10"] == pytest.approx(np.mean(ranks <= 10) / 10)


# ---------------------------------------------------------------- sentence-transformers naming on TraceModel


@pytest.fixture(scope="module")
def tiny_trace_model(tmp_path_factory):
    import torch

    from modeling_trace import TraceModel
    from tests.conftest import save_tiny_text_model, tiny_config

    text_dir = save_tiny_text_model(tmp_path_factory.mktemp("tiny_text"))
    torch.manual_seed(0)
    model = TraceModel.from_time_series_text_pretrained(tiny_config(), text_model_name_or_path=text_dir).eval()
    with torch.no_grad():
        model.text_projection.layer_norm.bias.normal_()  # not centred on 0: normalisation shows
    return model


def test_encode_query_and_document_pick_the_modality_and_similarity_is_st_cosine(tiny_trace_model):
    import torch
    from sentence_transformers.util import cos_sim

    model = tiny_trace_model
    texts = ["heavy snow and ice", "a hot dry week", "flooding rain"]
    series = [np.random.default_rng(i).standard_normal((48, 3)) for i in range(4)]
    np.testing.assert_allclose(model.encode_query(texts), model.encode_text(texts), rtol=1e-6)
    np.testing.assert_allclose(model.encode_document(series), model.encode_time_series(series), rtol=1e-6)
    np.testing.assert_allclose(model.encode_query(series, modality="time_series"), model.encode_time_series(series), rtol=1e-6)
    np.testing.assert_allclose(model.encode_document(texts, modality="text", batch_size=2), model.encode_text(texts), rtol=1e-6)
    with pytest.raises(ValueError, match="modality must be"):
        model.encode_query(texts, modality="image")

    queries, documents = model.encode_query(texts), model.encode_document(series)
    scores = model.similarity(queries, documents)
    assert isinstance(scores, torch.Tensor) and scores.shape == (3, 4) and model.similarity_fn_name == "cosine"
    torch.testing.assert_close(scores, cos_sim(queries, documents))
    torch.testing.assert_close(model.similarity(queries[0], torch.from_numpy(documents)), cos_sim(queries[0], documents))
    # normalize_embeddings is honoured: raw projections are not unit-norm, their cosines are the same
    raw = model.encode_query(texts, normalize_embeddings=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1.0, rtol=1e-5)
    torch.testing.assert_close(model.similarity(raw, documents), scores, rtol=1e-5, atol=1e-6)
    raw_series = model.encode_document(series, normalize_embeddings=False, convert_to_numpy=False)
    assert isinstance(raw_series, torch.Tensor) and not torch.allclose(raw_series.norm(dim=1), torch.ones(4))
    with pytest.raises(ValueError, match="same dim"):
        model.similarity(queries, documents[:, :5])
