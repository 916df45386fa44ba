"""The batch sink: items -> BatchWriteItem, durably, with retries and bounded concurrency.

``write`` returns only when every item is stored, or has been isolated as one DynamoDB refuses
(returned to the caller, which dead-letters it). Transient failures and ``UnprocessedItems``
are retried with capped exponential backoff and full jitter, for as long as it takes: a slow
or absent DynamoDB holds the caller here, which is the backpressure that stops the readers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from consumer.aws import Action, classify, describe, error_code, is_throttle
from consumer.backoff import Backoff
from consumer.metrics import Metrics
from consumer.pipeline.records import Item

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

MAX_BATCH_ITEMS = 25  # BatchWriteItem limit. 25 items of <= 400 KB stay under its 16 MB.

# (table, items) -> the items DynamoDB left unprocessed
BatchWriter = Callable[[str, Sequence[Item]], Awaitable[list[Item]]]


def botocore_batch_writer(dynamodb: DynamoDBClient) -> BatchWriter:
    async def write(table: str, items: Sequence[Item]) -> list[Item]:
        answer = await dynamodb.batch_write_item(
            RequestItems={table: [{"PutRequest": {"Item": item}} for item in items]}
        )
        left: Any = answer.get("UnprocessedItems", {}).get(table, [])
        return [request["PutRequest"]["Item"] for request in left]

    return write


@dataclasses.dataclass(frozen=True, slots=True)
class Refused:
    """An item DynamoDB will never accept, with its error."""

    item: Item
    reason: str
    detail: str


def item_key(item: Item, key_names: Sequence[str]) -> tuple[Any, ...]:
    """The key an item is stored under (raises KeyError without one)."""
    return tuple(next(iter(item[name].values())) for name in key_names)


def dedupe(items: Sequence[Item], key_names: Sequence[str]) -> tuple[list[Item], list[Refused]]:
    """Keep the last item per key: BatchWriteItem rejects duplicate keys in one request, and
    spreading them over concurrent requests would let an older value win. Items without
    every key attribute can never be written: they come back refused."""
    by_key: dict[tuple[Any, ...], Item] = {}
    keyless: list[Refused] = []
    for item in items:
        try:
            key = item_key(item, key_names)
        except (KeyError, StopIteration, AttributeError):
            keyless.append(Refused(item, "missing_key", f"needs key attributes {key_names}"))
            continue
        by_key[key] = item
    return list(by_key.values()), keyless


def chunks(items: Sequence[Item], size: int = MAX_BATCH_ITEMS) -> list[Sequence[Item]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class BatchSink:
    def __init__(
        self,
        writer: BatchWriter,
        table: str,
        key_names: Sequence[str],
        *,
        concurrency: asyncio.Semaphore,
        metrics: Metrics,
        backoff: Callable[[], Backoff] = lambda: Backoff(base=0.05, cap=5.0),
        on_error: Callable[[BaseException], None] = lambda exc: None,
    ) -> None:
        self._writer = writer
        self.table = table
        self.key_names = tuple(key_names)
        self._slots = concurrency
        self._metrics = metrics
        self._backoff = backoff
        self._on_error = on_error
        self._latency = metrics.batch_write_seconds.labels(table)
        self._retried = metrics.unprocessed_retries.labels(table)

    async def write(
        self, items: Sequence[Item], on_durable: Callable[[int], None] = lambda n: None
    ) -> list[Refused]:
        """Store every item (last wins per key); return those DynamoDB refuses outright.

        ``on_durable(n)`` is called as soon as ``n`` more of ``items`` are stored, chunk by
        chunk; duplicates merged away count as stored with the item that replaced them.
        """
        unique, refused = dedupe(items, self.key_names)
        parts = chunks(unique)
        if len(parts) == 1:
            refused += await self._write_chunk(parts[0], on_durable)
        elif parts:
            try:
                async with asyncio.TaskGroup() as group:
                    tasks = [group.create_task(self._write_chunk(p, on_durable)) for p in parts]
            except ExceptionGroup as failed:  # the same error as a one-chunk write raises
                raise failed.exceptions[0] from None
            refused += [refusal for task in tasks for refusal in task.result()]
        merged = len(items) - len(unique) - sum(1 for r in refused if r.reason == "missing_key")
        if merged:  # stored now, with the item that replaced them
            on_durable(merged)
        return refused

    async def _write_chunk(
        self, items: Sequence[Item], on_durable: Callable[[int], None]
    ) -> list[Refused]:
        backoff = self._backoff()
        pending: Sequence[Item] = items
        while pending:
            try:
                async with self._slots:
                    started = time.perf_counter()
                    left = await self._writer(self.table, pending)
                    self._latency.observe(time.perf_counter() - started)
            except Exception as exc:
                action = classify(exc)
                if action is Action.RETRY:
                    self._count_error(exc)
                    await backoff.sleep()
                    continue
                if error_code(exc) == "ValidationException":
                    # DynamoDB refuses the request for what some item holds: find which.
                    return await self._bisect(pending, exc, on_durable)
                raise  # access denied, missing table, a bug: not the items' fault
            if len(left) < len(pending):
                on_durable(len(pending) - len(left))
            if left:
                self._retried.inc(len(left))
                await backoff.sleep()
            else:
                backoff.reset()
            pending = left
        return []

    async def _bisect(
        self, items: Sequence[Item], exc: Exception, on_durable: Callable[[int], None]
    ) -> list[Refused]:
        if len(items) == 1:
            return [Refused(items[0], "rejected_by_dynamodb", describe(exc))]
        middle = len(items) // 2
        first = await self._write_chunk(items[:middle], on_durable)
        return first + await self._write_chunk(items[middle:], on_durable)

    def _count_error(self, exc: BaseException) -> None:
        if is_throttle(exc):
            self._metrics.throttles.labels("BatchWriteItem").inc()
        self._metrics.aws_errors.labels(
            "BatchWriteItem", error_code(exc) or type(exc).__name__
        ).inc()
        self._on_error(exc)
