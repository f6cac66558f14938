"""Retrieval-augmented forecasting (`modeling_trace.modeling_rag`): leakage, prompt/head shapes, save/load, gradients."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from modeling_trace import TraceForRetrievalAugmentedForecasting
from modeling_trace.modeling_rag import RetrievalForecastingCollator, window_positions
from modeling_trace.retrieval import TraceRetrievalIndex
from tests.conftest import tiny_config

L, H, R = 24, 6, 3
WORDS = ["rise", "fall", "calm", "storm", "flat", "peak", "dip"]


def word_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")


def make_rows(series_id: str, steps: int, seed: int) -> list[dict]:
    series = np.cumsum(np.random.default_rng(seed).normal(size=steps)).astype(np.float32)
    start = np.datetime64("2021-03-01T00:00")
    rows = []
    for s in range(steps - L - H + 1):
        rows.append(
            dict(
                id=f"{series_id}/{s}",
                source="synthetic",
                series_id=series_id,
                start_timestamp=str(start + np.timedelta64(s, "h")) + "Z",
                freq="1h",
                past_values=series[s : s + L, None].tolist(),
                future_values=series[s + L : s + L + H, None].tolist(),
                text=f"{WORDS[s % 7]} {WORDS[(s // 3) % 7]}",
            )
        )
    return rows


@pytest.fixture(scope="module")
def corpus() -> datasets.Dataset:
    # Two series over the same hours: windows of different series never overlap, whatever their steps.
    return datasets.Dataset.from_list(make_rows("a", 160, 0) + make_rows("b", 160, 1))


def make_model(corpus, mode: str = "ts_text") -> TraceForRetrievalAugmentedForecasting:
    torch.manual_seed(0)
    config = tiny_config(num_input_channels=1, context_length=L, prediction_length=H, num_retrieved=R, rag_prompt_mode=mode)
    model = TraceForRetrievalAugmentedForecasting(config)
    model.trace.tokenizer = word_tokenizer()
    model.build_retrieval_index(corpus)
    return model


def with_positions(dataset: datasets.Dataset) -> datasets.Dataset:
    for name, values in window_positions(dataset).items():
        dataset = dataset.add_column(name, values.tolist())
    return dataset


def test_window_positions_count_steps_of_the_frequency():
    ds = datasets.Dataset.from_dict(
        {
            "source": ["s"] * 4,
            "series_id": ["x", "x", "y", "x"],
            "start_timestamp": ["2020-01-01T00:00:00Z", "2020-03-01T00:00:00Z", "2020-02-01T00:00:00Z", "2021-01-01T00:00:00Z"],
            "freq": ["1MS"] * 4,
            "past_values": [[[0.0]] * 4] * 4,
            "future_values": [[[0.0]] * 2] * 4,
        }
    )
    positions = window_positions(ds)
    assert (positions["window_start"] - positions["window_start"][0]).tolist() == [0, 2, 1, 12]
    assert (positions["window_end"] - positions["window_start"]).tolist() == [6, 6, 6, 6]
    assert positions["series_index"].tolist() == [0, 0, 1, 0]
    hourly = ds.map(lambda r, i: {"start_timestamp": f"2020-01-01T{i:02d}:00:00Z", "freq": "1h"}, with_indices=True)
    starts = window_positions(hourly)["window_start"]
    assert (starts - starts[0]).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("mode", ["ts_text", "ts"])
def test_training_retrieval_never_returns_an_overlapping_window(corpus, mode):
    model = make_model(corpus, mode)
    queries = with_positions(corpus)
    rng = np.random.default_rng(0)
    picks = rng.choice(len(queries), size=120, replace=False).tolist()
    batch = RetrievalForecastingCollator(model.config)([queries[i] for i in picks])
    model.train()
    out = model(**batch)
    hits = out.retrieved_indices.numpy()
    series = np.asarray(queries["series_index"])
    start, end = np.asarray(queries["window_start"]), np.asarray(queries["window_end"])
    for q, row in enumerate(picks):
        for hit in hits[q]:
            overlapping = series[hit] == series[row] and start[hit] < end[row] and start[row] < end[hit]
            assert not overlapping, f"query {row} retrieved overlapping window {hit}"
    # Without the positions the query's own window (cosine 1 with itself) comes first: the exclusion removed it.
    model.eval()
    plain = model(batch["past_values"], batch["past_observed_mask"])
    assert (plain.retrieved_indices[:, 0].numpy() == np.asarray(picks)).mean() > 0.95


def test_prompt_modes_build_the_pairs_from_the_index(corpus):
    for mode, width in (("ts_text", 64), ("ts", 32)):
        model = make_model(corpus, mode).eval()
        assert model.prompt_projection.in_features == width
        batch = RetrievalForecastingCollator(model.config)([corpus[i] for i in (5, 200)])
        out = model(**batch)
        rows = out.retrieved_indices
        pairs = torch.from_numpy(model.retrieval_index.embeddings("time_series"))[rows]
        if mode == "ts_text":
            pairs = torch.cat([pairs, torch.from_numpy(model.retrieval_index.embeddings("text"))[rows]], dim=-1)
        torch.testing.assert_close(out.prompt_embeds, model.prompt_projection(pairs))
        assert out.prompt_embeds.shape == (2, R, model.config.d_model)


def test_no_retrieval_is_the_same_head_on_the_query_states_alone(corpus):
    model = make_model(corpus).eval()
    batch = RetrievalForecastingCollator(model.config, use_retrieval=False)([corpus[i] for i in (1, 2, 3)])
    out = model(**batch)
    states = model.trace.time_series_model(batch["past_values"], batch["past_observed_mask"])
    d = model.config.d_model
    head = model.forecast_head.projection
    expected = torch.nn.functional.linear(states.patch_embeddings.flatten(2), head.weight[:, R * d :], head.bias)
    expected = expected.transpose(1, 2) * states.scale + states.loc
    torch.testing.assert_close(out.prediction_outputs, expected)
    assert out.retrieved_indices is None


def test_gradients_reach_only_the_projection_and_the_head(corpus):
    model = make_model(corpus)
    model.train()
    batch = RetrievalForecastingCollator(model.config)([with_positions(corpus)[i] for i in range(0, 240, 30)])
    model(**batch).loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {"prompt_projection.weight", "prompt_projection.bias", "forecast_head.projection.weight", "forecast_head.projection.bias"}
    assert not any(p.requires_grad for p in model.trace.parameters())
    assert not model.trace.training


def test_save_load_round_trip_gives_identical_forecasts(corpus, tmp_path):
    model = make_model(corpus).eval()
    batch = RetrievalForecastingCollator(model.config)([corpus[i] for i in (0, 77, 250)])
    before = model(**batch)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "retrieval_index").is_dir()
    loaded = TraceForRetrievalAugmentedForecasting.from_pretrained(tmp_path).eval()
    assert loaded.config.retrieval_index_path == "retrieval_index"
    assert len(loaded.retrieval_index) == len(corpus)
    after = loaded(**batch)
    torch.testing.assert_close(after.retrieved_indices, before.retrieved_indices, rtol=0, atol=0)
    torch.testing.assert_close(after.prediction_outputs, before.prediction_outputs, rtol=0, atol=0)


def test_works_with_trainer(corpus, tmp_path):
    from transformers import Trainer, TrainingArguments

    model = make_model(corpus)
    head_before = model.forecast_head.projection.weight.detach().clone()
    trace_before = {n: p.detach().clone() for n, p in model.trace.named_parameters()}
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=16, max_steps=3, learning_rate=1e-2,
        report_to=[], save_strategy="no", logging_steps=1, use_cpu=True, label_names=["future_values"],
    )
    trainer = Trainer(model=model, args=args, train_dataset=with_positions(corpus), data_collator=RetrievalForecastingCollator(model.config))
    result = trainer.train()
    assert np.isfinite(result.training_loss)
    assert not torch.equal(model.forecast_head.projection.weight, head_before)
    assert all(torch.equal(p, trace_before[n]) for n, p in model.trace.named_parameters())


def test_bad_inputs_give_clear_errors(corpus):
    model = make_model(corpus)
    batch = RetrievalForecastingCollator(model.config)([corpus[i] for i in (0, 1)])
    model.train()
    with pytest.raises(ValueError, match="needs window_start and window_end"):
        model(**batch)
    model.eval()
    with pytest.raises(ValueError, match="both window_start and window_end"):
        model(batch["past_values"], window_start=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="integer tensor of shape"):
        model(batch["past_values"], window_start=torch.tensor([0.0, 1.0]), window_end=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="future_values must have shape"):
        model(batch["past_values"], future_values=torch.zeros(2, H + 1, 1))
    fresh = TraceForRetrievalAugmentedForecasting(model.config).eval()
    with pytest.raises(ValueError, match="No retrieval index"):
        fresh(batch["past_values"])
    ts_only = TraceRetrievalIndex.from_embeddings(ts_embeddings=model.retrieval_index.embeddings("time_series"))
    with pytest.raises(ValueError, match="needs text embeddings"):
        fresh.set_retrieval_index(ts_only)
    wrong_dim = TraceRetrievalIndex.from_embeddings(np.eye(8, dtype=np.float32), np.eye(8, dtype=np.float32))
    with pytest.raises(ValueError, match="projection_dim"):
        fresh.set_retrieval_index(wrong_dim)
    no_positions = TraceRetrievalIndex.from_embeddings(
        model.retrieval_index.embeddings("time_series"), model.retrieval_index.embeddings("text")
    )
    with pytest.raises(ValueError, match="position columns"):
        fresh.set_retrieval_index(no_positions)
    with pytest.raises(ValueError, match="prediction_length"):
        TraceForRetrievalAugmentedForecasting(tiny_config(num_input_channels=1, context_length=L))


def test_device_top_k_returns_what_the_faiss_index_returned(corpus):
    """The RAG model ranks on the device, over the corpus embeddings it holds; the rows and scores are the ones the
    exact FAISS index search (the former path) gives, with and without the overlap exclusion."""
    model = make_model(corpus).eval()
    queries = with_positions(corpus)
    picks = np.random.default_rng(1).choice(len(queries), size=40, replace=False).tolist()
    batch = RetrievalForecastingCollator(model.config)([queries[i] for i in picks])
    with torch.no_grad():
        embeds = model.trace.project_time_series(
            model.trace.time_series_model(batch["past_values"], batch["past_observed_mask"]).pooler_output
        )
    corpus_tensors = model._corpus_tensors(embeds.device)
    for positions in (False, True):
        exclude = None
        args = (batch["series_index"], batch["window_start"], batch["window_end"]) if positions else (None, None, None)
        indices, scores, pairs = model._retrieve(embeds, *args)
        if positions:
            exclude = (
                (corpus_tensors["series_index"][None, :] == batch["series_index"][:, None])
                & (corpus_tensors["window_start"][None, :] < batch["window_end"][:, None])
                & (batch["window_start"][:, None] < corpus_tensors["window_end"][None, :])
            ).numpy()
        faiss_hits = model.retrieval_index.search(embeds.numpy(), R, exclude=exclude, return_rows=False)
        assert indices.dtype == torch.long and indices.shape == (len(picks), R)
        np.testing.assert_array_equal(indices.numpy(), faiss_hits.indices)
        np.testing.assert_allclose(scores.numpy(), faiss_hits.scores, atol=1e-5)
        expected = torch.cat([corpus_tensors["ts"][indices], corpus_tensors["text"][indices]], dim=-1)
        torch.testing.assert_close(pairs, expected)


@pytest.mark.parametrize("chunk_rows", [7, 64, 1_000_000])
def test_chunked_top_k_equals_a_full_sort(chunk_rows):
    from modeling_trace.modeling_rag import top_k_inner_product

    generator = torch.Generator().manual_seed(0)
    corpus_embeds = torch.nn.functional.normalize(torch.randn(300, 16, generator=generator), dim=-1)
    queries = torch.nn.functional.normalize(torch.randn(9, 16, generator=generator), dim=-1)
    exclude = torch.rand(9, 300, generator=generator) < 0.3
    scores, indices = top_k_inner_product(queries, corpus_embeds, 5, exclude, chunk_rows=chunk_rows)
    full = (queries @ corpus_embeds.T).masked_fill(exclude, float("-inf"))
    expected = full.argsort(dim=1, descending=True)[:, :5]
    assert torch.equal(indices, expected)
    torch.testing.assert_close(scores, full.gather(1, expected))
    assert not exclude.gather(1, indices).any()
