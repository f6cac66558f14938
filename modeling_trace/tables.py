"""Markdown tables: the one writer behind every table the project prints or writes (model and dataset cards, the
quickstart, the benchmarks), so that escaping, alignment and number formats are decided in one place.

    >>> print(markdown_table(["metric", "test"], [["MRR@10", 0.41234], ["P@1", None]], align="-r", float_format=".3f"))
    | metric | test |
    |---|---:|
    | MRR@10 | 0.412 |
    | P@1 |  |
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from typing import Any

# alignment code -> delimiter-row cell (GitHub-flavoured Markdown)
_RULES = {
    None: "---",
    "": "---",
    "-": "---",
    "l": ":---",
    "left": ":---",
    "c": ":---:",
    "center": ":---:",
    "r": "---:",
    "right": "---:",
}


def _cell(value: Any, float_format: str, missing: str) -> str:
    """One cell's text: `missing` for None, floats through `float_format`, `|` escaped, line breaks as `<br>`."""
    if value is None:
        text = missing
    elif float_format and isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        text = format(value, float_format)
    else:
        text = str(value)
    return "<br>".join(text.replace("|", r"\|").splitlines()) if text else text


def _cells(kind: str, values: Any) -> list:
    if isinstance(values, (str, bytes)):
        raise TypeError(f"The {kind} must be a sequence of cells, not the string {values!r}.")
    return list(values)


def markdown_table(
    header: Sequence[Any],
    rows: Iterable[Sequence[Any]],
    *,
    align: Sequence[str | None] | None = None,
    float_format: str = "",
    missing: str = "",
    with_header: bool = True,
) -> str:
    """A GitHub-flavoured Markdown table: a header line, the delimiter row, then one line per row.

    Every line has exactly `len(header)` cells. Cells are written with `str()`, except that `None` becomes
    `missing` and non-integral numbers (Python and numpy floats) go through `float_format`; a `|` inside a cell is
    escaped as `\\|` and a line break becomes `<br>`, so no cell can add a column or end the table. Cells that need
    a format of their own (`"0.41 ± 0.02"`, `` "`code`" ``, `"1.5x"`) are passed already formatted, as strings.

    Args:
        header: the column names.
        rows: the rows, each a sequence of `len(header)` cells (any objects). May be empty: then the table is the
            header and the delimiter row only.
        align: one code per column: `"l"` / `"left"`, `"c"` / `"center"`, `"r"` / `"right"`, or `None` / `""` /
            `"-"` for no alignment (`---`). A string is read one character per column: `"-rr"` leaves the first
            column unaligned and right-aligns two numeric ones. Default: no alignment anywhere.
        float_format: a format spec (`format(value, float_format)`) for float cells, e.g. `".3f"` or `".6g"`;
            `""` (the default) writes them with `str()`. Integers and bools are always written with `str()`.
        missing: the text of a `None` cell.
        with_header: `False` returns only the row lines (validated against `header` all the same), to print a
            long table row by row under a header printed once with `markdown_table(header, [])`.

    Returns:
        The table, lines joined by `"\\n"`, without a trailing newline (`""` for no rows with `with_header=False`).

    Raises:
        ValueError: `header` is empty, `align` does not give one known code per column, or a row's length is not
            the header's.
        TypeError: `header` or a row is a string rather than a sequence of cells.
    """
    header = _cells("header", header)
    width = len(header)
    if not width:
        raise ValueError("A Markdown table needs at least one column: the header is empty.")
    codes = [None] * width if align is None else list(align)
    if len(codes) != width:
        raise ValueError(f"align gives {len(codes)} codes ({align!r}) for {width} columns ({header!r}).")
    unknown = [code for code in codes if code not in _RULES]
    if unknown:
        raise ValueError(f"Unknown alignment {unknown[0]!r} in {align!r}; use one of 'l', 'c', 'r' or '-' per column.")
    lines = []
    if with_header:
        lines.append("| " + " | ".join(_cell(name, float_format, missing) for name in header) + " |")
        lines.append("|" + "|".join(_RULES[code] for code in codes) + "|")
    for number, row in enumerate(rows):
        cells = _cells(f"row {number}", row)
        if len(cells) != width:
            raise ValueError(
                f"Row {number} has {len(cells)} cells but the header has {width} columns ({header!r}): {cells!r}."
            )
        lines.append("| " + " | ".join(_cell(value, float_format, missing) for value in cells) + " |")
    return "\n".join(lines)


__all__ = ["markdown_table"]
