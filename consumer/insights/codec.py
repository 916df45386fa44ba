"""Cells to and from bytes (gzip JSON lines), cut into parts small enough for one DynamoDB
item; pure."""

from __future__ import annotations

import gzip
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal
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
# A cell with at most this many values a measure is written as its values, not their
# statistics: while its values take no more bytes than its statistics would. Those cost about
# 4 µs a measure to make however few the values, so a segment of devices that report every
# 30 s (two values a cell) cost 10 µs a reading to commit; as values 1.7 (`python -m
# tests.bench.insights_cost --devices 2500 --readings 262144 --segment 5000`). Under gzip a
# TELEMAX reading takes 10 bytes as values against 22 as statistics at two a cell, 7.5 against
# 7.8 at ten, 7.4 against 7.1 at twelve, 6.7 against 3.5 at 64: beyond about ten the values
# would save CPU (1.46 -> 0.62 µs a reading at 60 a cell) for more write units, which cost far
# more than the CPU (a write unit ≈ 1.25e-6 $ on demand, a CPU-µs ≈ 1e-11 $). The reader reads
# the values as the writer would have (the same statistics, exactly: Cell.stats), merged
# unread first.
RAW_VALUES = 10


def day_of(window_start: int) -> str:
    return datetime.fromtimestamp(window_start, UTC).strftime("%Y-%m-%d")


def cell_line(key: CellKey, cell: Cell) -> bytes:
    """The cell's JSON line: its statistics (``"s"``), or its values when it has few
    (``"v"``: a measure's values as they came, None for a missing one)."""
    start, group = key  # (a group's pairs are tuples: JSON arrays to orjson)
    values = cell.unread(RAW_VALUES)
    if values is not None:
        line = {"w": start, "g": group, "n": cell.count, "l": cell.late, "v": values}
    else:
        stats = {name: stat.encode() for name, stat in cell.stats.items()}
        line = {"w": start, "g": group, "n": cell.count, "l": cell.late, "s": stats}
    return orjson.dumps(line, default=_text, option=orjson.OPT_APPEND_NEWLINE)


def _text(value: Any) -> str:
    """A Decimal value as its text (which reads back as the same Decimal, exponent and all)."""
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not a measure's value: {value!r}")


def parts_by_day(cells: Mapping[CellKey, Cell]) -> dict[str, list[bytes]]:
    """Each day's cells (by window start) as gzip parts of at most about ``PART_BYTES``.

    A day's lines are written into one buffer as they are made (with where each ends), not
    kept one bytes object a line: with glibc's own allocator settings (the Lambda handler's)
    orjson's output kept alive cost 2.7 µs a line against 0.3 copied into a buffer and
    dropped — its buffer is far larger than a cell's line — (2,500 lines of small cells, in
    process, 2026-12-07); with the worker's (``consumer.allocator``) 0.26 and 0.30."""
    texts: dict[str, tuple[bytearray, list[int]]] = {}
    days: dict[int, str] = {}  # by window start: a segment's cells share a few
    for key in _in_order(cells):
        start = key[0]
        day = days.get(start) or days.setdefault(start, day_of(start))
        found = texts.get(day)
        if found is None:
            found = texts[day] = (bytearray(), [])
        text, ends = found
        text += cell_line(key, cells[key])
        ends.append(len(text))
    return {day: list(_parts(memoryview(text), ends)) for day, (text, ends) in texts.items()}


def _in_order(cells: Mapping[CellKey, Cell]) -> list[CellKey]:
    """The cells' keys in one order for the same cells, whatever order they came in: by
    window and group (by the group's JSON when its values do not compare: a None among
    texts)."""
    try:
        return sorted(cells)
    except TypeError:
        return sorted(cells, key=lambda k: (k[0], orjson.dumps(k[1]).decode()))


def _parts(text: memoryview, ends: list[int]) -> Iterator[bytes]:
    """gzip of consecutive lines (``text`` up to each of ``ends``); JSON compresses about
    3:1 or better, so cut at 3x the part size — and a part that compressed worse is cut in
    two until it fits."""
    first = 0  # the chunk's first line
    for n in range(1, len(ends)):
        if ends[n] - _start(ends, first) > 3 * PART_BYTES:
            yield from _compressed(text, ends, first, n)
            first = n
    if ends:
        yield from _compressed(text, ends, first, len(ends))


def _start(ends: list[int], line: int) -> int:
    return ends[line - 1] if line else 0


def _compressed(text: memoryview, ends: list[int], first: int, stop: int) -> Iterator[bytes]:
    """The lines ``first`` to ``stop`` gzipped, in one part or, too big, in halves."""
    part = igzip.compress(text[_start(ends, first) : ends[stop - 1]], LEVEL, mtime=0)
    if len(part) <= PART_BYTES or stop - first == 1:
        yield part
        return
    middle = (first + stop) // 2
    yield from _compressed(text, ends, first, middle)
    yield from _compressed(text, ends, middle, stop)


def cells_of(part: bytes) -> Iterator[tuple[CellKey, Cell]]:
    for line in gzip.decompress(part).splitlines():
        value: dict[str, Any] = orjson.loads(line)
        group = tuple((name, found) for name, found in value["g"])
        cell = Cell(int(value["n"]), int(value["l"]))
        if "v" in value:  # its values, read when its statistics are (merged unread first)
            cell.pending = {name: list(values) for name, values in value["v"].items()}
        else:
            cell.stats = {name: Stat.decode(data) for name, data in value["s"].items()}
        yield (int(value["w"]), group), cell
