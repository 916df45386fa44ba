"""One shard's consumer: read -> convert -> write -> checkpoint, driven by the lifecycle.

The next GetRecords is in flight while the current batch is written. A checkpoint is written
only after every record up to it is durably in the table or the dead-letter table, and only
while our lease is still valid. Graceful stop (``stop`` set): finish the batch in hand,
checkpoint, return REQUESTED. A lost lease cancels this task from outside: nothing more is
written, in particular no checkpoint.

At the shard's end the children's leases are created first, then ``SHARD_END`` is written
naming them (``childShardIds``), in the KCL's order: a crash in between leaves the children
ready and the shard to finish again, never a child without a lease. A shard Kinesis no longer
knows (past retention) ends the same way, counted and logged once; its children are found by
the next shard sync, which its end triggers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from consumer.lease.held import HeldLease
from consumer.lease.model import SHARD_END
from consumer.metrics import Metrics
from consumer.pipeline.convert import Converter
from consumer.pipeline.segmented import Segmented
from consumer.pipeline.stage import Progress, WriteStage
from consumer.shard.budget import RecordBudget
from consumer.shard.discovery import Shard
from consumer.shard.lifecycle import Lifecycle, Reason, State
from consumer.shard.reader import Fetched, Reader
from kernel.aws import describe
from kernel.backoff import Backoff, sleep_or_stop
from kernel.errors import ConfigError
from kernel.handlers import Handler
from kernel.logs import get as get_logger

PARENT_POLL_S = 2.0  # rare: the leader assigns a child once its parents have ended
FINAL_CHECKPOINT_ATTEMPTS = 6  # ~3 s of backoff at most, inside the shutdown grace period
OUTSIDE_HASH_RANGE = "outside_hash_range"


@dataclasses.dataclass(frozen=True)
class ShardContext:
    """What every shard consumer of a worker shares."""

    stream: str
    worker_id: str
    handler: Handler
    stage: WriteStage
    metrics: Metrics
    checkpoint_interval_s: float
    parents_done: Callable[[frozenset[str]], Awaitable[bool]]  # reads the parents' leases
    make_reader: Callable[[str, str], Reader]  # (shard id, checkpoint) -> reader
    budget: RecordBudget
    # (parent shard id, its children) -> their leases exist (created unless they were)
    create_children: Callable[[str, Sequence[Shard]], Awaitable[None]]
    # Does the stream still exist? (a shard "not found" is only past retention if it does)
    stream_exists: Callable[[], Awaitable[bool]]
    # A shard's hash range when its lease does not record it (from the last ListShards)
    hash_range_of: Callable[[str], tuple[int, int] | None] = lambda shard_id: None
    on_written: Callable[[int], None] = lambda count: None
    # A configuration error met while consuming (fan-out refused for good: a missing
    # permission, no consumer): True when the worker adapted and the shard may start again at
    # once (``auto`` falls back to polling); False when the worker stops with the one line
    on_config_error: Callable[[ConfigError], bool] = lambda error: False
    clock: Callable[[], float] = time.monotonic
    # The archive and the insights, when on: the checkpoint then moves only to the end of a
    # segment they both committed
    segments: Segmented | None = None


class StreamNotFound(RuntimeError):
    """The stream itself is gone: no shard of it may be marked finished."""


class ShardConsumer:
    def __init__(self, held: HeldLease, context: ShardContext) -> None:
        self.held = held
        self.shard_id = held.key
        self.lifecycle = Lifecycle()
        self._ctx = context
        self._log = get_logger(worker_id=context.worker_id, shard_id=self.shard_id)
        self._outside_range = context.metrics.records_skipped.labels(
            context.stream, OUTSIDE_HASH_RANGE
        )
        self._mark_checkpoint = context.metrics.shard_age_tracker(self.shard_id)
        # (sequence number, sub-sequence number) safely stored and not yet checkpointed
        self._durable: tuple[str, int] | None = None
        lease = held.lease
        # The first batch resumes at the checkpoint: skip what it says was done.
        self._resume_after = (lease.checkpoint, lease.sub_sequence) if lease.has_sequence else None
        self._last_checkpoint_at = context.clock()
        self._millis_behind: int | None = None
        # KPL user records routed to another shard are dropped (the KCL's duplicate filter)
        self._converter = Converter(
            context.handler,
            context.stream,
            self.shard_id,
            context.stage.key_names,
            lease.hash_range or context.hash_range_of(self.shard_id),
        )
        self._archive = (
            context.segments.for_shard(self.shard_id, context.clock)
            if context.segments is not None
            else None
        )
        self.children: tuple[Shard, ...] | None = None  # named by Kinesis at the end
        self.gone = False  # the shard no longer exists (past retention)

    async def run(self, stop: asyncio.Event) -> Reason:
        lease = self.held.lease
        if lease.parents and not await self._wait_for_parents(lease.parents, stop):
            return self._shut_down(Reason.REQUESTED)
        self.lifecycle.advance(State.INITIALIZING)
        if lease.finished:
            self.lifecycle.advance(State.SHUTTING_DOWN, Reason.SHARD_END)
            self.lifecycle.advance(State.DONE)
            return Reason.SHARD_END
        reader = self._ctx.make_reader(self.shard_id, lease.checkpoint)
        self.lifecycle.advance(State.PROCESSING)
        self._log.info("shard_processing", checkpoint=lease.checkpoint)
        try:
            reason = await self._process(reader, stop)
        finally:
            await reader.aclose()  # a fan-out subscription is freed for the next owner
        if reason is Reason.SHARD_END:
            await self._flush_archive(final=True)  # every record archived before SHARD_END
            reason = await self._finish_shard(stop)
        self.lifecycle.advance(State.SHUTTING_DOWN, reason)
        if reason is Reason.REQUESTED:
            await self._last_archive_flush()
            await self._checkpoint_durable(FINAL_CHECKPOINT_ATTEMPTS)
        self.lifecycle.advance(State.DONE)
        self._log.info("shard_stopped", reason=reason.value)
        return reason

    async def _finish_shard(self, stop: asyncio.Event) -> Reason:
        """Children's leases, then SHARD_END naming them; retried while the lease is ours."""
        children = self.children or ()
        names = frozenset(child.shard_id for child in children)
        if self.gone:
            if not await self._ctx.stream_exists():
                # The whole stream was deleted: marking its shards finished would make a new
                # stream of the same name (shard ids start again at 0) skip its shards.
                raise StreamNotFound(f"stream {self._ctx.stream!r} no longer exists")
            self._ctx.metrics.shards_gone.labels(self._ctx.stream).inc()
            self._log.warning("shard_gone_treated_as_ended", checkpoint=self.held.lease.checkpoint)
        # Logged before the checkpoint: no child can start before this line exists.
        self._log.info("shard_end_reached", children=sorted(names), gone=self.gone)
        backoff = Backoff(base=0.1, cap=2.0)
        while True:
            try:
                if children:
                    await self._ctx.create_children(self.shard_id, children)
                if not await self.held.checkpoint(SHARD_END, 0, self._millis_behind, names):
                    self._log.warning("checkpoint_refused_lease_lost", position=SHARD_END)
                    return Reason.LEASE_LOST
                break
            except Exception as exc:  # throttled, unreachable: the lease is still ours
                self._log.warning("shard_end_checkpoint_failed", error=describe(exc))
                if not self.held.valid():
                    return Reason.LEASE_LOST
                if await sleep_or_stop(backoff.next_delay(), stop):
                    return Reason.REQUESTED  # the next owner reads the end again
        self._durable = None
        self._mark_checkpoint()
        self._ctx.metrics.shards_ended.labels(self._ctx.stream).inc()
        return Reason.SHARD_END

    def _shut_down(self, reason: Reason) -> Reason:
        self.lifecycle.advance(State.SHUTTING_DOWN, reason)
        self.lifecycle.advance(State.DONE)
        return reason

    async def _parents_done(self, parents: frozenset[str]) -> bool:
        try:
            return await self._ctx.parents_done(parents)
        except Exception as exc:  # read again after the pause
            self._log.warning("parent_lease_read_failed", error=describe(exc))
            return False

    async def _wait_for_parents(self, parents: frozenset[str], stop: asyncio.Event) -> bool:
        self._log.info("shard_waiting_on_parents", parents=sorted(parents))
        while not await self._parents_done(parents):
            if await sleep_or_stop(PARENT_POLL_S, stop):
                return False
        return True

    async def _process(self, reader: Reader, stop: asyncio.Event) -> Reason:
        # Two helper tasks, both cancelled and awaited before this method returns. Records
        # fetched are charged to the worker's budget until they are stored or abandoned.
        budget = self._ctx.budget
        # An idle shard's reader loops inside ``fetch_next``: this loop wakes only for
        # records, the shard's end, a stop, or a checkpoint that has come due.
        pending: asyncio.Future[Fetched] | None = asyncio.ensure_future(
            reader.fetch_next(self._wake_at)
        )
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while True:
                assert pending is not None
                either: set[asyncio.Future[Any]] = {pending, stopping}
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                if stop.is_set():
                    return Reason.REQUESTED
                fetched, pending = pending.result(), None
                try:
                    if not fetched.ended:
                        # overlaps the write
                        pending = asyncio.ensure_future(reader.fetch_next(self._wake_at))
                    await self._handle(fetched)
                finally:
                    budget.release(len(fetched.records))
                if fetched.millis_behind is not None:
                    self._millis_behind = fetched.millis_behind
                if fetched.ended:
                    self.children, self.gone = fetched.children, fetched.gone
                    return Reason.SHARD_END
                # Stored, its budget handed back: not kept while the next batch is awaited
                # (memory the budget would not count — a batch a shard, on every shard whose
                # next grant is slow to come: 64 shards' peak RSS 183-191 -> 107-111 MB).
                del fetched
                if not self.held.valid():
                    return Reason.LEASE_LOST
                if self._checkpoint_due():
                    await self._checkpoint_durable()
        finally:
            helpers = [task for task in (pending, stopping) if task is not None]
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            fetched_unhandled = (
                pending is not None
                and pending.done()
                and not pending.cancelled()
                and pending.exception() is None
            )
            if fetched_unhandled:
                assert pending is not None
                budget.release(len(pending.result().records))

    async def _handle(self, fetched: Fetched) -> None:
        if not fetched.records:
            await self._flush_archive()  # an idle shard's segment comes of age
            return
        errors = self._ctx.metrics.handler_errors.labels(self._ctx.stream)
        converted = await self._converter.retrying(
            fetched.records, self._log, errors, self._resume_after
        )
        self._resume_after = None
        if converted.outside_range:
            self._outside_range.inc(converted.outside_range)
        progress = Progress(converted, list(converted.dead))
        await self._ctx.stage.write(
            progress, self._ctx.stream, self.shard_id, self._log, on_written=self._note_written
        )
        progress.raise_if_failed()  # before the checkpoint can move past these records
        if self._archive is not None:  # the checkpoint waits for the segment
            self._archive.add_batch(progress, fetched.records, self._ctx.stream)
            await self._flush_archive()
            return
        position = (fetched.records[-1]["SequenceNumber"], converted.last_sub)
        lease = self.held.lease
        if position != (lease.checkpoint, lease.sub_sequence):  # not the resumed record alone
            self._durable = position

    def _note_written(self, positions: Sequence[int]) -> None:
        self._ctx.on_written(len(positions))

    async def _flush_archive(self, final: bool = False) -> None:
        if self._archive is not None:
            written = await self._archive.flush(final)
            if written is not None:
                self._durable = written

    async def _last_archive_flush(self) -> None:
        """On a requested stop: what is buffered, written if S3 lets us in time; otherwise
        the checkpoint stays at the last segment and the next owner reads the rest again."""
        try:
            await self._flush_archive(final=True)
        except Exception as exc:
            self._log.warning("archive_flush_failed", error=describe(exc))

    def _wake_at(self) -> float | None:
        """When the loop must wake even without records: a checkpoint or a segment due."""
        due = self._checkpoint_due_at()
        segment_due = self._archive.due_at() if self._archive is not None else None
        if due is None or (segment_due is not None and segment_due < due):
            return segment_due
        return due

    def _checkpoint_due_at(self) -> float | None:
        """When the next checkpoint is due (None: nothing to checkpoint). At most one per
        ``checkpoint_interval_s``, busy or caught up: it is the only lease write a shard makes
        (the last one, on a stop or hand-back, is not due but written all the same)."""
        if self._durable is None:
            return None
        return self._last_checkpoint_at + self._ctx.checkpoint_interval_s

    def _checkpoint_due(self) -> bool:
        due = self._checkpoint_due_at()
        return due is not None and self._ctx.clock() >= due

    async def _checkpoint_durable(self, attempts: int = 1) -> None:
        if self._durable is not None:
            await self._checkpoint(*self._durable, attempts=attempts)

    async def _checkpoint(self, position: str, sub_sequence: int = 0, attempts: int = 1) -> None:
        """Checkpoint ``position``. While processing one attempt is enough (the next
        checkpoint carries this one); the last checkpoint of a shard gets ``attempts``."""
        backoff = Backoff(base=0.1, cap=1.0)
        for attempt in range(1, attempts + 1):
            try:
                ok = await self.held.checkpoint(position, sub_sequence, self._millis_behind)
                break
            except Exception as exc:
                self._log.warning("checkpoint_failed", error=describe(exc), attempt=attempt)
                if attempt == attempts:
                    return
                await backoff.sleep()
        if not ok:
            self._log.warning("checkpoint_refused_lease_lost", position=position)
            return
        if (position, sub_sequence) == self._durable:
            self._durable = None
        self._last_checkpoint_at = self._ctx.clock()
        self._mark_checkpoint()
