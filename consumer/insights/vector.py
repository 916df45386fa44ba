"""A segment's kept rows aggregated a column at a time with numpy (pure; no I/O): the same
cells, to the last digit, as :meth:`~consumer.insights.cells.Partial.add_columns` and
:meth:`~consumer.insights.stats.Stat.add_all` make of them, for the usual segment — every
row timed, every measure a plain decimal (JSON's syntax, no exponent) on a grid a float
holds exactly enough (see :func:`~consumer.insights.stats._plain`). Any other segment is
left to them (:func:`add_runs` answers False and adds nothing).

Why: those two cost about 1 µs a TELEMAX reading at a segment's commit (rows picked into
cells 0.41, each cell's statistics settled 0.60, ``python -m tests.bench.insights_cost``),
a Python loop a row and a few list comprehensions a value; here each step is one numpy pass
over the segment.

How the exact figures stay exact: a cell's values are ``m_i * 10^-k_i`` with at most ``P``
digits after the point (``P`` counted on the text: ``12.50`` has two, as its Decimal has),
so ``rint(float(v) * 10^P)`` is the integer ``m_i * 10^(P - k_i)`` whenever the cell's
count times its largest magnitude times ``10^P`` stays under 2^49 (the float's error is
far below one half), and their sum in int64 is exact: the Decimal sum is that integer
scaled by ``10^-P``, as Decimal addition gives it. Min and max are the first least and
greatest values in the rows' order, given as their own text, as ``min`` of the Decimals
finds them. The sketch's bins are the same keys as the list path's (``ceil(log2(v) *
multiplier)``, numpy's ``log2``: a last-bit difference at a bin's edge at most, which
either bin's bound covers, as :class:`~consumer.insights.stats.Log2Mapping` says).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from consumer.insights.cells import Cell, Partial
from consumer.insights.stats import _MULTIPLIER, _TINY, Stat

if TYPE_CHECKING:
    from consumer.insights.kept import BatchFacts

SEPARATOR = "\x1f"  # as kept.SEPARATOR (kept imports this module lazily)
_LIMIT = 2.0**49  # count * largest magnitude * 10^places below this: the sums are exact
_MAX_PLACES = 22  # 10^places exact as a float
# digits, points, minus signs and separators only (JSON's parse checks each number)
_PLAIN = re.compile(r"[-.0-9\x1f]*").fullmatch
_DOT, _SEP = ord("."), ord(SEPARATOR)
_TABLE = 1 << 20  # keys below this are counted in a table, not sorted


def add_runs(partial: Partial, runs: Sequence[tuple[BatchFacts, int, int]]) -> bool:
    """Add rows ``start`` to ``stop`` of each batch of ``runs`` to ``partial``; False (and
    nothing added) unless every row is timed and every measure a plain decimal on a grid
    a float holds (the list path handles the rest)."""
    measures = len(partial.spec.measures)
    seconds: list[Any] = []
    groups: list[Any] = []
    arrivals: list[Any] = []
    texts: list[list[str]] = [[] for _ in range(measures)]
    for batch, start, stop in runs:
        for n, column in enumerate(batch.columns):
            part = _rows_text(column, start, stop, len(batch))
            if part is None:
                return False
            texts[n].append(part)
        seconds.extend(batch.seconds[start:stop])
        groups.extend(batch.groups[start:stop])
        arrivals.append(np.frombuffer(batch.arrivals, np.float64)[start:stop])
    rows = len(seconds)
    if not rows:
        return True
    if None in seconds:
        return False
    columns = [_column(SEPARATOR.join(parts), rows) for parts in texts]
    if None in columns:
        return False
    cells = _Cells(partial, np.array(seconds, np.int64), groups, np.concatenate(arrivals))
    stats: list[list[Stat]] = []
    for parsed in columns:
        assert parsed is not None
        found = cells.stats(*parsed)
        if found is None:
            return False
        stats.append(found)
    cells.add_to(partial, [m.name for m in partial.spec.measures], stats)
    return True


def _rows_text(column: Any, start: int, stop: int, length: int) -> str | None:
    """Rows ``start`` to ``stop`` of a kept column (its values joined by the separator),
    still joined; None for a column kept as a list or not ASCII (offsets are bytes)."""
    if not isinstance(column, str) or not column.isascii():
        return None
    if start == 0 and stop == length:
        return column
    ends = np.flatnonzero(np.frombuffer(column.encode(), np.uint8) == _SEP)
    begin = 0 if start == 0 else int(ends[start - 1]) + 1
    end = len(column) if stop == length else int(ends[stop - 1])
    return column[begin:end]


def _column(text: str, rows: int) -> tuple[np.ndarray, np.ndarray, str, np.ndarray] | None:
    """(values, digits after the point, the text, each row's first character) of a
    measure's rows joined, or None unless each is a plain JSON number (no missing one)."""
    if not _PLAIN(text):
        return None
    try:
        values = np.array(orjson.loads("[" + text.replace(SEPARATOR, ",") + "]"), np.float64)
    except (orjson.JSONDecodeError, ValueError):  # ("1-2", "", "1..2", a missing value)
        return None
    if values.shape != (rows,):
        return None
    raw = np.frombuffer(text.encode(), np.uint8)
    ends = np.append(np.flatnonzero(raw == _SEP), len(raw))
    begins = np.empty_like(ends)
    begins[0], begins[1:] = 0, ends[:-1] + 1
    dots = np.flatnonzero(raw == _DOT)
    # a row's dot, if any, is the first at or after its first character (JSON: one at most)
    at = np.searchsorted(dots, begins)
    dot = np.append(dots, len(raw))[at]
    places = np.where(dot < ends, ends - dot - 1, 0)
    return values, places, text, begins


class _Cells:
    """The rows' cells: which cell each row joins (or is late in), sorted by cell."""

    def __init__(
        self, partial: Partial, seconds: np.ndarray, groups: list[Any], arrivals: np.ndarray
    ) -> None:
        window = partial.spec.window_s
        starts = seconds - seconds % window
        # groups are shared objects (kept from the spec's memo): numbered by identity, cells
        # of equal groups made from distinct objects are merged when added
        ids = list(map(id, groups))
        distinct = dict(zip(ids, groups, strict=True))
        numbers = dict(zip(distinct, range(len(distinct)), strict=True))
        self.groups = list(distinct.values())
        codes = np.fromiter(map(numbers.__getitem__, ids), np.int64, len(ids))
        first = int(starts.min())
        windows = (starts - first) // window
        cell_ids, cell_of = _numbered(windows * len(numbers) + codes)
        self.keys = [
            (first + window * (c // len(numbers)), self.groups[c % len(numbers)])
            for c in cell_ids.tolist()
        ]
        late = arrivals > starts + (window + partial.lateness_s)  # (NaN compares false)
        cells = len(cell_ids)
        self.late = np.bincount(cell_of[late], minlength=cells)
        counted = np.flatnonzero(~late)
        # rows by cell, in their order (a radix sort when the cells' numbers fit 16 bits)
        narrow = cell_of.astype(np.uint16) if cells <= 1 << 16 else cell_of
        order = counted[np.argsort(narrow[counted], kind="stable")]
        self.order = order
        self.cell_of = cell_of[order]
        self.counts = np.bincount(self.cell_of, minlength=cells)
        self.present = np.flatnonzero(self.counts)  # cells with a row that is not late
        self.bounds = np.concatenate(([0], np.cumsum(self.counts[self.present])))

    def stats(
        self, values: np.ndarray, places: np.ndarray, text: str, begins: np.ndarray
    ) -> list[Stat] | None:
        """Each present cell's statistics of one measure; None off the exact grid."""
        if not len(self.present):
            return []
        order, starts = self.order, self.bounds[:-1]
        mine = values[order]
        digits = np.maximum.reduceat(places[order], starts)
        biggest = np.maximum.reduceat(np.abs(mine), starts)
        counts = self.counts[self.present]
        if digits.max() > _MAX_PLACES or (counts * biggest * 10.0**digits >= _LIMIT).any():
            return None
        scale = np.repeat(10.0**digits, counts)
        totals = np.add.reduceat(np.rint(mine * scale).astype(np.int64), starts).tolist()
        lows = _first(mine, starts, counts, np.minimum.reduceat(mine, starts))
        highs = _first(mine, starts, counts, np.maximum.reduceat(mine, starts))
        lows, highs = order[lows], order[highs]  # the rows, in the text's order
        ends = np.append(begins[1:] - 1, len(text))
        low_texts = _texts(text, begins[lows].tolist(), ends[lows].tolist())
        high_texts = _texts(text, begins[highs].tolist(), ends[highs].tolist())
        positive, negative, zeros = self._bins(mine, counts)
        found = []
        for n, (total, exponent, low, high) in enumerate(
            zip(totals, digits.tolist(), low_texts, high_texts, strict=True)
        ):
            found.append(
                Stat(
                    count=int(counts[n]),
                    total=Decimal(total).scaleb(-exponent),
                    low=Decimal(low),
                    high=Decimal(high),
                    positive=positive[n],
                    negative=negative[n],
                    zeros=zeros[n],
                )
            )
        return found

    def _bins(
        self, mine: np.ndarray, counts: np.ndarray
    ) -> tuple[list[dict[int, int]], list[dict[int, int]], list[int]]:
        """Each present cell's positive and negative bins (key -> count) and zero count."""
        cell = np.repeat(np.arange(len(counts)), counts)
        above, below = mine > _TINY, mine < -_TINY
        zeros = np.bincount(cell[~(above | below)], minlength=len(counts)).tolist()
        positive = _bin_counts(cell[above], mine[above], len(counts))
        negative = _bin_counts(cell[below], -mine[below], len(counts))
        return positive, negative, zeros

    def add_to(self, partial: Partial, names: list[str], stats: list[list[Stat]]) -> None:
        cells = partial.cells
        present = self.present.tolist()
        settled: list[dict[str, Stat]] = [{} for _ in self.keys]
        for name, column in zip(names, stats, strict=True):
            for n, stat in zip(present, column, strict=True):
                settled[n][name] = stat
        for key, count, late, found in zip(
            self.keys, self.counts.tolist(), self.late.tolist(), settled, strict=True
        ):
            cell = Cell(count, late, found)
            known: Cell | None = cells.get(key)
            if known is None:
                cells[key] = cell
            else:
                known.merge(cell)


def _first(values: np.ndarray, starts: np.ndarray, counts: np.ndarray, each: np.ndarray) -> Any:
    """Index (in ``values``) of the first row of each cell equal to its cell's ``each``."""
    hits = np.flatnonzero(values == np.repeat(each, counts))
    return hits[np.searchsorted(hits, starts)]


def _texts(text: str, begins: list[int], ends: list[int]) -> list[str]:
    return [text[b:e] for b, e in zip(begins, ends, strict=True)]


def _numbered(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct keys, ascending; each key's index among them) of non-negative keys:
    counted in a table when they are few and small (``np.unique`` sorts: 3x the cost)."""
    top = int(keys.max()) + 1 if len(keys) else 0
    if top > _TABLE:
        found: tuple[np.ndarray, np.ndarray] = np.unique(keys, return_inverse=True)
        return found
    distinct = np.flatnonzero(np.bincount(keys, minlength=top))
    index = np.zeros(top, np.int64)
    index[distinct] = np.arange(len(distinct))
    return distinct, index[keys]


def _bin_counts(cell: np.ndarray, magnitudes: np.ndarray, cells: int) -> list[dict[int, int]]:
    """Each cell's bin key -> count for positive magnitudes (the mapping's keys)."""
    found: list[dict[int, int]] = [{} for _ in range(cells)]
    if not len(magnitudes):
        return found
    keys = np.ceil(np.log2(magnitudes) * _MULTIPLIER).astype(np.int64)
    low = int(keys.min())
    width = int(keys.max()) - low + 1
    combined = cell * width + (keys - low)
    if cells * width <= _TABLE:
        tally = np.bincount(combined, minlength=cells * width)
        pairs = np.flatnonzero(tally)
        weights = tally[pairs]
    else:
        pairs, weights = np.unique(combined, return_counts=True)
    owners = (pairs // width).tolist()
    bins = (pairs % width + low).tolist()
    bounds = np.searchsorted(pairs // width, np.arange(cells + 1)).tolist()
    weight = weights.tolist()
    for n in set(owners):
        begin, end = bounds[n], bounds[n + 1]
        found[n] = dict(zip(bins[begin:end], weight[begin:end], strict=True))
    return found
