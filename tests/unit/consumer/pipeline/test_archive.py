"""The archive's segments: pure, time a parameter."""

from __future__ import annotations

import itertools
import random
import zlib
from datetime import UTC, datetime

import pytest

from consumer.pipeline.archive import (
    ArchiveBuffer,
    Segment,
    hour_of,
    next_run,
    position_name,
    span_of,
)
from consumer.pipeline.pieces import NO_LINE_BYTES, Entry, Packed, Run, one_each

H1, H2 = "dt=2026-12-02/hour=10", "dt=2026-12-02/hour=11"


def entry(seq: int, sub: int = 0, hour: str = H1, size: int = 10, letter: bool = False) -> Entry:
    return Entry((str(seq), sub), hour, b"x" * (size - 1) + b"\n", letter)


def positions(segment: Segment | None) -> list[tuple[str, int]]:
    assert segment is not None
    return [e.position for e in segment.entries]


def test_an_hour_change_ends_a_segment_at_once() -> None:
    buffer = ArchiveBuffer("shard-1", max_bytes=1000, max_age_s=60)
    buffer.add([entry(1), entry(2), entry(3, hour=H2)], now=0)
    assert positions(buffer.next_segment(now=0)) == [("1", 0), ("2", 0)]
    buffer.written(("2", 0), now=0)
    assert buffer.next_segment(now=59) is None, "the next hour's segment is still open"
    assert positions(buffer.next_segment(now=60)) == [("3", 0)]


def test_a_segment_ends_at_max_bytes_but_never_inside_one_position() -> None:
    buffer = ArchiveBuffer("shard-1", max_bytes=30, max_age_s=60)
    buffer.add([entry(1), entry(2), entry(3), entry(3, letter=True), entry(4)], now=0)
    segment = buffer.next_segment(now=0)
    assert positions(segment) == [("1", 0), ("2", 0), ("3", 0), ("3", 0)]
    assert segment is not None and segment.count(letters=True) == 1


def test_age_and_final_flush_what_is_there() -> None:
    buffer = ArchiveBuffer("shard-1", max_bytes=1000, max_age_s=60)
    assert buffer.due_at() is None and buffer.next_segment(now=0, final=True) is None
    buffer.add([entry(1)], now=100)
    buffer.add([entry(2)], now=150)
    assert buffer.due_at() == 160
    assert buffer.next_segment(now=159) is None
    assert positions(buffer.next_segment(now=159, final=True)) == [("1", 0), ("2", 0)]
    assert positions(buffer.next_segment(now=160)) == [("1", 0), ("2", 0)]


def test_an_adopted_end_is_waited_for_then_taken_exactly() -> None:
    buffer = ArchiveBuffer("shard-1", max_bytes=20, max_age_s=60)
    buffer.add([entry(1), entry(2)], now=0)
    buffer.cover(("4", 0))  # a segment (1..4) exists: ours must end exactly there
    assert buffer.next_segment(now=999, final=True) is None
    buffer.add([entry(3), entry(4), entry(5)], now=1)
    assert positions(buffer.next_segment(now=1)) == [("1", 0), ("2", 0), ("3", 0), ("4", 0)]
    buffer.written(("4", 0), now=1)
    assert positions(buffer.next_segment(now=1, final=True)) == [("5", 0)]


def test_positions_compare_as_numbers_and_names_sort_as_they_do() -> None:
    buffer = ArchiveBuffer("shard-1", max_bytes=1000, max_age_s=60)
    buffer.add([entry(9), entry(10), entry(11)], now=0)
    buffer.written(("10", 0), now=0)  # "9" > "10" as text: must be forgotten too
    assert positions(buffer.next_segment(now=0, final=True)) == [("11", 0)]
    assert position_name(("9", 2)) < position_name(("10", 0))


@pytest.mark.parametrize(
    ("arrival", "hour"),
    [
        (datetime(2026, 12, 2, 10, 59, 59, tzinfo=UTC), "dt=2026-12-02/hour=10"),
        (1764673200.0, "dt=2025-12-02/hour=11"),
        (None, "dt=unknown/hour=unknown"),
    ],
)
def test_the_hour_is_the_records_arrival_hour(arrival: object, hour: str) -> None:
    assert hour_of(arrival) == hour


def span(first: int, last: int) -> tuple[tuple[str, int], tuple[str, int]]:
    return (str(first), 0), (str(last), 0)


@pytest.mark.parametrize(
    ("found", "covered", "run"),
    [
        (None, 0, [1, 2, 3, 4]),  # nothing there: the whole hour's run
        (span(1, 2), 2, None),  # an object from our first on: its entries are skipped
        (span(0, 3), 3, None),  # an object from before our first (a retry inside it)
        (span(0, 9), 5, None),  # one that covers beyond our batch
        (span(3, 9), 0, [1, 2]),  # one further on: our run stops short of it
    ],
)
def test_a_batch_skips_what_an_object_covers_and_stops_short_of_one_further_on(
    found: tuple[tuple[str, int], tuple[str, int]] | None, covered: int, run: list[int] | None
) -> None:
    entries = [entry(1), entry(2), entry(3), entry(4), entry(5, hour=H2)]
    skipped, segment = next_run("shard-1", entries, found)
    assert skipped == covered
    if run is None:
        assert segment is None
    else:
        assert segment is not None and [int(e.position[0]) for e in segment.entries] == run


def test_span_names_sort_by_their_last_position_and_read_back() -> None:
    segment = Segment("shard-1", (entry(7, 2), entry(12, 0)))
    name = segment.span_name
    assert name == f"shard-1-upto-{position_name(('12', 0))}-from-{position_name(('7', 2))}"
    assert span_of(name.removeprefix("shard-1-upto-") + ".json.gz") == (("7", 2), ("12", 0))
    later = Segment("shard-1", (entry(3), entry(100)))
    assert later.span_name > name, "sorted by the last position, not the first"


def cut_from_scratch(entries: list[Entry], max_bytes: int) -> int | None:
    """Where the first segment ends, looking at every entry (the rule, plainly)."""
    size = 0
    for index, one in enumerate(entries):
        if one.hour != entries[0].hour:
            return index
        size += len(one.line)
        if size >= max_bytes:
            stop = index + 1
            while stop < len(entries) and entries[stop].position == one.position:
                stop += 1
            return stop
    return None


@pytest.mark.parametrize("seed", range(6))
def test_segments_cut_batch_by_batch_are_those_cut_from_scratch(seed: int) -> None:
    """The buffer looks at each entry once; its segments are the ones the rule gives."""
    rng = random.Random(seed)
    buffer = ArchiveBuffer("shard-1", max_bytes=400, max_age_s=60)
    held: list[Entry] = []
    seq = 0
    for _ in range(200):
        batch = []
        for _ in range(rng.randrange(0, 12)):
            seq += 1
            hour = H1 if seq < 600 else H2
            batch.append(entry(seq, hour=hour, size=rng.randrange(5, 80)))
            if rng.random() < 0.1:  # a dead letter at the same position
                batch.append(entry(seq, hour=hour, size=30, letter=True))
        buffer.add(batch, now=0)
        held += batch
        while (segment := buffer.next_segment(now=0)) is not None:
            cut = cut_from_scratch(held, 400)
            assert cut is not None and positions(segment) == [e.position for e in held[:cut]]
            buffer.written(segment.last, now=0)
            held = held[cut:]
        assert cut_from_scratch(held, 400) is None


def flat(segment: Segment | None) -> list[tuple[str, int]]:
    """A segment's positions, a run's items one by one (none: no segment)."""
    return [] if segment is None else [e.position for e in one_each(segment.entries)]


def lined_runs(
    at: list[tuple[str, int]], rng: random.Random, hour: int
) -> tuple[list[Run], list[Entry], int]:
    """A batch's items with lines of random sizes, the hour changing inside it now and then:
    as the archiver makes them (a Run an hour: of the whole batch, or of its part, given
    where the part's lines begin and end) and an Entry each; and the last hour."""
    lines = [b"x" * rng.randrange(1, 300) + b"\n" for _ in at]
    hours = []
    for _ in at:
        hour += rng.random() < 0.02
        hours.append(f"hour={hour}")
    ends = [0, *itertools.accumulate(map(len, lines))]
    bounds = [0, *(i for i in range(1, len(at)) if hours[i] != hours[i - 1]), len(at)]
    text = b"".join(lines)
    if len(bounds) == 2:
        runs = [Run(at, 0, len(at), "facts", hours[0], text)]
    else:
        runs = [
            Run(at, a, b, "facts", hours[a], text, ends[a], ends[b])
            for a, b in itertools.pairwise(bounds)
        ]
    each = [Entry(p, h, line, False, "facts") for p, h, line in zip(at, hours, lines, strict=True)]
    return runs, each, hour


def pack(text: bytes) -> Packed:
    packer = zlib.compressobj(wbits=-15)
    return Packed(
        packer.compress(text) + packer.flush(zlib.Z_SYNC_FLUSH), zlib.crc32(text), len(text)
    )


@pytest.mark.parametrize(
    ("lined", "packed"),
    [(False, False), (True, False), (True, True)],
    ids=["bare", "lined", "packed"],
)
@pytest.mark.parametrize("seed", range(16))
def test_runs_cut_the_segments_their_items_cut_one_by_one(
    seed: int, lined: bool, packed: bool
) -> None:
    """A batch held as Runs is cut, written and adopted exactly as its items would be an
    Entry each: at max_bytes inside a run (bare: a fixed weight an item; lined: its line's
    bytes, found in the run's text; packed: whole batches' runs held gzipped once looked
    at), at an hour change, at an adopted end inside one, at a
    commit that ends short of the segment (a destination adopted less) — the same
    positions, lines and hours."""
    rng = random.Random(seed)
    limit = 6_000 if lined else NO_LINE_BYTES * 50
    packs = pack if packed else None
    runs = ArchiveBuffer("shard-1", max_bytes=limit, max_age_s=60, pack=packs)
    packed_seen = 0
    each = ArchiveBuffer("shard-1", max_bytes=limit, max_age_s=60)
    seq, now, hour = 0, 0.0, 0
    for _ in range(150):
        now += rng.random()
        at = [(str(seq + n), rng.randrange(3)) for n in range(1, rng.randrange(2, 90))]
        seq += len(at)
        if lined:
            as_runs, as_entries, hour = lined_runs(at, rng, hour)
            runs.add(as_runs, now)
            each.add(as_entries, now)
        else:
            runs.add([Run(at, 0, len(at), "facts")], now)
            each.add([Entry(p, "", b"", False, "facts") for p in at], now)
        assert len(runs) == len(each)
        if rng.random() < 0.1:  # an earlier owner's segment ends somewhere ahead
            end = (str(seq + rng.randrange(-20, 40)), 0)
            held = runs.next_segment(now, final=True)
            if held is not None and int(end[0]) > int(held.first[0]):
                runs.cover(end)
                each.cover(end)
        final = rng.random() < 0.05
        while (segment := runs.next_segment(now, final)) is not None:
            theirs = each.next_segment(now, final)
            assert theirs is not None and flat(segment) == flat(theirs)
            packed_seen += sum(type(e) is Run and e.packed is not None for e in segment.entries)
            assert (segment.lines(False), segment.hour) == (theirs.lines(False), theirs.hour)
            assert [e.line for e in one_each(segment.entries)] == [e.line for e in theirs.entries]
            assert segment.records == len(flat(segment)) and segment.last == flat(segment)[-1]
            assert all(e.fact == "facts" for e in segment.entries)
            items = flat(segment)
            end = items[rng.randrange(len(items))] if rng.random() < 0.2 else segment.last
            assert flat(segment.until(end)) == items[: items.index(end) + 1]
            assert segment.until(end).lines(False) == theirs.until(end).lines(False)
            runs.written(end, now)
            each.written(end, now)
            assert len(runs) == len(each)
        assert runs.due_at() == each.due_at()
    assert flat(runs.next_segment(now, final=True)) == flat(each.next_segment(now, final=True))
    assert bool(packed_seen) == packed


def whole_run(first: int, count: int, size: int) -> Run:
    at = [(str(first + n), 0) for n in range(count)]
    return Run(at, 0, count, None, H1, (b"x" * (size - 1) + b"\n") * count)


def is_packed(run: Run) -> bool:
    return run.packed is not None and run.text is None


def test_runs_looked_at_are_packed_and_those_after_a_cut_wait() -> None:
    """The runs of whole batches a buffer has looked at for its segment's end are held as
    one gzip member each, weighing their lines' bytes; those after a cut it found are not
    looked at (nor packed) until that segment is written; a run a cut ends inside keeps its
    batch's text (a part of it)."""
    buffer = ArchiveBuffer("shard-1", max_bytes=1_000, max_age_s=60, pack=pack)
    first = whole_run(1, 4, 100)
    buffer.add([first], 0.0)
    assert first.packed is not None and first.text is None
    assert (first.weight, first.line) == (400, (b"x" * 99 + b"\n") * 4)
    crossing, after = whole_run(5, 10, 100), whole_run(15, 3, 100)
    buffer.add([crossing, after], 1.0)
    segment = buffer.next_segment(1.0)
    assert segment is not None and [e.count for e in segment.entries] == [4, 6]
    head = segment.entries[1]
    assert type(head) is Run and head.packed is None and head.text is crossing.text
    assert not is_packed(after), "after the cut: not looked at yet"
    buffer.written(segment.last, 2.0)
    assert is_packed(after), "looked at for the next segment's end"
    rest = buffer.next_segment(2.0, final=True)
    assert rest is not None and [e.count for e in rest.entries] == [4, 3]
    assert rest.lines(False) == (b"x" * 99 + b"\n") * 7
