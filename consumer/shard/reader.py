"""Polling reader for one shard: GetRecords at most 5 times a second, with backoff.

``fetch`` returns the next answer. It paces itself (every 0.2 s while records flow or the
shard is behind; when caught up, a pause that doubles with each empty answer up to the idle
interval: see :func:`pause_after`), backs off on throttling and transient errors, and
rebuilds an expired iterator after the last record it delivered. ``fetch_next`` loops over
empty answers inside one coroutine, so that an idle shard costs its consumer nothing but the
calls themselves. A shard that no longer exists
(ResourceNotFoundException: trimmed past the stream's retention) is treated as its end, as the
KCL's KinesisDataFetcher does, and marked ``gone``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from consumer.lease.model import AT_TIMESTAMP, LATEST, SENTINELS, SHARD_END, TRIM_HORIZON
from consumer.metrics import Metrics
from consumer.pipeline.convert import Record
from consumer.shard.budget import RecordBudget
from consumer.shard.discovery import Shard, child_from_api
from kernel.aws import classify, error_code, is_throttle
from kernel.backoff import Backoff
from kernel.errors import Action

if TYPE_CHECKING:
    from types_aiobotocore_kinesis import KinesisClient

MIN_CALL_INTERVAL_S = 0.2  # GetRecords: 5 calls per second per shard
# The first call asks for few records so that the first ones are stored quickly even behind a
# large backlog. Few, because a worker starts all its shards at once and the first write waits
# for the whole first round to be fetched and parsed: at 64 shards 250 a call (16,000 records)
# put the first record 1.4-1.6 s after launch, 50 a call 0.6-1.1 s; at 4 shards 0.5-0.7 s
# against 0.4-0.5, steady CPU alike (python -m tests.bench --records 50000 --shards 64 --only
# ours, 2026-12-04). Then an answer as large as its call shows a backlog, and the next call
# asks for the configured maximum (the worker's record budget still bounds what it gets); a
# smaller answer with records doubles the limit. Doubling from 50 after full answers too took
# six calls to reach 1,600: on 64 shards of 3,125 records each, calls of 340 records on
# average. With the jump: steady CPU a record 0.83-0.89x on 64 shards, 0.94-1.00x on 4 (paired,
# 3 rounds, `python -m tests.bench --records 200000 --shards 64 4 --only ours --only before`),
# 0.92x (0.79-1.03) on 64 in `make bench` (2026-12-05).
FIRST_LIMIT = 50
# The longest pause between calls to a caught-up shard, unless configured otherwise: a
# record put after a quiet spell waits at most this long for the call that reads it, so
# that it is stored within a second (the call and the write take the rest).
IDLE_POLL_S = 0.8
# Idle calls fall on a grid common to every shard of the worker: one wake-up of the event
# loop then serves every quiet shard whose pause ends in the same slot, instead of one each.
# Measured (tests/bench/idle.py, 128 quiet shards): 0.27 -> 0.17 ms of CPU a second a shard.
IDLE_GRID_S = 0.1
# (shard iterator, limit) -> the GetRecords answer, with each record's Data as bytes
GetRecords = Callable[[str, int], Awaitable[dict[str, Any]]]


# (stream, shard id, iterator_request(...)) -> a shard iterator
GetIterator = Callable[[str, str, dict[str, Any]], Awaitable[str]]


def botocore_get_iterator(kinesis: KinesisClient) -> GetIterator:
    async def get_iterator(stream: str, shard_id: str, request: dict[str, Any]) -> str:
        answer = await kinesis.get_shard_iterator(StreamName=stream, ShardId=shard_id, **request)
        return answer["ShardIterator"]

    return get_iterator


def botocore_get_records(kinesis: KinesisClient) -> GetRecords:
    async def get_records(iterator: str, limit: int) -> dict[str, Any]:
        answer: Any = await kinesis.get_records(ShardIterator=iterator, Limit=limit)
        return dict(answer)

    return get_records


def pause_after(empty_answers: int, idle_poll_s: float) -> float:
    """The wait before the next GetRecords after ``empty_answers`` caught-up answers in a row
    (0: the last answer had records, or the shard is behind). Doubling from the API's limit
    keeps a lull between bursts cheap to notice; the cap keeps a quiet shard at one call per
    ``idle_poll_s``: at 0.8 s, a quarter of the calls of polling it at the API's limit."""
    if empty_answers <= 0:
        return MIN_CALL_INTERVAL_S
    grown = MIN_CALL_INTERVAL_S * 2.0 ** min(empty_answers, 30)  # a long quiet: no overflow
    return max(MIN_CALL_INTERVAL_S, min(idle_poll_s, grown))


def next_call_at(now: float, pause: float) -> float:
    """When to call next: ``now + pause`` at the API's limit; an idle pause ends on the last
    grid line at or before it (never sooner than the limit allows, never later than asked)."""
    at = now + pause
    if pause <= MIN_CALL_INTERVAL_S:
        return at
    # the epsilon keeps a time already on a line (0.6 + 0.8) from rounding down a whole slot
    on_grid = math.floor(at / IDLE_GRID_S + 1e-6) * IDLE_GRID_S
    return max(now + MIN_CALL_INTERVAL_S, on_grid)


@dataclasses.dataclass(frozen=True, slots=True)
class Fetched:
    records: list[Record]
    millis_behind: int | None
    ended: bool  # the shard is closed and every record has been delivered
    # At the end, the children Kinesis named (AWS does; some emulators do not); None when
    # unknown.
    children: tuple[Shard, ...] | None = None
    # The shard no longer exists (ResourceNotFoundException: past the stream's retention):
    # treated as its end (``ended``, no records, children unknown).
    gone: bool = False


def iterator_request(
    checkpoint: str, at_timestamp: datetime | None, *, at: bool = False
) -> dict[str, Any]:
    """GetShardIterator arguments that resume after ``checkpoint`` (or, with ``at``, at it:
    a checkpoint inside an aggregated record leaves some of its user records to do)."""
    if checkpoint in (TRIM_HORIZON, LATEST):
        return {"ShardIteratorType": checkpoint}
    if checkpoint == AT_TIMESTAMP:
        if at_timestamp is None:
            raise ValueError("AT_TIMESTAMP checkpoint without a timestamp")
        return {"ShardIteratorType": AT_TIMESTAMP, "Timestamp": at_timestamp}
    if checkpoint == SHARD_END:
        raise ValueError("a shard at SHARD_END has nothing left to read")
    kind = "AT_SEQUENCE_NUMBER" if at else "AFTER_SEQUENCE_NUMBER"
    return {"ShardIteratorType": kind, "StartingSequenceNumber": checkpoint}


async def fetch_until(
    fetch: Callable[[], Awaitable[Fetched]],
    due: Callable[[], float | None],
    clock: Callable[[], float],
) -> Fetched:
    """``fetch()`` again until an answer has records or the shard's end, or the clock has
    passed ``due()`` (the caller's next obligation, such as a checkpoint: asked after every
    answer, since it may change while we wait). An idle shard then costs its consumer
    nothing but the calls themselves."""
    while True:
        fetched = await fetch()
        if fetched.records or fetched.ended:
            return fetched
        deadline = due()
        if deadline is not None and clock() >= deadline:
            return fetched


class Reader(Protocol):
    """What a shard consumer reads through: polling (:class:`ShardReader`) or fan-out
    (:class:`consumer.fanout.reader.FanOutReader`)."""

    async def fetch_next(self, due: Callable[[], float | None] = ...) -> Fetched: ...

    async def aclose(self) -> None: ...


class ShardReader:
    def __init__(
        self,
        kinesis: KinesisClient,
        stream: str,
        shard_id: str,
        checkpoint: str,
        *,
        metrics: Metrics,
        at_timestamp: datetime | None = None,
        limit: int = 10_000,
        idle_poll_s: float = IDLE_POLL_S,
        get_records: GetRecords | None = None,
        get_iterator: GetIterator | None = None,
        budget: RecordBudget | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_error: Callable[[BaseException], None] = lambda exc: None,
    ) -> None:
        self._get_records = get_records or botocore_get_records(kinesis)
        self._get_shard_iterator = get_iterator or botocore_get_iterator(kinesis)
        self._budget = budget or RecordBudget(2 * limit)
        self.stream = stream
        self.shard_id = shard_id
        self._position = checkpoint  # resume point: the last delivered sequence number
        # Until something is delivered, resume *at* a sequence-number checkpoint (KCL's rule).
        self._resume_at = checkpoint not in SENTINELS
        self._at_timestamp = at_timestamp
        self._max_limit = limit
        self._limit = min(FIRST_LIMIT, limit)
        self._idle_poll_s = idle_poll_s
        self._empty_answers = 0  # caught-up answers in a row
        self._clock = clock
        self._on_error = on_error
        self._iterator: str | None = None
        self._next_call_at = 0.0
        self._api = "GetRecords"  # the call under way, for the error metrics
        self._metrics = metrics
        self._behind = metrics.millis_behind.labels(stream, shard_id)
        self._received = metrics.records_received.labels(stream)

    async def fetch_next(self, due: Callable[[], float | None] = lambda: None) -> Fetched:
        """The next answer with records, or the shard's end; an empty one only once the clock
        has passed ``due()`` (the caller's next obligation, such as a checkpoint; asked after
        every answer, since it may change while we wait)."""
        return await fetch_until(self.fetch, due, self._clock)

    async def aclose(self) -> None:
        """Nothing to close: each call stands alone."""

    async def fetch(self) -> Fetched:
        backoff: Backoff | None = None  # made on the first failure: most calls have none
        while True:
            delay = self._next_call_at - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
            granted = await self._budget.acquire(self._limit)
            try:
                fetched = await self._fetch_once(granted)
            except BaseException as exc:
                self._budget.release(granted)
                if not isinstance(exc, Exception):
                    raise  # cancelled: never swallowed
                self._next_call_at = self._clock() + MIN_CALL_INTERVAL_S
                code = error_code(exc)
                if code == "ResourceNotFoundException":
                    # The shard is gone (trimmed): its end, as in the KCL. The caller tells.
                    self._iterator = None
                    self._metrics.aws_errors.labels(self._api, code).inc()
                    return Fetched([], None, ended=True, children=None, gone=True)
                if code == "ExpiredIteratorException":
                    self._iterator = None  # rebuilt from the last delivered record
                    self._metrics.aws_errors.labels(self._api, code).inc()
                    self._on_error(exc)
                    continue
                if classify(exc) is not Action.RETRY:
                    raise
                self._metrics.aws_errors.labels(self._api, code or type(exc).__name__).inc()
                if is_throttle(exc):
                    self._metrics.throttles.labels(self._api).inc()
                self._on_error(exc)
                backoff = backoff or Backoff(base=0.2, cap=10.0)
                await backoff.sleep()
                continue
            # The records fetched stay charged until the consumer has them stored.
            self._budget.release(granted - len(fetched.records))
            return fetched

    async def _fetch_once(self, limit: int) -> Fetched:
        if self._iterator is None:
            self._api = "GetShardIterator"
            self._iterator = await self._get_iterator()
        self._api = "GetRecords"
        answer = await self._get_records(self._iterator, limit)
        records: list[Record] = answer.get("Records", [])
        behind = answer.get("MillisBehindLatest")
        self._iterator = answer.get("NextShardIterator")
        busy = bool(records) or bool(behind)
        if len(records) >= limit:  # (``limit``: what this call was granted and asked)
            self._limit = self._max_limit
        elif records:
            self._limit = min(self._max_limit, self._limit * 2)
        self._empty_answers = 0 if busy else self._empty_answers + 1
        self._next_call_at = next_call_at(
            self._clock(), pause_after(self._empty_answers, self._idle_poll_s)
        )
        if records:
            # Read *at* the checkpoint until something is delivered; what of the record there
            # was done is the convert stage's rule (``convert(resume_after=…)``).
            self._resume_at = False
            self._position = records[-1]["SequenceNumber"]
            self._received.inc(len(records))
        if behind is not None:
            self._behind.set(behind)
        ended = self._iterator is None
        children = None
        if ended and answer.get("ChildShards"):
            children = tuple(child_from_api(child) for child in answer["ChildShards"])
        return Fetched(records, behind, ended=ended, children=children)

    async def _get_iterator(self) -> str:
        request = iterator_request(self._position, self._at_timestamp, at=self._resume_at)
        return await self._get_shard_iterator(self.stream, self.shard_id, request)
