"""The store stage, one for the worker and the Lambda handler: a batch's items to the records
table, the items DynamoDB refuses turned into dead letters, and every dead letter to the
dead-letter table.

Data flows one way: reader -> convert -> store -> checkpoint. Items and dead letters are named
by their *position* in the lists handed over (``Converted.origins[position]`` is the record an
item came from), never by object identity.

The write stage (:mod:`consumer.pipeline.stage`) drives the store, beside the other
destinations, and keeps where each record stands.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from consumer.metrics import Metrics
from consumer.pipeline import deadletter
from consumer.pipeline.convert import Converted, dead_letter
from consumer.pipeline.deadletter import DeadLetter
from consumer.pipeline.sink import OnDurable, Refused, ignore
from consumer.pipeline.table import BatchPreparer, BatchSink, BatchWriter
from kernel.handlers import Entry

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
        preparer: BatchPreparer | None = None,
    ) -> Store:
        """A store whose two sinks share ``writer``; records requests take ``write_slots``,
        prepared ahead by ``preparer`` when there is one."""
        records = BatchSink(
            writer,
            table,
            key_names,
            concurrency=write_slots,
            metrics=metrics,
            preparer=preparer,
        )
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

        refused = await self.records.write(converted.entries, durable)
        letters = letters_for(refused, converted, stream, shard_id)
        return letters, [r.position for r in refused]

    async def letters(
        self, letters: Sequence[DeadLetter], on_stored: OnDurable = ignore
    ) -> list[Refused[Entry]]:
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
    refused: Sequence[Refused[Any]], converted: Converted, stream: str, shard_id: str
) -> list[DeadLetter]:
    """A dead letter for each refused item, for the record (and user record) it came from."""
    letters = []
    for refusal in refused:
        record, sub = converted.origins[refusal.position]
        letters.append(dead_letter(stream, shard_id, record, refusal.reason, refusal.detail, sub))
    return letters
