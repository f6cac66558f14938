"""Where the project's data folders are: `configuration/` (presets, recipes, accelerate configs) and `model_cards/`.

A wheel ships them inside the package (`modeling_trace/configuration`, `modeling_trace/model_cards`, mapped in
setup.cfg); a source checkout or an editable install keeps them at the top level of the repository. Both are found
without the caller knowing which.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """The folder `name` ("configuration" or "model_cards"): packaged copy first, the checkout's second."""
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
