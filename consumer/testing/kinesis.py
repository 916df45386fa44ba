"""Kinesis in memory: shards, scripted answers and a log of the calls, for in-process tests
of the reader and the shard consumer."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple

from consumer.testing.builders import client_error, kinesis_record

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
