# Copyright 2026 The TRACE package authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""SERAF model configuration (`SerafConfig`, model_type "seraf"); the model is in `modeling_seraf.py`.

Like `configuration_trace.py`, it imports only `transformers`.
"""

from __future__ import annotations

from transformers import PreTrainedConfig


class SerafConfig(PreTrainedConfig):
    r"""
    Configuration of [`SerafForForecasting`].

    Args:
        num_input_channels (`int`, *optional*, defaults to 7):
            Number of channels C (last axis of `past_values`).
        context_length (`int`, *optional*, defaults to 720):
            History length L of the query and of every database window.
        prediction_length (`int`, *optional*, defaults to 96):
            Horizon H.
        top_k (`int`, *optional*, defaults to 10):
            K, the number of windows each retrieval returns.
        kernel_temperature (`float`, *optional*, defaults to 0.1):
            τ of the Gaussian-kernel weights `softmax(−(1−ρ)²/(2τ²))`.
        use_retrieval (`bool`, *optional*, defaults to `True`):
            `False` gives the plain linear baseline `output_projection(linear_encoder(x))`.
        use_text (`bool`, *optional*, defaults to `True`):
            Use the semantic (description) retrieval branch; `False` is the "w/o text" ablation.
        use_gate (`bool`, *optional*, defaults to `True`):
            Gate `β = σ(W[X̂; F̂])`; `False` ("w/o gate") uses `G = X̂ + F̂`.
        learn_fusion_weight (`bool`, *optional*, defaults to `True`):
            Learn `w = σ(θ)`; `False` ("w/o learned weight") fixes `w = 0.5`.
        fusion_weight_init (`float`, *optional*, defaults to 0.5):
            Initial `w`, in (0, 1).
        text_model_name_or_path (`str`, *optional*):
            Sentence encoder for the descriptions; `None` is the offline all-MiniLM-L6-v2 (sha256-checked).
        text_embedding_dim (`int`, *optional*, defaults to 384):
            Size of the description embeddings (384 for all-MiniLM-L6-v2).
        database_length (`int`, *optional*):
            Number of time steps of the stored training series; set by [`SerafForForecasting.set_database`] so
            that a saved model allocates its database buffers before loading them.
        database_start_timestamp (`str`, *optional*):
            ISO-8601 timestamp of the first database step (for the descriptions).
        freq (`str`, *optional*):
            pandas-style step of the series ("1h", "7D", ...), for the descriptions.
        normalization_eps (`float`, *optional*, defaults to 1e-5):
            Added to the variance when z-scoring windows.
    """

    model_type = "seraf"

    num_input_channels: int = 7
    context_length: int = 720
    prediction_length: int = 96
    top_k: int = 10
    kernel_temperature: float = 0.1
    use_retrieval: bool = True
    use_text: bool = True
    use_gate: bool = True
    learn_fusion_weight: bool = True
    fusion_weight_init: float = 0.5
    text_model_name_or_path: str | None = None
    text_embedding_dim: int = 384
    database_length: int | None = None
    database_start_timestamp: str | None = None
    freq: str | None = None
    normalization_eps: float = 1e-5

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.validate()

    @property
    def database_size(self) -> int:
        """Number N of stride-1 windows `L + H` long in the stored series (0 when no database is set)."""
        if not self.database_length:
            return 0
        return max(0, self.database_length - self.context_length - self.prediction_length + 1)

    @property
    def exclusion_radius(self) -> int:
        """Windows with `|i − j| <= L + H − 1` share a point with window i and are never retrieved for it."""
        return self.context_length + self.prediction_length - 1

    def validate(self):
        """Check every argument once; raises `ValueError` saying what is wrong and how to fix it."""
        for name in ("num_input_channels", "context_length", "prediction_length", "top_k", "text_embedding_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"SerafConfig.{name} must be a positive integer, got {value!r}.")
        if not self.kernel_temperature > 0:
            raise ValueError(
                f"SerafConfig.kernel_temperature must be > 0 (paper: 0.1), got {self.kernel_temperature}."
            )
        if not 0.0 < self.fusion_weight_init < 1.0:
            raise ValueError(f"SerafConfig.fusion_weight_init must be in (0, 1), got {self.fusion_weight_init}.")
        if self.database_length is not None and self.database_size < self.top_k:
            raise ValueError(
                f"The database series has {self.database_length} steps, which hold {self.database_size} windows of "
                f"{self.context_length}+{self.prediction_length} steps, fewer than top_k={self.top_k}. Use a longer "
                "training series, a shorter context/horizon, or a smaller top_k."
            )


__all__ = ["SerafConfig"]
