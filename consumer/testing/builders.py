"""A fake clock, AWS errors as botocore raises them, a scriptable batch writer, and
builders of readings, Kinesis records and leases."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from botocore.exceptions import ClientError

from consumer.lease.model import Lease
from kernel.handlers import Entry, Item, as_items


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def client_error(code: str, message: str = "", status: int = 400, op: str = "Op") -> ClientError:
    """A ClientError as botocore raises it for an AWS error answer."""
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, op)


@dataclasses.dataclass
class ScriptedWriter:
    """A BatchWriter that stores items in memory and follows a script.

    ``script`` is consumed one step per call: ``None`` accepts everything, an int ``n`` leaves
    the last ``n`` items unprocessed, an exception is raised. After the script, calls succeed.
    ``refuse`` makes any request containing a matching item fail with ValidationException.
    """

    script: list[int | BaseException | None] = dataclasses.field(default_factory=list)
    refuse: Callable[[Item], bool] = lambda item: False
    stored: dict[tuple[str, tuple[Any, ...]], Item] = dataclasses.field(default_factory=dict)
    calls: list[int] = dataclasses.field(default_factory=list)
    key_names: tuple[str, ...] = ("hardwareID", "Timestamp")

    async def __call__(self, table: str, entries: Sequence[Entry]) -> list[Entry]:
        items = as_items(entries)  # what DynamoDB would store of encoded entries
        self.calls.append(len(items))
        step = self.script.pop(0) if self.script else None
        if isinstance(step, BaseException):
            raise step
        if any(self.refuse(item) for item in items):
            raise client_error("ValidationException", "refused by the fake", op="BatchWriteItem")
        left: list[Entry] = list(items[len(items) - step :]) if step else []
        for item in items[: len(items) - len(left)]:
            key = tuple(next(iter(item[name].values())) for name in self.key_names)
            self.stored[(table, key)] = item
        return left


@dataclasses.dataclass
class ScriptedPreparer:
    """A table wire's ``prepare`` (a ``BatchPreparer``) over a writer (a ``BatchWriter``, such as
    :class:`ScriptedWriter`): a chunk prepared is sent through the writer, so its script
    applies alike. ``events`` tells the order: ``("prepare", n)`` for a chunk of n entries
    prepared, ``("send", n)`` for one sent (a chunk sent twice fails the test); ``size``: the
    bytes each prepared chunk claims to hold; ``preparers``: how many were asked for."""

    writer: Callable[[str, Sequence[Entry]], Awaitable[Sequence[Entry]]]
    size: int = 1000
    events: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    preparers: int = 0

    async def __call__(self, table: str) -> Callable[[Sequence[Entry]], _ScriptedPrepared]:
        self.preparers += 1

        def prepare(entries: Sequence[Entry]) -> _ScriptedPrepared:
            self.events.append(("prepare", len(entries)))
            return _ScriptedPrepared(self, table, list(entries))

        return prepare


@dataclasses.dataclass
class _ScriptedPrepared:
    preparer: ScriptedPreparer
    table: str
    entries: list[Entry]
    sent: bool = False

    @property
    def size(self) -> int:
        return self.preparer.size

    async def send(self) -> Sequence[Entry]:
        assert not self.sent, "a prepared chunk sent twice"
        self.sent = True
        self.preparer.events.append(("send", len(self.entries)))
        return await self.preparer.writer(self.table, self.entries)


def reading(
    hardware_id: str = "HW-000001", timestamp: str = "2026-01-01T00:00:00.000001Z", **extra: Any
) -> dict[str, Any]:
    return {
        "hardwareID": hardware_id,
        "Timestamp": timestamp,
        "Data1": "LNK-0001",
        "Data2": 100.5,
        "Data3": 12.25,
        **extra,
    }


def kinesis_record(
    data: bytes | dict[str, Any], sequence: int, partition_key: str = "pk"
) -> dict[str, Any]:
    """A GetRecords record as aiobotocore returns it."""
    raw = data if isinstance(data, bytes) else orjson.dumps(data)
    return {"Data": raw, "SequenceNumber": f"{sequence:056d}", "PartitionKey": partition_key}


def lease(
    key: str,
    owner: str | None = None,
    counter: int = 1,
    checkpoint: str = "TRIM_HORIZON",
    **extra: Any,
) -> Lease:
    return Lease(key=key, owner=owner, counter=counter, checkpoint=checkpoint, **extra)
