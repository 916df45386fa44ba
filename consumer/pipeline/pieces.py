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

    Without the archive (the insights alone) it has no lines; with it, its JSON lines are
    ``text[begin:end]`` — ``text`` the batch's lines joined into one bytes object (not an
    object a line, each kept as long as its segment among the worker's short-lived objects),
    ``end`` None for a run of the whole batch —, and the run is of one hour. A line ends at
    its one line break (JSON escapes any other), so where a run's items reach a weight is
    found in its bytes (:meth:`cut_reaching`: a ``find`` and a ``count`` in C), not in a
    list of an int a line (made in Python for the whole batch at each cut: 0.3-0.5 µs a
    line, the archive's 1 MiB objects' largest cost of their own, 2026-12-06).

    Read as entries would be: ``position`` is its first, ``last`` its last, ``count`` how
    many, ``line`` its lines joined; a segment or buffer that ends inside it splits it
    (:meth:`split`, :meth:`cut`, :meth:`cut_reaching`).

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
    # its own lines' bytes in the batch's (decompressed, when packed): [begin:end]; end None:
    # to the end (a run of the whole batch)
    begin: int = 0
    end: int | None = None
    letter: bool = False
    packed: Packed | None = None  # ``text`` compressed (then ``text`` is None)

    def __post_init__(self) -> None:
        whole = self.start == 0 and self.stop == len(self.positions)
        if self.text is not None and self.end is None and not whole:
            raise ValueError("a run of a part of a batch's lines needs where they end")

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
        return text if self.end is None else text[self.begin : self.end]

    @property
    def weight(self) -> int:
        if not self.lined:
            return NO_LINE_BYTES * (self.stop - self.start)
        if self.end is None:
            return self.packed.size if self.packed is not None else len(self.lines_text())
        return self.end - self.begin

    def lines_text(self) -> bytes:
        """``text``, decompressed when packed (it has lines)."""
        if self.packed is not None:
            return self.packed.lines()
        assert self.text is not None
        return self.text

    def pack(self, pack: Pack) -> None:
        """Keep the lines of a whole batch's run packed (a part of one keeps the batch's
        text: the rest of a batch a segment ended inside, one a shard at most)."""
        if self.text is not None and self.end is None:
            self.packed, self.text = pack(self.text), None

    def _reach(self, weight: int, text: bytes | None) -> tuple[int, int | None]:
        """(how many of its first items weigh ``weight`` or more together — at least one, at
        most all: where entries one by one would reach it —, the byte of ``text`` — its lines,
        None without — where those items' lines end; None without lines)."""
        count = self.stop - self.start
        if text is None:
            return min(max(-(-weight // NO_LINE_BYTES), 1), count), None
        end = len(text) if self.end is None else self.end
        # the line holding the run's byte ``weight`` (counted from 1): the first that reaches
        newline = text.find(b"\n", self.begin + max(weight, 1) - 1, end)
        if newline < 0:
            return count, end
        return text.count(b"\n", self.begin, newline + 1), newline + 1

    def cut_reaching(self, weight: int) -> tuple[Run, Run | None]:
        """:meth:`cut` where entries one by one would reach ``weight``: the first items that
        weigh it or more together (at least one, at most all), and the rest (None when there
        is none)."""
        text = self.lines_text() if self.lined else None  # (a packed run's: decompressed once)
        count, at = self._reach(weight, text)
        return self._cut(count, at, text)

    def split(self, end: tuple[int, int]) -> tuple[Run, Run | None]:
        """The items up to the position ordered ``end`` (included; at least the first) and
        the rest (None when there is none)."""
        cut = bisect.bisect_right(self.positions, end, self.start + 1, self.stop, key=order)
        return self.cut(cut - self.start)

    def cut(self, count: int) -> tuple[Run, Run | None]:
        """The first ``count`` items (1 ≤ count) and the rest (None when there is none)."""
        if self.start + count >= self.stop or not self.lined:
            return self._cut(count, None, None)
        # the byte after the count-th line: found line by line (a cut at a position, rare:
        # an adopted segment's end; a cut at a weight finds it at once, cut_reaching)
        text, at = self.lines_text(), self.begin
        find = text.find
        for _ in range(count):
            at = find(b"\n", at) + 1
        return self._cut(count, at, text)

    def _cut(self, count: int, at: int | None, text: bytes | None) -> tuple[Run, Run | None]:
        """The first ``count`` items, their lines ending at byte ``at`` of ``text`` (its
        lines, decompressed if packed: the halves'), and the rest."""
        middle = self.start + count
        if middle >= self.stop:
            return self, None
        if text is None:
            return (
                Run(self.positions, self.start, middle, self.fact, self.hour),
                Run(self.positions, middle, self.stop, self.fact, self.hour),
            )
        assert at is not None
        end = len(text) if self.end is None else self.end
        return (
            Run(self.positions, self.start, middle, self.fact, self.hour, text, self.begin, at),
            Run(self.positions, middle, self.stop, self.fact, self.hour, text, at, end),
        )


Piece = Entry | Run  # what a segment is made of


def line_ends(text: bytes) -> list[int]:
    """Where each line of ``text`` ends (after its line break): JSON lines, joined."""
    lines = text.split(b"\n")[:-1]  # (what follows the last line break: b"")
    return list(itertools.accumulate(len(line) + 1 for line in lines))


def lines_of(text: bytes) -> list[bytes]:
    """Each line of ``text`` (JSON lines, joined), its line break kept."""
    return [text[start:stop] for start, stop in itertools.pairwise([0, *line_ends(text)])]


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
            count = piece.stop - piece.start
            lines = lines_of(piece.line) if piece.lined else [b""] * count
            found.extend(
                Entry(piece.positions[i], piece.hour, line, False, piece.fact)
                for i, line in zip(range(piece.start, piece.stop), lines, strict=True)
            )
        else:
            found.append(piece)
    return found


def piece_order(piece: Piece) -> tuple[int, int]:
    return order(piece.position)
