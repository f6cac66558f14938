"""The dual-level hard-negative contrastive loss, against a slow reference written out in plain Python loops."""

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_config
from modeling_trace import TraceModel, hard_negative_info_nce, trace_contrastive_loss


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
    assert model.text_projection.weight.grad is not None and model.text_projection.weight.grad.abs().sum() > 0
    assert model.text_layer_norm.weight.grad is not None and model.text_layer_norm.weight.grad.abs().sum() > 0
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
