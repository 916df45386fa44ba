"""The entries of a finished batch: with the archive's lines, or bare (the insights alone) —
the same positions, letters and order either way, and the insights' facts of exactly the
stored items."""

from __future__ import annotations

import functools
import math
import random
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from consumer.feeds import FEEDS
from consumer.insights.kept import BatchFacts, batch_facts
from consumer.pipeline import entries
from consumer.pipeline.archive import hour_of
from consumer.pipeline.convert import convert
from consumer.pipeline.entries import entries_of
from consumer.pipeline.pieces import Entry, PackedPositions, Run, one_each
from consumer.pipeline.stage import Progress
from consumer.testing import reading

SPEC = FEEDS["telemax"].insights
assert SPEC is not None
FACTS = functools.partial(batch_facts, SPEC)


def records(count: int, bad: set[int]) -> list[dict[str, Any]]:
    found = []
    for n in range(count):
        data = b"not json" if n in bad else orjson.dumps(reading(f"HW-{n:06d}"))
        found.append(
            {
                "SequenceNumber": str(1000 + n),
                "Data": data,
                "PartitionKey": f"HW-{n:06d}",
                "ApproximateArrivalTimestamp": 1_767_225_600.0 + n,
            }
        )
    return found


def finished(batch: list[dict[str, Any]], durable: set[int] | None, refused: list[int]) -> Progress:
    feed = FEEDS["telemax"]
    converted = convert(batch, feed.to_item, "s", "shardId-0", feed.key_names)
    progress = Progress(converted, list(converted.dead), refused=list(refused))
    count = len(converted.items)
    progress.items_durable([p for p in range(count) if durable is None or p in durable])
    progress.stored = [True] * len(progress.letters)
    return progress


@pytest.mark.parametrize("lines", [True, False])
def test_a_usual_batch_keeps_no_object_a_record(lines: bool) -> None:
    """What a segment holds of a usual batch until it commits — the run's positions, the
    insights' facts — is a few objects a batch: the positions packed, not a tuple and a
    string a record."""
    batch = records(50, set())
    pieces = entries_of(
        finished(batch, None, []), batch, "telemax", "s", "shardId-0", lines=lines, facts=FACTS
    )
    (run,) = pieces
    assert isinstance(run, Run)
    assert isinstance(run.positions, PackedPositions)
    assert run.fact.positions is run.positions
    assert list(run.positions) == [(r["SequenceNumber"], 0) for r in batch]


@pytest.mark.parametrize(
    ("bad", "durable", "refused"),
    [
        (set(), None, []),  # every item stored
        ({2, 5}, None, []),  # dead letters between items
        ({0}, {0, 1, 3, 4, 5}, [2]),  # one refused, one not durable
        (set(), set(), []),  # nothing durable
    ],
)
def test_bare_entries_are_the_lined_entries_without_lines(
    bad: set[int], durable: set[int] | None, refused: list[int]
) -> None:
    batch = records(8, bad)
    progress = finished(batch, durable, refused)
    lined_pieces = entries_of(progress, batch, "telemax", "s", "shardId-0", lines=True, facts=FACTS)
    pieces = entries_of(progress, batch, "telemax", "s", "shardId-0", lines=False, facts=FACTS)
    bare, lined = one_each(pieces), one_each(lined_pieces)
    if bare and not any(e.letter for e in bare):  # no letter to place: one Run for the lot
        assert [type(p) for p in pieces] == [type(p) for p in lined_pieces] == [Run]
    else:
        assert all(type(p) is Entry for p in [*pieces, *lined_pieces])

    assert [(e.position, e.letter) for e in bare] == [(e.position, e.letter) for e in lined]
    assert all(e.line == b"" and e.hour == "" for e in bare)
    stored = [e for e in bare if not e.letter]
    assert all(e.fact is None for e in bare if e.letter)
    if stored:
        facts = stored[0].fact
        assert isinstance(facts, BatchFacts)
        assert all(e.fact is facts for e in stored)
        assert list(facts.positions) == [e.position for e in stored]
        theirs = next(e.fact for e in lined if not e.letter)
        assert (facts.seconds, facts.groups, facts.columns) == (
            theirs.seconds,
            theirs.groups,
            theirs.columns,
        )
        arrivals = {r["SequenceNumber"]: r["ApproximateArrivalTimestamp"] for r in batch}
        assert list(facts.arrivals) == [arrivals[e.position[0]] for e in stored]


@pytest.mark.parametrize("odd", ["all-floats", "int", "datetime", "missing", "None"])
def test_bare_entries_facts_hold_each_records_arrival_known_or_not(odd: str) -> None:
    """Every arrival a float (FastKinesis'): taken as they are; one of another kind among
    them: a number as its float, a datetime as its timestamp, none at all as unknown (NaN)."""
    batch = records(4, set())
    odd_arrival: Any = {
        "int": 1_767_225_601,
        "datetime": datetime.fromtimestamp(1_767_225_601.5, UTC),
        "None": None,
    }.get(odd)
    if odd == "missing":
        del batch[1]["ApproximateArrivalTimestamp"]
    elif odd != "all-floats":
        batch[1]["ApproximateArrivalTimestamp"] = odd_arrival
    progress = finished(batch, None, [])
    (run,) = entries_of(progress, batch, "telemax", "s", "shardId-0", lines=False, facts=FACTS)
    facts = run.fact
    assert isinstance(facts, BatchFacts)
    second = {"all-floats": 1_767_225_601.0, "int": 1_767_225_601.0, "datetime": 1_767_225_601.5}
    expected = [1_767_225_600.0, second.get(odd, math.nan), 1_767_225_602.0, 1_767_225_603.0]
    assert [repr(a) for a in facts.arrivals] == [repr(a) for a in expected]


def test_bare_entries_without_facts_still_mark_the_positions() -> None:
    batch = records(4, {1})
    progress = finished(batch, None, [])
    bare = one_each(entries_of(progress, batch, "telemax", "s", "shardId-0", lines=False))
    assert [(e.position[0], e.letter, e.fact) for e in bare] == [
        ("1000", False, None),
        ("1001", True, None),
        ("1002", False, None),
        ("1003", False, None),
    ]


def test_each_record_is_named_by_the_hour_its_arrival_is_in() -> None:
    batch = records(6, set())
    hour = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    arrivals = [hour - 0.0000003, hour - 0.001, hour, hour + 0.5, hour + 3599.999, hour + 3600]
    for record, arrival in zip(batch, arrivals, strict=True):
        record["ApproximateArrivalTimestamp"] = arrival
    progress = finished(batch, None, [])
    pieces = entries_of(progress, batch, "telemax", "s", "shardId-0", lines=True)
    assert [p.hour for p in pieces] == [  # a Run an hour
        "dt=2025-12-31/hour=23",
        "dt=2026-01-01/hour=00",
        "dt=2026-01-01/hour=01",
    ]
    lined = one_each(pieces)
    assert [e.hour for e in lined] == [
        "dt=2025-12-31/hour=23",
        "dt=2025-12-31/hour=23",
        "dt=2026-01-01/hour=00",
        "dt=2026-01-01/hour=00",
        "dt=2026-01-01/hour=00",
        "dt=2026-01-01/hour=01",
    ]
    assert [e.hour for e in lined] == [hour_of(a) for a in arrivals]


def test_a_line_carries_the_records_metadata_and_its_own_json() -> None:
    """Lines made from bytes (the record's own JSON embedded) read as the re-encoded ones do:
    the same metadata, JSON-escaped keys, an unknown arrival as null."""
    batch = records(4, set())
    batch[1]["PartitionKey"] = 'a "quoted" \\ key é'
    batch[2]["ApproximateArrivalTimestamp"] = None
    progress = finished(batch, None, [])
    raw = one_each(
        entries_of(progress, batch, "telemax", "s", 'shard-"1"', raw_json=True, lines=True)
    )
    plain = one_each(
        entries_of(progress, batch, "telemax", "s", 'shard-"1"', raw_json=False, lines=True)
    )
    for ours, theirs, record in zip(raw, plain, batch, strict=True):
        line, expected = orjson.loads(ours.line), orjson.loads(theirs.line)
        assert ours.line.endswith(b"}\n") and ours.line.count(b"\n") == 1
        assert line.pop("record") == orjson.loads(record["Data"])
        expected.pop("record")
        assert (
            line
            == expected
            == {
                "feed": "telemax",
                "stream": "s",
                "shard": 'shard-"1"',
                "sequenceNumber": record["SequenceNumber"],
                "subSequenceNumber": 0,
                "partitionKey": record["PartitionKey"],
                "arrival": record["ApproximateArrivalTimestamp"],
            }
        )


@pytest.mark.parametrize("seed", range(30))
def test_the_usual_batch_lines_a_column_at_a_time_as_one_by_one(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The usual batch's lines are made a column at a time; any batch gives the same
    entries, lines, hours and facts as a record at a time would — the usual one and each
    way of not being usual: an arrival in another hour, unknown or a datetime, a line break
    around a record's JSON, a sequence number of other digits, a refused item —, and the
    batches that are usual all the same take the column path: spaces around a record's
    JSON, partition keys that need escaping, arrivals in whole seconds (a JSON integer:
    kinesalite writes milliseconds / 1000, and a tenth of its 10,000-record answers held
    one, each sending its whole batch down the loop). The column path makes a batch's lines a
    slice at a time: slices of one line, of a few, or the whole batch in one."""
    rng = random.Random(seed)
    monkeypatch.setattr(entries, "LINES_AT_ONCE", rng.choice([1, 4, 1024]))
    batch = records(rng.randrange(1, 40), set())
    kinds = ["usual", "keys", "spaces", "whole", "hour", "unknown", "datetime", "break"]
    kind = [*kinds, "digits", "refused"][seed % 10]
    for n in rng.sample(range(len(batch)), min(len(batch), rng.randrange(1, 4))):
        record = batch[n]
        if kind == "keys":  # still usual: keys that need escaping
            record["PartitionKey"] = rng.choice(['a "quoted" \\ key', "é", ""])
        elif kind == "whole":  # still usual
            record["ApproximateArrivalTimestamp"] = int(record["ApproximateArrivalTimestamp"])
        elif kind == "hour":
            record["ApproximateArrivalTimestamp"] += 3600 * rng.choice([-1, 1])
        elif kind == "unknown":
            record["ApproximateArrivalTimestamp"] = None
        elif kind == "datetime":
            record["ApproximateArrivalTimestamp"] = datetime.fromtimestamp(1_767_225_600, UTC)
        elif kind == "spaces":  # still usual: the record's JSON is embedded stripped
            record["Data"] = b" " + record["Data"] + b"  "
        elif kind == "break":
            data, brk = record["Data"], [b"\n", b"\r"][seed // 10 % 2]
            record["Data"] = data[:1] + brk + data[1:]  # JSON whitespace, a line break
        elif kind == "digits":  # Arabic-Indic digits; a quote that JSON must escape
            record["SequenceNumber"] = rng.choice(["\u0661\u0660\u0660" + str(n), f'{n}"'])
    refused = [rng.randrange(len(batch))] if kind == "refused" else []
    progress = finished(batch, None, refused)

    def pieces() -> Any:
        return entries_of(progress, batch, "telemax", "s", "shardId-0", True, facts=FACTS)

    usual = one_each(pieces())
    if kind in ("usual", "keys", "spaces", "whole"):
        assert entries._usual_lines(progress, b"{") is not None
    monkeypatch.setattr(entries, "_usual_lines", lambda progress, head: None)
    each = one_each(pieces())
    assert [(e.position, e.hour, e.line, e.letter) for e in usual] == [
        (e.position, e.hour, e.line, e.letter) for e in each
    ]
    stored = [e for e in usual if not e.letter]
    theirs = [e for e in each if not e.letter]
    if stored:
        ours_facts, their_facts = stored[0].fact, theirs[0].fact
        assert (list(ours_facts.positions), ours_facts.seconds, ours_facts.columns) == (
            list(their_facts.positions),
            their_facts.seconds,
            their_facts.columns,
        )
        assert [repr(a) for a in ours_facts.arrivals] == [repr(a) for a in their_facts.arrivals]
