"""A scripted in-memory Kinesis client for unit tests of the shard reader.

``FakeKinesis`` answers ``get_shard_iterator(**kwargs)`` and ``get_records(ShardIterator=...,
Limit=...)`` as aiobotocore does (``Data`` as bytes), in one of two ways:

* from ``shards``, a list of records per shard (see ``consumer.testing.kinesis_record``):
  iterators are positions in that list, every iterator type is honoured, a shard named in
  ``closed`` ends (``NextShardIterator`` null, ``ChildShards`` from ``children``) once its
  last record is delivered;
* from a script, consumed one step per call of that operation before the lists are used:
  an exception is raised (``consumer.testing.client_error(code)`` for AWS errors), a dict is
  the answer, ``None`` answers from the lists. A scripted GetRecords answer that names no
  ``NextShardIterator`` keeps the iterator it was given, so the next call reads on from the
  same place.

Every call is recorded with the event loop's time (virtual under ``looptime``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

from consumer.testing import client_error

GET_RECORDS = "GetRecords"
GET_SHARD_ITERATOR = "GetShardIterator"

Step = BaseException | dict[str, Any] | None
FROM_LISTS = None  # a script step that answers from ``shards``


@dataclasses.dataclass(frozen=True)
class Call:
    op: str
    args: dict[str, Any]
    at: float  # the loop time of the call


@dataclasses.dataclass
class FakeKinesis:
    shards: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    closed: set[str] = dataclasses.field(default_factory=set)
    children: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    # MillisBehindLatest of an answer that leaves records unread (0 once caught up)
    behind_ms: int = 1000
    script: dict[str, list[Step]] = dataclasses.field(default_factory=dict)
    calls: list[Call] = dataclasses.field(default_factory=list)
    _iterators: dict[str, tuple[str, int]] = dataclasses.field(default_factory=dict)

    # -- scripting ---------------------------------------------------------------------------

    def then(self, op: str, *steps: Step) -> FakeKinesis:
        """Append ``steps`` to the script of ``op``."""
        self.script.setdefault(op, []).extend(steps)
        return self

    def fail(self, op: str, code: str, times: int = 1, status: int = 400) -> FakeKinesis:
        """The next ``times`` calls of ``op`` raise ``client_error(code)``."""
        return self.then(op, *(client_error(code, status=status, op=op) for _ in range(times)))

    def iterator_for(self, shard_id: str, position: int) -> str:
        token = f"it-{len(self._iterators)}-{shard_id}-{position}"
        self._iterators[token] = (shard_id, position)
        return token

    # -- what the tests read -----------------------------------------------------------------

    def of(self, op: str) -> list[Call]:
        return [call for call in self.calls if call.op == op]

    def times(self, op: str = GET_RECORDS) -> list[float]:
        return [call.at for call in self.of(op)]

    def gaps(self, op: str = GET_RECORDS) -> list[float]:
        at = self.times(op)
        return [round(b - a, 6) for a, b in itertools.pairwise(at)]

    def iterator_requests(self) -> list[dict[str, Any]]:
        """GetShardIterator arguments other than the stream and shard."""
        return [
            {k: v for k, v in call.args.items() if k not in ("StreamName", "ShardId")}
            for call in self.of(GET_SHARD_ITERATOR)
        ]

    # -- the client --------------------------------------------------------------------------

    def _record(self, op: str, args: dict[str, Any]) -> Step | None:
        self.calls.append(Call(op, dict(args), asyncio.get_running_loop().time()))
        steps = self.script.get(op)
        if not steps:
            return None
        step = steps.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step

    async def get_shard_iterator(self, **kwargs: Any) -> dict[str, Any]:
        step = self._record(GET_SHARD_ITERATOR, kwargs)
        if step is not None:
            return step
        shard_id = kwargs["ShardId"]
        if shard_id not in self.shards:
            raise client_error(
                "ResourceNotFoundException", f"no shard {shard_id}", op=GET_SHARD_ITERATOR
            )
        records = self.shards[shard_id]
        kind = kwargs["ShardIteratorType"]
        if kind in ("TRIM_HORIZON", "AT_TIMESTAMP"):
            position = 0
        elif kind == "LATEST":
            position = len(records)
        else:
            wanted = int(kwargs["StartingSequenceNumber"])
            sequences = [int(r["SequenceNumber"]) for r in records]
            if kind == "AT_SEQUENCE_NUMBER":
                position = sum(1 for s in sequences if s < wanted)
            else:  # AFTER_SEQUENCE_NUMBER
                position = sum(1 for s in sequences if s <= wanted)
        return {"ShardIterator": self.iterator_for(shard_id, position)}

    async def get_records(self, *, ShardIterator: str, Limit: int = 10_000) -> dict[str, Any]:
        step = self._record(GET_RECORDS, {"ShardIterator": ShardIterator, "Limit": Limit})
        if step is not None:
            return {"NextShardIterator": ShardIterator, **step}
        if ShardIterator not in self._iterators:
            raise client_error("ExpiredIteratorException", "unknown iterator")
        shard_id, position = self._iterators[ShardIterator]
        records = self.shards[shard_id]
        batch: Sequence[dict[str, Any]] = records[position : position + Limit]
        end = position + len(batch)
        caught_up = end >= len(records)
        answer: dict[str, Any] = {
            "Records": list(batch),
            "MillisBehindLatest": 0 if caught_up else self.behind_ms,
        }
        if caught_up and shard_id in self.closed:
            answer["NextShardIterator"] = None
            answer["ChildShards"] = self.children.get(shard_id, [])
        else:
            answer["NextShardIterator"] = self.iterator_for(shard_id, end)
        return answer


def answer(
    records: Sequence[dict[str, Any]] = (), behind: int | None = 0, **extra: Any
) -> dict[str, Any]:
    """A scripted GetRecords answer."""
    out: dict[str, Any] = {"Records": list(records), **extra}
    if behind is not None:
        out["MillisBehindLatest"] = behind
    return out
