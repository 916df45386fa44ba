"""What the insights keep of a batch until its segments commit: its facts in columns, a few
objects a batch instead of several a record (pure).

Why columns: a segment holds up to 131,072 records a shard (8 MiB at 64 bytes an entry) until
it commits, and a tuple of facts kept a record — with its values' strings, scattered among the
worker's short-lived objects — slowed the whole worker, not only the insights: on 64 shards
the insights worker cost 1.48x ours in the steady window with each record's fact kept, 1.06x
with the same facts made and dropped (`python -m tests.bench --records 200000 --shards 64
--only ours --only insights`, 2026-12-04). Here a batch keeps one list of references per
column (event seconds and groups are shared objects already), each measure's values joined
into one string, and the arrival times in an array.

Each stored item's :class:`~consumer.pipeline.pieces.Entry` points at its batch's
:class:`BatchFacts` (without the archive's lines, one :class:`~consumer.pipeline.pieces.Run`
stands for the batch's items); a segment's entries of one batch are consecutive items of it (a
segment is a run of consecutive positions), so :func:`add_segment` finds where they start by
their first position and aggregates that many rows as columns.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import math
import operator
from array import array
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from consumer.insights.cells import Partial
from consumer.insights.windows import Attributes, Fact, Group, InsightSpec
from consumer.pipeline.pieces import Position, order
from kernel.handlers import Encoded

_fact_of = operator.attrgetter("fact")
SEPARATOR = "\x1f"  # never in a number's text: DynamoDB refuses such an N attribute


@dataclasses.dataclass(slots=True, eq=False)
class BatchFacts:
    """One batch's stored items' facts, in the batch's order (row ``i``: ``positions[i]``)."""

    positions: Sequence[Position]  # the stored items' positions, in stream order (positions_of)
    seconds: list[int | None]
    groups: list[Group]
    # each measure's values joined by SEPARATOR ("" for a missing one); a list where a value
    # holds the separator (not a number: it would count as unreadable all the same)
    columns: list[str | list[Decimal | str | None]]
    arrivals: array[float]  # NaN: unknown (never late, as None)

    def __len__(self) -> int:
        return len(self.positions)


@dataclasses.dataclass(slots=True)
class Rows:
    """Rows of one or more batches' facts, gathered to be aggregated at once (a segment's:
    a cell's rows of every batch picked together, not a batch at a time — at 125 devices a
    shard, 4 rows a cell a batch of 500: a segment's commit 0.68 -> 0.50 µs a reading of its
    grouping, 50,000 readings a segment, in process)."""

    seconds: list[int | None]
    groups: list[Group]
    columns: list[list[Decimal | str | None]]
    arrivals: array[float]

    @classmethod
    def empty(cls, measures: int) -> Rows:
        return cls([], [], [[] for _ in range(measures)], array("d"))

    def extend(self, batch: BatchFacts, start: int, stop: int) -> None:
        self.seconds += batch.seconds[start:stop]
        self.groups += batch.groups[start:stop]
        self.arrivals += batch.arrivals[start:stop]
        for into, column in zip(self.columns, batch.columns, strict=True):
            into += _rows(column, start, stop)

    def add_to(self, partial: Partial) -> None:
        if self.seconds:
            partial.add_columns(self.seconds, self.groups, self.columns, self.arrivals)


def _rows(column: str | list[Decimal | str | None], start: int, stop: int) -> list[Any]:
    """Rows ``start`` to ``stop`` of a kept column, a missing value None (a column without
    one as it is split: no pass a value to look for it, nor, when its cells settle, to drop
    it: a segment's commit 1.29-1.34 -> 1.24-1.26 µs a reading at 8 devices a shard, 2.31-2.35
    -> 2.26 at 125, `python -m tests.bench.insights_cost`, alternated, 2026-12-05)."""
    if not isinstance(column, str):
        return column[start:stop]
    values = column.split(SEPARATOR)[start:stop]
    return [v or None for v in values] if "" in values else values


def batch_facts(
    spec: InsightSpec,
    items: Sequence[Attributes | Encoded],
    positions: Sequence[Position],
    arrivals: Sequence[float | None],
) -> BatchFacts:
    joined = spec.encoded_columns_joined(items, SEPARATOR)
    kept: list[str | list[Decimal | str | None]] = []
    if joined is not None and all(c.count(SEPARATOR) == len(items) - 1 for c in joined[2]):
        # an encoder's batch: each column joined from its bytes and decoded once, not a
        # decode, a type check and a join a value (a stored batch, `python -m
        # tests.bench.insights_cost`, alternated: 0.97-1.04 -> 0.82-0.85 µs a reading)
        seconds, groups = joined[0], joined[1]
        kept.extend(joined[2])
        return BatchFacts(positions, seconds, groups, kept, _arrivals(arrivals))
    seconds, groups, columns = spec.columns_of(items)
    for column in columns:
        # (a number attribute's value is its string already: most columns need no str())
        texts = ["" if v is None else v if type(v) is str else str(v) for v in column]
        text = SEPARATOR.join(texts)
        kept.append(text if text.count(SEPARATOR) == max(len(texts) - 1, 0) else column)
    return BatchFacts(positions, seconds, groups, kept, _arrivals(arrivals))


def _arrivals(arrivals: Sequence[float | None]) -> array[float]:
    if isinstance(arrivals, array):  # every one known (an array holds no None)
        return arrivals
    nan = math.nan
    return array("d", [nan if a is None else a for a in arrivals])


def add_segment(partial: Partial, entries: Sequence[Any]) -> None:
    """Add every stored item of a segment's entries to ``partial`` (a dead letter's entry
    has no fact). An entry's ``fact`` is its batch's :class:`BatchFacts` — the entries of
    one batch are read as columns, from where the first of them is —, or a fact of its own
    (``InsightSpec.fact_of``, with the entry's ``arrival``)."""
    runs: dict[int, list[Any]] = {}  # id(batch) -> [batch, its first entry here, entries here]
    own: list[tuple[Fact, float | None]] = []
    # entries of one batch come in runs (a dead letter may split one): a run at a time
    for fact, run_entries in itertools.groupby(entries, key=_fact_of):
        if fact is None:
            continue
        if not isinstance(fact, BatchFacts):
            own.extend((entry.fact, entry.arrival) for entry in run_entries)
            continue
        listed = list(run_entries)
        count = sum(entry.count for entry in listed)  # an Entry is one, a Run its items
        run = runs.get(id(fact))
        if run is None:
            runs[id(fact)] = [fact, listed[0], count]
        else:
            run[2] += count
    rows = Rows.empty(len(partial.spec.measures))
    for batch, first, count in runs.values():
        start = bisect.bisect_left(batch.positions, order(first.position), key=order)
        if start >= len(batch) or batch.positions[start] != first.position:
            raise ValueError(f"entry {first.position} is not in its batch's facts")
        rows.extend(batch, start, start + count)
    rows.add_to(partial)
    if own:
        partial.add_facts(own)
