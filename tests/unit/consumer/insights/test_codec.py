"""Cells to gzip parts and back: every part fits an item, whatever the cells compress to."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import orjson
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


def exact(stat: Stat) -> tuple[Any, ...]:
    """A statistic's figures, decimals by their text (exponent and all)."""
    encoded = stat.encode()
    return tuple(encoded[k] for k in sorted(encoded))


# a small cell's values as a measure may give them: plain texts, Decimals (a computed
# measure's), a missing one, texts that are no number or none a float holds, equal values
# with other exponents (the first least and greatest keep their text), zeros of both signs
SMALL_VALUES: list[list[Decimal | str | None]] = [
    ["12.5", "700", "-3.25", None, "12.50"],
    [Decimal("0.1523809523809523809523809524"), Decimal("1E+2"), Decimal("-0")],
    ["abc", "NaN", "Infinity", "1e400", "0.0", "-0.00", "5"],
    [None, None],
    ["3"],
]


@pytest.mark.parametrize("values", SMALL_VALUES)
def test_a_small_cell_is_written_as_its_values_and_reads_back_the_same_figures(
    values: list[Decimal | str | None],
) -> None:
    """A cell of at most RAW_VALUES values a measure is stored as its values, not their
    statistics: read back, its statistics are exactly those the writer would have written
    — count, sum to the exponent, the first least and greatest, bins, zeros."""
    key = (DAY, (("hardwareID", "HW-1"),))
    written = Cell(len(values), 2)
    written.pending = {"a": list(values), "b": list(reversed(values))}
    reference = Cell(len(values), 2)
    reference.pending = {"a": list(values), "b": list(reversed(values))}
    line = codec.cell_line(key, written)
    assert b'"v":' in line and b'"s":' not in line
    (back_key, back), *rest = codec.cells_of(codec.parts_by_day({key: written})["2026-12-03"][0])
    assert not rest and back_key == key
    assert (back.count, back.late) == (len(values), 2)
    assert back.stats.keys() == reference.stats.keys()
    for name, stat in reference.stats.items():
        assert exact(back.stats[name]) == exact(stat)


def test_a_cell_beyond_the_bound_or_read_already_is_written_as_its_statistics() -> None:
    key = (DAY, (("hardwareID", "HW-1"),))
    many = Cell(codec.RAW_VALUES + 1)
    many.pending = {"a": [str(n) for n in range(codec.RAW_VALUES + 1)]}
    assert b'"s":' in codec.cell_line(key, many)
    read = Cell(2)
    read.pending = {"a": ["1", "2"]}
    assert read.stats["a"].count == 2
    assert b'"s":' in codec.cell_line(key, read)
    late_only = Cell(0, 3)
    assert orjson.loads(codec.cell_line(key, late_only))["s"] == {}
