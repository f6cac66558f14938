"""Where the shipped real data lives.

Tests, the quickstart and the builders read `../shared/data` beside the repository by default; set
`TRACE_DATA_DIR` (or pass `--data-dir`) to point elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_data_dir() -> Path:
    """`$TRACE_DATA_DIR` if set, else `<repo>/../shared/data`."""
    env = os.environ.get("TRACE_DATA_DIR")
    return Path(env).expanduser().resolve() if env else (REPO_ROOT.parent / "shared" / "data").resolve()


def require_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Return the data directory, raising a clear error when it does not exist."""
    path = Path(data_dir).expanduser().resolve() if data_dir is not None else default_data_dir()
    if not path.is_dir():
        raise FileNotFoundError(
            f"Data directory {path} does not exist. Pass --data-dir / data_dir=... or set TRACE_DATA_DIR "
            "to the folder holding timemmd/, noaa/, ucr/ and ett/."
        )
    return path
