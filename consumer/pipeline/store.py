"""The store stage, one for the worker and the Lambda handler: a batch's items to the records
table, the items DynamoDB refuses turned into dead letters, and every dead letter to the
dead-letter table.

Data flows one way: reader -> convert -> store -> checkpoint. Items and dead letters are named
by their *position* in the lists handed over (``Converted.origins[position]`` is the record an
item came from), never by object identity.

A record is *done* when every item it gave is durable (stored, or merged away under a later
item of its key that was stored) and every dead letter it gave is stored (:meth:`Progress.undone`).
The worker waits until everything is done or raises; the Lambda handler stops at its deadline
and reports the lowest sequence number that is not done.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

from consumer.metrics import Metrics
from consumer.pipeline import deadletter
from consumer.pipeline.convert import Converted, dead_letter
from consumer.pipeline.deadletter import DeadLetter
from consumer.pipeline.sink import BatchSink, BatchWriter, OnDurable, Refused, ignore
from kernel.handlers import Item

DEAD_LETTER_CONCURRENCY = 4  # dead-letter requests in flight: rare, and never the bottleneck


class Store:
    """Where a shard's converted batches go: ``records`` (the records table) and
    ``dead_letters`` (the dead-letter table), both batch sinks with their own slots."""

    def __init__(self, records: BatchSink, dead_letters: BatchSink, metrics: Metrics) -> None:
        self.records = records
        self.dead_letters = dead_letters
        self._written = metrics.records_written
        self._lettered = metrics.records_dead_lettered

    @classmethod
    def over(
        cls,
        writer: BatchWriter,
        *,
        table: str,
        key_names: Sequence[str],
        dlq_table: str,
        write_slots: asyncio.Semaphore,
        metrics: Metrics,
    ) -> Store:
        """A store whose two sinks share ``writer``; records requests take ``write_slots``."""
        records = BatchSink(writer, table, key_names, concurrency=write_slots, metrics=metrics)
        letters = BatchSink(
            writer,
            dlq_table,
            deadletter.KEY_NAMES,
            concurrency=asyncio.Semaphore(DEAD_LETTER_CONCURRENCY),
            metrics=metrics,
            destination="dead_letters",
        )
        return cls(records, letters, metrics)

    @property
    def key_names(self) -> tuple[str, ...]:
        return self.records.key_names

    async def items(
        self, converted: Converted, stream: str, shard_id: str, on_durable: OnDurable = ignore
    ) -> tuple[list[DeadLetter], list[int]]:
        """Store the batch's items; answer a dead letter for each item DynamoDB refuses (not
        yet written) and the positions of those items. ``on_durable`` hears of the rest."""
        written = self._written.labels(stream)

        def durable(positions: Sequence[int]) -> None:
            written.inc(len(positions))
            on_durable(positions)

        refused = await self.records.write(converted.items, durable)
        letters = letters_for(refused, converted, stream, shard_id)
        return letters, [r.position for r in refused]

    async def letters(
        self, letters: Sequence[DeadLetter], on_stored: OnDurable = ignore
    ) -> list[Refused[Item]]:
        """Store dead letters, each counted by its reason once stored; answer those the
        dead-letter table refused (a misconfiguration: nothing else refuses our items)."""
        counter = self._lettered

        def stored(positions: Sequence[int]) -> None:
            for position in positions:
                letter = letters[position]
                counter.labels(letter.stream, letter.reason).inc()
            on_stored(positions)

        return await self.dead_letters.write([letter.to_item() for letter in letters], stored)


def letters_for(
    refused: Sequence[Refused[Item]], converted: Converted, stream: str, shard_id: str
) -> list[DeadLetter]:
    """A dead letter for each refused item, for the record (and user record) it came from."""
    letters = []
    for refusal in refused:
        record, sub = converted.origins[refusal.position]
        letters.append(dead_letter(stream, shard_id, record, refusal.reason, refusal.detail, sub))
    return letters


@dataclasses.dataclass
class Progress:
    """Where one batch stands in the store stage, position by position: the Lambda handler's
    view, which stops at a deadline and must say which records are done (the worker waits
    until all are, or raises)."""

    converted: Converted
    letters: list[DeadLetter]  # the batch's dead letters; those of refused items are added
    refused: list[int] = dataclasses.field(default_factory=list)  # items DynamoDB refused
    durable: list[bool] = dataclasses.field(init=False)  # per item
    stored: list[bool] = dataclasses.field(init=False)  # per dead letter

    def __post_init__(self) -> None:
        self.durable = [False] * len(self.converted.items)
        self.stored = [False] * len(self.letters)

    def items_durable(self, positions: Sequence[int]) -> None:
        for position in positions:
            self.durable[position] = True

    def letters_stored(self, start: int) -> OnDurable:
        """``on_stored`` for a write of ``letters[start:]``."""

        def mark(positions: Sequence[int]) -> None:
            for position in positions:
                self.stored[start + position] = True

        return mark

    def add_letters(self, letters: Sequence[DeadLetter]) -> int:
        """Add dead letters (not yet stored); answer where they start."""
        start = len(self.letters)
        self.letters.extend(letters)
        self.stored.extend(False for _ in letters)
        return start

    def undone(self) -> set[str]:
        """Sequence numbers of the records that are not done: an item neither durable nor
        refused (a refused item is done once its own dead letter is stored), or a dead letter
        not stored."""
        refused = set(self.refused)
        found = {
            letter.sequence_number
            for letter, stored in zip(self.letters, self.stored, strict=True)
            if not stored
        }
        found.update(
            record["SequenceNumber"]
            for position, ((record, _), durable) in enumerate(
                zip(self.converted.origins, self.durable, strict=True)
            )
            if not durable and position not in refused
        )
        return found
