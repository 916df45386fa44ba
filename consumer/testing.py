"""Test helpers that users and our own tests share: a fake clock, a scriptable batch writer,
record and lease builders. Nothing here patches botocore; integration tests use real local
endpoints (see ``consumer.local``)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Final, NamedTuple

import orjson
from botocore.exceptions import ClientError

from consumer.lease.model import Lease
from consumer.pipeline.records import Item


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

    async def __call__(self, table: str, items: Sequence[Item]) -> list[Item]:
        self.calls.append(len(items))
        step = self.script.pop(0) if self.script else None
        if isinstance(step, BaseException):
            raise step
        if any(self.refuse(item) for item in items):
            raise client_error("ValidationException", "refused by the fake", op="BatchWriteItem")
        left = list(items[len(items) - step :]) if step else []
        for item in items[: len(items) - len(left)]:
            key = tuple(next(iter(item[name].values())) for name in self.key_names)
            self.stored[(table, key)] = item
        return left


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


# -- the lease table and Kinesis in memory, for in-process tests of the concurrency core --

ANSWER_LOST = "answer_lost"  # a LeaseTable fault: the write is applied, the answer never comes


@dataclasses.dataclass(frozen=True, slots=True)
class LeaseWrite:
    """One write the in-memory lease table applied, stamped with the event loop's time."""

    at: float
    op: str
    key: str
    lease: Lease | None  # the lease after the write (None: deleted)


class LeaseTable:
    """An in-memory lease table with the conditions of ``LeaseRepository``.

    Every operation first sleeps ``latency[op]`` seconds of event-loop time (run the test under
    ``looptime`` and nothing really waits), is applied, then answers after ``answer_latency[op]``
    more (a caller that gives up meanwhile abandons a write that was applied); a Scan answers
    with the table as it is when the Scan *completes*, so a write made during a slow Scan is in
    its answer. ``fault(op, key)``
    may return an exception to raise instead of applying the operation, or :data:`ANSWER_LOST`
    to apply it and then answer as botocore does when it retried a request whose first answer
    was lost: with a failed condition. Applied writes are logged in ``writes``.
    """

    def __init__(self, leases: Sequence[Lease] = ()) -> None:
        self.items: dict[str, Lease] = {lease.key: lease for lease in leases}
        self.latency: dict[str, float] = {}
        self.answer_latency: dict[str, float] = {}
        self.fault: Callable[[str, str], BaseException | str | None] = lambda op, key: None
        self.writes: list[LeaseWrite] = []
        self.calls: list[tuple[float, str, str]] = []  # (loop time sent, op, key)

    def __getitem__(self, key: str) -> Lease:
        return self.items[key]

    async def _enter(self, op: str, key: str) -> bool:
        """Log, wait, maybe fail; True when the answer is to be lost after applying."""
        loop = asyncio.get_running_loop()
        self.calls.append((loop.time(), op, key))
        delay = self.latency.get(op, 0.0)
        await asyncio.sleep(delay)
        outcome = self.fault(op, key)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome == ANSWER_LOST

    def _apply(self, op: str, key: str, before: Lease | None, after: Lease | None) -> None:
        current = self.items.get(key)
        if current != before:
            raise AssertionError("LeaseTable: unconditional write")  # pragma: no cover
        if after is None:
            self.items.pop(key, None)
        else:
            self.items[key] = after
        self.writes.append(LeaseWrite(asyncio.get_running_loop().time(), op, key, after))

    async def list(self) -> list[Lease]:
        await self._enter("list", "*")
        return list(self.items.values())

    async def get(self, key: str) -> Lease | None:
        await self._enter("get", key)
        return self.items.get(key)

    async def create(
        self,
        shard_id: str,
        checkpoint: str,
        parents: frozenset[str],
        hash_range: tuple[int, int] | None = None,
    ) -> bool:
        lose = await self._enter("create", shard_id)
        if shard_id in self.items:
            return False
        self._apply(
            "create",
            shard_id,
            None,
            Lease(shard_id, None, 0, checkpoint, parents=parents, hash_range=hash_range),
        )
        return not lose

    async def _update(self, op: str, seen: Lease, **changes: Any) -> Lease | None:
        """Conditional on the counter and the owner ``seen`` names, like the repository."""
        lose = await self._enter(op, seen.key)
        current = self.items.get(seen.key)
        if current is None or current.counter != seen.counter or current.owner != seen.owner:
            return None
        after = dataclasses.replace(current, counter=current.counter + 1, **changes)
        self._apply(op, seen.key, current, after)
        await asyncio.sleep(self.answer_latency.get(op, 0.0))
        return None if lose else after

    async def take(self, lease: Lease, me: str) -> Lease | None:
        switches = lease.owner_switches + (lease.owner != me)
        return await self._update(
            "take", lease, owner=me, owner_switches=switches, checkpoint_owner=None
        )

    async def renew(self, lease: Lease) -> Lease | None:
        if lease.owner is None:
            return None
        return await self._update("renew", lease)

    async def assign(
        self, key: str, to: str, *, owners: AbstractSet[str | None], counter: int | None = None
    ) -> Lease | None:
        lose = await self._enter("assign", key)
        current = self.items.get(key)
        if current is None or current.owner not in owners:
            return None
        if counter is not None and current.counter != counter:
            return None
        after = dataclasses.replace(
            current,
            owner=to,
            counter=current.counter + 1,
            owner_switches=current.owner_switches + 1,
            checkpoint_owner=None,
        )
        self._apply("assign", key, current, after)
        await asyncio.sleep(self.answer_latency.get("assign", 0.0))
        return None if lose else after

    async def checkpoint(
        self,
        lease: Lease,
        position: str,
        sub_sequence: int = 0,
        millis_behind: int | None = None,
        children: frozenset[str] = frozenset(),
    ) -> Lease | None:
        if lease.owner is None:
            return None
        changes: dict[str, Any] = {
            "checkpoint": position,
            "sub_sequence": sub_sequence,
            "owner_switches": 0,
        }
        if millis_behind is not None:
            changes["millis_behind"] = millis_behind
        if children:
            changes["children"] = children
        return await self._update("checkpoint", lease, **changes)

    async def release(self, lease: Lease) -> Lease | None:
        if lease.owner is None:
            return None
        return await self._update("release", lease, owner=None)

    async def delete_finished(self, lease: Lease) -> bool:
        lose = await self._enter("delete", lease.key)
        current = self.items.get(lease.key)
        if current is None or current.counter != lease.counter or not current.finished:
            return False
        self._apply("delete", lease.key, current, None)
        return not lose


# -- Kinesis in memory --------------------------------------------------------------------

GET_RECORDS = "GetRecords"
GET_SHARD_ITERATOR = "GetShardIterator"
LIST_SHARDS = "ListShards"

# One scripted answer of FakeKinesis: an exception to raise, a dict to answer, or FROM_STREAM.
ScriptStep = BaseException | dict[str, Any] | None
FROM_STREAM: Final = None  # a script step that lets the stream answer the call


class KinesisCall(NamedTuple):
    """One call FakeKinesis received; a tuple ``(at, op, shard_id, args)``."""

    at: float  # the event loop's time when the call came (virtual under looptime)
    op: str  # the API operation: "GetRecords", "GetShardIterator", "ListShards"
    shard_id: str  # the shard asked for, or that a GetRecords iterator names; "*": ListShards
    args: dict[str, Any]  # the keyword arguments it came with


def get_records_answer(
    records: Sequence[dict[str, Any]] = (), behind: int | None = 0, **extra: Any
) -> dict[str, Any]:
    """A GetRecords answer for a FakeKinesis script (``behind``: its MillisBehindLatest,
    None to leave it out); without a ``NextShardIterator`` the iterator is kept."""
    answer: dict[str, Any] = {"Records": list(records), **extra}
    if behind is not None:
        answer["MillisBehindLatest"] = behind
    return answer


@dataclasses.dataclass
class FakeShard:
    """A shard of FakeKinesis. ``records`` are GetRecords records (see ``kinesis_record``); a
    ``closed`` shard ends once they are all read. At its end GetRecords names ``child_shards``
    as its ``ChildShards`` when they are set, else the stream's shards that name it a parent."""

    parents: tuple[str, ...] = ()
    closed: bool = False
    records: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    hash_range: tuple[int, int] = (0, 2**128 - 1)
    child_shards: list[dict[str, Any]] | None = None


class FakeKinesis:
    """One stream in memory, answering like aiobotocore's Kinesis client (the calls the worker
    makes). Iterators are ``shard|index``; a closed shard's last answer has a null
    ``NextShardIterator`` and its ``ChildShards``; a shard the stream does not have is a
    ResourceNotFoundException. ``put`` numbers records across the stream; records appended to a
    shard's ``records`` keep their own sequence numbers.

    Every call (but DescribeStreamSummary) is logged in ``calls`` with its arguments and the
    loop's time, then answered by, in this order:

    * the next step of ``script[op]`` (see ``answer_next``): an exception is raised, a dict is
      the answer, :data:`FROM_STREAM` goes on. A scripted GetRecords answer that names no
      ``NextShardIterator`` keeps the iterator it was given: the next call reads on from there;
    * ``fault(op, shard_id)``, which may return an exception to raise;
    * the stream.
    """

    def __init__(self, stream: str = "s") -> None:
        self.stream = stream
        self.shards: dict[str, FakeShard] = {}
        self.fault: Callable[[str, str], BaseException | None] = lambda op, shard_id: None
        self.script: dict[str, list[ScriptStep]] = {}
        self.calls: list[KinesisCall] = []
        self._sequence = 0

    def add_shard(self, shard_id: str, *parents: str, closed: bool = False) -> FakeShard:
        self.shards[shard_id] = FakeShard(parents=parents, closed=closed)
        return self.shards[shard_id]

    def put(self, shard_id: str, data: bytes | dict[str, Any]) -> str:
        self._sequence += 1
        record = kinesis_record(data, self._sequence, partition_key=shard_id)
        self.shards[shard_id].records.append(record)
        return str(record["SequenceNumber"])

    # -- scripting ------------------------------------------------------------------------

    def answer_next(self, op: str, *steps: ScriptStep) -> FakeKinesis:
        """The next calls of ``op`` take ``steps``, one each, after the steps already due."""
        self.script.setdefault(op, []).extend(steps)
        return self

    def fail_next(self, op: str, code: str, times: int = 1, status: int = 400) -> FakeKinesis:
        """The next ``times`` calls of ``op`` raise ``client_error(code)``."""
        return self.answer_next(
            op, *(client_error(code, status=status, op=op) for _ in range(times))
        )

    # -- the calls received ---------------------------------------------------------------

    def calls_of(self, op: str) -> list[KinesisCall]:
        return [call for call in self.calls if call.op == op]

    def call_times(self, op: str = GET_RECORDS) -> list[float]:
        return [call.at for call in self.calls_of(op)]

    def call_gaps(self, op: str = GET_RECORDS) -> list[float]:
        """Seconds between consecutive calls of ``op``, to the microsecond."""
        return [round(b - a, 6) for a, b in itertools.pairwise(self.call_times(op))]

    def iterator_requests(self) -> list[dict[str, Any]]:
        """The GetShardIterator arguments other than the stream and the shard."""
        return [
            {k: v for k, v in call.args.items() if k not in ("StreamName", "ShardId")}
            for call in self.calls_of(GET_SHARD_ITERATOR)
        ]

    # -- the client -----------------------------------------------------------------------

    def _enter(self, op: str, shard_id: str, args: dict[str, Any]) -> dict[str, Any] | None:
        """Log the call, then follow its script or ``fault``: the scripted answer, or None for
        the stream to answer."""
        self.calls.append(KinesisCall(asyncio.get_running_loop().time(), op, shard_id, args))
        steps = self.script.get(op)
        step = steps.pop(0) if steps else FROM_STREAM
        if isinstance(step, BaseException):
            raise step
        if step is not FROM_STREAM:
            return step
        error = self.fault(op, shard_id)
        if error is not None:
            raise error
        return None

    def _shard(self, shard_id: str, op: str) -> FakeShard:
        if shard_id not in self.shards:
            message = f"Shard {shard_id} in stream {self.stream} does not exist"
            raise client_error("ResourceNotFoundException", message, op=op)
        return self.shards[shard_id]

    async def describe_stream_summary(self, **kwargs: Any) -> dict[str, Any]:
        return {"StreamDescriptionSummary": {"StreamName": self.stream}}

    async def list_shards(self, **kwargs: Any) -> dict[str, Any]:
        scripted = self._enter(LIST_SHARDS, "*", dict(kwargs))
        if scripted is not None:
            return scripted
        return {"Shards": [self._describe(shard_id) for shard_id in self.shards]}

    def _describe(self, shard_id: str) -> dict[str, Any]:
        shard = self.shards[shard_id]
        raw: dict[str, Any] = {
            "ShardId": shard_id,
            "HashKeyRange": {
                "StartingHashKey": str(shard.hash_range[0]),
                "EndingHashKey": str(shard.hash_range[1]),
            },
            "SequenceNumberRange": {"StartingSequenceNumber": "0"},
        }
        if shard.parents:
            raw["ParentShardId"] = shard.parents[0]
        if len(shard.parents) > 1:
            raw["AdjacentParentShardId"] = shard.parents[1]
        if shard.closed:
            raw["SequenceNumberRange"]["EndingSequenceNumber"] = "9" * 56
        return raw

    async def get_shard_iterator(
        self, *, StreamName: str, ShardId: str, ShardIteratorType: str, **kwargs: Any
    ) -> dict[str, Any]:
        args = {
            "StreamName": StreamName,
            "ShardId": ShardId,
            "ShardIteratorType": ShardIteratorType,
        }
        scripted = self._enter(GET_SHARD_ITERATOR, ShardId, {**args, **kwargs})
        if scripted is not None:
            return scripted
        records = self._shard(ShardId, GET_SHARD_ITERATOR).records
        if ShardIteratorType in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
            target = int(kwargs["StartingSequenceNumber"])
            index = next(
                (i for i, r in enumerate(records) if int(r["SequenceNumber"]) >= target),
                len(records),
            )
            if ShardIteratorType == "AFTER_SEQUENCE_NUMBER" and index < len(records):
                index += int(records[index]["SequenceNumber"]) == target
        elif ShardIteratorType == "LATEST":
            index = len(records)
        else:  # TRIM_HORIZON (and AT_TIMESTAMP: every record is "after" any timestamp here)
            index = 0
        return {"ShardIterator": f"{ShardId}|{index}"}

    async def get_records(self, *, ShardIterator: str, Limit: int = 10_000) -> dict[str, Any]:
        shard_id, _, raw_index = ShardIterator.partition("|")
        args = {"ShardIterator": ShardIterator, "Limit": Limit}
        scripted = self._enter(GET_RECORDS, shard_id, args)
        if scripted is not None:
            return {"NextShardIterator": ShardIterator, **scripted}
        shard = self._shard(shard_id, GET_RECORDS)
        index = int(raw_index)
        batch = shard.records[index : index + Limit]
        index += len(batch)
        answer: dict[str, Any] = {"Records": batch, "MillisBehindLatest": 0}
        if shard.closed and index >= len(shard.records):
            answer["NextShardIterator"] = None
            answer["ChildShards"] = self._child_shards(shard_id)
        else:
            answer["NextShardIterator"] = f"{shard_id}|{index}"
        return answer

    def _child_shards(self, shard_id: str) -> list[dict[str, Any]]:
        named = self.shards[shard_id].child_shards
        if named is not None:
            return list(named)
        return [
            {
                "ShardId": child_id,
                "ParentShards": list(child.parents),
                "HashKeyRange": self._describe(child_id)["HashKeyRange"],
            }
            for child_id, child in self.shards.items()
            if shard_id in child.parents
        ]
