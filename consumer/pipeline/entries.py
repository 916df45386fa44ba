"""A batch's archive entries: a JSON line for each stored item and each dead letter, in the
batch's order, as :class:`~consumer.pipeline.pieces.Entry` objects or, for the usual batch,
:class:`~consumer.pipeline.pieces.Run` objects whose lines are made a column at a time; pure
(:mod:`consumer.pipeline.archiver` writes them)."""

from __future__ import annotations

import base64
import itertools
import operator
from array import array
from collections.abc import Callable, Sequence
from typing import Any, cast

import orjson

from consumer.pipeline.alerts import json_number, record_of
from consumer.pipeline.archive import hour_of
from consumer.pipeline.convert import Record
from consumer.pipeline.pieces import (
    Entry,
    Piece,
    Position,
    Run,
    line_ends,
    lines_of,
    positions_of,
)
from consumer.pipeline.stage import Progress

ARRIVAL = "ApproximateArrivalTimestamp"
# The usual batch's lines are made this many at a time and the texts joined: what one slice
# touches (its records' JSON, its columns, its text) stays in the CPU's caches. The text of a
# 7,500-record batch in one slice: 0.77 µs a line; in slices of 512-2,048: 0.57 (in process,
# 2026-12-05; slices of 128: 0.60).
LINES_AT_ONCE = 1024


def entries_of(
    progress: Progress,
    records: Sequence[Record],
    feed: str,
    stream: str,
    shard_id: str,
    raw_json: bool = False,
    *,
    lines: bool = True,
    facts: Callable[[list[Any], Sequence[Position], Sequence[float | None]], Any] | None = None,
) -> list[Piece]:
    """The archive's entries of a batch the write stage finished: a line per stored item and
    per stored dead letter, in the batch's order (every position is a record of ``records``).
    ``raw_json``: the records are JSON objects (the built-in feeds refuse anything else),
    embedded as they came instead of re-encoded. ``lines``: the archive's JSON lines (off: empty
    lines, the insights alone); ``facts``: what the insights keep of the batch's stored items,
    given them, their positions and arrival times (``consumer.insights.kept.batch_facts``):
    each item's entry points at it. Without lines and without a dead letter, the items are one
    :class:`~consumer.pipeline.pieces.Run`."""
    hours: dict[Any, str] = {}

    def hour(when: Any) -> str:
        if not lines:  # the insights alone: no object, no hour to name it by
            return ""
        if when not in hours:
            hours[when] = hour_of(when)
        return hours[when]

    # a batch with a dead letter to place among them: an entry each, in the batch's order
    as_runs = not any(progress.stored)
    if not lines:
        found = _bare_entries(progress, facts, as_run=as_runs)
    else:
        found = _lined_entries(progress, feed, stream, shard_id, raw_json, facts, as_runs)
    items_found = len(found)
    # the dead letters' arrival times, by sequence number (most batches have no letter)
    arrival = {r["SequenceNumber"]: r.get(ARRIVAL) for r in records} if progress.letters else {}
    for letter, stored in zip(progress.letters, progress.stored, strict=True):
        if not stored:
            continue
        when = arrival.get(letter.sequence_number)
        where = hour(when)
        spot = (letter.sequence_number, letter.sub_sequence)
        text = b""
        if lines:
            text = _line(
                {
                    "feed": feed,
                    "stream": stream,
                    "shard": shard_id,
                    "sequenceNumber": letter.sequence_number,
                    "subSequenceNumber": letter.sub_sequence,
                    "partitionKey": letter.partition_key,
                    "arrival": _epoch(when),
                    "reason": letter.reason,
                    "detail": letter.detail,
                    "data": base64.b64encode(letter.data).decode(),
                }
            )
        found.append(Entry(spot, where, text, letter=True))
    if len(found) == items_found:
        return found  # the items alone: in the batch's order already, as converted
    # the batch's order: the stream's for Kinesis; a queue's message ids have no other
    rank = {r["SequenceNumber"]: n for n, r in enumerate(records)}
    found.sort(key=lambda e: (rank.get(e.position[0], len(rank)), e.position[1], e.letter))
    return found


def _lined_entries(
    progress: Progress,
    feed: str,
    stream: str,
    shard_id: str,
    raw_json: bool,
    facts: Callable[[list[Any], Sequence[Position], Sequence[float | None]], Any] | None,
    as_runs: bool,
) -> list[Piece]:
    """The stored items' entries with their archive lines: with ``as_runs``, a Run for each
    hour of the batch (usually one) instead of an Entry a record — the objects a segment
    holds until it is written, which the collector walks. In process (60,000 readings in
    batches of 500, 1 MiB segments, best of 5): the entries 2.9-3.0 -> 2.6-2.7 µs a record,
    the buffer's cutting 0.35 -> 0.01."""
    converted = progress.converted
    made_of = converted.data
    dumps = orjson.dumps
    # every line's start: {"feed":…,"stream":…,"shard":…,"sequenceNumber":
    head = dumps({"feed": feed, "stream": stream, "shard": shard_id})[:-1] + b',"sequenceNumber":'
    usual = _usual_lines(progress, head) if raw_json else None
    if usual is not None:
        positions, text, hour, arrivals = usual
        # (the entries as they are: the insights read an encoded one's values)
        batch = facts(list(converted.entries), positions, arrivals) if facts is not None else None
        return _pieces(positions, text, [hour] * len(positions), [], batch, as_runs)
    hours: dict[int | None, str] = {}  # by hour since the epoch
    at: list[Position] = []
    lines: list[bytes] = []
    wheres: list[str] = []  # each line's hour
    changes: list[int] = []  # where the hour changes
    kept: list[Any] = []  # with the insights: the stored items and their arrivals
    kept_arrivals: list[float | None] = []
    keys: dict[str, bytes] = {}  # a partition key's JSON (a batch's keys repeat: devices)
    for position in progress.stored_items():
        item = converted.items[position]
        record, sub = converted.origins[position]
        sequence = record["SequenceNumber"]
        when = record.get(ARRIVAL)
        arrived = when if type(when) is float else _epoch(when)
        # named once per hour of the batch, not per arrival time (each record has its own):
        # hour_of cost 5 µs a record, the archive's largest cost per record (2026-12-04);
        # hour_of names a time by the hour it is in, as this bucket does
        bucket = None if arrived is None else int(arrived // 3600)
        where = hours.get(bucket) or hours.setdefault(bucket, hour_of(when))
        key = record.get("PartitionKey", "")
        data = made_of[position] if raw_json and position < len(made_of) else None
        if data is not None and b"\n" not in data and b"\r" not in data:
            # the record's own JSON bytes embedded (a third of the cost of re-encoding the
            # item), the metadata from bytes made once a batch (a key's once a key):
            # 0.9 -> 0.45 µs a line against a dict dumped a record (measured 2026-12-04)
            line = b"".join(
                (
                    head,
                    dumps(sequence),
                    b',"subSequenceNumber":',
                    str(sub).encode(),
                    b',"partitionKey":',
                    keys.get(key) or keys.setdefault(key, dumps(key)),
                    b',"arrival":',
                    dumps(arrived),
                    b',"record":',
                    data.strip(),
                    b"}\n",
                )
            )
        else:
            line = _line(
                {
                    "feed": feed,
                    "stream": stream,
                    "shard": shard_id,
                    "sequenceNumber": sequence,
                    "subSequenceNumber": sub,
                    "partitionKey": key,
                    "arrival": arrived,
                    "record": record_of(item),
                }
            )
        if wheres and where != wheres[-1]:
            changes.append(len(wheres))
        at.append((sequence, sub))
        lines.append(line)
        wheres.append(where)
        if facts is not None:
            kept.append(item)
            kept_arrivals.append(arrived)
    held: Sequence[Position] = at
    if as_runs:  # (an Entry holds its own position)
        held = positions_of([sequence for sequence, _ in at], [sub for _, sub in at])
    batch = facts(kept, held, kept_arrivals) if facts is not None and kept else None
    text = b"".join(lines) if as_runs else b""  # (an Entry a line: its own)
    return _pieces(held, text, wheres, changes, batch, as_runs, lines)


def _pieces(
    at: Sequence[Position],
    text: bytes,
    hours: list[str],
    changes: list[int],
    batch: Any,
    as_runs: bool,
    lines: list[bytes] | None = None,
) -> list[Piece]:
    """An Entry a line, or (``as_runs``) a Run for each hour, of ``text`` — the lines of
    ``at`` joined (``lines``: the same, if they were made one by one) —: ``changes`` are the
    indices where ``hours`` changes."""
    if not as_runs:
        if lines is None:  # (cut where each line ends, as a Run's are)
            lines = lines_of(text)
        return [
            Entry(p, hour, line, False, batch)
            for p, hour, line in zip(at, hours, lines, strict=True)
        ]
    if not changes:  # one run, of the whole batch: its lines are text
        return [Run(at, 0, len(at), batch, hours[0], text)] if at else []
    # runs that are parts of the batch's lines: where each part's lines begin and end
    ends = [0, *line_ends(text)]
    bounds = [0, *changes, len(at)]
    return [
        Run(at, start, stop, batch, hours[start], text, ends[start], ends[stop])
        for start, stop in itertools.pairwise(bounds)
        if start < stop
    ]


def _usual_lines(
    progress: Progress, head: bytes
) -> tuple[Sequence[Position], bytes, str, list[float | None]] | None:
    """The usual batch's lines a column at a time — every item stored, each made of its own
    JSON without a line break, sequence numbers of digits, arrival times as epoch floats all
    in one hour —: (positions, the lines joined, the hour, arrival times); None for any other
    batch, which :func:`_lined_entries` reads a record at a time. The same lines either way
    (a test holds them equal): in process (60,000 readings in batches of 500, best of 5) a
    batch's entries cost 1.26-1.33 µs a record a column at a time against 2.54-2.70 in the
    loop (2026-12-04; now 1.02-1.07: :func:`_joined_lines`)."""
    converted = progress.converted
    origins, made_of = converted.origins, converted.data
    count = len(origins)
    if not count or len(made_of) != count or not progress.every_item_stored():
        return None
    joined = b"".join(made_of)
    if b"\n" in joined or b"\r" in joined:
        return None
    found = [record.get(ARRIVAL) for record, _ in origins]
    kinds = set(map(type, found))
    if kinds != {float}:
        if not kinds <= {float, int}:
            return None
        # a whole second comes as a JSON integer (kinesalite writes milliseconds / 1000):
        # a float, as the loop makes it, rather than the loop for the batch
        found = [float(when) for when in found]  # type: ignore[arg-type]
    arrivals = cast("list[float]", found)
    sequences: list[str] = [record["SequenceNumber"] for record, _ in origins]
    # ASCII digits only (a str's isdigit takes any script's), checked as bytes: 0.02 µs a
    # record against the str's isascii and isdigit, 0.25 (950 sequence numbers of 56 digits)
    if not "".join(sequences).encode().isdigit():
        return None
    first, last = min(arrivals), max(arrivals)
    if first // 3600 != last // 3600:
        return None
    subs = [sub for _, sub in origins]
    keys = [record.get("PartitionKey", "") for record, _ in origins]
    texts = []
    for lo in range(0, count, LINES_AT_ONCE):
        hi = lo + LINES_AT_ONCE
        texts.append(
            _joined_lines(
                head, sequences[lo:hi], subs[lo:hi], keys[lo:hi], arrivals[lo:hi], made_of[lo:hi]
            )
        )
    text = b"".join(texts)  # (of one: that one)
    return positions_of(sequences, subs), text, hour_of(first), found


def _joined_lines(
    head: bytes,
    sequences: list[str],
    subs: list[int],
    keys: list[str],
    arrivals: list[float],
    made_of: list[bytes],
) -> bytes:
    """The usual lines of these records, joined: from their columns' pieces rather than a
    bytes object a line made and then joined, each column made in one call where it can be
    (the sequence numbers encoded together, the arrivals dumped together: a float's JSON is
    the same in a list). In process, a batch's entries (``entries_of``, 60,000 readings,
    best of 7), with the slices: 1.29-1.31 -> 1.10-1.12 µs a record in batches of 7,500 (as
    the bench's 4 shards read them), 1.24-1.25 -> 1.02-1.07 in batches of 500."""
    count = len(sequences)
    dumps = orjson.dumps
    named = {key: dumps(key) for key in set(keys)}
    numbers = "\n".join(sequences).encode().split(b"\n")  # (digits: no line break inside)
    times = dumps(arrivals)[1:-1].split(b",")
    sub_texts = [b"%d" % sub for sub in subs] if any(subs) else itertools.repeat(b"0", count)
    columns = (
        itertools.repeat(head + b'"', count),
        numbers,
        itertools.repeat(b'","subSequenceNumber":', count),
        sub_texts,
        itertools.repeat(b',"partitionKey":', count),
        map(named.__getitem__, keys),
        itertools.repeat(b',"arrival":', count),
        times,
        itertools.repeat(b',"record":', count),
        map(bytes.strip, made_of),
        itertools.repeat(b"}\n", count),
    )
    return b"".join(itertools.chain.from_iterable(zip(*columns, strict=True)))


def _bare_entries(
    progress: Progress,
    facts: Callable[[list[Any], Sequence[Position], Sequence[float | None]], Any] | None,
    as_run: bool,
) -> list[Piece]:
    """The stored items' entries without lines (the insights alone: no object, no hour to
    name it by), made in a few passes over the batch rather than one loop with a branch per
    record (measured in one process on the benchmark's TELEMAX readings, 2026-12-04); with
    ``as_run``, one Run of them all."""
    converted = progress.converted
    items = list(converted.entries)  # (the insights read an encoded entry's values)
    if progress.every_item_stored():  # the usual batch
        kept, origins = items, converted.origins
    else:
        picked = progress.stored_items()
        kept = [items[p] for p in picked]
        origins = [converted.origins[p] for p in picked]
    if not kept:
        return []
    at = positions_of([record["SequenceNumber"] for record, _ in origins], [s for _, s in origins])
    batch = None
    if facts is not None:
        batch = facts(kept, at, _arrivals(origins))
    if as_run:
        return [Run(at, 0, len(at), batch)]
    return [Entry(position, "", b"", False, batch) for position in at]


_RECORD, _ARRIVAL = operator.itemgetter(0), operator.itemgetter(ARRIVAL)


def _arrivals(origins: list[tuple[Record, int]]) -> Sequence[float | None]:
    """Each record's arrival time in epoch seconds (None: unknown): an array, picked in C,
    when every record has a number there (FastKinesis gives floats: 0.076 -> 0.045 µs a
    record with the insights' array made of it, in process), else each read as it is."""
    try:
        return array("d", list(map(_ARRIVAL, map(_RECORD, origins))))
    except (KeyError, TypeError):  # a record without one, or one of another type (datetime)
        return [
            when if type(when := record.get(ARRIVAL)) is float else _epoch(when)
            for record, _ in origins
        ]


def _epoch(when: Any) -> float | None:
    if isinstance(when, int | float):
        return float(when)
    timestamp = getattr(when, "timestamp", None)
    return float(timestamp()) if timestamp is not None else None


def _line(value: dict[str, Any]) -> bytes:
    return orjson.dumps(value, default=json_number, option=orjson.OPT_APPEND_NEWLINE)
