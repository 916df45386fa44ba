"""The sink: one engine that makes entries durable in a destination, with retries, bisection
and bounded concurrency.

Every destination — the records table, the dead-letter table, the alert topic, the archive —
is a :class:`Wire` (how it takes one chunk of entries) under this one engine, so all of them
follow the same rules, in the worker and in the Lambda handler alike:

* ``write`` returns only when every entry is durable — sent, or merged away under a later
  entry with the same identity that is sent — or has been isolated as one the destination
  refuses (returned to the caller, which dead-letters it).
* Transient failures (throttles, 5xx, timeouts: :func:`kernel.aws.classify` says RETRY) and
  entries a chunk left unprocessed are retried with capped exponential backoff and full
  jitter, for as long as it takes: a slow or absent destination holds the caller here, which
  is the backpressure that stops the readers.
* An error that blames the content (the wire's ``refusal_codes``) is bisected down to the one
  entry at fault, which comes back :class:`Refused`; other errors (access denied, a missing
  table or topic, a bug) are not the entries' fault and are raised.

Entries with the same identity (a table item's key) are sent newest first, one version per
round: BatchWriteItem refuses duplicate keys in one request, and an older value must never
win. When the destination refuses the newest version, the one before it is sent in a further
round, and so on, so that no entry merged away under a refused one is lost.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from consumer.metrics import Metrics
from kernel.aws import classify, describe, error_code, is_throttle
from kernel.backoff import Backoff
from kernel.errors import Action

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


def default_backoff() -> Backoff:
    """A destination's backoff between retries of a chunk, unless told otherwise."""
    return Backoff(base=0.05, cap=5.0)


class Wire(Protocol[T]):
    """How one destination takes a chunk of entries."""

    @property
    def destination(self) -> str:
        """What metrics call it: ``table``, ``dead_letters``, ``alerts``, ``archive``."""

    @property
    def api(self) -> str:
        """The AWS call, for the throttle and error metrics (``BatchWriteItem``, …)."""

    @property
    def max_chunk(self) -> int: ...

    @property
    def refusal_codes(self) -> frozenset[str]:
        """Error codes that blame an entry of the chunk: bisect, never retry as they are."""

    @property
    def refusal_reason(self) -> str:
        """The dead-letter reason of an entry refused (``rejected_by_dynamodb``, …)."""

    def identity(self, entry: T) -> Hashable:
        """What makes two entries versions of one (raise KeyError if it has none)."""

    async def send(self, chunk: Sequence[T]) -> Sequence[T]:
        """Send the chunk; answer the entries left unprocessed (equal by identity)."""


class Prepared(Protocol[T_co]):
    """A chunk made ready to go ahead of its turn (a wire may offer ``preparer``, below)."""

    @property
    def size(self) -> int:
        """The bytes it holds until sent."""

    async def send(self) -> Sequence[T_co]:
        """Send it, once: as :meth:`Wire.send` of its chunk answers."""


# A wire's optional ``async preparer() -> Prepare | None``: what prepares a chunk now to send
# later (the table's on the lean path: framed and signed); a round prepares its chunks a burst
# at a time, so that the work is done back to back, not as each answer wakes the loop: a
# batch's chunks at once, or as many as hold ``PREPARED_AHEAD_BYTES`` (a GetRecords answer of
# 10,000 TELEMAX readings makes 1.7 MB of requests; what is prepared is held until sent, about
# as much again as the entries it was made of).
Prepare = Callable[[Sequence[T]], Prepared[T]]
PREPARED_AHEAD_BYTES = 4 << 20


@dataclasses.dataclass(frozen=True, slots=True)
class Refused(Generic[T]):
    """An entry the destination will never accept, with its error. ``position``: where it stood
    in the entries given to :meth:`Sink.write`, so the caller finds what it came from."""

    position: int
    entry: T
    reason: str
    detail: str


# ``on_durable(positions)``: these positions of the entries given to ``write`` are now durable
OnDurable = Callable[[Sequence[int]], None]


def ignore(positions: Sequence[int]) -> None:
    """``on_durable`` for a caller that only waits for the write."""


KEYLESS: Any = object()  # the identity of an entry without one


def one_by_one(identity: Callable[[T], Hashable]) -> Callable[[Sequence[T]], list[Hashable]]:
    """Entries' identities from ``identity`` of each (``KEYLESS`` where it raises KeyError)."""

    def identities(entries: Sequence[T]) -> list[Hashable]:
        found: list[Hashable] = []
        for entry in entries:
            try:
                found.append(identity(entry))
            except KeyError:
                found.append(KEYLESS)
        return found

    return identities


def versions_by_identity(
    entries: Sequence[T], identities: Sequence[Hashable], wants: str
) -> tuple[dict[Hashable, list[int]], list[Refused[T]]]:
    """The positions of each identity's entries in the order given (the last is the newest),
    identities in order of first appearance; ``identities`` are the entries' (``KEYLESS`` for
    one without: :func:`one_by_one` names them with a per-entry function). Entries without
    one can never be sent: they come back refused (``missing_key``; ``wants`` says what they
    lack)."""
    by_identity: dict[Hashable, list[int]] = {}
    keyless: list[Refused[T]] = []
    for position, (entry, key) in enumerate(zip(entries, identities, strict=True)):
        if key is KEYLESS:
            keyless.append(Refused(position, entry, "missing_key", f"needs {wants}"))
            continue
        versions = by_identity.get(key)
        if versions is None:
            by_identity[key] = [position]
        else:
            versions.append(position)
    return by_identity, keyless


class Sink(Generic[T]):
    """The engine for one destination; ``concurrency`` bounds its requests in flight (shared
    with other sinks when they share the semaphore)."""

    def __init__(
        self,
        wire: Wire[T],
        *,
        concurrency: asyncio.Semaphore,
        metrics: Metrics,
        backoff: Callable[[], Backoff] = default_backoff,
        on_error: Callable[[BaseException], None] = lambda exc: None,
        wants: str = "an identity",
    ) -> None:
        self.wire = wire
        self._slots = concurrency
        self._metrics = metrics
        self._backoff = backoff
        self._on_error = on_error
        self._wants = wants
        destination = wire.destination
        # The most requests one write can have in flight: the slots there are. (Read before
        # any is taken; a semaphore shared by several sinks has its whole width here.)
        self._width = max(1, concurrency._value)
        self._seconds = metrics.destination_seconds.labels(destination)
        self._written = metrics.destination_written.labels(destination)
        self._retried = metrics.destination_retried.labels(destination)
        self._refused = metrics.destination_refused.labels(destination)

    async def write(self, entries: Sequence[T], on_durable: OnDurable = ignore) -> list[Refused[T]]:
        """Make every entry durable (last wins per identity); return those refused outright.

        Every entry comes out either durable or refused: an entry whose later version is
        refused is sent itself in a further round (the last *accepted* version wins).
        ``on_durable(positions)`` is called as soon as more of ``entries`` are durable,
        request by request, each position exactly once; entries merged away are durable with
        the entry that replaced them, when that one is sent.
        """
        identity = self.wire.identity
        # a wire may name a batch's identities at once (the table's: its hot path)
        keys = (getattr(self.wire, "identities", None) or one_by_one(identity))(entries)
        distinct = set(keys)  # (a set of 10,000 keys: 28 ns a key; dict.fromkeys 68)
        if len(distinct) == len(keys) and KEYLESS not in distinct:
            # Every entry its own identity, as in most batches: one round, nothing merged,
            # no versions to keep (the write stage 1.5 -> 1.3 µs a reading in process:
            # python -m tests.bench.batch_cost)
            refused = await _Round(self, entries, {}, on_durable).write(list(range(len(keys))))
            if refused:
                self._refused.inc(len(refused))
            return refused
        versions, refused = versions_by_identity(entries, keys, self._wants)
        survivors = [newest[-1] for newest in versions.values()]
        while survivors:
            # A survivor stands for the older versions of its identity still behind it: when
            # it is sent they are merged away under it, durable with it.
            merged = {v[-1]: v[:-1] for v in versions.values() if len(v) > 1}
            rejected = await _Round(self, entries, merged, on_durable).write(survivors)
            refused += rejected
            survivors = []
            for refusal in rejected:  # the version before a refused one gets its turn
                older = versions[identity(refusal.entry)]
                older.pop()
                if older:
                    survivors.append(older[-1])
        if refused:
            self._refused.inc(len(refused))
        return refused

    def _observe(self, seconds: float) -> None:
        self._seconds.observe(seconds)

    def _count_retried(self, count: int) -> None:
        self._retried.inc(count)

    def _count_error(self, exc: BaseException) -> None:
        api = self.wire.api
        if is_throttle(exc):
            self._metrics.throttles.labels(api).inc()
        code = error_code(exc) or type(exc).__name__
        self._metrics.aws_errors.labels(api, code).inc()
        self._metrics.destination_failed.labels(self.wire.destination, code).inc()
        self._on_error(exc)


def _position(refusal: Refused[Any]) -> int:
    return refusal.position


class _Round(Generic[T]):
    """One round of a write: entries of distinct identities (named by position), in chunks,
    several chunks in flight."""

    def __init__(
        self,
        sink: Sink[T],
        entries: Sequence[T],
        merged: dict[int, list[int]],
        on_durable: OnDurable,
    ) -> None:
        self._sink = sink
        self._entries = entries
        self._merged = merged
        self._on_durable = on_durable

    async def write(self, positions: list[int]) -> list[Refused[T]]:
        size = self._sink.wire.max_chunk
        parts = [positions[i : i + size] for i in range(0, len(positions), size)]
        todo = _Chunks(parts, self._entries, await _preparer(self._sink.wire))
        refused: list[Refused[T]] = []

        async def take_chunks() -> None:
            slot = _Slot(self._sink._slots)
            try:
                while (taken := todo.next()) is not None:
                    refused.extend(await self._write_chunk(*taken, slot))
            finally:
                slot.give_back()

        # As many writers as chunks can be in flight, each taking the next chunk when its last
        # is done, rather than a task a chunk waiting for a slot: a 10,000-record batch is 400
        # chunks, its tasks' creation and wake-ups most of the write stage's cost a chunk. A
        # writer keeps its slot from chunk to chunk (not while it waits to retry), so a batch
        # is written as soon as slots let it, before the batches that asked after it, as
        # when its chunks queued for slots together: handed back after each chunk, slots went
        # round every batch in flight, each batch (and the records it holds) finishing later.
        writers = min(len(parts), self._sink._width)
        if writers <= 1:
            await take_chunks()
        else:
            try:
                async with asyncio.TaskGroup() as group:
                    for _ in range(writers):
                        group.create_task(take_chunks())
            except ExceptionGroup as failed:  # the same error as a one-chunk write raises
                raise failed.exceptions[0] from None
        refused.sort(key=_position)
        return refused

    async def _write_chunk(
        self, positions: list[int], prepared: Prepared[T] | None, slot: _Slot
    ) -> list[Refused[T]]:
        sink, entries, wire = self._sink, self._entries, self._sink.wire
        backoff: Backoff | None = None  # made at the first retry: most chunks never retry
        pending = positions
        while pending:
            try:
                await slot.take()
                started = time.perf_counter()
                if prepared is not None:  # (its first try only: a retry sends what is left)
                    sending, prepared = prepared.send(), None
                else:
                    sending = wire.send([entries[p] for p in pending])
                left = await sending
                sink._observe(time.perf_counter() - started)
            except Exception as exc:
                action = classify(exc)
                if action is Action.RETRY:
                    sink._count_error(exc)
                    slot.give_back()  # (no slot held while it waits)
                    backoff = backoff or sink._backoff()
                    await backoff.sleep()
                    continue
                if error_code(exc) in wire.refusal_codes:
                    # The destination refuses the request for what some entry holds: find which.
                    return await self._bisect(pending, exc, slot)
                raise  # access denied, a missing table, a bug: not the entries' fault
            # What was left unprocessed (the wire's copies), as positions, found by identity.
            still = self._positions_of(pending, left) if left else []
            if len(still) < len(pending):
                durable = self._durable(pending, still)
                sink._written.inc(len(durable))
                self._on_durable(durable)
            if still:
                sink._count_retried(len(still))
                slot.give_back()
                backoff = backoff or sink._backoff()
                await backoff.sleep()
            elif backoff is not None:
                backoff.reset()
            pending = still
        return []

    def _positions_of(self, sent: list[int], left: Sequence[T]) -> list[int]:
        identity = self._sink.wire.identity
        by_identity = {identity(self._entries[p]): p for p in sent}
        return [by_identity[identity(entry)] for entry in left]

    def _durable(self, sent: list[int], left: list[int]) -> list[int]:
        """Positions now durable: those sent, and the older versions merged away under them."""
        if left:
            not_sent = set(left)
            stored = [p for p in sent if p not in not_sent]
        else:
            stored = sent
        if not self._merged:
            return stored
        merged = self._merged
        return stored + [older for p in stored for older in merged.get(p, ())]

    async def _bisect(self, positions: list[int], exc: Exception, slot: _Slot) -> list[Refused[T]]:
        if len(positions) == 1:
            (position,) = positions
            entry = self._entries[position]
            return [Refused(position, entry, self._sink.wire.refusal_reason, describe(exc))]
        middle = len(positions) // 2
        first = await self._write_chunk(positions[:middle], None, slot)
        return first + await self._write_chunk(positions[middle:], None, slot)


async def _preparer(wire: Wire[T]) -> Prepare[T] | None:
    """The wire's ``prepare`` for a round, if it has one and it can be had now. One that fails
    (credentials that cannot be fetched, say) is no preparer: the chunks go by ``send``, where
    the same failure, if it lasts, is retried or raised as any other."""
    preparer = getattr(wire, "preparer", None)
    if preparer is None:
        return None
    try:
        prepare: Prepare[T] | None = await preparer()
    except Exception:
        return None
    return prepare


class _Chunks(Generic[T]):
    """A round's chunks (positions of its entries), each taken by one writer; with a wire's
    ``prepare``, each taken prepared, a burst of the next ones prepared when none is."""

    def __init__(
        self, parts: list[list[int]], entries: Sequence[T], prepare: Prepare[T] | None
    ) -> None:
        self._parts = iter(parts)
        self._entries = entries
        self._prepare = prepare
        self._ready: collections.deque[tuple[list[int], Prepared[T] | None]] = collections.deque()

    def next(self) -> tuple[list[int], Prepared[T] | None] | None:
        """The next chunk and what was prepared of it (None: nothing is), or None: no more."""
        if self._ready:
            return self._ready.popleft()
        prepare = self._prepare
        if prepare is None:
            part = next(self._parts, None)
            return None if part is None else (part, None)
        entries, ready, held = self._entries, self._ready, 0
        for part in self._parts:
            prepared = prepare([entries[p] for p in part])
            ready.append((part, prepared))
            held += prepared.size
            if held >= PREPARED_AHEAD_BYTES:
                break
        return ready.popleft() if ready else None


class _Slot:
    """One writer's hold on a slot of the sink's semaphore: taken for a request, kept for the
    next, handed back to wait (a retry's backoff) and at the end."""

    def __init__(self, slots: asyncio.Semaphore) -> None:
        self._slots = slots
        self._held = False

    async def take(self) -> None:
        if not self._held:
            await self._slots.acquire()
            self._held = True

    def give_back(self) -> None:
        if self._held:
            self._held = False
            self._slots.release()
