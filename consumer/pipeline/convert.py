"""Kinesis records -> items and dead letters: the per-record hot path, with nothing dropped.

Each record is de-aggregated (KPL), each user record goes through the handler. A record that
cannot be de-aggregated, and every user record the handler refuses, becomes a dead letter
with its sequence and sub-sequence numbers.

The resume rule, here and nowhere else: resuming from a checkpoint ``(sequence number,
sub-sequence number)`` reads *at* that sequence number (KCL's semantics; the reader asks for
``AT_SEQUENCE_NUMBER`` until it has delivered something), and of the record there the user
records up to the checkpointed sub-sequence number were done before and are skipped: all of a
plain record, part of a KPL aggregate. ``resume_after`` is given for the first batch only.

With the shard's hash range (``hash_range``), KPL user records routed to another shard (the
KCL's duplicate filter after a reshard, see ``kernel.kpl.decode``) become neither items
nor dead letters: they are counted in ``Converted.outside_range`` for the caller's metric.
Plain records are never filtered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import traceback
from collections.abc import Sequence
from itertools import repeat
from operator import itemgetter
from typing import Any

from prometheus_client import Counter
from structlog.typing import FilteringBoundLogger

from consumer.pipeline.deadletter import DeadLetter
from kernel.aws import describe
from kernel.errors import InvalidRecord
from kernel.handlers import Encoded, Entry, Handler, Item, as_items, batch_encoder_of, encoder_of
from kernel.kpl import MAGIC
from kernel.kpl.decode import deaggregate, in_hash_range

_DATA_OF = itemgetter("Data")

Record = dict[str, Any]  # a GetRecords record: Data (bytes), SequenceNumber, PartitionKey, …
HANDLER_ERROR = "handler_error"
# A handler that raises (a bug or a dependency, not bad data) gets the batch again after these
# pauses; records still failing after the last one are dead-lettered, the others written.
HANDLER_RETRY_DELAYS_S = (0.1, 0.5, 2.0)


@dataclasses.dataclass(slots=True)
class Converted:
    # what the batch gave to store, in order: items, or items the handler's encoder wrote as
    # DynamoDB's JSON (kernel.handlers.Encoded: the records table takes them as they are)
    entries: Sequence[Entry]
    dead: list[DeadLetter]
    origins: list[tuple[Record, int]]  # the record and sub-sequence number behind each item
    last_sub: int  # sub-sequence number of the last user record of the last record
    # KPL user records dropped because their hash key is outside the shard's hash range
    outside_range: int = 0
    # the bytes each item was made of (the user record's, inside a KPL aggregate): the archive
    data: list[bytes] = dataclasses.field(default_factory=list)
    _items: list[Item] | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def items(self) -> list[Item]:
        """The entries as items (the encoded ones made from their values once, when first
        asked: the alerts and the archive's odd lines read items; the records table and the
        insights do not need them)."""
        if self._items is None:
            self._items = as_items(self.entries)
        return self._items


def convert(
    records: Sequence[Record],
    handler: Handler,
    stream: str,
    shard_id: str,
    key_names: Sequence[str] = (),
    resume_after: tuple[str, int] | None = None,
    hash_range: tuple[int, int] | None = None,
) -> Converted:
    """``hash_range``: the shard's (starting, ending) hash key, both inclusive; None (unknown)
    keeps every user record. The handler's encoder (if it has one, and its key is
    ``key_names``) writes the records it can as they will be stored."""
    items: list[Entry] = []
    origins: list[tuple[Record, int]] = []
    made_of: list[bytes] = []
    dead: list[DeadLetter] = []
    last_sub = 0
    outside = 0
    encode, encode_batch = encoder_of(handler), batch_encoder_of(handler)
    if encode is not None and tuple(key_names) != getattr(handler, "key_names", None):
        encode = encode_batch = None  # its keys are not the table's: all through the handler

    def one(record: Record, data: bytes, sub: int, encoded: Encoded | None) -> None:
        """``encoded``: the encoder's answer for ``data`` (None: the handler decides)."""
        if encoded is not None:
            items.append(encoded)
            origins.append((record, sub))
            made_of.append(data)
            return
        try:
            item = handler(data)
            for name in key_names:  # a custom handler may forget a key attribute
                if name not in item:
                    raise InvalidRecord("missing_key", f"handler gave no {name!r} attribute")
        except InvalidRecord as exc:
            dead.append(dead_letter(stream, shard_id, record, exc.reason, exc.detail, sub, data))
            return
        except Exception as exc:  # a handler bug must not stall the shard or vanish
            dead.append(dead_letter(stream, shard_id, record, HANDLER_ERROR, where(exc), sub, data))
            return
        items.append(item)
        origins.append((record, sub))
        made_of.append(data)

    todo = records
    done = -1  # user records of the first record up to this sub-sequence number were done
    if resume_after is not None and records and records[0]["SequenceNumber"] == resume_after[0]:
        done = resume_after[1]
        if records[0]["Data"][:4] != MAGIC:
            todo = records[1:]  # a plain record has one user record, sub-sequence 0: done

    # The common batch: plain records, each one the encoder writes. Taken whole, without the
    # loop below (a closure call and three appends a record: 2.2 -> 1.7 µs a reading in process,
    # python -m tests.bench.batch_cost); otherwise the loop uses what the encoder wrote.
    encoded: list[Encoded | None] = []
    if encode_batch is not None:
        datas: list[bytes] = list(map(_DATA_OF, todo))  # (C loops, not comprehensions)
        encoded = encode_batch(datas)
        if None not in encoded:  # (a KPL aggregate is never canonical JSON)
            entries: list[Entry] = encoded  # type: ignore[assignment]
            return Converted(entries, dead, list(zip(todo, repeat(0))), 0, 0, datas)

    for index, record in enumerate(todo):
        data: bytes = record["Data"]
        if data[:4] != MAGIC:  # the common case: one user record, sub-sequence 0
            last_sub = 0
            # (asked once: a record the batch encoder left to the handler is not asked again)
            one(record, data, 0, encoded[index] if encoded else None)
            continue
        try:
            users = deaggregate(data, record.get("PartitionKey", ""))
        except InvalidRecord as exc:
            last_sub = 0
            dead.append(dead_letter(stream, shard_id, record, exc.reason, exc.detail))
            continue
        last_sub = users[-1].sub_sequence if users else 0
        skip = done if record is records[0] else -1
        for user in users:
            if user.sub_sequence <= skip:
                continue
            if hash_range is not None and not in_hash_range(user, hash_range):
                outside += 1  # a copy the KPL sent again to the right shard
                continue
            found = encode(user.data) if encode is not None else None
            one(record, user.data, user.sub_sequence, found)
    return Converted(items, dead, origins, last_sub, outside, made_of)


@dataclasses.dataclass(frozen=True, slots=True)
class Converter:
    """One shard's convert stage: what stays the same from batch to batch."""

    handler: Handler
    stream: str
    shard_id: str
    key_names: Sequence[str] = ()
    hash_range: tuple[int, int] | None = None  # None: unknown, every user record kept

    def __call__(
        self, records: Sequence[Record], resume_after: tuple[str, int] | None = None
    ) -> Converted:
        return convert(
            records,
            self.handler,
            self.stream,
            self.shard_id,
            self.key_names,
            resume_after,
            self.hash_range,
        )

    async def retrying(
        self,
        records: Sequence[Record],
        log: FilteringBoundLogger,
        errors: Counter,
        resume_after: tuple[str, int] | None = None,
        delays: Sequence[float] = HANDLER_RETRY_DELAYS_S,
    ) -> Converted:
        """Convert; while the handler raises, convert the whole batch again (keeping its
        order), and after the last pause leave the records still failing as
        ``handler_error`` dead letters. ``errors`` counts every failing attempt."""
        converted = self(records, resume_after)
        for delay in (*delays, None):
            failing = [letter for letter in converted.dead if letter.reason == HANDLER_ERROR]
            if not failing:
                break
            errors.inc(len(failing))
            if delay is None:
                log.error(
                    "handler_failed",
                    records=len(failing),
                    error=failing[0].detail,
                    attempts=len(delays) + 1,
                )
                break
            log.warning(
                "handler_error_retry",
                records=len(failing),
                error=failing[0].detail,
                delay_s=delay,
            )
            await asyncio.sleep(delay)
            converted = self(records, resume_after)
        return converted


def where(exc: BaseException) -> str:
    """The error and the line that raised it: enough to find a handler bug."""
    frames = traceback.extract_tb(exc.__traceback__)
    place = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return describe(exc) + place


def dead_letter(
    stream: str,
    shard_id: str,
    record: Record,
    reason: str,
    detail: str,
    sub_sequence: int = 0,
    data: bytes | None = None,
) -> DeadLetter:
    """A dead letter for ``record`` (or, with ``data``, for one user record inside it)."""
    return DeadLetter(
        stream=stream,
        shard_id=shard_id,
        sequence_number=record["SequenceNumber"],
        sub_sequence=sub_sequence,
        reason=reason,
        detail=detail,
        data=record["Data"] if data is None else data,
        partition_key=record.get("PartitionKey", ""),
    )
