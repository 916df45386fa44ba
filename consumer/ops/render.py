"""How the operator commands print what they read."""

from __future__ import annotations

from collections.abc import Sequence


def text_table(columns: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart, header first, no trailing spaces."""
    widths = [max([len(c)] + [len(row[i]) for row in body]) for i, c in enumerate(columns)]
    return [
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
        for row in (columns, *body)
    ]
