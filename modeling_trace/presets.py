"""Named presets from `configuration/models/*.json`."""

from __future__ import annotations

from pathlib import Path

from .configuration_trace import TraceConfig
from .resources import configuration_dir


def available_presets() -> list[str]:
    """Names of the model presets shipped in `configuration/models`."""
    return sorted(p.stem for p in configuration_dir("models").glob("*.json"))


def load_preset(name_or_path: str | Path, **overrides) -> TraceConfig:
    """Load a preset by name (`"trace-tiny"`, `"trace-small"`) or JSON path, applying `overrides`."""
    path = Path(name_or_path)
    if not path.suffix:
        path = configuration_dir("models") / f"{name_or_path}.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"No preset {name_or_path!r} (looked for {path}). Available: {', '.join(available_presets())}."
        )
    config_dict = TraceConfig._dict_from_json_file(path)
    config_dict.pop("model_type", None)
    if "num_input_channels" in overrides and "channel_names" not in overrides:
        if overrides["num_input_channels"] != len(config_dict.get("channel_names") or []):
            config_dict.pop("channel_names", None)
    config_dict.update(overrides)
    return TraceConfig(**config_dict)
