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
    """An item DynamoDB will never accept, with its error. ``position``: where it stood in the
    items given to :meth:`BatchSink.write`, so the caller finds what it came from."""

    position: int
    item: Item
    reason: str
    detail: str


# ``on_durable(positions)``: these positions of the items given to ``write`` are now durable
OnDurable = Callable[[Sequence[int]], None]


def ignore(positions: Sequence[int]) -> None:
    """``on_durable`` for a caller that only waits for the write."""


def item_key(item: Item, key_names: Sequence[str]) -> tuple[Any, ...]:
    """The key an item is stored under (raises KeyError without one)."""
    return tuple(next(iter(item[name].values())) for name in key_names)


def versions_by_key(
    items: Sequence[Item], key_names: Sequence[str]
) -> tuple[dict[tuple[Any, ...], list[int]], list[Refused]]:
    """The positions of each key's items in the order given (the last is the newest), keys in
    order of first appearance. Items without every key attribute can never be written: they
    come back refused."""
    by_key: dict[tuple[Any, ...], list[int]] = {}
    keyless: list[Refused] = []
    for position, item in enumerate(items):
        try:
            key = item_key(item, key_names)
        except (KeyError, StopIteration, AttributeError):
            keyless.append(
                Refused(position, item, "missing_key", f"needs key attributes {key_names}")
            )
            continue
        versions = by_key.get(key)
        if versions is None:
            by_key[key] = [position]
        else:
            versions.append(position)
    return by_key, keyless


def dedupe(items: Sequence[Item], key_names: Sequence[str]) -> tuple[list[Item], list[Refused]]:
    """Keep the last item per key: BatchWriteItem rejects duplicate keys in one request, and
    spreading them over concurrent requests would let an older value win. Items without
    every key attribute can never be written: they come back refused."""
    by_key, keyless = versions_by_key(items, key_names)
    return [items[versions[-1]] for versions in by_key.values()], keyless


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

    async def write(self, items: Sequence[Item], on_durable: OnDurable = ignore) -> list[Refused]:
        """Store every item (last wins per key); return those DynamoDB refuses outright.

        Every item comes out either durable or refused: an item whose later version with the
        same key is refused is written itself in a further round (the last *accepted* version
        wins). ``on_durable(positions)`` is called as soon as more of ``items`` are durable,
        request by request, each position exactly once; items merged away are durable with
        the item that replaced them, when that one is stored.
        """
        versions, refused = versions_by_key(items, self.key_names)
        survivors = [newest[-1] for newest in versions.values()]
        while survivors:
            # A survivor stands for the older versions of its key still behind it: when it is
            # stored they are merged away under it, durable with it.
            merged = {v[-1]: v[:-1] for v in versions.values() if len(v) > 1}
            rejected = await _Round(self, items, merged, on_durable).write(survivors)
            refused += rejected
            survivors = []
            for refusal in rejected:  # the version before a refused one gets its turn
                older = versions[item_key(refusal.item, self.key_names)]
                older.pop()
                if older:
                    survivors.append(older[-1])
        return refused

    def _count_error(self, exc: BaseException) -> None:
        if is_throttle(exc):
            self._metrics.throttles.labels("BatchWriteItem").inc()
        self._metrics.aws_errors.labels(
            "BatchWriteItem", error_code(exc) or type(exc).__name__
        ).inc()
        self._on_error(exc)


class _Round:
    """One round of a write: items of distinct keys (named by position), in chunks, several
    chunks in flight."""

    def __init__(
        self,
        sink: BatchSink,
        items: Sequence[Item],
        merged: dict[int, list[int]],
        on_durable: OnDurable,
    ) -> None:
        self._sink = sink
        self._items = items
        self._merged = merged
        self._on_durable = on_durable

    async def write(self, positions: list[int]) -> list[Refused]:
        parts = [
            positions[i : i + MAX_BATCH_ITEMS] for i in range(0, len(positions), MAX_BATCH_ITEMS)
        ]
        if len(parts) == 1:
            return await self._write_chunk(parts[0])
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._write_chunk(part)) for part in parts]
        except ExceptionGroup as failed:  # the same error as a one-chunk write raises
            raise failed.exceptions[0] from None
        return [refusal for task in tasks for refusal in task.result()]

    async def _write_chunk(self, positions: list[int]) -> list[Refused]:
        sink, items = self._sink, self._items
        backoff = sink._backoff()
        pending = positions
        while pending:
            try:
                async with sink._slots:
                    started = time.perf_counter()
                    left = await sink._writer(sink.table, [items[p] for p in pending])
                    sink._latency.observe(time.perf_counter() - started)
            except Exception as exc:
                action = classify(exc)
                if action is Action.RETRY:
                    sink._count_error(exc)
                    await backoff.sleep()
                    continue
                if error_code(exc) == "ValidationException":
                    # DynamoDB refuses the request for what some item holds: find which.
                    return await self._bisect(pending, exc)
                raise  # access denied, missing table, a bug: not the items' fault
            # What DynamoDB left unprocessed (botocore's copies), as positions, found by key.
            still = self._positions_of(pending, left) if left else []
            if len(still) < len(pending):
                self._on_durable(self._durable(pending, still))
            if still:
                sink._retried.inc(len(still))
                await backoff.sleep()
            else:
                backoff.reset()
            pending = still
        return []

    def _positions_of(self, sent: list[int], left: Sequence[Item]) -> list[int]:
        key_names = self._sink.key_names
        by_key = {item_key(self._items[p], key_names): p for p in sent}
        return [by_key[item_key(item, key_names)] for item in left]

    def _durable(self, sent: list[int], left: list[int]) -> list[int]:
        """Positions now durable: those stored, and the older versions merged away under them."""
        if left:
            not_stored = set(left)
            stored = [p for p in sent if p not in not_stored]
        else:
            stored = sent
        if not self._merged:
            return stored
        merged = self._merged
        return stored + [older for p in stored for older in merged.get(p, ())]

    async def _bisect(self, positions: list[int], exc: Exception) -> list[Refused]:
        if len(positions) == 1:
            (position,) = positions
            item = self._items[position]
            return [Refused(position, item, "rejected_by_dynamodb", describe(exc))]
        middle = len(positions) // 2
        first = await self._write_chunk(positions[:middle])
        return first + await self._write_chunk(positions[middle:])
