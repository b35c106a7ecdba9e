"""Markdown tables whose columns line up, so that the same text reads well in a terminal and renders as markdown."""

from __future__ import annotations

from collections.abc import Sequence


def aligned_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None) -> str:
    """A markdown table with every column padded to its widest cell.

    ``align``: one letter per column, ``"l"`` (text: padded on the right) or ``"r"`` (numbers: padded on the
    left, and marked ``---:`` so that rendered markdown right-aligns them too); default: the first column left,
    the others right. Every row must have one cell per header entry; a ``|`` in a cell is escaped.
    """
    header = [str(h) for h in header]
    cells = [[str(c).replace("|", "\\|") for c in row] for row in rows]
    for i, row in enumerate(cells):
        if len(row) != len(header):
            raise ValueError(f"row {i} has {len(row)} cells but the header has {len(header)}")
    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header) or set(align) - {"l", "r"}:
        raise ValueError(f"align={align!r} is not allowed; use one 'l' or 'r' per column ({len(header)})")
    widths = [max(3, len(h), *(len(row[j]) for row in cells)) for j, h in enumerate(header)]

    def line(row: Sequence[str]) -> str:
        padded = [c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(row, widths, align, strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" if a == "r" else "-" * (w + 2)
                          for w, a in zip(widths, align, strict=True)) + "|"
    return "\n".join([line(header), rule, *(line(row) for row in cells)])
