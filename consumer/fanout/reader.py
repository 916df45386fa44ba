"""The fan-out reader of one shard: :class:`~consumer.shard.reader.ShardReader`'s interface
(``fetch``, ``fetch_next`` → :class:`~consumer.shard.reader.Fetched`) over SubscribeToShard.

The decisions are :class:`~consumer.fanout.subscription.Subscription`'s; this adapter does the
awaiting: it opens each subscription through the worker's :class:`Subscriber`, feeds the
stream's DATA to the event-stream decoder and reports every event, error and end to the
machine. Flow control follows the worker's record budget: a DATA frame that completes events
is acknowledged only once their records are charged to the budget, so when DynamoDB is slow
and the budget is spent the server stops at the stream's window instead of filling memory.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from consumer.fanout import FanOutError
from consumer.fanout.events import Decoder, Event, Failure, error_answer
from consumer.fanout.http2 import Closed, Http2Connection, Http2Error, Http2Stream
from consumer.fanout.subscription import (
    Deliver,
    Fatal,
    Gone,
    Reopen,
    ShardEnded,
    Subscription,
)
from consumer.metrics import Metrics
from consumer.shard.budget import RecordBudget
from consumer.shard.reader import Fetched, fetch_until

if TYPE_CHECKING:
    from aiobotocore.credentials import AioCredentials

    from consumer.adapters.sigv4 import SigV4

TARGET = "Kinesis_20131202.SubscribeToShard"
CONTENT_TYPE = "application/x-amz-json-1.1"
RESPONSE_TIMEOUT_S = 10.0  # SubscribeToShard's headers (AWS: in well under a second)
ERROR_BODY_BYTES = 64 * 1024
STREAMS_PER_CONNECTION = 64


class Subscriber:
    """A worker's SubscribeToShard calls: signed with the session's credentials, over a few
    HTTP/2 connections, many subscriptions each. :meth:`aclose` closes them all."""

    def __init__(
        self,
        endpoint: str,
        signer: SigV4,
        credentials: AioCredentials,
        consumer_arn: str,
        *,
        connect: Callable[[str], Awaitable[Http2Connection]] = Http2Connection.open,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.consumer_arn = consumer_arn
        self._signer = signer
        self._credentials = credentials
        self._connect = connect
        self._connections: list[Http2Connection] = []
        self._opening = asyncio.Lock()

    async def subscribe_to_shard(self, shard_id: str, position: dict[str, Any]) -> Http2Stream:
        """SubscribeToShard: the HTTP/2 stream its events come on."""
        start = dict(position)
        if isinstance(start.get("Timestamp"), datetime):
            start["Timestamp"] = start["Timestamp"].timestamp()
        body = orjson.dumps(
            {"ConsumerARN": self.consumer_arn, "ShardId": shard_id, "StartingPosition": start}
        )
        frozen = await self._credentials.get_frozen_credentials()
        signed = self._signer.headers(
            body, {"Content-Type": CONTENT_TYPE, "X-Amz-Target": TARGET}, frozen
        )
        headers = [(k.lower(), v) for k, v in signed.items() if k.lower() != "host"]
        connection = await self._connection()
        return await connection.post("/", headers, body)

    async def _connection(self) -> Http2Connection:
        async with self._opening:
            self._connections = [c for c in self._connections if c.usable or c.streams]
            for connection in self._connections:
                if connection.usable and connection.streams < STREAMS_PER_CONNECTION:
                    return connection
            connection = await self._connect(self.endpoint)
            self._connections.append(connection)
            return connection

    async def aclose(self) -> None:
        connections, self._connections = self._connections, []
        await asyncio.gather(*(c.aclose() for c in connections))


class FanOutReader:
    def __init__(
        self,
        subscriber: Subscriber,
        stream: str,
        shard_id: str,
        checkpoint: str,
        *,
        metrics: Metrics,
        at_timestamp: datetime | None = None,
        budget: RecordBudget | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        on_error: Callable[[str], None] = lambda detail: None,
    ) -> None:
        self.stream = stream
        self.shard_id = shard_id
        self._subscriber = subscriber
        self._machine = Subscription(shard_id, checkpoint, at_timestamp)
        self._budget = budget or RecordBudget(20_000)
        self._clock = clock
        self._wall = wall
        self._on_error = on_error
        self._open: Http2Stream | None = None
        self._decoder = Decoder()
        self._ending: Fetched | None = None  # the shard's end, once its records are out
        self._metrics = metrics
        self._behind = metrics.millis_behind.labels(stream, shard_id)
        self._received = metrics.records_received.labels(stream)
        self._latency = metrics.fanout_event_latency.labels(stream)

    async def fetch_next(self, due: Callable[[], float | None] = lambda: None) -> Fetched:
        """The next records, or the shard's end; an empty answer only once the clock has
        passed ``due()`` (as :meth:`ShardReader.fetch_next`)."""
        return await fetch_until(self.fetch, due, self._clock)

    async def fetch(self) -> Fetched:
        """The records of the events the next DATA completes (an empty answer for an event
        without records: AWS and kinesis-local send them while the shard is quiet)."""
        while True:
            if self._open is None:
                ended = await self._subscribe()
                if ended is not None:
                    return ended
                continue
            chunk = await self._receive(self._open)
            if chunk is None:  # silent: given up and opened again
                continue
            if isinstance(chunk, Closed):
                self._open = None
                self._note(
                    self._machine.on_end(self._clock())
                    if chunk.clean
                    else self._machine.on_reset(self._clock(), chunk.reason)
                )
                continue
            try:
                messages = self._decoder.feed(chunk.data)
            except Exception as exc:  # a corrupt message: this subscription is done
                self._close_open()
                self._note(self._machine.on_reset(self._clock(), f"undecodable: {exc!r}"))
                continue
            fetched = await self._take(messages, chunk.flow)
            if fetched is not None:
                return fetched

    async def aclose(self) -> None:
        """Cancel the open subscription (the server frees it for the next owner)."""
        self._close_open()

    async def _subscribe(self) -> Fetched | None:
        machine = self._machine
        if machine.finished():
            return self._ending or Fetched([], None, ended=True)
        request = machine.next(self._clock())
        delay = request.at - self._clock()
        if delay > 0:
            await asyncio.sleep(delay)
        stream: Http2Stream | None = None
        try:
            stream = await self._subscriber.subscribe_to_shard(
                self.shard_id, request.starting_position
            )
            async with asyncio.timeout(RESPONSE_TIMEOUT_S):
                status = await stream.response()
        except asyncio.CancelledError:
            if stream is not None:  # not ours yet to close: free it for the next owner
                stream.cancel()
            raise
        except Http2Error as exc:
            raise FanOutError(f"TELEMAX_RETRIEVAL=fanout: {exc}") from exc
        except (OSError, TimeoutError, ConnectionError) as exc:
            if stream is not None:
                stream.cancel()
            self._note(machine.on_reset(self._clock(), f"SubscribeToShard: {exc!r}"))
            return None
        if isinstance(status, Closed):
            self._note(machine.on_reset(self._clock(), status.reason))
            return None
        if status != 200:
            body = await _body(stream)
            failure = error_answer(status, body)
            return self._failed(failure)
        self._open, self._decoder = stream, Decoder()
        self._metrics.fanout_subscriptions.labels(self.stream).inc()
        return None

    async def _receive(self, stream: Http2Stream) -> Any:
        """The next chunk or end; None when the subscription went silent (cancelled)."""
        silent_at = self._machine.silent_at()
        wait = None if silent_at is None else max(0.0, silent_at - self._clock())
        try:
            async with asyncio.timeout(wait):
                return await stream.receive()
        except TimeoutError:
            self._close_open()
            self._note(self._machine.on_silent(self._clock()))
            return None

    async def _take(self, messages: list[Any], flow: int) -> Fetched | None:
        """Give the events' records to the machine, charge them to the budget, then let
        the server send more."""
        records: list[Any] = []
        behind: int | None = None
        heard = False
        ended: Fetched | None = None
        for message in messages:
            if isinstance(message, Failure):
                self._close_open()
                ended = self._failed(message)
                break
            if not isinstance(message, Event):
                continue
            heard = True
            outcome = self._machine.on_event(self._clock(), message.payload)
            if isinstance(outcome, Reopen):
                self._close_open()
                self._note(outcome)
                break
            records.extend(outcome.records)
            if isinstance(outcome, ShardEnded):
                ended = Fetched([], None, ended=True, children=outcome.children)
                self._close_open()
                break
            assert isinstance(outcome, Deliver)
            if outcome.millis_behind is not None:
                behind = outcome.millis_behind
            if outcome.records:
                arrived = outcome.records[-1].get("ApproximateArrivalTimestamp")
                if isinstance(arrived, int | float):
                    self._latency.observe(max(0.0, self._wall() - arrived))
        if records:
            await self._charge(len(records))
            self._received.inc(len(records))
        if self._open is not None:
            self._open.acknowledge(flow)
        if behind is not None:
            self._behind.set(behind)
        if ended is not None:
            self._ending = ended
            if records:  # the end's own records first; the end on the next call
                return Fetched(records, behind, ended=False)
            return ended
        if records or heard:
            return Fetched(records, behind, ended=False)
        return None  # no whole event yet

    async def _charge(self, count: int) -> None:
        """Take ``count`` of the budget (the consumer gives it back once they are stored);
        never more than all of it: an event larger than the budget still gets through."""
        wanted = min(count, self._budget.capacity)
        while wanted > 0:
            wanted -= await self._budget.acquire(wanted)

    def _failed(self, failure: Failure) -> Fetched | None:
        outcome = self._machine.on_error(self._clock(), failure.code, failure.message)
        if isinstance(outcome, Fatal):
            raise FanOutError(outcome.message)
        if isinstance(outcome, Gone):
            return Fetched([], None, ended=True, gone=True)
        self._note(outcome)
        return None

    def _note(self, outcome: Reopen) -> None:
        self._metrics.fanout_resubscriptions.labels(self.stream, outcome.cause.value).inc()
        self._on_error(f"{outcome.cause.value}: {outcome.detail}")

    def _close_open(self) -> None:
        if self._open is not None:
            self._open.cancel()
            self._open = None


async def _body(stream: Http2Stream) -> bytes:
    """An error answer's body (small; bounded)."""
    found = bytearray()
    async with asyncio.timeout(RESPONSE_TIMEOUT_S):
        while len(found) < ERROR_BODY_BYTES:
            chunk = await stream.receive()
            if isinstance(chunk, Closed):
                break
            found += chunk.data
            stream.acknowledge(chunk.flow)
    return bytes(found)
