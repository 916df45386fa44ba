"""What an archive segment is made of (pure): a stored item or dead letter's
:class:`Entry`, or a :class:`Run` of one batch's consecutive stored items — its lines joined,
or packed — and how pieces in stream order are cut at a position."""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import zlib
from array import array
from collections.abc import Callable, Iterable, Sequence
from typing import Any, overload

Position = tuple[str, int]  # (sequence number, sub-sequence number)
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


class PackedPositions(Sequence[Position]):
    """A batch's positions held as one string of its sequence numbers, all of one width, and
    its sub-sequence numbers in an array (none when all are 0), instead of a tuple and a
    string a record. Why: a segment holds its batches' positions until it commits (up to
    131,072 records a shard), and two objects a record kept that long, scattered among the
    worker's short-lived objects, cost the whole worker, as the insights' facts a record did
    (``consumer.insights.kept``). A position is made when it is asked for — a run's first and
    last, a bisection's few — which is rare."""

    __slots__ = ("_count", "_sequences", "_subs", "_width")

    def __init__(self, sequences: str, width: int, subs: array[int] | None) -> None:
        self._sequences = sequences
        self._width = width
        self._subs = subs
        self._count = len(sequences) // width

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> Position: ...

    @overload
    def __getitem__(self, index: slice) -> list[Position]: ...

    def __getitem__(self, index: int | slice) -> Position | list[Position]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._count))]
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError("position index out of range")
        at = index * self._width
        sub = 0 if self._subs is None else self._subs[index]
        return self._sequences[at : at + self._width], sub


def positions_of(sequences: Sequence[str], subs: Sequence[int]) -> Sequence[Position]:
    """The positions (``sequences[i]``, ``subs[i]``), packed when every sequence number has
    the same length (Kinesis' do, within a shard), else as a list of tuples."""
    count = len(sequences)
    width = len(sequences[0]) if count else 0
    joined = "".join(sequences) if width else ""
    # (one length, the least, and the total they make: every one that length)
    if not width or len(joined) != width * count or min(map(len, sequences)) != width:
        return list(zip(sequences, subs, strict=True))
    return PackedPositions(joined, width, array("q", subs) if any(subs) else None)


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

    positions: Sequence[Position]  # the batch's stored items' positions, in stream order
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
    cut = bisect.bisect_right(pieces, end, key=piece_order)
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


def piece_order(piece: Piece) -> tuple[int, int]:
    return order(piece.position)
