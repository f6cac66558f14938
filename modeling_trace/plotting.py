"""Pictures of TRACE results (matplotlib, Agg backend, so they work on machines without a display).

- `plot_retrieval(query_values, results, ...)`: the query and its top-k retrieved series, channels as small
  multiples, each row with its (wrapped, truncated) text and similarity score.
- `plot_training_curves(log_file_or_records, out)`: loss against optimiser step from the `train_log.jsonl` the
  training loops write.
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _as_2d(values, what: str) -> np.ndarray:
    array = np.asarray(values if values is not None else [], dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"{what} must be (length, channels) or (length,), got shape {array.shape}.")
    return array


def _short(text, width: int, max_chars: int) -> str:
    text = " ".join(str(text or "").split())
    if len(text) > max_chars:
        text = text[: max_chars - 1].rstrip() + "…"
    return "\n".join(textwrap.wrap(text, width)) if text else "(no text)"


def _hit_rows(results, query: int, value_column: str) -> list[dict]:
    rows = results.rows[query] if hasattr(results, "rows") else results
    if rows is None:
        raise ValueError("The results have no rows; search with return_rows=True and columns that include the values.")
    rows = [dict(r) for r in rows]
    for row in rows:
        if value_column not in row:
            raise ValueError(
                f"Retrieved rows lack {value_column!r} (they have {sorted(row)}); search with "
                f"columns=[..., {value_column!r}, 'text'] or pass rows that carry the series."
            )
    return rows


def plot_retrieval(
    query_values,
    results,
    out: str | os.PathLike | None = None,
    *,
    query: int = 0,
    query_text: str | None = None,
    query_label: str | None = None,
    channel_names: Sequence[str] | None = None,
    k: int | None = None,
    value_column: str = "past_values",
    text_column: str = "text",
    title: str | None = None,
    text_width: int = 38,
    max_text_chars: int = 220,
):
    """Draw a query series and its retrieved series, one row each, channels as small multiples.

    Args:
        query_values: the query series `(length, channels)` (or `(length,)`), NaN = missing; `None` for a text
            query (the first row then shows only `query_text`).
        results: a `RetrievalResults` (searched with `return_rows=True` and `columns` including `value_column` and
            `text_column`) or a list of row dicts with those keys and a `score`.
        out: PNG path to write (the figure is also returned).
        query: which query of `results` to draw.
        query_text, query_label: shown next to the query.
        channel_names: column titles (default: the rows' `channel_names`, else c0, c1, ...).
        k: draw at most k hits.
        value_column, text_column: row keys of the series and the text.
        title: figure title.
        text_width, max_text_chars: wrapping and truncation of texts.

    Returns:
        The matplotlib `Figure`.
    """
    plt = _pyplot()
    rows = _hit_rows(results, query, value_column)
    if k is not None:
        rows = rows[:k]
    if not rows and query_values is None:
        raise ValueError("Nothing to draw: no query series and no retrieved rows.")
    series = [None if query_values is None else _as_2d(query_values, "query_values")]
    series += [_as_2d(r[value_column], f"row {r.get('id', i)} {value_column}") for i, r in enumerate(rows)]
    num_channels = max(s.shape[1] for s in series if s is not None)
    if channel_names is None:
        channel_names = next((r.get("channel_names") for r in rows if r.get("channel_names")), None)
    names = list(channel_names or [])[:num_channels] + [f"c{c}" for c in range(len(channel_names or []), num_channels)]

    n_rows = len(series)
    fig = plt.figure(figsize=(3.2 + 1.9 * num_channels, 1.35 * n_rows + 0.8))
    grid = fig.add_gridspec(n_rows, num_channels + 1, width_ratios=[2.6] + [1.0] * num_channels, hspace=0.45, wspace=0.25)
    for r, values in enumerate(series):
        text_ax = fig.add_subplot(grid[r, 0])
        text_ax.axis("off")
        if r == 0:
            head = "QUERY" + (f" [{query_label}]" if query_label else "")
            body = _short(query_text, text_width, max_text_chars) if query_text else ""
            color = "tab:red"
        else:
            row = rows[r - 1]
            label = row.get("label_name", row.get("label"))
            head = f"#{r}  score {float(row.get('score', float('nan'))):.3f}" + (f"  [{label}]" if label is not None else "")
            body = _short(row.get(text_column), text_width, max_text_chars)
            color = "tab:blue"
        text_ax.text(0.0, 1.0, head, fontsize=8, fontweight="bold", va="top", ha="left", color=color, transform=text_ax.transAxes)
        text_ax.text(0.0, 0.72, body, fontsize=6.5, va="top", ha="left", transform=text_ax.transAxes)
        for c in range(num_channels):
            ax = fig.add_subplot(grid[r, c + 1])
            ax.tick_params(labelsize=5, length=2)
            if r == 0:
                ax.set_title(names[c], fontsize=7)
            if values is None or c >= values.shape[1] or not np.isfinite(values[:, c]).any():
                ax.text(0.5, 0.5, "missing" if values is not None else "", fontsize=6, ha="center", va="center", color="gray", transform=ax.transAxes)
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            ax.plot(values[:, c], color=color, linewidth=0.8)
            ax.set_xticks([])
    fig.suptitle(title or "TRACE retrieval: query (red) and top hits (blue)", fontsize=10)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110, bbox_inches="tight")
        plt.close(fig)
    return fig


def _records(source) -> list[dict]:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            path = path / "train_log.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"No training log at {path}; the training loops write <output_dir>/train_log.jsonl.")
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [dict(r) for r in source]


def plot_training_curves(
    log_file_or_records: str | os.PathLike | Sequence[Mapping[str, Any]] | Mapping[str, Any],
    out: str | os.PathLike,
    *,
    keys: Sequence[str] = ("loss", "sample_loss", "channel_loss"),
    title: str | None = None,
):
    """Plot training losses against the optimiser step and write a PNG.

    Args:
        log_file_or_records: a `train_log.jsonl` path, the run's output folder, a list of records (`{"step": ..,
            "loss": ..}`), or a mapping `{run name: any of these}` for one panel per run (e.g. pretrain and align).
        out: PNG path.
        keys: record keys to draw when present (first solid, others dashed).
        title: figure title.

    Returns:
        `out` as a `Path`.
    """
    plt = _pyplot()
    runs = dict(log_file_or_records) if isinstance(log_file_or_records, Mapping) else {"training": log_file_or_records}
    runs = {name: _records(source) for name, source in runs.items()}
    fig, axes = plt.subplots(1, len(runs), figsize=(4.5 * len(runs), 3.2), squeeze=False)
    for ax, (name, records) in zip(axes[0], runs.items()):
        drawn = 0
        for i, key in enumerate(keys):
            points = [(r["step"], r[key]) for r in records if r.get(key) is not None and r.get("step") is not None]
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, marker="o", markersize=2.5, linewidth=1.2, linestyle="-" if i == 0 else "--", label=key)
                drawn += 1
        if not drawn:
            raise ValueError(f"Run {name!r} has no records with 'step' and any of {list(keys)}.")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)


__all__ = ["plot_retrieval", "plot_training_curves"]
