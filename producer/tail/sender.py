"""The tail's sender: batches lines into PutRecords calls and never gives a line up.

Retryable failures (throttling, 5xx, connection errors, failed entries) are retried with
capped exponential backoff and full jitter, as long as it takes: a log line has no retry
budget. What cannot succeed by retrying (no permission, no stream) stops the tail.

Backpressure: ``submit`` waits while ``max_records`` / ``max_bytes`` are queued *or in
flight*. When Kinesis throttles, calls stay in flight longer, the buffer fills, ``submit``
blocks and the tail stops reading files until the stream keeps up again.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import TYPE_CHECKING

from kernel.backoff import Backoff
from kernel.kpl.encode import Entry
from producer.shipper import MAX_BATCH_BYTES, MAX_BATCH_RECORDS, Tally, put_records

if TYPE_CHECKING:
    from types_aiobotocore_kinesis import KinesisClient

    from producer.metrics import ProducerMetrics


class AckingSender:
    def __init__(
        self,
        kinesis: KinesisClient,
        stream: str,
        on_acknowledged: Callable[[Entry], None],
        *,
        concurrency: int = 1,
        linger_s: float = 0.1,
        max_records: int = 10 * MAX_BATCH_RECORDS,
        max_bytes: int = 4 * MAX_BATCH_BYTES,
        metrics: ProducerMetrics | None = None,
        backoff_cap_s: float = 5.0,
    ) -> None:
        self._kinesis = kinesis
        self.stream = stream
        self._on_acknowledged = on_acknowledged
        self._slots = asyncio.Semaphore(concurrency)
        self._linger_s = linger_s
        self._max_records = max_records
        self._max_bytes = max_bytes
        self._metrics = metrics
        self._backoff_cap_s = backoff_cap_s
        self._queue: collections.deque[Entry] = collections.deque()
        self._queued_bytes = 0
        self._held_records = 0  # queued + in flight
        self._held_bytes = 0
        self._changed = asyncio.Condition()
        self._closed = False
        self.tally = Tally()

    @property
    def held(self) -> int:
        """Entries submitted and not yet acknowledged."""
        return self._held_records

    async def submit(self, entry: Entry) -> None:
        """Queue ``entry``; waits while the buffer is full (backpressure)."""
        async with self._changed:
            await self._changed.wait_for(self._has_room)
            self._queue.append(entry)
            self._queued_bytes += entry.size
            self._held_records += 1
            self._held_bytes += entry.size
            self._changed.notify_all()
        self._gauge()

    def _has_room(self) -> bool:
        # Always admit one entry into an empty buffer, however large.
        return self._held_records == 0 or (
            self._held_records < self._max_records and self._held_bytes < self._max_bytes
        )

    async def close(self) -> None:
        """No more entries; ``run`` returns once everything queued is acknowledged."""
        async with self._changed:
            self._closed = True
            self._changed.notify_all()

    async def run(self) -> None:
        """Send until closed and drained. Raises what no retry can fix."""
        try:
            async with asyncio.TaskGroup() as group:
                while batch := await self._next_batch():
                    await self._slots.acquire()
                    group.create_task(self._send(batch))
        except ExceptionGroup as group_error:
            raise group_error.exceptions[0] from None

    def _batch_ready(self) -> bool:
        return (
            self._closed
            or len(self._queue) >= MAX_BATCH_RECORDS
            or self._queued_bytes >= MAX_BATCH_BYTES
        )

    async def _next_batch(self) -> list[Entry]:
        async with self._changed:
            await self._changed.wait_for(lambda: self._queue or self._closed)
            if not self._batch_ready():
                # Linger briefly so a trickle of lines still makes few, fuller calls.
                try:
                    async with asyncio.timeout(self._linger_s):
                        await self._changed.wait_for(self._batch_ready)
                except TimeoutError:
                    pass
            batch: list[Entry] = []
            size = 0
            while self._queue and len(batch) < MAX_BATCH_RECORDS:
                entry = self._queue[0]
                if batch and size + entry.size > MAX_BATCH_BYTES:
                    break
                batch.append(self._queue.popleft())
                size += entry.size
            self._queued_bytes -= size
            return batch

    async def _send(self, batch: list[Entry]) -> None:
        try:
            pending = batch
            self.tally.sent += len(batch)
            backoff = Backoff(base=0.1, cap=self._backoff_cap_s)
            while pending:
                acknowledged, pending = await put_records(
                    self._kinesis, self.stream, pending, self.tally, self._metrics
                )
                await self._release(acknowledged)
                if pending:
                    await backoff.sleep()
        finally:
            self._slots.release()

    async def _release(self, acknowledged: list[Entry]) -> None:
        for entry in acknowledged:
            self._on_acknowledged(entry)
        async with self._changed:
            self._held_records -= len(acknowledged)
            self._held_bytes -= sum(e.size for e in acknowledged)
            self._changed.notify_all()
        self._gauge()

    def _gauge(self) -> None:
        if self._metrics:
            self._metrics.buffered.set(self._held_records)
