"""The archive's pure part: a shard's processed records and dead letters as JSON lines, cut
into segments that a replay reproduces (no I/O; :mod:`consumer.pipeline.archiver` writes them).

Layout (Hive-style partitions, read by Athena and Glue without configuration)::

    {prefix}records/feed={feed}/dt={YYYY-MM-DD}/hour={HH}/{shard}-{first}.json.gz
    {prefix}deadletters/feed={feed}/dt={YYYY-MM-DD}/hour={HH}/{shard}-{first}.json.gz

where ``first`` is the segment's first position (sequence number, zero-padded, and
sub-sequence number) and the hour is the *record's* arrival hour (Kinesis'
``ApproximateArrivalTimestamp``, a property of the record, the same on every read).

Why each record lands in exactly one object: a segment is a run of consecutive positions of
one shard, named by its first. Segments end at an hour change, at ``max_bytes``, or when the
buffer is ``max_age_s`` old (or the shard stops), and the checkpoint moves only to the end of
a segment that is written. So a new owner resumes right after a segment's end and its first
segment has the name of the one the old owner may have written beyond the checkpoint. Its
write is conditional (``If-None-Match: *``): if the object exists, the new owner reads the end
recorded in its metadata and *adopts* it — its own segment ends exactly there — instead of
writing the records again. Every position belongs to the segment named by the first position
after the previous segment's end, whoever wrote it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from consumer.pipeline.pieces import (
    Entry,
    Pack,
    Piece,
    Position,
    Run,
    order,
    split_pieces,
)

UPTO, FROM = "-upto-", "-from-"  # in a span name: {shard}-upto-{last}-from-{first}


def position_name(position: Position) -> str:
    return f"{position[0]:0>56}-{position[1]:06d}"


def parse_position(name: str) -> Position:
    sequence, sub = name.rsplit("-", 1)
    return str(int(sequence)), int(sub)


def hour_of(arrival: Any) -> str:
    """``dt=YYYY-MM-DD/hour=HH`` of an arrival time: a datetime (botocore), epoch seconds
    (the lean path, Lambda events) or nothing."""
    if isinstance(arrival, datetime):
        when = arrival.astimezone(UTC)
    elif isinstance(arrival, int | float):  # the hour it is in (no rounding up to the next)
        when = datetime.fromtimestamp(int(arrival // 3600) * 3600, UTC)
    else:
        return "dt=unknown/hour=unknown"
    return f"dt={when:%Y-%m-%d}/hour={when:%H}"


@dataclasses.dataclass(frozen=True)
class Segment:
    shard_id: str
    entries: tuple[Piece, ...]
    # it starts right after a segment this shard's stream committed itself (not adopted):
    # no earlier owner's segment starts here, so a destination need not look for one first
    # (a zombie's, written at the same time, its conditional commit still finds)
    follows_ours: bool = False

    @property
    def first(self) -> Position:
        return self.entries[0].position

    @property
    def last(self) -> Position:
        return self.entries[-1].last

    @property
    def hour(self) -> str:
        return self.entries[0].hour

    @property
    def name(self) -> str:
        return f"{self.shard_id}-{position_name(self.first)}"

    @property
    def span_name(self) -> str:
        """The name of a Lambda batch's object (see :func:`next_run`): sorted by its last."""
        return f"{self.shard_id}{UPTO}{position_name(self.last)}{FROM}{position_name(self.first)}"

    def lines(self, letters: bool) -> bytes:
        """One part's lines (records, or dead letters) joined, packed runs' decompressed (an
        object's are compressed a piece at a time: consumer.pipeline.archiver.gzipped)."""
        return b"".join(e.line for e in self.entries if e.letter is letters)

    def count(self, letters: bool) -> int:
        return sum(e.count for e in self.entries if e.letter is letters)

    @property
    def records(self) -> int:
        """How many positions: stored items and dead letters."""
        return sum(e.count for e in self.entries)

    def until(self, last: Position) -> Segment:
        """The part of this segment up to ``last`` (included)."""
        return Segment(self.shard_id, tuple(split_pieces(self.entries, last)[0]))


class ArchiveBuffer:
    """A shard's entries not yet in a written segment, in stream order (Entries and Runs,
    :data:`Piece`); ``clock`` readings are passed in (time is a parameter). With ``pack``,
    the runs of whole batches it has looked at are kept packed (:meth:`Run.pack`): none is
    cut after that but at an adopted end."""

    def __init__(
        self, shard_id: str, max_bytes: int, max_age_s: float, pack: Pack | None = None
    ) -> None:
        self.shard_id = shard_id
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._pack = pack
        self._entries: list[Piece] = []
        self._since: float | None = None  # when the oldest entry came
        self._cover_until: Position | None = None  # an adopted segment's end, not yet reached
        # Where the first segment ends (an hour change, max_bytes), once the entries reach it,
        # and how far they were looked at: each entry is looked at once, not once per batch.
        self._cut: int | None = None
        self._scanned = 0
        self._size = 0  # bytes of the entries looked at
        self._packed = 0  # entries before this one are packed, when they can be

    def __len__(self) -> int:
        """How many records (stored items and dead letters) it holds."""
        return sum(e.count for e in self._entries)

    def add(self, entries: Sequence[Piece], now: float) -> None:
        if entries and not self._entries:
            self._since = now
        self._entries.extend(entries)
        self._scan()
        self._pack_looked_at()

    def _scan(self) -> None:
        """Look at the entries not yet looked at for the first segment's end."""
        entries = self._entries
        if self._cut is not None or not entries:
            return
        hour, size, limit = entries[0].hour, self._size, self.max_bytes
        for index in range(self._scanned, len(entries)):
            entry = entries[index]
            if entry.hour != hour:
                self._cut = index
                return
            weight = entry.weight
            if size + weight >= limit:
                if type(entry) is Run:  # cut where its items one by one would reach it
                    head, rest = entry.cut_reaching(limit - size)
                    if rest is not None:
                        entries[index : index + 1] = [head, rest]
                        entry = head
                stop = index + 1  # never between two entries of one position
                while stop < len(entries) and entries[stop].position == entry.last:
                    stop += 1
                self._cut = stop
                return
            size += weight
        self._scanned, self._size = len(entries), size

    def _pack_looked_at(self) -> None:
        """Pack the runs looked at for the first segment's end: where it ends is known, so
        no cut will need their lines (an adopted end aside). Those after it wait for it to
        be written and their own segment's end found."""
        if self._pack is None:
            return
        entries = self._entries
        looked_at = self._scanned if self._cut is None else self._cut
        for index in range(self._packed, looked_at):
            piece = entries[index]
            if type(piece) is Run:
                piece.pack(self._pack)
        self._packed = max(self._packed, looked_at)

    def due_at(self) -> float | None:
        """When the age flush comes due; None when empty."""
        if not self._entries or self._since is None:
            return None
        return self._since + self.max_age_s

    def next_segment(self, now: float, final: bool = False) -> Segment | None:
        """The next segment to write, if one is complete: it ends at an hour change, at
        ``max_bytes``, at an adopted end, or — the last one — when old enough or ``final``."""
        entries = self._entries
        if not entries:
            return None
        if self._cover_until is not None:  # exactly the adopted segment, once all is here
            if order(entries[-1].last) < order(self._cover_until):
                return None
            return Segment(self.shard_id, tuple(split_pieces(entries, self._cover_until)[0]))
        if self._cut is not None:
            return Segment(self.shard_id, tuple(entries[: self._cut]))
        due = self.due_at()
        if final or (due is not None and now >= due):
            return Segment(self.shard_id, tuple(entries))
        return None

    def written(self, last: Position, now: float) -> None:
        """Entries up to ``last`` are in a written segment: forget them."""
        self._entries = split_pieces(self._entries, last)[1]
        self._cover_until = None
        self._since = now if self._entries else None
        self._cut, self._scanned, self._size, self._packed = None, 0, 0, 0
        self._scan()
        self._pack_looked_at()

    def cover(self, last: Position) -> None:
        """An existing segment starts where ours does and ends at ``last``, beyond what we
        have: the next segment ends exactly there."""
        self._cover_until = last


def span_of(tail: str) -> tuple[Position, Position]:
    """(first, last) of a span name's tail ``{last}-from-{first}[.json.gz]``."""
    last, _, first = tail.split(".", 1)[0].partition(FROM)
    return parse_position(first), parse_position(last)


def next_run(
    shard_id: str, entries: Sequence[Entry], found: tuple[Position, Position] | None
) -> tuple[int, Segment | None]:
    """One step of archiving a batch whose start is not ours to choose (Lambda's: a retry may
    start anywhere inside an object an earlier invocation wrote, bisected or after a partial
    failure). ``found`` is the object of the first entry's hour and part with the smallest
    last position at or after the first entry (a LIST sorted by span names finds it).

    Answers (entries covered, run to write): when ``found`` starts at or before the first
    entry, every entry up to its last is in it (whoever wrote it had every position between
    its first and last: a batch is a run of consecutive positions of the shard); otherwise
    the leading run of one hour that ends before ``found`` starts.
    """
    first = order(entries[0].position)
    if found is not None and order(found[0]) <= first:
        end = order(found[1])
        return sum(1 for e in entries if order(e.position) <= end), None
    hour = entries[0].hour
    stop = next((i for i, e in enumerate(entries) if e.hour != hour), len(entries))
    run = tuple(entries[:stop])
    if found is not None:
        start = order(found[0])
        run = tuple(e for e in run if order(e.position) < start)
    return 0, Segment(shard_id, run)
