"""A batch's facts kept in columns read back as each item's own facts, for any segment cut."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import orjson
import pytest

from consumer.insights import memo as memos
from consumer.insights.cells import Partial
from consumer.insights.kept import SEPARATOR, BatchFacts, Rows, add_segment, batch_facts
from consumer.insights.windows import InsightSpec, Measure, field
from consumer.pipeline.pieces import Entry, Piece, Run, split_pieces
from producer.schemas import records
from tests.unit.consumer.insights.test_windows import as_encoded, usual_item

SPEC = InsightSpec(
    300,
    "at",
    ("link",),
    (field("v"), Measure("doubled", lambda i: Decimal(2) if "v" in i else None), field("w")),
)
TIMES = ["2026-12-03T10:00:00.250Z", "2026-12-03T10:07:00Z", "2026-12-03T10:00:00+02:00", "x"]
NUMBERS: list[Any] = [{"N": "1.5"}, {"N": "0"}, {"N": "-2.25"}, {"N": "x"}, None]


def odd_item(rng: random.Random) -> dict[str, Any]:
    found: dict[str, Any] = {"link": {"S": rng.choice(["L1", "L2", "L3"])}}
    if rng.random() < 0.9:
        found["at"] = {"S": rng.choice(TIMES)}
    for name in ("v", "w"):
        number = rng.choice(NUMBERS)
        if number is not None:
            found[name] = number
    return found


def stream_of(rng: random.Random) -> tuple[list[Entry], list[tuple[Any, float | None]]]:
    """Entries of several batches in stream order, dead letters among them; and each stored
    item's (fact, arrival) read one by one, by entry."""
    entries: list[Entry] = []
    expected: list[tuple[Any, float | None]] = []
    sequence = 100
    for _ in range(6):
        items, positions, arrivals, batch_entries = [], [], [], []
        for _ in range(rng.randint(1, 40)):
            sequence += rng.randint(1, 3)
            position = (str(sequence), 0)
            if rng.random() < 0.1:
                batch_entries.append(Entry(position, "", b"", letter=True))
                continue
            item = odd_item(rng)
            # unknown, on time, or (for 10:00's window, late after 11:05) late
            arrival = rng.choice([None, 1_796_292_000.0 + sequence, 1_796_300_000.0 + sequence])
            entry = Entry(position, "", b"")
            items.append(item)
            positions.append(entry.position)
            arrivals.append(arrival)
            batch_entries.append(entry)
            second, group, values = SPEC.fact_of(item)
            # a computed measure's Decimal is kept as its text: Stat reads either alike
            texts = tuple(None if v is None else str(v) for v in values)
            expected.append(((second, group, texts), arrival))
        if items:
            kept = batch_facts(SPEC, items, positions, arrivals)
            for entry in batch_entries:
                if not entry.letter:
                    entry.fact = kept
        entries.extend(batch_entries)
    return entries, expected


def summary(partial: Partial) -> tuple[Any, ...]:
    """All a partial says: untimed, and each cell's count, late and statistics' encoding."""
    cells = {
        key: (cell.count, cell.late, {n: s.encode() for n, s in cell.stats.items()})
        for key, cell in partial.cells.items()
    }
    return partial.untimed, cells


def of_segment(entries: Sequence[Piece]) -> Partial:
    partial = Partial(SPEC)
    add_segment(partial, entries)
    return partial


def of_facts(facts: list[tuple[Any, float | None]]) -> Partial:
    partial = Partial(SPEC)
    partial.add_facts(facts)
    return partial


@pytest.mark.parametrize("seed", range(6))
def test_any_cut_of_the_stream_counts_each_items_fact_once(seed: int) -> None:
    rng = random.Random(seed)
    entries, expected = stream_of(rng)
    stored = [n for n, entry in enumerate(entries) if entry.fact is not None]
    for _ in range(30):
        first, last = sorted(rng.sample(range(len(entries) + 1), 2))
        inside = [stored.index(n) for n in stored if first <= n < last]
        assert summary(of_segment(entries[first:last])) == summary(
            of_facts([expected[i] for i in inside])
        )


def test_a_segments_partial_equals_the_one_of_its_items_read_one_by_one() -> None:
    entries, expected = stream_of(random.Random(9))
    partial = of_segment(entries)
    assert partial.cells and partial.untimed
    assert any(cell.late for cell in partial.cells.values())
    assert summary(partial) == summary(of_facts(expected))


def test_entries_with_facts_of_their_own_count_beside_a_batchs() -> None:
    entries, expected = stream_of(random.Random(4))
    for entry, (fact, arrival) in zip(
        [e for e in entries if e.fact is not None][:5], expected[:5], strict=True
    ):
        entry.fact, entry.arrival = fact, arrival
    assert summary(of_segment(entries)) == summary(of_facts(expected))


def test_a_value_holding_the_separator_is_kept_as_it_is() -> None:
    spec = InsightSpec(60, "at", ("link",), (Measure("odd", lambda i: i["odd"]),))
    items: list[Any] = [{"at": {"S": "2026-12-03T10:00:00Z"}, "odd": "1\x1f2"}, {"odd": None}]
    kept: BatchFacts = batch_facts(spec, items, [("1", 0), ("2", 0)], [None, 5.0])
    assert kept.columns == [["1\x1f2", None]]
    ours, theirs = Partial(spec), Partial(spec)
    rows = Rows.empty(1)
    rows.extend(kept, 0, 2)
    rows.add_to(ours)
    theirs.add_all(zip(items, [None, 5.0], strict=True))
    assert summary(ours) == summary(theirs) and ours.untimed == 1


def test_an_entry_not_in_its_batchs_facts_is_an_error() -> None:
    kept = batch_facts(SPEC, [odd_item(random.Random(1))], [("5", 0)], [None])
    with pytest.raises(ValueError, match="not in its batch"):
        add_segment(Partial(SPEC), [Entry(("6", 0), "", b"", fact=kept)])


def as_runs(entries: list[Entry]) -> list[Piece]:
    """The same stream with each stretch of one batch's stored items as a Run (the letters
    between stay entries): what a worker without the archive's lines holds."""
    pieces: list[Piece] = []
    for fact, stretch in itertools.groupby(entries, key=lambda e: e.fact):
        listed = list(stretch)
        if fact is None:
            pieces.extend(listed)
            continue
        start = fact.positions.index(listed[0].position)
        pieces.append(Run(fact.positions, start, start + len(listed), fact))
    return pieces


@pytest.mark.parametrize("seed", range(6))
def test_runs_cut_anywhere_count_their_items_as_their_entries_do(seed: int) -> None:
    rng = random.Random(seed)
    entries, _ = stream_of(rng)
    pieces = as_runs(entries)
    assert any(type(p) is Run and p.count > 1 for p in pieces)
    for _ in range(30):
        first, last = sorted(rng.sample(range(len(entries)), 2))
        after = split_pieces(pieces, entries[first - 1].position)[1] if first else pieces
        inside = split_pieces(after, entries[last].position)[0]
        assert summary(of_segment(inside)) == summary(of_segment(entries[first : last + 1]))


@pytest.mark.parametrize("memo", [65_536, 3], ids=["memo", "memo-cleared"])
@pytest.mark.parametrize("spec_name", ["telemax", "two-measures"])
def test_an_encoders_batch_keeps_the_facts_its_items_would(
    spec_name: str, memo: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of entries one encoder wrote keeps each measure's values joined straight from
    their bytes: the same columns, seconds and groups as the items they stand for give — and
    where a value holds the separator, the columns a value at a time, as for items. (With
    memos of groups and times that fill and are cleared, too.)"""
    monkeypatch.setattr(memos, "MEMO_SIZE", memo)
    rng = random.Random(5)
    batches: list[tuple[Any, list[Any]]]
    item_batches: list[list[Any]]
    if spec_name == "telemax":
        from consumer.feeds import FEEDS
        from consumer.feeds import telemax as handler

        spec = FEEDS["telemax"].insights
        assert spec is not None
        readings = [orjson.dumps(r) for r, _ in records("telemax", 200, seed=4)]
        batches = [(readings, [handler.encode(d) for d in readings])]
        item_batches = [[handler.to_item(d) for d in readings]]
    else:
        spec = InsightSpec(300, "at", ("link",), (field("v"), field("w")))
        shapes: dict[Any, Any] = {}
        batches, item_batches = [], []
        for trial in range(30):
            batch = [usual_item(rng) for _ in range(rng.randrange(1, 40))]
            for one in batch:
                one.pop("extra")
            if trial % 5 == 4:  # a number that holds the separator (DynamoDB would refuse it)
                batch[rng.randrange(len(batch))]["v"] = {"N": "1" + SEPARATOR + "2"}
            batches.append((batch, [as_encoded(one, shapes) for one in batch]))
            item_batches.append(batch)
    for (_, entries), items in zip(batches, item_batches, strict=True):
        assert all(type(e) is tuple for e in entries)
        positions = [(str(100 + n), 0) for n in range(len(items))]
        arrivals = [rng.choice([None, 1_796_292_000.0 + n]) for n in range(len(items))]
        ours = batch_facts(spec, entries, positions, arrivals)
        theirs = batch_facts(spec, items, positions, arrivals)
        assert (ours.seconds, ours.groups, ours.columns) == (
            theirs.seconds,
            theirs.groups,
            theirs.columns,
        )
        joined = spec.encoded_columns_joined(entries, SEPARATOR)
        assert joined is not None
        if all(type(column) is str for column in theirs.columns):  # (no separator held)
            assert joined[2] == theirs.columns  # the joined path, not the fallback
