"""A shard's segmented destinations — the archive (S3) and the insights (DynamoDB) — and the
one segment stream they share.

Both are exactly once by the same argument (:mod:`consumer.pipeline.archive`): a segment is a
run of consecutive positions, committed conditionally, and the shard's checkpoint moves only
to the end of a segment every destination has committed, so a new owner's first segment
starts where any segment committed beyond the checkpoint starts, and adopts it. That only
holds if every destination cuts the same segments — one checkpoint per shard — so there is
one buffer per shard and each segment goes to every destination in turn: the archive first
(its object is what a successor looks for first), then the insights. When a destination finds
the segment committed already (adopted, ending at its own end) the destinations after it
commit exactly that range.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from consumer.metrics import Metrics
from consumer.pipeline.archive import ArchiveBuffer, Segment
from consumer.pipeline.convert import Record
from consumer.pipeline.pieces import Pack, Piece, Position, order
from consumer.pipeline.sink import Sink
from consumer.pipeline.stage import Progress
from kernel.errors import IllegalTransition
from kernel.logs import get as get_logger


class CommitWire(Protocol):
    """A sink's wire that commits segments and tells what became of each."""

    def outcome(self, segment: Segment) -> Position | None: ...


@dataclasses.dataclass(frozen=True)
class Committer:
    """One destination of segments: its sink (retries, metrics) and its wire."""

    name: str
    sink: Sink[Segment]
    wire: CommitWire

    async def commit(self, segment: Segment) -> Position | None:
        """None: committed as given; else the end of a segment found committed there."""
        await self.sink.write([segment])  # retried until written; raises otherwise
        return self.wire.outcome(segment)


# (progress, records, stream, shard) -> the batch's entries, in stream order
EntriesOf = Callable[[Progress, Sequence[Record], str, str], list[Piece]]


class ShardSegments:
    """One shard's buffer and its committers; answers how far the shard's records are in
    committed segments (the checkpoint's limit)."""

    def __init__(
        self,
        buffer: ArchiveBuffer,
        committers: Sequence[Committer],
        entries_of: EntriesOf,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.buffer = buffer
        self._committers = tuple(committers)
        self._entries_of = entries_of
        self._clock = clock
        self._log = get_logger(shard_id=buffer.shard_id)
        self._follows_ours = False  # the last segment was committed by us, not adopted

    def add(self, entries: Sequence[Piece]) -> None:
        self.buffer.add(entries, self._clock())

    def add_batch(self, progress: Progress, records: Sequence[Record], stream: str) -> None:
        """A batch the write stage finished (everything in it durable)."""
        self.add(self._entries_of(progress, records, stream, self.buffer.shard_id))

    def due_at(self) -> float | None:
        return self.buffer.due_at()

    async def flush(self, final: bool = False) -> Position | None:
        """Commit every complete segment (all, with ``final``); the end of the last one
        committed, or None when none was."""
        written: Position | None = None
        while (segment := self.buffer.next_segment(self._clock(), final)) is not None:
            if self._follows_ours:
                segment = dataclasses.replace(segment, follows_ours=True)
            end, adopted = await self._commit(segment)
            self._follows_ours = not adopted
            if order(end) > order(segment.last):  # adopted beyond what we have: read on
                self.buffer.cover(end)
                break
            self.buffer.written(end, self._clock())
            written = end
        return written

    async def _commit(self, segment: Segment) -> tuple[Position, bool]:
        """The end of the segment committed, and whether a destination adopted it."""
        end, adopted_by = segment.last, ""
        for committer in self._committers:
            part = segment if end == segment.last else segment.until(end)
            found = await committer.commit(part)
            if found is None:
                continue
            self._log.info(
                "segment_adopted", by=committer.name, first=segment.first, last=found, ours=end
            )
            if adopted_by and found != end:  # two destinations disagree on one segment
                raise IllegalTransition(
                    f"{committer.name} holds {segment.first}..{found}, "
                    f"{adopted_by} {segment.first}..{end}"
                )
            if order(found) > order(segment.last):
                return found, True  # the rest comes with the next reads; all destinations wait
            end, adopted_by = found, committer.name
        return end, bool(adopted_by)


@dataclasses.dataclass(frozen=True)
class Segmented:
    """What every shard's segmented destinations share; :meth:`for_shard` makes one."""

    committers: Sequence[Committer]  # one each per worker: outcomes keyed by shard, position
    entries_of: EntriesOf
    max_bytes: int
    max_age_s: float
    pack: Pack | None = None  # the archive's: its runs' lines held packed

    def for_shard(self, shard_id: str, clock: Callable[[], float]) -> ShardSegments:
        buffer = ArchiveBuffer(shard_id, self.max_bytes, self.max_age_s, self.pack)
        return ShardSegments(buffer, self.committers, self.entries_of, clock)


def committer(name: str, wire: CommitWire, metrics: Metrics, slots: asyncio.Semaphore) -> Committer:
    sink: Sink[Segment] = Sink(wire, concurrency=slots, metrics=metrics, wants="a segment")  # type: ignore[arg-type]
    return Committer(name, sink, wire)
