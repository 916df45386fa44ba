"""PutRecords shipping: batches of <= 500 records / 5 MB, failed entries retried, paced.

Every entry is either acknowledged (Kinesis returned a sequence number) or, after the retry
budget, counted as failed; callers decide what a failure means (``generate`` exits non-zero).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from consumer.aws import Action, classify, is_throttle
from consumer.backoff import Backoff

if TYPE_CHECKING:
    from types_aiobotocore_kinesis import KinesisClient

MAX_BATCH_RECORDS = 500
MAX_BATCH_BYTES = 5 * 1024 * 1024
MAX_RECORD_BYTES = 1024 * 1024
ENTRY_ATTEMPTS = 12


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    data: bytes
    partition_key: str

    @property
    def size(self) -> int:
        return len(self.data) + len(self.partition_key.encode())


@dataclasses.dataclass
class Tally:
    acknowledged: int = 0
    failed: int = 0
    throttled: int = 0  # entries or calls answered with a throttling error, then retried
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


class TokenBucket:
    """``rate`` tokens per second, bursts up to one second's worth."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._tokens = 0.0
        self._at = clock()

    def delay_for(self, tokens: int) -> float:
        """Take ``tokens``; return how long to wait before using them."""
        now = self._clock()
        self._tokens = min(self.rate, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= tokens
        return max(0.0, -self._tokens / self.rate)


class Shipper:
    def __init__(
        self,
        kinesis: KinesisClient,
        stream: str,
        *,
        concurrency: int = 4,
        rate: float | None = None,
        attempts: int = ENTRY_ATTEMPTS,
    ) -> None:
        self._kinesis = kinesis
        self.stream = stream
        self._slots = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        self._bucket = TokenBucket(rate) if rate else None
        self._attempts = attempts
        self.tally = Tally()

    async def ship(self, entries: Iterable[Entry]) -> Tally:
        """Send every entry; return the tally. Raises on errors no retry can fix."""
        self.tally = Tally()
        max_records = MAX_BATCH_RECORDS
        if self._bucket:  # smooth pacing: about ten batches a second
            max_records = max(1, min(MAX_BATCH_RECORDS, int(self._bucket.rate / 10)))
        try:
            async with asyncio.TaskGroup() as group:
                for batch in batches(entries, max_records):
                    if self._bucket:
                        await asyncio.sleep(self._bucket.delay_for(len(batch)))
                    await self._slots.acquire()
                    group.create_task(self._send(batch))
        except ExceptionGroup as group_error:  # one failed call stops all: report the first
            raise group_error.exceptions[0] from None
        return self.tally

    async def _send(self, batch: list[Entry]) -> None:
        try:
            pending = batch
            backoff = Backoff(base=0.1, cap=5.0)
            for _ in range(self._attempts):
                pending = await self._put(pending)
                if not pending:
                    return
                await backoff.sleep()
            self.tally.failed += len(pending)
        finally:
            self._slots.release()

    async def _put(self, batch: list[Entry]) -> list[Entry]:
        """One PutRecords call; returns the entries to send again."""
        try:
            answer = await self._kinesis.put_records(
                StreamName=self.stream,
                Records=[{"Data": e.data, "PartitionKey": e.partition_key} for e in batch],
            )
        except Exception as exc:
            if classify(exc) is not Action.RETRY:
                raise
            if is_throttle(exc):
                self.tally.throttled += len(batch)
            return batch
        results: list[Any] = answer["Records"]
        retry = [
            entry for entry, result in zip(batch, results, strict=True) if "ErrorCode" in result
        ]
        self.tally.throttled += sum(
            1 for r in results if r.get("ErrorCode") == "ProvisionedThroughputExceededException"
        )
        self.tally.acknowledged += len(batch) - len(retry)
        return retry
