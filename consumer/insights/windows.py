"""Event-time tumbling windows: what a feed aggregates, and how a record's facts are read
(pure; no I/O).

A feed's :class:`InsightSpec` says when a record happened (its own timestamp, not its arrival),
how long a window is (one minute to one day), which fields group it (a pickup zone, a link),
and which numeric measures to aggregate; it reads those facts of an item, or of a batch's
items a column at a time. Records are added to a :class:`~consumer.insights.cells.Partial`.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from consumer.insights import memo
from consumer.insights.memo import each_known
from consumer.insights.times import epoch_second, seconds_of, seconds_of_bytes
from kernel.handlers import Encoded, Fields, as_item, as_items

MIN_WINDOW_S, MAX_WINDOW_S = 60, 86_400

Attributes = Mapping[str, Any]  # a DynamoDB item: attribute name -> {"S": …} | {"N": …} | …
Group = tuple[tuple[str, Any], ...]  # ((field, value), …) in the spec's order
# (event second or None: no usable time; group; each measure's value or None)
Fact = tuple[int | None, Group, tuple[Decimal | str | None, ...]]


@dataclasses.dataclass(frozen=True)
class Measure:
    """A named numeric value of an item (None: the item does not have it)."""

    name: str
    value: Callable[[Attributes], Decimal | None]
    # set when the value is the item's number attribute of that name: then the aggregation
    # keeps the attribute's string and parses it with the cell's other values, in one pass
    attribute: str | None = None

    def raw(self, item: Attributes) -> Decimal | str | None:
        """The value as the aggregation keeps it until its cell is read."""
        if self.attribute is None:
            return self.value(item)
        number = item.get(self.attribute)
        return number.get("N") if number else None


@dataclasses.dataclass(frozen=True)
class InsightSpec:
    window_s: int
    time_field: str  # an ISO-8601 string attribute of the item: when the record happened
    group_fields: tuple[str, ...]
    measures: tuple[Measure, ...]

    def __post_init__(self) -> None:
        if not MIN_WINDOW_S <= self.window_s <= MAX_WINDOW_S:
            raise ValueError(f"window_s must be {MIN_WINDOW_S}..{MAX_WINDOW_S} seconds")

    def event_second(self, item: Attributes) -> int | None:
        """When the record happened, in whole epoch seconds (None: no usable time). Whole
        seconds are enough: windows are whole seconds long, so the fraction never moves a
        record to another window."""
        attribute = item.get(self.time_field)
        text = attribute.get("S") if attribute else None
        return None if text is None else epoch_second(text)

    def group_of(self, item: Attributes) -> Group:
        return tuple([(name, plain(item.get(name))) for name in self.group_fields])

    def fact_of(self, item: Attributes) -> Fact:
        """What the aggregation needs of an item: its event second, its group and each
        measure's value (a number attribute's string as it is: parsed with its cell's other
        values). A worker keeps a batch's in columns (:mod:`consumer.insights.kept`)."""
        (second,), (group,), columns = self.columns_of((item,))
        return second, group, tuple(column[0] for column in columns)

    def columns_of(
        self, items: Sequence[Attributes | Encoded]
    ) -> tuple[list[int | None], list[Group], list[list[Decimal | str | None]]]:
        """The facts of a batch's items as columns — event seconds, groups, each measure's
        values —, a few passes over the batch instead of a call per item (3.6 µs a TELEMAX
        reading one by one, measured in the worker), the usual times and group values read
        from memos, and one group tuple per group value, shared by its records. Items an
        encoder wrote (``kernel.handlers.Encoded``) are read from their values."""
        if tuple in map(type, items):
            encoded = self._columns_encoded(items)
            if encoded is not None:
                return encoded
            items = as_items(items)  # type: ignore[arg-type]
        return self._columns_of_items(items)  # type: ignore[arg-type]

    def _columns_of_items(
        self, items: Sequence[Attributes]
    ) -> tuple[list[int | None], list[Group], list[list[Decimal | str | None]]]:
        at_once = self._columns_at_once(items)
        if at_once is not None:
            return at_once
        name = self.time_field
        seconds = seconds_of([a.get("S") if (a := item.get(name)) else None for item in items])
        columns: list[list[Decimal | str | None]] = [
            [(n.get("N") if (n := item.get(field)) else None) for item in items]
            if field is not None
            else [value(item) for item in items]
            for field, value in self._plan[1]
        ]
        return seconds, self._groups(items), columns

    def _columns_at_once(
        self, items: Sequence[Attributes]
    ) -> tuple[list[int | None], list[Group], list[list[Decimal | str | None]]] | None:
        """:meth:`columns_of` for a batch whose every item has the usual shape — its time and
        its one group field strings, each measure a number attribute —, each item touched
        once (the attributes picked in C, then the columns turned); None when one has not,
        and the batch is read column by column. (A pass per column over a GetRecords batch
        of 10,000 items, each pass missing the cache, cost 13 % of the insights worker's
        steady window at 4 shards.)"""
        picks = self._picks
        if picks is None or not items:
            return None
        try:
            rows = list(map(picks, items))
            times, group_values, *measured = zip(*rows, strict=True)
            texts: list[str | None] = list(map(_S, times))
            group_texts: list[Any] = list(map(_S, group_values))
            columns: list[list[Decimal | str | None]] = [list(map(_N, c)) for c in measured]
        except (KeyError, TypeError):  # an attribute missing, of another type, or None
            return None
        return seconds_of(texts), self._groups_of(group_texts, items), columns

    def _columns_encoded(
        self, entries: Sequence[Any]
    ) -> tuple[list[int | None], list[Group], list[list[Decimal | str | None]]] | None:
        """:meth:`columns_of` for a batch of entries one encoder wrote, read from their values
        — the same texts its items would hold, without making them (the insights would
        otherwise pay for the dicts the records table no longer needs) —; None for a batch
        of both kinds, or fields that do not hold the usual shape's attributes."""
        found = self._encoded_rows(entries)
        if found is None:
            return None
        seconds, groups, measured = found
        columns: list[list[Decimal | str | None]] = [[v.decode() for v in c] for c in measured]
        return seconds, groups, columns

    def encoded_columns_joined(
        self, entries: Sequence[Any], separator: str
    ) -> tuple[list[int | None], list[Group], list[str]] | None:
        """:meth:`columns_of` of a batch of entries one encoder wrote (None for any other
        batch), each measure's column its values joined by ``separator``: the bytes joined and
        decoded once a column, not a value at a time (what the insights keep of a batch,
        :mod:`consumer.insights.kept`; an encoder's number is never missing)."""
        found = self._encoded_rows(entries)
        if found is None:
            return None
        seconds, groups, measured = found
        between = separator.encode()
        return seconds, groups, [between.join(column).decode() for column in measured]

    def _encoded_rows(
        self, entries: Sequence[Any]
    ) -> tuple[list[int | None], list[Group], list[list[bytes]]] | None:
        """Event seconds, groups and each measure's values as the encoder wrote them (bytes)."""
        try:
            shapes = list(map(_FIELDS_OF, entries))
        except KeyError:  # an item among them
            return None
        # one encoder's: its fields are one object (count compares by identity first; a
        # set of them hashed each tuple of tuples, 0.08 µs a record)
        if not shapes or shapes.count(shapes[0]) != len(shapes):
            return None
        picks = self._encoded_picks(shapes[0])
        if picks is None:
            return None
        # a column at a time, each picked in C (a tuple a row, then turned: 0.10 -> 0.06 µs)
        values = list(map(_VALUES_OF, entries))
        times, group_values, *measured = [list(map(pick, values)) for pick in picks]
        return seconds_of_bytes(times), self._groups_of_bytes(group_values), measured

    def _encoded_picks(
        self, fields: Fields
    ) -> tuple[Callable[[tuple[bytes, ...]], bytes], ...] | None:
        """What :meth:`_picks` picks, from an encoder's values (their indices in ``fields``),
        a getter a column: the time and the one group field strings, each measure a number.
        None otherwise."""
        known = self._encoded_plans
        if fields not in known:
            where = {name: (index, kind) for index, (name, kind) in enumerate(fields)}
            one, plan = self._plan
            wanted = [(self.time_field, "S"), (one, "S"), *((a, "N") for a, _ in plan)]
            found = [where.get(name) if name is not None else None for name, _ in wanted]
            indices = [
                f[0] for f, (_, kind) in zip(found, wanted, strict=True) if f and f[1] == kind
            ]
            usual = len(indices) == len(wanted)
            known[fields] = tuple(map(operator.itemgetter, indices)) if usual else None
        return known[fields]

    @functools.cached_property
    def _encoded_plans(
        self,
    ) -> dict[Fields, tuple[Callable[[tuple[bytes, ...]], bytes], ...] | None]:
        return {}

    @functools.cached_property
    def _picks(self) -> Callable[[Attributes], tuple[Any, ...]] | None:
        """The usual shape's attributes of an item in one call (None: no usual shape here)."""
        one, plan = self._plan
        fields = [attribute for attribute, _ in plan]
        if one is None or None in fields:
            return None
        return operator.itemgetter(self.time_field, one, *fields)

    def _groups(self, items: Sequence[Attributes]) -> list[Group]:
        one = self._plan[0]
        if one is None:
            return [self.group_of(item) for item in items]
        known = self._group_memo
        found: list[Any] = [
            known.get(a.get("S"), _MISSING) if (a := item.get(one)) else _MISSING for item in items
        ]
        return self._filled(found, items)

    def _groups_of(self, texts: list[Any], items: Sequence[Attributes]) -> list[Group]:
        """The groups of items whose one group field is the string ``texts[i]``."""
        known = self._group_memo
        return self._filled([known.get(text, _MISSING) for text in texts], items)

    def _groups_of_bytes(self, values: Sequence[bytes]) -> list[Group]:
        """The groups of encoded entries whose one group field's value is ``values[i]`` (its
        UTF-8 bytes): looked up as bytes in C (0.08 → 0.03 µs a record), a value not seen
        before through the memo of texts."""
        found = each_known(values, self._group_memo_of_bytes, self._groups_of_new)
        assert found is not None  # (every value makes a group)
        return found

    def _groups_of_new(self, values: set[bytes]) -> dict[bytes, Group]:
        """An encoder's group field is a string: its group is its text's (the one the memo
        of texts holds, when it does)."""
        one, texts = self._plan[0], self._group_memo
        assert one is not None  # (else no encoder's picks: _encoded_picks)
        made: dict[bytes, Group] = {}
        for value in values:
            text = value.decode()
            made[value] = texts.get(text) or ((one, text),)
        return made

    @functools.cached_property
    def _group_memo_of_bytes(self) -> dict[bytes, Group]:
        return {}

    def _filled(self, found: list[Any], items: Sequence[Attributes]) -> list[Group]:
        """``found`` with each group the memo did not know made (and memoised)."""
        one = self._plan[0]
        assert one is not None
        known = self._group_memo
        if _MISSING in found:
            for index, group in enumerate(found):
                if group is _MISSING:
                    attribute = as_item(items[index]).get(one)  # type: ignore[arg-type]
                    found[index] = group = ((one, plain(attribute)),)
                    text = attribute.get("S") if attribute else None
                    if text is not None:
                        if len(known) >= memo.MEMO_SIZE:
                            known.clear()
                        known[text] = group
        return found

    @functools.cached_property
    def _group_memo(self) -> dict[str, Group]:
        """The single grouping field's string value -> its group (bounded)."""
        return {}

    @functools.cached_property
    def _plan(
        self,
    ) -> tuple[str | None, tuple[tuple[str | None, Callable[[Attributes], Decimal | None]], ...]]:
        """The single grouping field (None: several) and (attribute, value) per measure."""
        one = self.group_fields[0] if len(self.group_fields) == 1 else None
        return one, tuple((m.attribute, m.value) for m in self.measures)


_MISSING: Any = object()
_S, _N = operator.itemgetter("S"), operator.itemgetter("N")
_VALUES_OF, _FIELDS_OF = operator.itemgetter(2), operator.itemgetter(3)  # of an Encoded


def field(name: str) -> Measure:
    """The item's number attribute ``name``."""
    return Measure(name, lambda item: number_of(item, name), attribute=name)


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
    text = attribute.get("S")  # (an attribute value has one type: S first, the usual key)
    if text is not None:
        return text
    if "N" in attribute:
        value = Decimal(attribute["N"])
        return int(value) if value == value.to_integral_value() else str(value)
    return str(attribute)
