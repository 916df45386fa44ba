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

import bisect
import dataclasses
import itertools
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

Position = tuple[str, int]  # (sequence number, sub-sequence number)
UPTO, FROM = "-upto-", "-from-"  # in a span name: {shard}-upto-{last}-from-{first}
NO_LINE_BYTES = 64  # an entry's weight without a line (insights only): segments stay bounded
RAW_DEFLATE = -15  # zlib's wbits for deflate blocks without a header or trailer


@dataclasses.dataclass(frozen=True, slots=True)
class Packed:
    """A run's lines compressed: deflate blocks that end on a byte boundary and are not the
    last (a sync flush), so that an object's gzip member can hold them as they are between
    others' (consumer.pipeline.archiver.gzipped), and what its trailer needs of them."""

    deflate: bytes
    crc: int  # CRC-32 of the lines
    size: int  # bytes of the lines

    def lines(self) -> bytes:
        return zlib.decompressobj(RAW_DEFLATE).decompress(self.deflate)


# (a run's lines, joined) -> them packed (consumer.pipeline.archiver.packed_lines)
Pack = Callable[[bytes], Packed]


def order(position: Position) -> tuple[int, int]:
    """Positions compare numerically (sequence numbers are decimal strings of any length)."""
    return int(position[0]), position[1]


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


@dataclasses.dataclass(slots=True)  # not frozen: 1.4 µs a record to make against 0.25
class Entry:
    """One user record, processed: stored (``letter`` false) or dead-lettered; never changed
    once made."""

    position: Position
    hour: str
    line: bytes  # one JSON line, newline included (empty when the archive is off)
    letter: bool = False
    # what the insights need of the stored item: its batch's facts in columns (one object a
    # batch, consumer.insights.kept.BatchFacts) or a fact of its own (InsightSpec.fact_of);
    # None: a dead letter, or no insights
    fact: Any = None
    arrival: float | None = None  # with a fact of its own: Kinesis' arrival time, epoch s

    # what a segment asks of each of its pieces (an Entry or a Run)
    @property
    def last(self) -> Position:
        return self.position

    @property
    def count(self) -> int:
        return 1

    @property
    def weight(self) -> int:
        return len(self.line) or NO_LINE_BYTES


@dataclasses.dataclass(slots=True, eq=False)
class Run:
    """Consecutive stored items of one batch (no dead letter among them): ``positions[start:
    stop]``, one object for the lot instead of an Entry each. Why: a segment holds its records
    until it is written or committed (up to 131,072 a shard), and an object a record kept
    alive that long is what the collector walks again and again.

    Without the archive (the insights alone) it has no lines; with it, the JSON line of
    ``positions[i]`` is ``text[ends[i - 1]:ends[i]]`` — ``text`` the batch's lines joined into
    one bytes object (not an object a line, each kept as long as its segment among the
    worker's short-lived objects), ``ends[i]`` the bytes of the batch's lines up to and
    including line ``i`` —, and the run is of one hour. A line ends at its one line break
    (JSON escapes any other), so ``ends`` need not be given: it is found in ``text`` when a
    part of the batch's lines is first asked for. Most runs never are — a run of the whole
    batch weighs ``len(text)`` and its lines are ``text`` —, only those a segment ends inside
    (a list of an int a line, held as long as the run, for a cut once a segment).

    Read as entries would be: ``position`` is its first, ``last`` its last, ``count`` how
    many, ``line`` its lines joined; a segment or buffer that ends inside it splits it
    (:meth:`split`, :meth:`cut`).

    A run of a whole batch that its buffer has looked at is *packed* (:meth:`pack`): its
    lines kept compressed, ``packed``, instead of ``text``, a tenth of the memory held until
    its segment is written, and the compression its object needs done. What needs the lines
    themselves (a cut inside it, ``line``) has them decompressed."""

    positions: list[Position]  # the batch's stored items' positions, in stream order
    start: int
    stop: int
    fact: Any  # the batch's facts (consumer.insights.kept.BatchFacts), row i: positions[i]
    hour: str = ""
    text: bytes | None = None  # the batch's lines, joined
    ends: list[int] | None = None  # row i: bytes of lines[0..i]; None: not yet found in text
    letter: bool = False
    packed: Packed | None = None  # ``text`` compressed (then ``text`` is None)

    @property
    def position(self) -> Position:
        return self.positions[self.start]

    @property
    def last(self) -> Position:
        return self.positions[self.stop - 1]

    @property
    def count(self) -> int:
        return self.stop - self.start

    @property
    def lined(self) -> bool:
        """It has lines (the archive is on), packed or not."""
        return self.text is not None or self.packed is not None

    @property
    def line(self) -> bytes:
        if not self.lined:
            return b""
        text = self.lines_text()
        if self._whole():
            return text
        ends = self.line_ends(text)
        return text[self._before(ends) : ends[self.stop - 1]]

    @property
    def weight(self) -> int:
        if not self.lined:
            return NO_LINE_BYTES * (self.stop - self.start)
        if self._whole():
            return self.packed.size if self.packed is not None else len(self.lines_text())
        ends = self.line_ends()
        return ends[self.stop - 1] - self._before(ends)

    def lines_text(self) -> bytes:
        """``text``, decompressed when packed (it has lines)."""
        if self.packed is not None:
            return self.packed.lines()
        assert self.text is not None
        return self.text

    def line_ends(self, text: bytes | None = None) -> list[int]:
        """``ends``, found in ``text`` (``lines_text()`` unless given) the first time it is
        asked for (it has lines)."""
        if self.ends is None:
            self.ends = line_ends(self.lines_text() if text is None else text)
        return self.ends

    def pack(self, pack: Pack) -> None:
        """Keep the lines of a whole batch's run packed (a part of one keeps the batch's
        text: the rest of a batch a segment ended inside, one a shard at most)."""
        if self.text is not None and self._whole():
            self.packed, self.text, self.ends = pack(self.text), None, None

    def _whole(self) -> bool:
        return self.start == 0 and self.stop == len(self.positions)

    def _before(self, ends: list[int]) -> int:
        return ends[self.start - 1] if self.start else 0

    def reaching(self, weight: int) -> int:
        """How many of its first items weigh ``weight`` or more together (at least one, at
        most all): where entries one by one would reach it."""
        if not self.lined:
            wanted = -(-weight // NO_LINE_BYTES)
        else:
            ends = self.line_ends()
            at = bisect.bisect_left(ends, self._before(ends) + weight, self.start, self.stop)
            wanted = at - self.start + 1
        return min(max(wanted, 1), self.stop - self.start)

    def split(self, end: tuple[int, int]) -> tuple[Run, Run | None]:
        """The items up to the position ordered ``end`` (included; at least the first) and
        the rest (None when there is none)."""
        cut = bisect.bisect_right(self.positions, end, self.start + 1, self.stop, key=order)
        return self.cut(cut - self.start)

    def cut(self, count: int) -> tuple[Run, Run | None]:
        """The first ``count`` items (1 ≤ count) and the rest (None when there is none)."""
        middle = self.start + count
        if middle >= self.stop:
            return self, None
        # the halves are parts of the batch's lines: their ends found once, for both
        text = self.lines_text() if self.lined else None
        ends = None if text is None else self.line_ends(text)
        return (
            Run(self.positions, self.start, middle, self.fact, self.hour, text, ends),
            Run(self.positions, middle, self.stop, self.fact, self.hour, text, ends),
        )


Piece = Entry | Run  # what a segment is made of


def line_ends(text: bytes) -> list[int]:
    """Where each line of ``text`` ends (after its line break): JSON lines, joined."""
    lines = text.split(b"\n")[:-1]  # (what follows the last line break: b"")
    return list(itertools.accumulate(len(line) + 1 for line in lines))


def split_pieces(pieces: Sequence[Piece], last: Position) -> tuple[list[Piece], list[Piece]]:
    """Pieces in stream order: those up to ``last`` (included) and those after, a run that
    ``last`` falls inside cut in two."""
    end = order(last)
    cut = bisect.bisect_right(pieces, end, key=_piece_order)
    head, tail = list(pieces[:cut]), list(pieces[cut:])
    if head and type(straddling := head[-1]) is Run and order(straddling.last) > end:
        head[-1], rest = straddling.split(end)
        if rest is not None:
            tail.insert(0, rest)
    return head, tail


def one_each(pieces: Iterable[Piece]) -> list[Entry]:
    """Pieces as an Entry each (a run's items one by one), for code that looks at records
    one at a time (the Lambda handler's batches, which are small)."""
    found: list[Entry] = []
    for piece in pieces:
        if isinstance(piece, Run):
            text = piece.lines_text() if piece.lined else None
            ends = [] if text is None else piece.line_ends(text)
            found.extend(
                Entry(
                    piece.positions[i],
                    piece.hour,
                    b"" if text is None else text[ends[i - 1] if i else 0 : ends[i]],
                    False,
                    piece.fact,
                )
                for i in range(piece.start, piece.stop)
            )
        else:
            found.append(piece)
    return found


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
        return b"".join(self.line_pieces(letters))

    def line_pieces(self, letters: bool) -> Iterator[bytes]:
        """One part's lines (records, or dead letters) a piece at a time: an Entry's line, a
        Run's lines joined."""
        return (e.line for e in self.entries if e.letter is letters)

    def count(self, letters: bool) -> int:
        return sum(e.count for e in self.entries if e.letter is letters)

    @property
    def records(self) -> int:
        """How many positions: stored items and dead letters."""
        return sum(e.count for e in self.entries)

    def until(self, last: Position) -> Segment:
        """The part of this segment up to ``last`` (included)."""
        return Segment(self.shard_id, tuple(split_pieces(self.entries, last)[0]))


def _piece_order(piece: Piece) -> tuple[int, int]:
    return order(piece.position)


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
                    head, rest = entry.cut(entry.reaching(limit - size))
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
