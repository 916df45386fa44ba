"""Cells to gzip parts and back: every part fits an item, whatever the cells compress to."""

from __future__ import annotations

import random

import pytest

from consumer.insights import codec
from consumer.insights.cells import Cell, CellKey
from consumer.insights.stats import Stat

DAY = 1_796_256_000  # 2026-12-03T00:00Z


def cells(n: int, seed: int) -> dict[CellKey, Cell]:
    rng = random.Random(seed)
    found: dict[CellKey, Cell] = {}
    for i in range(n):
        stat = Stat()
        stat.add_all([f"{rng.uniform(-1e6, 1e6):.6f}" for _ in range(rng.randrange(1, 60))])
        # random group names: lines that compress badly
        group = (("link", "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(40))),)
        found[(DAY + 300 * (i % 288), group)] = Cell(stat.count, i % 3, {"v": stat})
    return found


@pytest.mark.parametrize("part_bytes", [3_000, 300_000])
def test_every_part_fits_and_the_cells_come_back(
    part_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(codec, "PART_BYTES", part_bytes)
    given = cells(400, seed=part_bytes)
    days = codec.parts_by_day(given)
    assert list(days) == ["2026-12-03"]
    parts = days["2026-12-03"]
    assert all(len(part) <= part_bytes for part in parts)
    assert (len(parts) > 1) is (part_bytes < 100_000)
    back = {key: cell for part in parts for key, cell in codec.cells_of(part)}
    assert back.keys() == given.keys()
    for key, cell in given.items():
        assert (back[key].count, back[key].late, back[key].stats) == (
            cell.count, cell.late, cell.stats
        )  # fmt: skip
    assert codec.parts_by_day(given) == days, "the same cells, the same bytes"
