"""The one Markdown table writer (`modeling_trace.tables.markdown_table`): every line has the header's column count
whatever the cells hold, alignment codes, number formats, and clear errors for malformed input."""

import random
import re

import numpy as np
import pytest

from modeling_trace.tables import markdown_table

# A cell boundary is a `|` not preceded by a backslash (GitHub-flavoured Markdown's escaped pipe is `\|`).
UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")
NASTY = ["", " ", "|", "a|b", "||", "x\ny", "line\r\nbreak", "`co|de`", "\\", "→ ± ✓", "**bold**", "-", "---:"]


def column_count(line: str) -> int:
    assert line.startswith("|") and line.endswith("|"), line
    return len(UNESCAPED_PIPE.findall(line)) - 1


def random_cell(rng: random.Random):
    kind = rng.randrange(6)
    if kind == 0:
        return rng.choice(NASTY) + rng.choice(NASTY)
    if kind == 1:
        return rng.uniform(-1e6, 1e6)
    if kind == 2:
        return rng.randrange(-1000, 1000)
    if kind == 3:
        return None
    if kind == 4:
        return np.float32(rng.random())
    return rng.choice([True, False, float("nan"), np.int64(7)])


@pytest.mark.parametrize("seed", range(25))
def test_every_line_has_the_header_column_count(seed):
    rng = random.Random(seed)
    width = rng.randint(1, 6)
    header = [rng.choice(NASTY) + f"c{i}" for i in range(width)]
    rows = [[random_cell(rng) for _ in range(width)] for _ in range(rng.randint(0, 8))]
    table = markdown_table(header, rows, float_format=rng.choice(["", ".3f", ".6g"]))
    lines = table.split("\n")
    assert len(lines) == 2 + len(rows)  # no cell adds a line
    assert all(column_count(line) == width for line in lines), table


def test_pipes_are_escaped_and_line_breaks_become_br():
    table = markdown_table(["a|b", "c"], [["x|y", "one\ntwo"], ["`p|q`", "end\n"]])
    assert table.split("\n") == [
        r"| a\|b | c |",
        "|---|---|",
        r"| x\|y | one<br>two |",
        r"| `p\|q` | end |",
    ]


def test_alignment_row():
    assert markdown_table(["a", "b", "c", "d"], [], align="-lcr").split("\n")[1] == "|---|:---|:---:|---:|"
    words = markdown_table(["a", "b", "c", "d"], [], align=[None, "left", "center", "right"])
    assert words.split("\n")[1] == "|---|:---|:---:|---:|"
    assert markdown_table(["a", "b"], []).split("\n")[1] == "|---|---|"


def test_empty_rows_give_header_and_rule_only():
    assert markdown_table(["metric", "value"], []) == "| metric | value |\n|---|---|"
    assert markdown_table(["metric", "value"], iter([])) == "| metric | value |\n|---|---|"
    assert markdown_table(["metric", "value"], [], with_header=False) == ""


def test_numbers_none_and_preformatted_cells():
    rows = [["x", 0.123456, 3, None], ["y", np.float32(0.5), np.int64(2), "1.5 ± 0.1"], ["z", float("nan"), True, 2.0]]
    table = markdown_table(["name", "f", "i", "s"], rows, float_format=".3f", missing="-")
    assert table.split("\n")[2:] == [
        "| x | 0.123 | 3 | - |",
        "| y | 0.500 | 2 | 1.5 ± 0.1 |",
        "| z | nan | True | 2.000 |",
    ]
    # the default writes floats with str() and None as an empty cell
    assert markdown_table(["a", "b"], [[0.25, None]]).split("\n")[2] == "| 0.25 |  |"


def test_rows_can_be_streamed_under_one_header():
    header = ["mode", "value"]
    streamed = "\n".join(
        [markdown_table(header, []), *(markdown_table(header, [r], with_header=False) for r in [[1, 2], [3, 4]])]
    )
    assert streamed == markdown_table(header, [[1, 2], [3, 4]])


def test_mismatched_row_length_raises_a_clear_error():
    with pytest.raises(ValueError, match=r"Row 1 has 3 cells but the header has 2 columns"):
        markdown_table(["a", "b"], [[1, 2], [1, 2, 3]])
    with pytest.raises(ValueError, match=r"Row 0 has 1 cells but the header has 2 columns"):
        markdown_table(["a", "b"], [[1]], with_header=False)


def test_other_malformed_input_is_refused():
    with pytest.raises(ValueError, match="at least one column"):
        markdown_table([], [])
    with pytest.raises(ValueError, match="align gives 1 codes"):
        markdown_table(["a", "b"], [], align="r")
    with pytest.raises(ValueError, match="Unknown alignment 'x'"):
        markdown_table(["a", "b"], [], align="-x")
    with pytest.raises(TypeError, match="row 0 must be a sequence of cells"):
        markdown_table(["a", "b"], ["ab"])
    with pytest.raises(TypeError, match="header must be a sequence of cells"):
        markdown_table("ab", [])
