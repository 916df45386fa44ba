"""The batch sink: items -> BatchWriteItem, durably, with retries and bounded concurrency.

``write`` returns only when every item is durable — stored, or merged away under a later item
with the same key that is stored — or has been isolated as one DynamoDB refuses (returned to
the caller, which dead-letters it). Transient failures and ``UnprocessedItems`` are retried
with capped exponential backoff and full jitter, for as long as it takes: a slow or absent
DynamoDB holds the caller here, which is the backpressure that stops the readers.

Items with the same key are written newest first, one version per round: BatchWriteItem
refuses duplicate keys in one request, and an older value must never win. When DynamoDB
refuses the newest version, the one before it is written in a further round, and so on, so
that no item merged away under a refused one is lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from consumer.metrics import Metrics
from kernel.aws import classify, describe, error_code, is_throttle
from kernel.backoff import Backoff
from kernel.errors import Action
from kernel.handlers import Item

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


def versions_by_key(
    items: Sequence[Item], key_names: Sequence[str]
) -> tuple[dict[tuple[Any, ...], list[Item]], list[Refused]]:
    """Each key's items in the order given (the last is the newest), keys in order of first
    appearance. Items without every key attribute can never be written: they come back
    refused."""
    by_key: dict[tuple[Any, ...], list[Item]] = {}
    keyless: list[Refused] = []
    for item in items:
        try:
            key = item_key(item, key_names)
        except (KeyError, StopIteration, AttributeError):
            keyless.append(Refused(item, "missing_key", f"needs key attributes {key_names}"))
            continue
        versions = by_key.get(key)
        if versions is None:
            by_key[key] = [item]
        else:
            versions.append(item)
    return by_key, keyless


def dedupe(items: Sequence[Item], key_names: Sequence[str]) -> tuple[list[Item], list[Refused]]:
    """Keep the last item per key: BatchWriteItem rejects duplicate keys in one request, and
    spreading them over concurrent requests would let an older value win. Items without
    every key attribute can never be written: they come back refused."""
    by_key, keyless = versions_by_key(items, key_names)
    return [versions[-1] for versions in by_key.values()], keyless


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

        Every item comes out either durable or refused: an item whose later version with the
        same key is refused is written itself in a further round (the last *accepted* version
        wins). ``on_durable(n)`` is called as soon as ``n`` more of ``items`` are durable,
        request by request, each item exactly once; items merged away count with the item
        that replaced them, when that one is stored.
        """
        versions, refused = versions_by_key(items, self.key_names)
        survivors = [newest[-1] for newest in versions.values()]
        while survivors:
            # A survivor stands for the older versions of its key still behind it: when it is
            # stored they are merged away under it, durable with it.
            merged = {id(v[-1]): len(v) - 1 for v in versions.values() if len(v) > 1}
            rejected = await self._write_round(survivors, merged, on_durable)
            refused += rejected
            survivors = []
            for refusal in rejected:  # the version before a refused one gets its turn
                older = versions[item_key(refusal.item, self.key_names)]
                older.pop()
                if older:
                    survivors.append(older[-1])
        return refused

    async def _write_round(
        self, items: Sequence[Item], merged: dict[int, int], on_durable: Callable[[int], None]
    ) -> list[Refused]:
        """Write items of distinct keys, in chunks, several chunks in flight."""
        parts = chunks(items)
        if len(parts) == 1:
            return await self._write_chunk(parts[0], merged, on_durable)
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._write_chunk(p, merged, on_durable)) for p in parts]
        except ExceptionGroup as failed:  # the same error as a one-chunk write raises
            raise failed.exceptions[0] from None
        return [refusal for task in tasks for refusal in task.result()]

    async def _write_chunk(
        self, items: Sequence[Item], merged: dict[int, int], on_durable: Callable[[int], None]
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
                    return await self._bisect(pending, exc, merged, on_durable)
                raise  # access denied, missing table, a bug: not the items' fault
            if left:  # as the caller's own objects (botocore's are copies), found by key
                left = self._originals(pending, left)
            if len(left) < len(pending):
                on_durable(self._durable_count(pending, left, merged))
            if left:
                self._retried.inc(len(left))
                await backoff.sleep()
            else:
                backoff.reset()
            pending = left
        return []

    def _originals(self, sent: Sequence[Item], left: Sequence[Item]) -> list[Item]:
        """``left`` (items DynamoDB did not process) as the objects that were sent."""
        by_key = {item_key(item, self.key_names): item for item in sent}
        return [by_key.get(item_key(item, self.key_names), item) for item in left]

    @staticmethod
    def _durable_count(sent: Sequence[Item], left: Sequence[Item], merged: dict[int, int]) -> int:
        """Items now durable: those stored, and the older versions merged away under them."""
        count = len(sent) - len(left)
        if merged:
            not_stored = {id(item) for item in left}
            count += sum(merged.get(id(item), 0) for item in sent if id(item) not in not_stored)
        return count

    async def _bisect(
        self,
        items: Sequence[Item],
        exc: Exception,
        merged: dict[int, int],
        on_durable: Callable[[int], None],
    ) -> list[Refused]:
        if len(items) == 1:
            return [Refused(items[0], "rejected_by_dynamodb", describe(exc))]
        middle = len(items) // 2
        first = await self._write_chunk(items[:middle], merged, on_durable)
        return first + await self._write_chunk(items[middle:], merged, on_durable)

    def _count_error(self, exc: BaseException) -> None:
        if is_throttle(exc):
            self._metrics.throttles.labels("BatchWriteItem").inc()
        self._metrics.aws_errors.labels(
            "BatchWriteItem", error_code(exc) or type(exc).__name__
        ).inc()
        self._on_error(exc)
