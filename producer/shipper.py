"""PutRecords shipping: batches of <= 500 records / 5 MB, failed entries retried, paced.

Every entry is either acknowledged (Kinesis returned a sequence number) or, after the retry
budget, counted as failed; callers decide what a failure means (``generate`` exits non-zero).
``put_records`` (one call, split into acknowledged and to-retry) is shared with ``tail``,
whose sender retries without a budget because a log line must never be given up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from kernel.aws import classify, error_code, is_throttle
from kernel.backoff import Backoff
from kernel.errors import Action
from kernel.kpl import MAX_RECORD_BYTES
from kernel.kpl.encode import Entry, aggregate
from kernel.rate import TokenBucket

if TYPE_CHECKING:
    from types_aiobotocore_kinesis import KinesisClient

    from producer.metrics import ProducerMetrics

MAX_BATCH_RECORDS = 500
MAX_BATCH_BYTES = 5 * 1024 * 1024
ENTRY_ATTEMPTS = 12
PACING_STEPS_PER_S = 10  # a paced run sends a chunk every 100 ms: smooth, yet few calls
UNPACED_CHUNK_RECORDS = 10_000  # unpaced + aggregated: enough user records to fill a call


@dataclasses.dataclass
class Tally:
    """Counts of user records (an aggregated Kinesis record counts for what it carries)."""

    acknowledged: int = 0
    failed: int = 0
    throttled: int = 0  # entries or calls answered with a throttling error, then retried
    sent: int = 0  # handed to PutRecords at least once
    kinesis_records: int = 0  # Kinesis records acknowledged
    started: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.acknowledged / elapsed if elapsed > 0 else 0.0


def batches(
    entries: Iterable[Entry], max_records: int = MAX_BATCH_RECORDS
) -> Iterator[list[Entry]]:
    """Group entries into PutRecords-sized batches, in order."""
    batch: list[Entry] = []
    size = 0
    for entry in entries:
        if entry.size > MAX_RECORD_BYTES:
            raise ValueError(f"record of {entry.size} bytes exceeds the 1 MiB Kinesis limit")
        if batch and (len(batch) >= max_records or size + entry.size > MAX_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(entry)
        size += entry.size
    if batch:
        yield batch


async def put_records(
    kinesis: KinesisClient,
    stream: str,
    batch: Sequence[Entry],
    tally: Tally,
    metrics: ProducerMetrics | None = None,
) -> tuple[list[Entry], list[Entry]]:
    """One PutRecords call -> (acknowledged, to send again). Raises what no retry can fix."""
    started = time.monotonic()
    try:
        answer = await kinesis.put_records(
            StreamName=stream,
            Records=[{"Data": e.data, "PartitionKey": e.partition_key} for e in batch],
        )
    except Exception as exc:
        if classify(exc) is not Action.RETRY:
            raise
        if metrics:
            metrics.aws_errors.labels("PutRecords", error_code(exc) or type(exc).__name__).inc()
        if is_throttle(exc):
            throttled = sum(e.records for e in batch)
            tally.throttled += throttled
            if metrics:
                metrics.throttled.labels(stream).inc(throttled)
        return [], list(batch)
    finally:
        if metrics:
            metrics.put_seconds.labels(stream).observe(time.monotonic() - started)
    results: list[Any] = answer["Records"]
    acknowledged: list[Entry] = []
    retry: list[Entry] = []
    throttled = 0
    for entry, result in zip(batch, results, strict=True):
        if "ErrorCode" not in result:
            acknowledged.append(entry)
            continue
        retry.append(entry)
        if result["ErrorCode"] == "ProvisionedThroughputExceededException":
            throttled += entry.records
    records = sum(e.records for e in acknowledged)
    tally.acknowledged += records
    tally.kinesis_records += len(acknowledged)
    tally.throttled += throttled
    if metrics:
        metrics.acknowledged.labels(stream).inc(records)
        if throttled:
            metrics.throttled.labels(stream).inc(throttled)
    return acknowledged, retry


def chunks(entries: Iterable[Entry], max_records: int) -> Iterator[list[Entry]]:
    """User records in groups of ``max_records`` (and at most one PutRecords call of bytes)."""
    chunk: list[Entry] = []
    size = 0
    for entry in entries:
        chunk.append(entry)
        size += entry.size
        if len(chunk) >= max_records or size >= MAX_BATCH_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _paced_chunk(rate: float) -> int:
    return max(1, int(rate / PACING_STEPS_PER_S))


class Shipper:
    """Sends a finite or endless iterable of entries, paced, optionally KPL-aggregated."""

    def __init__(
        self,
        kinesis: KinesisClient,
        stream: str,
        *,
        concurrency: int = 4,
        rate: float | None = None,
        attempts: int = ENTRY_ATTEMPTS,
        aggregate_bytes: int | None = None,
        metrics: ProducerMetrics | None = None,
    ) -> None:
        self._kinesis = kinesis
        self.stream = stream
        self._slots = asyncio.Semaphore(concurrency)
        # The first chunk goes at once: N seconds at rate R then send R * N records, not one
        # chunk fewer.
        self._bucket = TokenBucket(rate, initial=_paced_chunk(rate)) if rate else None
        self._attempts = attempts
        self._aggregate_bytes = aggregate_bytes
        self._metrics = metrics
        self.tally = Tally()

    def _chunk_records(self) -> int:
        if self._bucket:  # smooth pacing: one chunk per step
            return _paced_chunk(self._bucket.rate)
        return UNPACED_CHUNK_RECORDS if self._aggregate_bytes else MAX_BATCH_RECORDS

    async def ship(self, entries: Iterable[Entry], stop: asyncio.Event | None = None) -> Tally:
        """Send every entry (or until ``stop`` is set); return the tally once every call
        has finished. Raises on errors no retry can fix."""

        self.tally = Tally()
        try:
            async with asyncio.TaskGroup() as group:
                for chunk in chunks(entries, self._chunk_records()):
                    if stop and stop.is_set():
                        break
                    if self._bucket:
                        await asyncio.sleep(self._bucket.delay_for(sum(e.records for e in chunk)))
                        if stop and stop.is_set():  # the deadline fell inside this wait
                            break
                    outgoing = (
                        list(aggregate(chunk, self._aggregate_bytes))
                        if self._aggregate_bytes
                        else chunk
                    )
                    for batch in batches(outgoing):
                        await self._slots.acquire()
                        self.tally.sent += sum(e.records for e in batch)
                        group.create_task(self._send(batch))
        except ExceptionGroup as group_error:  # one failed call stops all: report the first
            raise group_error.exceptions[0] from None
        return self.tally

    async def _send(self, batch: list[Entry]) -> None:
        try:
            pending = batch
            backoff = Backoff(base=0.1, cap=5.0)
            for _ in range(self._attempts):
                _, pending = await put_records(
                    self._kinesis, self.stream, pending, self.tally, self._metrics
                )
                if not pending:
                    return
                await backoff.sleep()
            failed = sum(e.records for e in pending)
            self.tally.failed += failed
            if self._metrics:
                self._metrics.failed.labels(self.stream).inc(failed)
        finally:
            self._slots.release()
