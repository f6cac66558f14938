"""Tests of modeling_trace/metrics: the numpy cores against hand-computed values, and the local
`evaluate` modules loaded offline returning the same numbers."""

import math
import os

import numpy as np
import pytest

from modeling_trace.metrics import (
    METRIC_NAMES,
    classification_metrics,
    forecasting_metrics,
    load_metric,
    metric_path,
    ranking_metrics,
    retrieval_metrics,
)

LOG2_3 = math.log2(3)
LOG2_4 = 2.0

# Corpus of 4 items: ids and labels.
CORPUS_IDS = ["c0", "c1", "c2", "c3"]
CORPUS_LABELS = ["rain", "rain", "hail", "snow"]
# Three queries: each retrieved the top 3 corpus items, best first.
RETRIEVED = [["c1", "c2", "c0"], ["c3", "c0", "c2"], ["c2", "c3", "c1"]]
RETRIEVED_LABELS = [[CORPUS_LABELS[CORPUS_IDS.index(i)] for i in row] for row in RETRIEVED]
QUERY_LABELS = ["rain", "hail", "snow"]
PAIRED = ["c0", "c2", None]  # the third query has no pair in the corpus


def test_label_matching_by_hand():
    out = retrieval_metrics(
        RETRIEVED, retrieved_labels=RETRIEVED_LABELS, query_labels=QUERY_LABELS, corpus_labels=CORPUS_LABELS
    )
    # Relevance by label: q0 (rain): [1, 0, 1]; q1 (hail): [0, 0, 1]; q2 (snow): [0, 1, 0].
    assert out["label_num_queries"] == 3
    assert out["label_precision@1"] == pytest.approx((1 + 0 + 0) / 3)
    # P@5 divides by 5 even though only 3 items were retrieved.
    assert out["label_precision@5"] == pytest.approx((2 / 5 + 1 / 5 + 1 / 5) / 3)
    assert out["label_mrr@10"] == pytest.approx((1 + 1 / 3 + 1 / 2) / 3)
    # NDCG: R = 2 for rain, 1 for hail, 1 for snow.
    ndcg_q0 = (1 + 1 / LOG2_4) / (1 + 1 / LOG2_3)
    ndcg_q1 = (1 / LOG2_4) / 1
    ndcg_q2 = (1 / LOG2_3) / 1
    assert out["label_ndcg@10"] == pytest.approx((ndcg_q0 + ndcg_q1 + ndcg_q2) / 3)
    assert not any(key.startswith("modality_") for key in out)


def test_modality_matching_by_hand_skips_queries_without_pair():
    out = retrieval_metrics(RETRIEVED, paired_ids=PAIRED)
    # q0's pair c0 at rank 3, q1's pair c2 at rank 3, q2 has no pair (left out).
    assert out["modality_num_queries"] == 2
    assert out["modality_precision@1"] == 0.0
    assert out["modality_precision@5"] == pytest.approx(1 / 5)
    assert out["modality_mrr@10"] == pytest.approx(1 / 3)
    assert out["modality_ndcg@10"] == pytest.approx(1 / LOG2_4)
    # MRR cutoff: with mrr_at=2 the pairs at rank 3 no longer count.
    assert retrieval_metrics(RETRIEVED, paired_ids=PAIRED, mrr_at=2)["modality_mrr@2"] == 0.0


def test_ranking_metrics_from_relevance_matrix_and_num_relevant():
    relevance = np.array([[0, 1, 0, 1], [0, 0, 0, 0]])
    out = ranking_metrics(relevance, num_relevant=[3, 2], precision_at=(1, 2, 4), ndcg_at=3)
    assert out["precision@1"] == 0.0
    assert out["precision@2"] == pytest.approx((1 / 2 + 0) / 2)
    assert out["precision@4"] == pytest.approx((2 / 4 + 0) / 2)
    assert out["mrr@10"] == pytest.approx((1 / 2 + 0) / 2)
    idcg3 = 1 + 1 / LOG2_3 + 1 / LOG2_4
    assert out["ndcg@3"] == pytest.approx((1 / LOG2_3 / idcg3 + 0) / 2)
    # A query with no relevant item in the corpus is left out; without counts NDCG is not reported.
    assert ranking_metrics(relevance, num_relevant=[3, 0])["num_queries"] == 1
    assert "ndcg@10" not in ranking_metrics(relevance)
    with pytest.raises(ValueError, match="binary"):
        ranking_metrics([[0.5, 1]])


def test_ndcg_matches_sentence_transformers_formula():
    # A hard dependency of the test environment (see test_alignment): a failed import must fail, not skip.
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    dcg = InformationRetrievalEvaluator.compute_dcg_at_k
    rng = np.random.default_rng(0)
    relevance = rng.integers(0, 2, size=(20, 12))
    num_relevant = relevance.sum(axis=1) + rng.integers(0, 4, size=20)
    expected = [
        dcg(list(row[:10]), 10) / dcg([1] * n, 10) for row, n in zip(relevance, num_relevant) if n > 0
    ]
    out = ranking_metrics(relevance, num_relevant=num_relevant)
    assert out["ndcg@10"] == pytest.approx(np.mean(expected))


def test_every_metric_matches_sentence_transformers_information_retrieval_evaluator():
    """accuracy@k, precision@k, recall@k, ndcg@10, mrr@10 and map@100 equal what sentence-transformers'
    `InformationRetrievalEvaluator.compute_metrics` gives for the same rankings, under the same key names."""
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    rng = np.random.default_rng(1)
    corpus = [f"d{i}" for i in range(150)]
    relevant_docs, rankings = {}, {}
    for q in range(25):
        relevant = set(rng.choice(corpus, size=int(rng.integers(1, 12)), replace=False))
        # a ranking of 120 documents, relevant ones pushed towards the top
        weights = np.array([4.0 if doc in relevant else 1.0 for doc in corpus])
        rankings[f"q{q}"] = list(rng.choice(corpus, size=120, replace=False, p=weights / weights.sum()))
        relevant_docs[f"q{q}"] = relevant
    evaluator = InformationRetrievalEvaluator(
        queries={q: q for q in rankings}, corpus={d: d for d in corpus}, relevant_docs=relevant_docs, show_progress_bar=False
    )
    result_lists = [
        [{"corpus_id": doc, "score": float(len(ranking) - rank)} for rank, doc in enumerate(ranking)]
        for ranking in rankings.values()
    ]
    expected = evaluator.compute_metrics(result_lists)
    relevance = [[doc in relevant_docs[q] for doc in ranking] for q, ranking in rankings.items()]
    ours = ranking_metrics(
        relevance, [len(relevant_docs[q]) for q in rankings], precision_at=(1, 3, 5, 10), accuracy_at=(1, 3, 5, 10)
    )
    compared = 0
    for family, values in expected.items():
        name = family.split("@")[0]
        for k, value in values.items():
            assert ours[f"{name}@{k}"] == pytest.approx(value), f"{name}@{k}"
            compared += 1
    assert compared == 4 * 3 + 3 and {"map@100", "ndcg@10", "mrr@10", "recall@10", "accuracy@3"} <= set(ours)


def test_st_style_keys_by_hand_and_their_prefixes():
    out = retrieval_metrics(
        RETRIEVED, paired_ids=PAIRED, retrieved_labels=RETRIEVED_LABELS, query_labels=QUERY_LABELS,
        corpus_labels=CORPUS_LABELS, map_at=3,
    )  # fmt: skip
    # label relevance q0 (rain, R=2): [1, 0, 1]; q1 (hail, R=1): [0, 0, 1]; q2 (snow, R=1): [0, 1, 0]
    assert out["label_accuracy@1"] == pytest.approx(1 / 3) and out["label_accuracy@3"] == 1.0
    assert out["label_recall@1"] == pytest.approx((1 / 2 + 0 + 0) / 3)
    assert out["label_recall@5"] == pytest.approx((2 / 2 + 1 + 1) / 3)
    assert out["label_map@3"] == pytest.approx(((1 + 2 / 3) / 2 + (1 / 3) / 1 + (1 / 2) / 1) / 3)
    # modality: q0's pair c0 at rank 3, q1's pair c2 at rank 3; q2 has none (left out)
    assert out["modality_accuracy@1"] == 0.0 and out["modality_accuracy@3"] == 1.0
    assert out["modality_recall@5"] == 1.0 and out["modality_map@3"] == pytest.approx(1 / 3)
    # without the corpus counts R, recall and MAP (as NDCG) are not reported; accuracy is
    unlabelled = retrieval_metrics(RETRIEVED, retrieved_labels=RETRIEVED_LABELS, query_labels=QUERY_LABELS)
    assert "label_accuracy@1" in unlabelled and not {"label_recall@1", "label_map@100", "label_ndcg@10"} & set(unlabelled)
    with pytest.raises(ValueError, match="map_at"):
        ranking_metrics([[1, 0]], [1], map_at=0)


def test_retrieval_metrics_input_errors():
    with pytest.raises(ValueError, match="Nothing to evaluate"):
        retrieval_metrics(RETRIEVED)
    with pytest.raises(ValueError, match="one per query"):
        retrieval_metrics(RETRIEVED, paired_ids=["c0"])
    with pytest.raises(ValueError, match="both"):
        retrieval_metrics(RETRIEVED, paired_ids=PAIRED, query_labels=QUERY_LABELS)


def test_forecasting_by_hand_ignores_nan_targets():
    predictions = np.array([[[1.0, 0.0], [2.0, 5.0]], [[0.0, 0.0], [3.0, 1.0]]])  # (batch, horizon, channels)
    references = np.array([[[0.0, 0.0], [np.nan, 3.0]], [[1.0, np.nan], [3.0, 0.0]]])
    out = forecasting_metrics(predictions, references)
    # observed errors: 1, 0, 2, -1, 0, 1
    assert out["num_points"] == 6
    assert out["mse"] == pytest.approx((1 + 0 + 4 + 1 + 0 + 1) / 6)
    assert out["mae"] == pytest.approx((1 + 0 + 2 + 1 + 0 + 1) / 6)
    with pytest.raises(ValueError, match="same number of points"):
        forecasting_metrics(np.zeros(3), np.zeros(4))


def test_classification_by_hand():
    out = classification_metrics([0, 0, 1, 2, 2], [0, 1, 1, 2, 0])
    assert out["accuracy"] == pytest.approx(3 / 5)
    # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp1 fp0 fn1 -> 2/3; class 2: tp1 fp1 fn0 -> 2/3
    assert out["macro_f1"] == pytest.approx((1 / 2 + 2 / 3 + 2 / 3) / 3)
    # logits are reduced by argmax
    logits = np.eye(3)[[0, 0, 1, 2, 2]]
    assert classification_metrics(logits, [0, 1, 1, 2, 0]) == out


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    return tmp_path


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_evaluate_modules_load_by_path_offline(offline, name):
    import evaluate

    assert os.path.isfile(os.path.join(metric_path(name), f"{name}.py"))
    metric = evaluate.load(metric_path(name), cache_dir=str(offline))
    assert isinstance(metric, evaluate.Metric)
    assert metric.description.strip() and metric.citation.strip()


def test_evaluate_retrieval_module_matches_core(offline):
    metric = load_metric("trace_retrieval", cache_dir=str(offline))
    out = metric.compute(
        predictions=RETRIEVED,
        references=PAIRED,
        predicted_labels=RETRIEVED_LABELS,
        reference_labels=QUERY_LABELS,
        corpus_labels=CORPUS_LABELS,
    )
    expected = retrieval_metrics(
        RETRIEVED,
        paired_ids=PAIRED,
        retrieved_labels=RETRIEVED_LABELS,
        query_labels=QUERY_LABELS,
        corpus_labels=CORPUS_LABELS,
    )
    assert out == pytest.approx(expected)
    # integer ids with string labels select another feature option
    int_out = metric.compute(
        predictions=[[1, 0]], references=[0], predicted_labels=[["a", "b"]], reference_labels=["b"]
    )
    assert int_out["modality_mrr@10"] == pytest.approx(0.5)
    assert int_out["label_precision@1"] == 0.0


def test_evaluate_forecasting_and_classification_modules_match_core(offline):
    forecasting = load_metric("trace_forecasting", cache_dir=str(offline))
    out = forecasting.compute(predictions=[[1.0, 2.0], [0.0, 4.0]], references=[[0.0, float("nan")], [0.0, 1.0]])
    assert out == pytest.approx({"mse": (1 + 0 + 9) / 3, "mae": (1 + 0 + 3) / 3, "num_points": 3})
    classification = load_metric("trace_classification", cache_dir=str(offline))
    out = classification.compute(predictions=["a", "b", "b"], references=["a", "b", "a"])
    assert out == pytest.approx(classification_metrics(["a", "b", "b"], ["a", "b", "a"]))
    assert out["accuracy"] == pytest.approx(2 / 3)
