"""Cells to and from bytes (gzip JSON lines), cut into parts small enough for one DynamoDB
item; pure."""

from __future__ import annotations

import gzip
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from isal import igzip

from consumer.insights.cells import Cell, CellKey
from consumer.insights.stats import Stat

PART_BYTES = 300_000  # of gzip per item: DynamoDB's limit is 400 KB with the keys
# ISA-L's gzip (igzip) at level 1: on a segment's TELEMAX cells (3,000 readings; 8 and 125
# devices) 36 and 76 µs against the stdlib's level 1 at 85 and 326 µs, 33 and 27 % of their
# size against 35 and 28 % (in process, 2026-12-05; the stdlib's level 6 costs 4x its level
# 1 for cells a quarter smaller) — a segment's cells are a few KB, a few write units against
# the thousands of its records'
LEVEL = 1


def day_of(window_start: int) -> str:
    return datetime.fromtimestamp(window_start, UTC).strftime("%Y-%m-%d")


def cell_line(key: CellKey, cell: Cell) -> bytes:
    start, group = key
    return orjson.dumps(
        {
            "w": start,
            "g": [list(pair) for pair in group],
            "n": cell.count,
            "l": cell.late,
            "s": {name: stat.encode() for name, stat in cell.stats.items()},
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )


def parts_by_day(cells: Mapping[CellKey, Cell]) -> dict[str, list[bytes]]:
    """Each day's cells (by window start) as gzip parts of at most about ``PART_BYTES``."""
    lines: dict[str, list[bytes]] = {}
    days: dict[int, str] = {}  # by window start: a segment's cells share a few
    for key in sorted(cells, key=lambda k: (k[0], orjson.dumps(k[1]))):
        start = key[0]
        day = days.get(start) or days.setdefault(start, day_of(start))
        lines.setdefault(day, []).append(cell_line(key, cells[key]))
    return {day: list(_parts(found)) for day, found in lines.items()}


def _parts(lines: list[bytes]) -> Iterator[bytes]:
    """gzip of consecutive lines; JSON compresses about 3:1 or better, so cut at 3x the part
    size — and a part that compressed worse is cut in two until it fits."""
    chunk: list[bytes] = []
    size = 0
    for line in lines:
        if chunk and size + len(line) > 3 * PART_BYTES:
            yield from _compressed(chunk)
            chunk, size = [], 0
        chunk.append(line)
        size += len(line)
    if chunk:
        yield from _compressed(chunk)


def _compressed(chunk: list[bytes]) -> Iterator[bytes]:
    part = igzip.compress(b"".join(chunk), LEVEL, mtime=0)
    if len(part) <= PART_BYTES or len(chunk) == 1:
        yield part
        return
    middle = len(chunk) // 2
    yield from _compressed(chunk[:middle])
    yield from _compressed(chunk[middle:])


def cells_of(part: bytes) -> Iterator[tuple[CellKey, Cell]]:
    for line in gzip.decompress(part).splitlines():
        value: dict[str, Any] = orjson.loads(line)
        group = tuple((name, found) for name, found in value["g"])
        stats = {name: Stat.decode(data) for name, data in value["s"].items()}
        yield (int(value["w"]), group), Cell(int(value["n"]), int(value["l"]), stats)
