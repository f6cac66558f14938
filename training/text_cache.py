"""Encode a dataset's texts once with the frozen text tower and keep the sentence embeddings on disk.

The tower is frozen during alignment, so its sentence embeddings of a dataset never change: they are computed
once (unique texts only), stored under a key made of the text model's fingerprint (config + weights) and the
dataset's fingerprint, and fed to `TraceModel` as `text_embeds` / `channel_text_embeds`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from modeling_trace.modeling_trace import encode_sentences


def update_tensor_digest(digest, named_tensors) -> None:
    """Feed `(name, tensor)` pairs into a `hashlib` digest in name order (values as CPU float32 bytes)."""
    for name, tensor in sorted(named_tensors, key=lambda item: item[0]):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())


def text_model_fingerprint(text_model: torch.nn.Module) -> str:
    """sha256 of the text tower's config and weights (any change of either gives a new cache entry)."""
    digest = hashlib.sha256()
    config = getattr(text_model, "config", None)
    if config is not None:
        digest.update(config.to_json_string(use_diff=False).encode())
    update_tensor_digest(digest, text_model.state_dict().items())
    return digest.hexdigest()


def dataset_fingerprint(dataset) -> str:
    """sha256 of what the cache depends on: the rows' texts and channel texts, in order.

    `datasets.Dataset._fingerprint` is random for datasets built in memory (`Dataset.from_list`), so two processes
    or two runs building the same data would never share a cache entry; hashing the content does.
    """
    digest = hashlib.sha256()
    for text, channel_texts in zip(dataset["text"], dataset["channel_texts"]):
        digest.update(json.dumps([text or "", list(channel_texts or [])]).encode())
    return digest.hexdigest()


def build_text_embedding_cache(
    model,
    tokenizer,
    dataset,
    num_channels: int,
    cache_dir: str | os.PathLike,
    batch_size: int = 64,
    max_length: int = 256,
) -> tuple[dict[str, torch.Tensor], Path, bool]:
    """Return `(tensors, path, was_cached)` for `dataset` (columns `text`, `channel_texts`).

    `tensors`: `text_embeds (N, hidden)`, `text_mask (N,)` (the row has a non-empty text),
    `channel_text_embeds (N, num_channels, hidden)`, `channel_text_mask (N, num_channels)`; rows with fewer
    channels are padded with masked zeros. Empty texts are never encoded.
    """
    key_source = json.dumps(
        [text_model_fingerprint(model.text_model), dataset_fingerprint(dataset), num_channels, max_length]
    )
    key = hashlib.sha256(key_source.encode()).hexdigest()[:24]
    cache_dir = Path(cache_dir)
    path = cache_dir / f"text_embeds-{key}.safetensors"
    if path.is_file():
        return load_file(str(path)), path, True

    texts = [str(t or "").strip() for t in dataset["text"]]
    channel_texts = [[str(t or "").strip() for t in row] for row in dataset["channel_texts"]]
    too_many = [i for i, row in enumerate(channel_texts) if len(row) > num_channels]
    if too_many:
        raise ValueError(
            f"Row {too_many[0]} has {len(channel_texts[too_many[0]])} channel texts but the model has "
            f"{num_channels} channels; build the model with num_input_channels >= the dataset's channels."
        )
    unique = sorted({t for t in texts if t} | {t for row in channel_texts for t in row if t})
    position = {t: i for i, t in enumerate(unique)}
    hidden = model.config.text_config.hidden_size
    if unique:
        embedded = encode_sentences(model.text_model, tokenizer, unique, batch_size=batch_size, max_length=max_length)
    else:
        embedded = torch.zeros(0, hidden)

    n = len(texts)
    text_embeds = torch.zeros(n, hidden)
    text_mask = torch.zeros(n, dtype=torch.bool)
    channel_embeds = torch.zeros(n, num_channels, hidden)
    channel_mask = torch.zeros(n, num_channels, dtype=torch.bool)
    for i, text in enumerate(texts):
        if text:
            text_embeds[i] = embedded[position[text]]
            text_mask[i] = True
        for c, channel_text in enumerate(channel_texts[i]):
            if channel_text:
                channel_embeds[i, c] = embedded[position[channel_text]]
                channel_mask[i, c] = True
    tensors = {
        "text_embeds": text_embeds,
        "text_mask": text_mask,
        "channel_text_embeds": channel_embeds,
        "channel_text_mask": channel_mask,
    }
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata={"num_unique_texts": str(len(unique)), "key_source": key_source})
    os.replace(tmp, path)
    return tensors, path, False


def text_embedding_batch(cache: dict[str, torch.Tensor], indices) -> dict[str, torch.Tensor]:
    """Select the cached sentence embeddings of dataset rows `indices` as `TraceModel` keyword arguments."""
    indices = torch.as_tensor(indices, dtype=torch.long)
    return {
        "text_embeds": cache["text_embeds"][indices],
        "channel_text_embeds": cache["channel_text_embeds"][indices],
        "channel_text_mask": cache["channel_text_mask"][indices],
    }
