"""Aligned markdown tables: one width per column, numbers right-aligned, bad rows refused."""

import pytest

from metasgd_rl.tables import aligned_table


def test_columns_are_padded_to_their_widest_cell():
    table = aligned_table(["method", "return"], [["MAML", "-14.10"], ["Meta-SGD (seed 0)", "-9.2"]])
    assert table.splitlines() == [
        "| method            | return |",
        "|-------------------|-------:|",
        "| MAML              | -14.10 |",
        "| Meta-SGD (seed 0) |   -9.2 |",
    ]


def test_bad_rows_and_alignments_are_refused_and_pipes_escaped():
    with pytest.raises(ValueError, match="row 0 has 1 cells but the header has 2"):
        aligned_table(["a", "b"], [["x"]])
    with pytest.raises(ValueError, match="align='c'"):
        aligned_table(["a"], [["x"]], align="c")
    assert "a \\| b" in aligned_table(["x"], [["a | b"]], align="l")
