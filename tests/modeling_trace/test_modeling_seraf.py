"""SERAF (`modeling_trace.modeling_seraf`): leakage exclusion, vectorised Pearson, save/load, gradients, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modeling_trace.modeling_seraf import (
    SerafConfig,
    SerafForForecasting,
    exclusion_mask,
    kernel_top_k,
    pearson_keys,
)

L, H, C, K = 24, 6, 2, 4
TEXT_DIM = 16


def random_walk(steps: int, channels: int = C, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.normal(size=(steps, channels)), axis=0).astype(np.float32)


def random_unit_rows(rows: int, dim: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_model(steps: int = 400, **overrides) -> tuple[SerafForForecasting, np.ndarray]:
    kwargs = dict(
        num_input_channels=C, context_length=L, prediction_length=H, top_k=K, text_embedding_dim=TEXT_DIM
    )
    kwargs.update(overrides)
    model = SerafForForecasting(SerafConfig(**kwargs))
    series = random_walk(steps)
    size = steps - L - H + 1
    # Random description embeddings stand in for the text model: these tests are about retrieval mechanics.
    model.set_database(series, "2020-01-01T00:00:00", "1h", description_embeddings=random_unit_rows(size, TEXT_DIM))
    return model, series


def windows_at(series: np.ndarray, indices) -> tuple[torch.Tensor, torch.Tensor]:
    past = np.stack([series[i : i + L] for i in indices])
    future = np.stack([series[i + L : i + L + H] for i in indices])
    return torch.from_numpy(past), torch.from_numpy(future)


def test_vectorised_pearson_equals_numpy_corrcoef():
    rng = np.random.default_rng(3)
    queries = rng.normal(size=(5, 40, 1)) * rng.uniform(0.1, 10, size=(5, 1, 1)) + rng.normal(size=(5, 1, 1)) * 50
    database = rng.normal(size=(30, 40, 1)).cumsum(axis=1)
    scores = (
        pearson_keys(torch.from_numpy(queries), eps=0.0) @ pearson_keys(torch.from_numpy(database), eps=0.0).T
    ).numpy()
    reference = np.array([[np.corrcoef(q[:, 0], d[:, 0])[0, 1] for d in database] for q in queries])
    np.testing.assert_allclose(scores, reference, atol=1e-10)


def test_multichannel_pearson_is_mean_of_channel_correlations():
    rng = np.random.default_rng(4)
    queries = rng.normal(size=(3, 32, 3)).cumsum(axis=1)
    database = rng.normal(size=(7, 32, 3)).cumsum(axis=1)
    scores = (
        pearson_keys(torch.from_numpy(queries), eps=0.0) @ pearson_keys(torch.from_numpy(database), eps=0.0).T
    ).numpy()
    reference = np.array(
        [[np.mean([np.corrcoef(q[:, c], d[:, c])[0, 1] for c in range(3)]) for d in database] for q in queries]
    )
    np.testing.assert_allclose(scores, reference, atol=1e-10)


def test_kernel_weights_follow_the_gaussian_formula():
    scores = torch.tensor([[0.9, 0.5, 0.99, -0.2]])
    indices, top, weights = kernel_top_k(scores, 3, temperature=0.1)
    assert indices.tolist() == [[2, 0, 1]]
    logits = np.array([-(1 - 0.99) ** 2, -(1 - 0.9) ** 2, -(1 - 0.5) ** 2]) / (2 * 0.1**2)
    expected = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(weights.numpy()[0], expected, rtol=1e-6)


@pytest.mark.parametrize("use_text", [True, False])
def test_training_retrieval_never_overlaps_the_query(use_text):
    model, series = make_model(use_text=use_text)
    model.train()
    size = model.config.database_size
    rng = np.random.default_rng(0)
    query_indices = rng.integers(0, size, size=200)
    past, future = windows_at(series, query_indices)
    index = torch.from_numpy(query_indices)
    descriptions = model.description_embeddings[index] if use_text else None
    out = model(past, future, descriptions, window_index=index)
    found = [out.time_series_indices] + ([out.text_indices] if use_text else [])
    for retrieved in found:
        # Window j covers steps [j, j+L+H); it overlaps query i's window exactly when |i-j| <= L+H-1.
        gap = (retrieved - index[:, None]).abs()
        assert bool((gap >= L + H).all()), f"retrieved a window overlapping its query (min gap {int(gap.min())})"
    # The query's own window is the best Pearson match of itself, so the exclusion had something to remove.
    model.eval()
    unrestricted = model(past, description_embeds=descriptions)
    assert bool((unrestricted.time_series_indices[:, 0] == index).all())


def test_exclusion_mask_marks_exactly_the_overlapping_windows():
    mask = exclusion_mask(torch.tensor([0, 10, -1]), database_size=30, radius=5)
    assert mask[0].nonzero().flatten().tolist() == [0, 1, 2, 3, 4, 5]
    assert mask[1].nonzero().flatten().tolist() == list(range(5, 16))
    assert not bool(mask[2].any())


def test_save_load_round_trip_gives_identical_forecasts(tmp_path):
    model, series = make_model()
    with torch.no_grad():
        model.fusion_logit.fill_(0.7)
        model.output_projection.weight.mul_(1.3)
    model.eval()
    past, _ = windows_at(series, [3, 150, 300])
    descriptions = model.description_embeddings[[3, 150, 300]]
    before = model(past, description_embeds=descriptions).prediction_outputs
    model.save_pretrained(tmp_path)
    loaded = SerafForForecasting.from_pretrained(tmp_path).eval()
    assert loaded.config.database_length == len(series)
    assert loaded.config.database_start_timestamp == "2020-01-01T00:00:00" and loaded.config.freq == "1h"
    torch.testing.assert_close(loaded.database_values, torch.from_numpy(series), rtol=0, atol=0)
    torch.testing.assert_close(loaded.description_embeddings, model.description_embeddings, rtol=0, atol=0)
    after = loaded(past, description_embeds=descriptions).prediction_outputs
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_gradients_reach_only_the_trainable_parts():
    model, series = make_model()
    model.train()
    past, future = windows_at(series, [0, 50, 100, 200])
    index = torch.tensor([0, 50, 100, 200])
    model(past, future, model.description_embeddings[index], window_index=index).loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == {
        "linear_encoder.weight", "linear_encoder.bias", "gate.weight", "gate.bias",
        "output_projection.weight", "output_projection.bias", "fusion_logit",
    }
    assert not model.database_values.requires_grad and not model.description_embeddings.requires_grad


def test_ablation_switches_change_the_parameters():
    no_learned = SerafForForecasting(SerafConfig(num_input_channels=C, context_length=L, prediction_length=H, learn_fusion_weight=False))
    assert no_learned.fusion_logit is None
    no_gate = SerafForForecasting(SerafConfig(num_input_channels=C, context_length=L, prediction_length=H, use_gate=False))
    assert no_gate.gate is None
    linear = SerafForForecasting(SerafConfig(num_input_channels=C, context_length=L, prediction_length=H, use_retrieval=False))
    assert {n for n, _ in linear.named_parameters()} == {
        "linear_encoder.weight", "linear_encoder.bias", "output_projection.weight", "output_projection.bias"
    }


def test_fixed_weight_ablation_averages_the_branches():
    model, series = make_model(learn_fusion_weight=False, use_gate=False)
    model.eval()
    past, _ = windows_at(series, [100])
    out = model(past, description_embeds=model.description_embeddings[[100]])
    assert float(out.fusion_weight) == 0.5


def test_bad_inputs_give_clear_errors():
    model, series = make_model()
    past, future = windows_at(series, [0, 1])
    descriptions = model.description_embeddings[[0, 1]]
    model.eval()
    with pytest.raises(ValueError, match="past_values must have shape"):
        model(past[:, :-1], description_embeds=descriptions)
    with pytest.raises(ValueError, match="pass description_embeds"):
        model(past)
    with pytest.raises(ValueError, match="future_values must have shape"):
        model(past, future[:, :-1], descriptions)
    with pytest.raises(ValueError, match="NaN or inf"):
        model(past.masked_fill(torch.zeros_like(past, dtype=torch.bool).index_fill_(1, torch.tensor([3]), True), float("nan")), description_embeds=descriptions)
    model.train()
    with pytest.raises(ValueError, match="needs window_index"):
        model(past, future, descriptions)
    with pytest.raises(ValueError, match="must be < database_size"):
        model(past, future, descriptions, window_index=torch.tensor([0, 10_000]))
    empty = SerafForForecasting(SerafConfig(num_input_channels=C, context_length=L, prediction_length=H, use_text=False)).eval()
    with pytest.raises(ValueError, match="no retrieval database"):
        empty(past)
    with pytest.raises(ValueError, match="fewer than top_k"):
        SerafForForecasting(SerafConfig(num_input_channels=C, context_length=L, prediction_length=H, top_k=K)).set_database(
            random_walk(L + H + 1), description_embeddings=random_unit_rows(2, 384)
        )
    with pytest.raises(ValueError, match=r"must be \(time, 2\)"):
        empty.set_database(random_walk(100, channels=3))
    with pytest.raises(ValueError, match="NaN or inf"):
        bad = random_walk(100)
        bad[5, 0] = np.nan
        empty.set_database(bad)


def reference_forecast(model: SerafForForecasting, series: np.ndarray, past: np.ndarray, descriptions: np.ndarray):
    """SERAF's forward pass written out in float64 numpy from the paper's equations and the model's weights.

    Database window j has history series[j:j+L] and future series[j+L:j+L+H]; its future is z-scored with its own
    history's statistics, and the fused forecast is mapped back with the query's.
    """
    c = model.config
    eps, tau, k = c.normalization_eps, c.kernel_temperature, c.top_k
    size = len(series) - L - H + 1
    histories = np.stack([series[j : j + L] for j in range(size)]).astype(np.float64)
    futures = np.stack([series[j + L : j + L + H] for j in range(size)]).astype(np.float64)
    h_loc, h_scale = histories.mean(1, keepdims=True), np.sqrt(histories.var(1, keepdims=True) + eps)
    futures = (futures - h_loc) / h_scale

    def weighted_future(scores):
        top = np.argsort(-scores, kind="stable")[:k]
        logits = -((1.0 - scores[top]) ** 2) / (2 * tau**2)
        alpha = np.exp(logits - logits.max())
        alpha /= alpha.sum()
        return top, np.einsum("k,khc->hc", alpha, futures[top])

    def linear(layer, x):  # x: (length_in, channels), the layer maps along time for each channel
        w, b = layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy()
        return w @ x + b[:, None]

    stored_text = model.description_embeddings.double().numpy()
    w = 1.0 / (1.0 + np.exp(-model.fusion_logit.item()))
    predictions, ts_tops, text_tops, alone = [], [], [], []
    for query, description in zip(past.astype(np.float64), descriptions.astype(np.float64)):
        rho = np.array(
            [np.mean([np.corrcoef(query[:, ch], hist[:, ch])[0, 1] for ch in range(C)]) for hist in histories]
        )
        ts_top, f_t = weighted_future(rho)
        cosine = stored_text @ (description / np.linalg.norm(description))
        text_top, f_s = weighted_future(cosine)
        fused = w * f_s + (1 - w) * f_t
        loc, scale = query.mean(0), np.sqrt(query.var(0) + eps)
        x_hat = linear(model.linear_encoder, (query - loc) / scale)
        beta = 1.0 / (1.0 + np.exp(-linear(model.gate, np.concatenate([x_hat, fused], axis=0))))
        g = beta * x_hat + (1 - beta) * fused
        predictions.append(linear(model.output_projection, g) * scale + loc)
        ts_tops.append(ts_top)
        text_tops.append(text_top)
        alone.append((f_t * scale + loc, f_s * scale + loc))
    return np.stack(predictions), np.stack(ts_tops), np.stack(text_tops), [np.stack(a) for a in zip(*alone)]


def test_forecast_equals_the_paper_equations_written_out_in_numpy():
    model, series = make_model(steps=200)
    torch.manual_seed(5)
    with torch.no_grad():  # move every trained part away from its initial value so each one matters
        model.fusion_logit.fill_(-0.8)
        for layer in (model.linear_encoder, model.gate, model.output_projection):
            layer.weight.normal_(0.0, 0.3)
            layer.bias.normal_(0.0, 0.3)
    model.eval()
    # Two database windows and one query from outside the database (a different random walk).
    outside = random_walk(L, seed=9)
    past = np.stack([series[10 : 10 + L], series[120 : 120 + L], outside])
    descriptions = np.concatenate(
        [model.description_embeddings[[10, 120]].numpy(), random_unit_rows(1, TEXT_DIM, seed=7)]
    )
    out = model(torch.from_numpy(past), description_embeds=torch.from_numpy(descriptions))
    expected, ts_top, text_top, (ts_alone, text_alone) = reference_forecast(model, series, past, descriptions)
    assert out.time_series_indices.tolist() == ts_top.tolist()
    assert out.text_indices.tolist() == text_top.tolist()
    np.testing.assert_allclose(out.prediction_outputs.detach().double().numpy(), expected, rtol=1e-4, atol=1e-4)
    # what each retrieval alone forecasts: F̂_T and F̂_S mapped back with the query's statistics
    np.testing.assert_allclose(out.time_series_forecast.double().numpy(), ts_alone, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out.text_forecast.double().numpy(), text_alone, rtol=1e-4, atol=1e-4)
    assert out.fusion_weight.item() == pytest.approx(1.0 / (1.0 + np.exp(0.8)), rel=1e-6)


def test_retrieval_alone_of_a_database_window_is_its_own_future():
    """A query equal to a database window (not excluded: an outside query) correlates 1 with it; with top_k = 1 the
    time-series retrieval alone forecasts exactly that window's future, whatever the trained weights are."""
    model, series = make_model(steps=200, top_k=1)
    model.eval()
    past, future = windows_at(series, [17, 90])
    out = model(past, description_embeds=model.description_embeddings[[17, 90]])
    assert out.time_series_indices[:, 0].tolist() == [17, 90]
    np.testing.assert_allclose(out.time_series_forecast.numpy(), future.numpy(), rtol=1e-4, atol=1e-4)
    assert out.text_indices[:, 0].tolist() == [17, 90]  # its own description too: the same future
    np.testing.assert_allclose(out.text_forecast.numpy(), future.numpy(), rtol=1e-4, atol=1e-4)
    assert SerafForForecasting(SerafConfig(num_input_channels=C, context_length=L, prediction_length=H, top_k=K,
                                           use_retrieval=False))(past).time_series_forecast is None  # fmt: skip
