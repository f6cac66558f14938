"""Properties of the TRACE encoder: channel-biased attention, missing values, padding, input errors."""

import numpy as np
import pytest
import torch

from conftest import tiny_config
from modeling_trace import TraceForPretraining, TraceTimeSeriesModel


def make_model(**overrides):
    torch.manual_seed(0)
    model = TraceTimeSeriesModel(tiny_config(**overrides))
    return model.eval()


def encode(model, values, mask=None):
    with torch.no_grad():
        return model(values, mask)


@pytest.mark.parametrize("seed", range(3))
def test_channel_biased_attention_isolates_each_cit_in_one_layer(seed):
    model = make_model(num_hidden_layers=1)
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


@pytest.mark.parametrize("use_nan", [False, True])
def test_values_at_missing_points_never_change_the_output(use_nan):
    model = make_model()
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
    for name in ("last_hidden_state", "loc", "scale"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert torch.isfinite(a.last_hidden_state).all()
    assert not a.patch_observed_mask[0, 2].any()


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
