"""A DynamoDB table as a destination of the sink (:mod:`consumer.pipeline.sink`): the records
table and the dead-letter table, through BatchWriteItem. An item's identity is its key (an
encoded entry carries its own), a chunk is at most 25 items, and ``ValidationException``
blames an item of the chunk (bisected down to it, then dead-lettered)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from consumer.metrics import Metrics
from consumer.pipeline.sink import (
    Prepare,
    Refused,
    Sink,
    default_backoff,
    one_by_one,
    versions_by_identity,
)
from kernel.backoff import Backoff
from kernel.handlers import Entry, Item, as_items

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

T = TypeVar("T")

MAX_BATCH_ITEMS = 25  # BatchWriteItem limit. 25 items of <= 400 KB stay under its 16 MB.
TABLE_REFUSALS = frozenset({"ValidationException"})

# (table, entries) -> those DynamoDB left unprocessed (as items, or as the entries sent)
BatchWriter = Callable[[str, Sequence[Entry]], Awaitable[Sequence[Entry]]]
# (table) -> what prepares a chunk's BatchWriteItem now to send later (the lean path's)
BatchPreparer = Callable[[str], Awaitable[Prepare[Entry]]]


def botocore_batch_writer(dynamodb: DynamoDBClient) -> BatchWriter:
    async def write(table: str, entries: Sequence[Entry]) -> list[Item]:
        answer = await dynamodb.batch_write_item(
            RequestItems={table: [{"PutRequest": {"Item": item}} for item in as_items(entries)]}
        )
        left: Any = answer.get("UnprocessedItems", {}).get(table, [])
        return [request["PutRequest"]["Item"] for request in left]

    return write


def item_key(item: Item, key_names: Sequence[str]) -> tuple[Any, ...]:
    """The key an item is stored under (raises KeyError without one). A list, not a
    generator: an attribute of no type stops ``next`` with StopIteration, which a generator
    turns into RuntimeError (PEP 479) — the sink's write crashed instead of refusing it."""
    return tuple([next(iter(item[name].values())) for name in key_names])


def table_identity(item: Entry, key_names: Sequence[str]) -> Hashable:
    """An item's key (an encoded one's, as its encoder gave it), or KeyError when it lacks one
    of the key attributes."""
    if type(item) is tuple:
        return item[0]
    try:
        return item_key(item, key_names)  # type: ignore[arg-type]
    except (StopIteration, AttributeError):
        raise KeyError(tuple(key_names)) from None


def table_identities(items: Sequence[Entry], key_names: Sequence[str]) -> list[Hashable]:
    """Each item's :func:`table_identity` (``KEYLESS`` for an item without its key): a
    comprehension for a batch instead of four calls an item: versions_by_identity took 1.25
    µs an item, 0.64 with it (10,000 TELEMAX items, in process; the sink's bookkeeping was
    ~9 % of the worker's steady CPU). Encoded entries carry theirs."""

    def identity(item: Entry) -> Hashable:
        return table_identity(item, key_names)

    batch: Sequence[Any] = items  # items, or encoded entries (a test holds each kind)
    if batch and type(batch[0]) is tuple:
        try:
            return [entry[0] for entry in batch]
        except KeyError:  # an item among them (its names are strings: item[0] raises)
            return one_by_one(identity)(items)
    try:
        if len(key_names) == 2:
            first, second = key_names
            return [
                (next(iter(item[first].values())), next(iter(item[second].values())))
                for item in batch
            ]
        if len(key_names) == 1:
            (only,) = key_names
            return [(next(iter(item[only].values())),) for item in batch]
    except (KeyError, StopIteration, AttributeError, TypeError):
        pass  # one of them has no key, or is encoded: entry by entry
    return one_by_one(identity)(items)


@dataclasses.dataclass(frozen=True)
class TableWire:
    """A DynamoDB table through BatchWriteItem; an item's identity is its key."""

    writer: BatchWriter
    table: str
    key_names: tuple[str, ...]
    destination: str = "table"
    api: str = "BatchWriteItem"
    max_chunk: int = MAX_BATCH_ITEMS
    refusal_codes: frozenset[str] = TABLE_REFUSALS
    refusal_reason: str = "rejected_by_dynamodb"
    prepare: BatchPreparer | None = None

    def identity(self, entry: Entry) -> Hashable:
        return table_identity(entry, self.key_names)

    async def preparer(self) -> Prepare[Entry] | None:
        return None if self.prepare is None else await self.prepare(self.table)

    def identities(self, entries: Sequence[Entry]) -> list[Hashable]:
        return table_identities(entries, self.key_names)

    async def send(self, chunk: Sequence[Entry]) -> Sequence[Entry]:
        return await self.writer(self.table, chunk)


def dedupe(
    items: Sequence[Item], key_names: Sequence[str]
) -> tuple[list[Item], list[Refused[Item]]]:
    """Keep the last item per key: BatchWriteItem rejects duplicate keys in one request, and
    spreading them over concurrent requests would let an older value win. Items without
    every key attribute can never be written: they come back refused."""
    by_key, keyless = versions_by_identity(
        items, table_identities(items, key_names), _key_attributes(key_names)
    )
    return [items[versions[-1]] for versions in by_key.values()], keyless


def _key_attributes(key_names: Sequence[str]) -> str:
    return f"key attributes {tuple(key_names)}"


def chunks(items: Sequence[T], size: int = MAX_BATCH_ITEMS) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class BatchSink(Sink[Entry]):
    """A DynamoDB table's sink; also counts the table-labelled metrics of DESIGN §6."""

    def __init__(
        self,
        writer: BatchWriter,
        table: str,
        key_names: Sequence[str],
        *,
        concurrency: asyncio.Semaphore,
        metrics: Metrics,
        backoff: Callable[[], Backoff] = default_backoff,
        on_error: Callable[[BaseException], None] = lambda exc: None,
        destination: str = "table",
        preparer: BatchPreparer | None = None,
    ) -> None:
        wire = TableWire(writer, table, tuple(key_names), destination, prepare=preparer)
        super().__init__(
            wire,
            concurrency=concurrency,
            metrics=metrics,
            backoff=backoff,
            on_error=on_error,
            wants=_key_attributes(key_names),
        )
        self.table = table
        self.key_names = wire.key_names
        self._latency = metrics.batch_write_seconds.labels(table)
        self._unprocessed = metrics.unprocessed_retries.labels(table)

    def _observe(self, seconds: float) -> None:
        super()._observe(seconds)
        self._latency.observe(seconds)

    def _count_retried(self, count: int) -> None:
        super()._count_retried(count)
        self._unprocessed.inc(count)
