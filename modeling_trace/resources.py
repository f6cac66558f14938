"""Where the project's data folders are: `configuration/` (presets, recipes, accelerate configs), `model_cards/` and
`checkpoints/` (the shipped trained model).

A wheel ships them inside the package (`modeling_trace/configuration`, `modeling_trace/model_cards`, mapped in
setup.cfg); a source checkout or an editable install keeps them at the top level of the repository. Both are found
without the caller knowing which.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """The folder `name` ("configuration", "model_cards" or "checkpoints"): packaged copy first, the checkout's
    second."""
    for candidate in (_PACKAGE_DIR / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"The project's {name}/ folder is neither inside the installed package ({_PACKAGE_DIR / name}) nor next to "
        f"it ({_PACKAGE_DIR.parent / name}); reinstall the package (a wheel built from the repository, or "
        "`pip install -e .` in the checkout)."
    )


def configuration_dir(*parts: str) -> Path:
    """A subfolder of `configuration/`, e.g. `configuration_dir("recipes")`."""
    return resource_dir("configuration").joinpath(*parts)


# The checkpoint this repository trains and ships (`checkpoints/trace-mini-noaa`, see README): the CLI's default model.
SHIPPED_CHECKPOINT = "trace-mini-noaa"


def shipped_checkpoint() -> Path:
    """Folder of the shipped trained `TraceModel` (its text tower referenced by Hub id, see `TraceConfig`)."""
    return resource_dir("checkpoints") / SHIPPED_CHECKPOINT
