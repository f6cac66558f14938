"""Attention kernels of the TRACE encoder (`attn_implementation` = eager / sdpa / flex_attention, dispatched through
transformers' `ALL_ATTENTION_FUNCTIONS`): channel-biased attention holds in every one of them, they agree, the fused
inference paths equal the plain ones (and PEFT-wrapped projections still work), autocast (bf16 / fp16) stays close to
float32, and `torch.compile` gives the eager outputs.
"""

import functools

import pytest
import torch
from torch import nn
from transformers import AttentionInterface

from modeling_trace import TraceTimeSeriesModel
from modeling_trace.modeling_trace import TraceRotaryEmbedding, TraceTokenLayout, apply_rotary_pos_emb
from tests.conftest import tiny_config

IMPLEMENTATIONS = ["eager", "sdpa", "flex_attention"]


@functools.cache
def flex_unusable_reason() -> str | None:
    """None when a TRACE encoder runs with flex_attention here (compiled by transformers); else the reason."""
    try:
        model = TraceTimeSeriesModel(tiny_config(num_hidden_layers=1, attn_implementation="flex_attention")).eval()
        with torch.no_grad():
            model(torch.randn(2, 48, 3))
    except Exception as err:  # noqa: BLE001 - any failure to build / compile / run flex is the skip reason
        return f"flex_attention cannot run on {torch.device('cpu')} with torch {torch.__version__}: {type(err).__name__}: {err}"
    return None


def make_model(implementation: str, **overrides) -> TraceTimeSeriesModel:
    if implementation == "flex_attention" and flex_unusable_reason():
        pytest.skip(flex_unusable_reason())
    torch.manual_seed(0)
    model = TraceTimeSeriesModel(tiny_config(attn_implementation=implementation, **overrides)).eval()
    assert model.config._attn_implementation == implementation
    return model


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-zero biases and LayerNorm affines everywhere (the default init zeroes biases, which hides bias bugs)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter + 0.2 * torch.randn(parameter.shape, generator=generator))
    return model


def with_missing(values: torch.Tensor) -> torch.Tensor:
    """Fully missing leading patches in two channels, so padding keys exist and the mask depends on the sample."""
    values = values.clone()
    values[0, :14, 1] = float("nan")
    values[1, :30, 2] = float("nan")
    return values


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_channel_biased_attention_isolates_each_cit_in_one_layer(implementation, seed):
    model = randomize(make_model(implementation, num_hidden_layers=1), seed)
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(4, 48, 3, generator=generator)
    with torch.no_grad():
        base = model(values)
        for j in range(3):
            perturbed = values.clone()
            perturbed[..., j] += 3.0 * torch.randn(4, 48, generator=generator)
            out = model(perturbed)
            for c in range(3):
                delta = (out.channel_embeddings[:, c] - base.channel_embeddings[:, c]).abs().max().item()
                if c == j:
                    assert delta > 1e-3
                else:
                    assert delta < 1e-6, f"{implementation}: CIT_{c} moved by {delta} when channel {j} changed"
            assert (out.cls_embedding - base.cls_embedding).abs().max() > 1e-3


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("attention_type", ["channel_biased", "causal"])
def test_kernel_weights_of_masked_keys_are_exactly_zero(implementation, attention_type):
    """Each kernel's own attention weights, read out with one-hot values (`softmax(...) @ I` is the weights): CIT
    rows put exactly 0 outside their channel, no row puts weight on a padding key, rows sum to 1, and the weights
    equal eager's."""
    model = make_model(implementation, num_hidden_layers=1, attention_type=attention_type)
    attention = model.encoder.layers[0].self_attn
    config = model.config
    layout = TraceTokenLayout(config.num_input_channels, config.num_patches, True)
    rule = layout.attention_rule(attention_type)
    length = rule.shape[0]
    generator = torch.Generator().manual_seed(0)
    token_valid = torch.ones(2, length, dtype=torch.bool)
    token_valid[0, 2:5] = False  # the first patches of channel 1 of sample 0 carry no observed point
    heads, head_dim = 2, 32
    query = torch.randn(2, heads, length, head_dim, generator=generator)
    key = torch.randn(2, heads, length, head_dim, generator=generator)
    value = torch.eye(length, head_dim).expand(2, heads, length, head_dim)  # one-hot keys -> outputs = weights

    def weights(name):
        mask = layout.attention_mask(rule, token_valid, attention_type, name, torch.float32)
        interface = attention._attention_interface(mask, output_attentions=name == "eager")
        context, _ = interface(attention, query, key, value, mask, dropout=0.0, scaling=head_dim**-0.5)
        return context[..., :length].transpose(1, 2)  # (batch, heads, L, L)

    probs, reference = weights(implementation), weights("eager")
    allowed = rule[None, None] & token_valid[:, None, None, :]
    assert probs.masked_select(~allowed.expand_as(probs)).abs().max() == 0.0
    cit_rows = layout.is_cit.nonzero().flatten()
    for row in cit_rows:
        outside = layout.channel != layout.channel[row]
        assert probs[:, :, row, outside].abs().max() == 0.0
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, heads, length))
    torch.testing.assert_close(probs, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("implementation", ["sdpa", "flex_attention"])
@pytest.mark.parametrize("attention_type", ["channel_biased", "full", "causal"])
def test_every_implementation_gives_the_eager_outputs(implementation, attention_type):
    model = randomize(make_model(implementation, attention_type=attention_type))
    values = with_missing(torch.randn(3, 48, 3))
    with torch.no_grad():
        out = model(values).last_hidden_state
        model.config._attn_implementation = "eager"
        reference = model(values).last_hidden_state
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_output_attentions_returns_eager_probabilities_under_any_implementation(implementation):
    model = randomize(make_model(implementation, num_hidden_layers=1))
    values = with_missing(torch.randn(2, 48, 3))
    with torch.no_grad():
        out = model(values, output_attentions=True)
        plain = model(values)
    probs = out.attentions[0]
    per_channel = model.config.num_patches + 1
    for c in range(3):
        row = 1 + c * per_channel
        outside = torch.ones(probs.shape[-1], dtype=torch.bool)
        outside[row : row + per_channel] = False
        assert probs[:, :, row, outside].abs().max() == 0.0
    torch.testing.assert_close(out.last_hidden_state, plain.last_hidden_state, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention_type", ["channel_biased", "full", "causal"])
def test_flex_mask_mod_is_the_dense_rule_and_padding(attention_type):
    create_mask = pytest.importorskip("torch.nn.attention.flex_attention").create_mask
    layout = TraceTokenLayout(3, 5, True)
    rule = layout.attention_rule(attention_type)
    token_valid = torch.rand(4, rule.shape[0], generator=torch.Generator().manual_seed(0)) > 0.3
    token_valid[:, 0] = True
    dense = create_mask(layout.mask_mod(attention_type, token_valid), 4, 1, rule.shape[0], rule.shape[0], device="cpu")
    assert torch.equal(dense[:, 0], rule[None] & token_valid[:, None, :])
    no_padding = create_mask(layout.mask_mod(attention_type), 1, 1, rule.shape[0], rule.shape[0], device="cpu")
    assert torch.equal(no_padding[0, 0], rule)


def test_dispatch_follows_the_attention_interface_and_switches_at_once(monkeypatch):
    """`config._attn_implementation` is looked up at every call in `ALL_ATTENTION_FUNCTIONS`, as transformers'
    models do: a registered function is used, and `set_attn_implementation` switches without rebuilding."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    calls = []

    def counting_attention(module, query, key, value, attention_mask, **kwargs):
        calls.append(tuple(query.shape))
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    monkeypatch.setitem(AttentionInterface._global_mapping, "trace_test_counting", counting_attention)
    model = randomize(make_model("sdpa"))
    values = torch.randn(2, 48, 3)
    with torch.no_grad():
        reference = model(values).last_hidden_state
        model.set_attn_implementation("trace_test_counting")
        assert model.config._attn_implementation == "trace_test_counting"
        out = model(values).last_hidden_state
        assert len(calls) == model.config.num_hidden_layers
        model.set_attn_implementation("eager")
        eager = model(values).last_hidden_state
    assert len(calls) == model.config.num_hidden_layers
    torch.testing.assert_close(out, reference)
    torch.testing.assert_close(eager, reference, atol=1e-5, rtol=1e-5)


class _SubclassedLinear(nn.Linear):
    """Same computation as `nn.Linear`, but not the plain type: the attention runs its projections one by one."""


def _unfused_copy(model: TraceTimeSeriesModel) -> TraceTimeSeriesModel:
    import copy

    unfused = copy.deepcopy(model)
    for layer in unfused.encoder.layers:
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            old = getattr(layer.self_attn, name)
            new = _SubclassedLinear(old.in_features, old.out_features)
            new.load_state_dict(old.state_dict())
            setattr(layer.self_attn, name, new)
        new_fc2 = _SubclassedLinear(layer.fc2.in_features, layer.fc2.out_features)
        new_fc2.load_state_dict(layer.fc2.state_dict())
        layer.fc2 = new_fc2
    return unfused


@pytest.mark.parametrize("norm_first", [True, False])
def test_fused_projections_equal_the_plain_ones_in_inference_and_training(norm_first):
    """One q|k GEMM rotated at once and V's bias folded into the output bias give what separate projections give,
    forward (with and without autograd) and backward."""
    model = randomize(make_model("sdpa", norm_first=norm_first))
    unfused = _unfused_copy(model)
    values = with_missing(torch.randn(3, 48, 3))
    with torch.no_grad():
        torch.testing.assert_close(model(values).last_hidden_state, unfused(values).last_hidden_state, atol=1e-5, rtol=1e-5)
    with torch.inference_mode():
        torch.testing.assert_close(model(values).last_hidden_state, unfused(values).last_hidden_state, atol=1e-5, rtol=1e-5)
    model.train(), unfused.train()
    for m in (model, unfused):
        m(values).last_hidden_state.pow(2).mean().backward()
    for (name, p), q in zip(model.named_parameters(), unfused.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_lora_on_the_attention_projections_still_changes_and_trains_the_model():
    peft = pytest.importorskip("peft")
    model = randomize(make_model("sdpa"))
    values = torch.randn(2, 48, 3)
    with torch.no_grad():
        base = model(values).last_hidden_state.clone()
    config = peft.LoraConfig(r=2, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights=False)
    lora = peft.get_peft_model(model, config)
    wrapped = [name for name, module in lora.named_modules() if type(module).__name__ == "Linear" and "lora" in type(module).__module__]
    assert len(wrapped) == 4 * model.config.num_hidden_layers
    with torch.no_grad():
        adapted = lora(past_values=values).last_hidden_state.clone()
    assert (adapted - base).abs().max() > 1e-3  # the LoRA deltas of all four projections are applied
    lora(past_values=values).last_hidden_state.pow(2).mean().backward()
    grads = [p.grad for name, p in lora.named_parameters() if "lora_" in name]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    merged = lora.merge_and_unload()
    with torch.no_grad():
        torch.testing.assert_close(merged(values).last_hidden_state, adapted, atol=1e-5, rtol=1e-5)


def test_complex_and_cos_sin_rotations_agree():
    config = tiny_config()
    rotary = TraceRotaryEmbedding(config)
    positions = TraceTokenLayout(3, config.num_patches, True).rope_positions
    states = torch.randn(2, positions.shape[0], 4, config.d_model // 4)
    complex_rotation = rotary(positions, torch.float32)
    cos, sin = rotary(positions, torch.bfloat16)
    torch.testing.assert_close(cos.float(), complex_rotation.real, atol=1e-2, rtol=0)
    exact_pair = (complex_rotation.real, complex_rotation.imag)
    torch.testing.assert_close(apply_rotary_pos_emb(states, exact_pair), apply_rotary_pos_emb(states, complex_rotation))
    # queries and keys rotated together, as the fused projection does
    both = torch.stack([states, 2 * states], dim=2)
    torch.testing.assert_close(apply_rotary_pos_emb(both, complex_rotation)[:, :, 1], 2 * apply_rotary_pos_emb(states, complex_rotation))
    # [CLS] and CITs (position 0) are not rotated
    unrotated = positions == 0
    torch.testing.assert_close(apply_rotary_pos_emb(states, complex_rotation)[:, unrotated], states[:, unrotated])


def cpu_bf16_supported() -> bool:
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


@pytest.mark.parametrize("dtype, tolerance", [(torch.bfloat16, 0.05), (torch.float16, 0.01)])
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_autocast_outputs_stay_close_to_float32(implementation, dtype, tolerance):
    """CPU autocast runs the projections and attention in `dtype` (RoPE as cos/sin in `dtype`, the mask in `dtype`):
    correct on any CPU (bf16 without hardware support is emulated, only slower); relative error below `tolerance`."""
    print(f"CPU bf16 support (oneDNN): {cpu_bf16_supported()}")
    model = randomize(make_model(implementation))
    values = with_missing(torch.randn(4, 48, 3))
    with torch.no_grad():
        reference = model(values)
        with torch.autocast("cpu", dtype=dtype):
            out = model(values)
    for name in ("last_hidden_state", "cls_embedding", "channel_embeddings"):
        got, want = getattr(out, name).float(), getattr(reference, name)
        assert torch.isfinite(got).all()
        relative = ((got - want).norm() / want.norm()).item()
        assert relative < tolerance, f"{name}: relative error {relative:.4f} under {dtype} autocast"
    # the layers really ran in the low precision
    captured = []
    handle = model.encoder.layers[0].fc1.register_forward_hook(lambda module, inputs, output: captured.append(output.dtype))
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        model(values)
    handle.remove()
    assert captured == [dtype]


def test_torch_compile_gives_the_eager_outputs():
    model = randomize(make_model("sdpa"))
    compiled = torch.compile(model)
    for values in (torch.randn(3, 48, 3), with_missing(torch.randn(3, 48, 3))):
        with torch.no_grad():
            torch.testing.assert_close(
                compiled(values).last_hidden_state, model(values).last_hidden_state, atol=1e-5, rtol=1e-5
            )


def test_torch_compile_training_step_after_inference_gives_the_eager_gradients():
    """A model first used compiled under torch.inference_mode (its token-layout cache filled there) still trains
    compiled, with eager's gradients."""
    model = randomize(make_model("sdpa", num_hidden_layers=1))
    compiled = torch.compile(model)
    values = torch.randn(2, 48, 3)
    with torch.inference_mode():
        compiled(values)
    model.train()
    model(values).last_hidden_state.pow(2).mean().backward()
    eager_grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    compiled(values).last_hidden_state.pow(2).mean().backward()
    for name, p in model.named_parameters():
        if name in eager_grads:
            torch.testing.assert_close(p.grad, eager_grads[name], atol=1e-5, rtol=1e-4, msg=name)


POOLED_OUTPUTS = ("cls_embedding", "channel_embeddings", "pooler_output")


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_pooled_outputs_only_give_the_same_embeddings_and_gradients(implementation, norm_first):
    """`output_patch_embeddings=False` (the last layer computes [CLS] and the CITs alone, attending to every token):
    the pooled outputs and every parameter's gradient through them equal the full forward's; no patch states."""
    model = randomize(make_model(implementation, norm_first=norm_first, revin_statistics_embedding=True))
    values = with_missing(torch.randn(3, 48, 3))
    shapes = []
    model.encoder.layers[-1].fc1.register_forward_hook(lambda module, args, out: shapes.append(out.shape[1]))
    with torch.no_grad():
        full, pooled = model(values), model(values, output_patch_embeddings=False)
    for name in POOLED_OUTPUTS:
        torch.testing.assert_close(pooled[name], full[name], atol=1e-5, rtol=1e-5, msg=name)
    assert pooled.patch_embeddings is None and pooled.last_hidden_state is None
    # sdpa / eager: the last layer's feed-forward ran on [CLS] + 3 CITs only; flex keeps the whole layer
    assert shapes == [full.last_hidden_state.shape[1], 4 if implementation != "flex_attention" else shapes[0]]
    if implementation == "flex_attention":
        return  # torch's FlexAttention has no backward on CPU
    grads = []
    for output_patch_embeddings in (True, False):
        model.zero_grad(set_to_none=True)
        out = model(values, output_patch_embeddings=output_patch_embeddings)
        (out.pooler_output.pow(2).mean() + out.channel_embeddings.sin().mean()).backward()
        grads.append({name: p.grad for name, p in model.named_parameters() if p.grad is not None})
    # every parameter but the mask token (used by pretraining only) has a gradient in both
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == len(list(model.parameters())) - 1
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("overrides", [dict(pooling="mean"), dict(use_channel_identity_tokens=False)])
def test_pooled_outputs_only_falls_back_to_the_whole_layer_where_patches_are_pooled(overrides):
    """Mean pooling or no CITs read the patch states: the whole last layer runs, the pooled outputs are the same."""
    model = randomize(make_model("sdpa", **overrides))
    values = with_missing(torch.randn(3, 48, 3))
    with torch.no_grad():
        full, pooled = model(values), model(values, output_patch_embeddings=False)
    for name in POOLED_OUTPUTS:
        torch.testing.assert_close(pooled[name], full[name], msg=name)
    assert pooled.patch_embeddings is None


def test_dual_encoder_loss_and_features_are_the_same_without_patch_states():
    """`TraceModel(..., output_patch_embeddings=False)` (what alignment training runs) and `get_time_series_features`
    / `get_channel_features` (which skip the patch states) give the full forward's loss and embeddings."""
    from modeling_trace import TraceModel

    torch.manual_seed(0)
    model = randomize(TraceModel(tiny_config(num_hidden_layers=2))).eval()
    values = with_missing(torch.randn(4, 48, 3))
    text_embeds = torch.randn(4, model.config.text_config.hidden_size)
    channel_text_embeds = torch.randn(4, 3, model.config.text_config.hidden_size)
    with torch.no_grad():
        full = model(values, text_embeds=text_embeds, channel_text_embeds=channel_text_embeds)
        pooled = model(values, text_embeds=text_embeds, channel_text_embeds=channel_text_embeds, output_patch_embeddings=False)
        features = model.get_time_series_features(values)
        channel_features = model.get_channel_features(values)
    torch.testing.assert_close(pooled.loss, full.loss)
    torch.testing.assert_close(pooled.time_series_embeds, full.time_series_embeds)
    torch.testing.assert_close(pooled.channel_embeds, full.channel_embeds)
    assert pooled.time_series_model_output.patch_embeddings is None
    torch.testing.assert_close(features, full.time_series_embeds)
    torch.testing.assert_close(channel_features, model._channel_features(full.time_series_model_output.channel_embeddings, None, None))
