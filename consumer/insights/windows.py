"""Event-time tumbling windows: what a feed aggregates, and a partial aggregate of records
(pure; no I/O).

A feed's :class:`InsightSpec` says when a record happened (its own timestamp, not its arrival),
how long a window is (one minute to one day), which fields group it (a pickup zone, a link),
and which numeric measures to aggregate. Records are added to a :class:`Partial`, one cell per
(window start, group) with a count and a :class:`~consumer.insights.stats.Stat` per measure.
Partials merge exactly (see :mod:`consumer.insights.stats`), in any order: the result over all
shards is the merge of every shard's committed partials.

A record is *late* when it arrived (Kinesis' arrival time, a property of the record, the same
on every read) more than the allowed lateness after its window ended: it is counted in the
window's ``late`` and not aggregated — the same decision on every replay, so exactly once
holds for late records too. It is still stored and archived like any other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from consumer.insights.stats import Stat

MIN_WINDOW_S, MAX_WINDOW_S = 60, 86_400
DEFAULT_LATENESS_S = 3_600

Attributes = Mapping[str, Any]  # a DynamoDB item: attribute name -> {"S": …} | {"N": …} | …
Group = tuple[tuple[str, Any], ...]  # ((field, value), …) in the spec's order
CellKey = tuple[int, Group]  # (window start, epoch seconds; group)


@dataclasses.dataclass(frozen=True)
class Measure:
    """A named numeric value of an item (None: the item does not have it)."""

    name: str
    value: Callable[[Attributes], Decimal | None]


@dataclasses.dataclass(frozen=True)
class InsightSpec:
    window_s: int
    time_field: str  # an ISO-8601 string attribute of the item: when the record happened
    group_fields: tuple[str, ...]
    measures: tuple[Measure, ...]

    def __post_init__(self) -> None:
        if not MIN_WINDOW_S <= self.window_s <= MAX_WINDOW_S:
            raise ValueError(f"window_s must be {MIN_WINDOW_S}..{MAX_WINDOW_S} seconds")

    def event_time(self, item: Attributes) -> float | None:
        attribute = item.get(self.time_field)
        if not attribute or "S" not in attribute:
            return None
        try:
            when = datetime.fromisoformat(attribute["S"])
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp()

    def group_of(self, item: Attributes) -> Group:
        return tuple((name, plain(item.get(name))) for name in self.group_fields)


def field(name: str) -> Measure:
    """The item's number attribute ``name``."""
    return Measure(name, lambda item: number_of(item, name))


def number_of(item: Attributes, name: str) -> Decimal | None:
    attribute = item.get(name)
    if not attribute or "N" not in attribute:
        return None
    try:
        return Decimal(attribute["N"])
    except InvalidOperation:
        return None


def plain(attribute: Mapping[str, Any] | None) -> Any:
    """A group value as JSON shows it: numbers as int or str-decimal, strings as they are."""
    if not attribute:
        return None
    if "N" in attribute:
        value = Decimal(attribute["N"])
        return int(value) if value == value.to_integral_value() else str(value)
    if "S" in attribute:
        return attribute["S"]
    return str(attribute)


@dataclasses.dataclass
class Cell:
    count: int = 0
    late: int = 0
    stats: dict[str, Stat] = dataclasses.field(default_factory=dict)

    def merge(self, other: Cell) -> None:
        self.count += other.count
        self.late += other.late
        for name, stat in other.stats.items():
            self.stats.setdefault(name, Stat()).merge(stat)


@dataclasses.dataclass
class Partial:
    """Cells by (window start, group); ``untimed`` counts items without a usable time."""

    spec: InsightSpec
    lateness_s: float = DEFAULT_LATENESS_S
    cells: dict[CellKey, Cell] = dataclasses.field(default_factory=dict)
    untimed: int = 0

    def add(self, item: Attributes, arrival: float | None) -> None:
        spec = self.spec
        when = spec.event_time(item)
        if when is None:
            self.untimed += 1
            return
        start = int(when // spec.window_s) * spec.window_s
        key = (start, spec.group_of(item))
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = Cell()
        if arrival is not None and arrival > start + spec.window_s + self.lateness_s:
            cell.late += 1
            return
        cell.count += 1
        stats = cell.stats
        for measure in spec.measures:
            value = measure.value(item)
            if value is not None:
                stat = stats.get(measure.name)
                if stat is None:
                    stat = stats[measure.name] = Stat()
                stat.add(value)

    def merge(self, other: Partial) -> None:
        self.untimed += other.untimed
        for key, cell in other.cells.items():
            mine = self.cells.get(key)
            if mine is None:
                mine = self.cells[key] = Cell()
            mine.merge(cell)
