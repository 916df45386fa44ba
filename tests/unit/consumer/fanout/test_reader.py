"""The fan-out reader against a scripted HTTP/2 server: records across subscriptions, the
shard's end, errors in the stream and in the answer, a silent subscription, flow control
held by the record budget."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from botocore.credentials import ReadOnlyCredentials

from consumer.adapters.sigv4 import SigV4
from consumer.fanout import FanOutError, subscription
from consumer.fanout.http2 import Http2Connection
from consumer.fanout.reader import FanOutReader, Subscriber
from consumer.metrics import Metrics
from consumer.shard.budget import RecordBudget
from consumer.shard.reader import Fetched
from consumer.testing.fanout import (
    Answer,
    Request,
    Script,
    ScriptedHttp2Server,
    exception_message,
    initial_response,
    shard_event,
)

pytestmark = pytest.mark.timeout(30)
ARN = "arn:aws:kinesis:us-east-1:000000000000:stream/s/consumer/c:1"
CHILDREN = [
    {
        "ShardId": "shardId-1",
        "ParentShards": ["shardId-0"],
        "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": "9"},
    }
]


class Credentials:
    async def get_frozen_credentials(self) -> ReadOnlyCredentials:
        return ReadOnlyCredentials("AKID", "secret", None)


def records(*sequences: int) -> list[tuple[str, bytes]]:
    return [(str(s), f"r{s}".encode()) for s in sequences]


async def collect(reader: FanOutReader, count: int) -> list[Any]:
    found: list[Any] = []
    while len(found) < count:
        fetched = await reader.fetch_next()
        found.extend(fetched.records)
        assert not fetched.ended
    return found


class Setup:
    def __init__(self, server: ScriptedHttp2Server, window: int | None = None) -> None:
        async def connect(url: str) -> Http2Connection:
            if window is None:
                return await Http2Connection.open(url)
            return await Http2Connection.open(url, stream_window=window)

        self.metrics = Metrics("s")
        self.subscriber = Subscriber(
            server.url,
            SigV4(server.url + "/", "us-east-1", "kinesis"),
            Credentials(),  # type: ignore[arg-type]
            ARN,
            connect=connect,
        )
        self.notes: list[str] = []

    def reader(self, checkpoint: str = "TRIM_HORIZON", budget: int = 1000) -> FanOutReader:
        return FanOutReader(
            self.subscriber,
            "s",
            "shardId-0",
            checkpoint,
            metrics=self.metrics,
            budget=RecordBudget(budget),
            on_error=self.notes.append,
        )

    def value(self, name: str, **labels: str) -> float:
        found = self.metrics.registry.get_sample_value(name, {"stream": "s", **labels})
        return found or 0.0


async def served(script: Script, window: int | None = None) -> tuple[ScriptedHttp2Server, Setup]:
    server = ScriptedHttp2Server(script)
    await server.__aenter__()
    return server, Setup(server, window)


async def test_records_flow_across_subscriptions_to_the_shards_end() -> None:
    async def script(request: Request, answer: Answer) -> None:
        answer.respond()
        if len(request.headers) and request.body["StartingPosition"]["Type"] == "TRIM_HORIZON":
            await answer.send(initial_response())  # AWS sends one; kinesis-local does not
            await answer.send(shard_event(records(1, 2, 3), "3", behind=40))
            await answer.send(shard_event([], "3"), end=True)
        else:
            await answer.send(shard_event(records(4, 5), "5"))
            await answer.send(shard_event(records(6), None, children=CHILDREN), end=True)

    server, setup = await served(script)
    try:
        reader = setup.reader()
        got = await collect(reader, 6)
        end = await reader.fetch_next()
    finally:
        await setup.subscriber.aclose()
        await server.__aexit__()
    assert [r["Data"] for r in got] == [b"r1", b"r2", b"r3", b"r4", b"r5", b"r6"]
    assert end.ended and not end.gone
    assert end.children is not None and [c.shard_id for c in end.children] == ["shardId-1"]
    first, second = server.requests
    assert first.body == {
        "ConsumerARN": ARN,
        "ShardId": "shardId-0",
        "StartingPosition": {"Type": "TRIM_HORIZON"},
    }
    assert second.body["StartingPosition"] == {
        "Type": "AFTER_SEQUENCE_NUMBER",
        "SequenceNumber": "3",
    }
    assert first.headers["x-amz-target"] == "Kinesis_20131202.SubscribeToShard"
    assert first.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKID/")
    assert "host" not in first.headers  # :authority instead
    assert setup.value("telemax_fanout_subscriptions_total") == 2
    assert setup.value("telemax_fanout_resubscriptions_total", cause="ended") == 1
    assert setup.value("telemax_records_received_total") == 6
    assert server.connections == 1  # the second subscription reused the connection


async def test_a_checkpoint_resumes_at_its_sequence_number() -> None:
    async def script(request: Request, answer: Answer) -> None:
        answer.respond()
        await answer.send(shard_event(records(7), "7"))

    server, setup = await served(script)
    try:
        await collect(setup.reader("7"), 1)
    finally:
        await setup.subscriber.aclose()
        await server.__aexit__()
    assert server.requests[0].body["StartingPosition"] == {
        "Type": "AT_SEQUENCE_NUMBER",
        "SequenceNumber": "7",
    }


async def test_resource_in_use_is_retried_and_a_goaway_resumes_on_a_new_connection() -> None:
    async def script(request: Request, answer: Answer) -> None:
        answer.respond()
        n = len(server.requests)
        if n == 1:
            await answer.send(exception_message("ResourceInUseException", "still open"), True)
        elif n == 2:
            await answer.send(shard_event(records(1, 2), "2"))
            await asyncio.sleep(0.05)
            answer.go_away()
        else:
            await answer.send(shard_event(records(3), "3"))

    server, setup = await served(script)
    try:
        got = await collect(setup.reader(), 3)
    finally:
        await setup.subscriber.aclose()
        await server.__aexit__()
    assert [r["SequenceNumber"] for r in got] == ["1", "2", "3"]
    assert server.requests[2].body["StartingPosition"]["SequenceNumber"] == "2"
    assert server.connections == 2
    assert setup.value("telemax_fanout_resubscriptions_total", cause="in_use") == 1
    assert setup.value("telemax_fanout_resubscriptions_total", cause="reset") == 1
    assert any("still open" in note for note in setup.notes)


async def test_a_missing_permission_stops_with_one_line() -> None:
    async def script(request: Request, answer: Answer) -> None:
        answer.respond(400, "application/x-amz-json-1.1")
        await answer.send(
            b'{"__type":"AccessDeniedException","message":"not authorized to SubscribeToShard"}',
            end=True,
        )

    server, setup = await served(script)
    try:
        with pytest.raises(FanOutError) as raised:
            await setup.reader().fetch_next()
    finally:
        await setup.subscriber.aclose()
        await server.__aexit__()
    assert "AccessDeniedException: not authorized to SubscribeToShard" in str(raised.value)
    assert "\n" not in str(raised.value)


async def test_a_shard_that_is_gone_ends_as_polling_says() -> None:
    async def script(request: Request, answer: Answer) -> None:
        answer.respond()
        await answer.send(exception_message("ResourceNotFoundException", "Shard gone"), True)

    server, setup = await served(script)
    try:
        fetched = await setup.reader().fetch_next()
    finally:
        await setup.subscriber.aclose()
        await server.__aexit__()
    assert fetched == Fetched([], None, ended=True, gone=True)


async def test_a_silent_subscription_is_cancelled_and_opened_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(subscription, "WATCHDOG_S", 0.3)

    async def script(request: Request, answer: Answer) -> None:
        answer.respond()
        if len(server.requests) == 1:
            await asyncio.sleep(30)  # says nothing
        await answer.send(shard_event(records(1), "1"))

    server, setup = await served(script)
    try:
        await collect(setup.reader(), 1)
        assert server.resets == [server.requests[0].stream_id]
    finally:
        await setup.subscriber.aclose()
        await server.__aexit__()
    assert setup.value("telemax_fanout_resubscriptions_total", cause="silent") == 1


async def test_a_spent_budget_holds_the_window_shut() -> None:
    """Each event about fills the 4 KiB window: while the budget is spent, the reader does
    not acknowledge the event it holds, so the server cannot send the next one."""
    big = [(str(n), bytes(600)) for n in range(1, 13)]
    third_sent = asyncio.Event()

    async def script(request: Request, answer: Answer) -> None:
        answer.respond()
        await answer.send(shard_event(big[0:4], "4"))
        await answer.send(shard_event(big[4:8], "8"))
        await answer.send(shard_event(big[8:12], "12"))
        third_sent.set()

    server, setup = await served(script, window=4_096)
    budget = RecordBudget(4)
    try:
        reader = setup.reader()
        reader._budget = budget
        first = await reader.fetch_next()
        assert len(first.records) == 4 and budget.in_use == 4
        second = asyncio.ensure_future(reader.fetch_next())
        await asyncio.sleep(0.5)
        assert not second.done() and not third_sent.is_set()
        budget.release(4)  # the first four stored
        assert len((await second).records) == 4
        await asyncio.wait_for(third_sent.wait(), 5)
    finally:
        await setup.subscriber.aclose()
        await server.__aexit__()


async def test_closing_the_reader_cancels_its_subscription() -> None:
    async def script(request: Request, answer: Answer) -> None:
        answer.respond()
        await answer.send(shard_event(records(1), "1"))
        await asyncio.sleep(30)

    server, setup = await served(script)
    try:
        reader = setup.reader()
        await collect(reader, 1)
        await reader.aclose()
        for _ in range(100):
            if server.resets:
                break
            await asyncio.sleep(0.01)
        assert server.resets == [server.requests[0].stream_id]
    finally:
        await setup.subscriber.aclose()
        await server.__aexit__()


async def test_a_server_error_answer_is_retried_not_fatal() -> None:
    async def script(request: Request, answer: Answer) -> None:
        if len(server.requests) == 1:
            answer.respond(503, "application/x-amz-json-1.1")
            await answer.send(b'{"message":"Service Unavailable"}', end=True)
            return
        answer.respond()
        await answer.send(shard_event(records(1), "1"))

    server, setup = await served(script)
    try:
        got = await collect(setup.reader(), 1)
    finally:
        await setup.subscriber.aclose()
        await server.__aexit__()
    assert [r["SequenceNumber"] for r in got] == ["1"]
    assert setup.value("telemax_fanout_resubscriptions_total", cause="failure") == 1
