"""The HTTP/2 connection against a scripted h2 server on 127.0.0.1: answers, flow control,
every way a stream ends, several streams on one connection."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from botocore.eventstream import ChecksumMismatch

from consumer.fanout.events import Decoder, Event, Failure, Skipped, error_answer
from consumer.fanout.http2 import Closed, Data, Http2Connection, Http2Stream
from consumer.testing.fanout import (
    Answer,
    Request,
    ScriptedHttp2Server,
    exception_message,
    initial_response,
    shard_event,
)

pytestmark = pytest.mark.timeout(20)
BODY = b'{"ShardId": "shardId-0"}'


async def read_all(stream: Http2Stream, acknowledge: bool = True) -> tuple[bytes, Closed]:
    found = bytearray()
    while True:
        chunk = await stream.receive()
        if isinstance(chunk, Closed):
            return bytes(found), chunk
        found += chunk.data
        if acknowledge:
            stream.acknowledge(chunk.flow)


async def test_a_post_gets_its_answer_and_a_clean_end() -> None:
    async def script(request: Request, answer: Answer) -> None:
        answer.respond()
        await answer.send(b"hello ")
        await answer.send(b"world", end=True)

    async with ScriptedHttp2Server(script) as server:
        connection = await Http2Connection.open(server.url)
        try:
            stream = await connection.post("/", [("x-amz-target", "K.SubscribeToShard")], BODY)
            assert await stream.response() == 200
            assert stream.headers["content-type"] == "application/vnd.amazon.eventstream"
            assert await read_all(stream) == (b"hello world", Closed(True))
            assert await stream.receive() == Closed(True)  # again, once closed
        finally:
            await connection.aclose()
    (request,) = server.requests
    assert request.body == {"ShardId": "shardId-0"}
    assert request.headers[":scheme"] == "http"
    assert request.headers[":authority"] == server.url.removeprefix("http://")
    assert request.headers["x-amz-target"] == "K.SubscribeToShard"
    assert request.headers["content-length"] == str(len(BODY))


async def test_the_server_stops_at_the_window_until_the_client_takes_the_bytes() -> None:
    sent = asyncio.Event()

    async def script(request: Request, answer: Answer) -> None:
        answer.respond()
        await answer.send(b"x" * 20_000, end=True)
        sent.set()

    async with ScriptedHttp2Server(script) as server:
        connection = await Http2Connection.open(server.url, stream_window=4_096)
        try:
            stream = await connection.post("/", [], BODY)
            assert await stream.response() == 200
            held = 0
            while held < 4_096:  # everything the window allows, not acknowledged
                chunk = await stream.receive()
                assert isinstance(chunk, Data)
                held += chunk.flow
            assert held == 4_096
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await stream.receive()  # the server waits for the window
            assert not sent.is_set()
            stream.acknowledge(held)
            rest, closed = await read_all(stream)
            assert (len(rest), closed) == (20_000 - 4_096, Closed(True))
        finally:
            await connection.aclose()


@pytest.mark.parametrize(
    ("ending", "reason"),
    [
        ("reset", "stream reset"),
        ("go_away", "GOAWAY"),
        ("drop_connection", "the connection was closed"),
    ],
)
async def test_a_broken_stream_ends_with_why_after_its_data(ending: str, reason: str) -> None:
    async def script(request: Request, answer: Answer) -> None:
        answer.respond()
        await answer.send(b"partial")
        await asyncio.sleep(0.05)
        getattr(answer, ending)()

    async with ScriptedHttp2Server(script) as server:
        connection = await Http2Connection.open(server.url)
        try:
            stream = await connection.post("/", [], BODY)
            data, closed = await read_all(stream)
            assert data == b"partial"
            assert not closed.clean and reason in closed.reason
            if ending != "reset":
                assert not connection.usable
                with pytest.raises(ConnectionError):
                    await connection.post("/", [], BODY)
            else:
                assert connection.usable
        finally:
            await connection.aclose()


async def test_a_cancelled_stream_is_reset_for_the_server_and_ends_for_its_reader() -> None:
    async def script(request: Request, answer: Answer) -> None:
        answer.respond()
        for _ in range(100):
            await answer.send(b"tick")
            await asyncio.sleep(0.01)

    async with ScriptedHttp2Server(script) as server:
        connection = await Http2Connection.open(server.url)
        try:
            stream = await connection.post("/", [], BODY)
            assert isinstance(await stream.receive(), Data)
            stream.cancel()
            _, closed = await read_all(stream)
            assert closed == Closed(False, "cancelled")
            for _ in range(100):
                if server.resets:
                    break
                await asyncio.sleep(0.01)
            assert server.resets == [stream.stream_id]
            assert connection.streams == 0 and connection.usable
        finally:
            await connection.aclose()


async def test_streams_share_a_connection_each_with_its_own_answer() -> None:
    async def script(request: Request, answer: Answer) -> None:
        answer.respond()
        await answer.send(request.body["ShardId"].encode(), end=True)

    async with ScriptedHttp2Server(script) as server:
        connection = await Http2Connection.open(server.url)
        try:
            streams = [
                await connection.post("/", [], f'{{"ShardId": "s{n}"}}'.encode()) for n in range(3)
            ]
            answers = await asyncio.gather(*(read_all(s) for s in streams))
        finally:
            await connection.aclose()
    assert [data for data, _ in answers] == [b"s0", b"s1", b"s2"]
    assert server.connections == 1


async def test_closing_ends_every_stream_and_leaves_no_task() -> None:
    async def script(request: Request, answer: Answer) -> None:
        answer.respond()
        await asyncio.sleep(10)

    async with ScriptedHttp2Server(script) as server:
        connection = await Http2Connection.open(server.url)
        stream = await connection.post("/", [], BODY)
        assert await stream.response() == 200
        before = len(asyncio.all_tasks())
        await connection.aclose()
        assert await stream.receive() == Closed(False, "closed by us")
        assert len(asyncio.all_tasks()) == before - 1  # the reader task, gone


def test_the_decoder_reads_events_across_frames_and_skips_the_initial_response() -> None:
    wire = (
        initial_response()
        + shard_event([("10", b"a"), ("11", b"bc")], "11", behind=7)
        + exception_message("ResourceInUseException", "Another active subscription exists")
    )
    decoder = Decoder()
    found = []
    for at in range(0, len(wire), 7):  # a few bytes at a time: messages span the pieces
        found.extend(decoder.feed(wire[at : at + 7]))
    assert isinstance(found[0], Skipped) and found[0].kind == "initial-response"
    event = found[1]
    assert isinstance(event, Event)
    assert [r["Data"] for r in event.payload["Records"]] == [b"a", b"bc"]
    assert event.payload["ContinuationSequenceNumber"] == "11"
    assert event.payload["MillisBehindLatest"] == 7
    assert found[2] == Failure("ResourceInUseException", "Another active subscription exists")
    assert len(found) == 3


def test_a_corrupt_message_is_an_error_not_an_event() -> None:
    wire = bytearray(shard_event([("10", b"a")], "10"))
    wire[-1] ^= 0xFF  # the message's CRC
    with pytest.raises(ChecksumMismatch):
        Decoder().feed(bytes(wire))


def test_an_error_answer_names_its_code_as_botocore_does() -> None:
    assert error_answer(
        400, b'{"__type":"com.amazon#AccessDeniedException","message":"no"}'
    ) == Failure("AccessDeniedException", "no")
    assert error_answer(503, b"busy") == Failure("HTTP503", "busy")


@pytest.mark.parametrize("how", ["acknowledged after the end", "cancelled unread"])
async def test_every_data_byte_goes_back_to_the_connection_window(how: str) -> None:
    """The connection's window is shared by every subscription of the connection for hours:
    DATA acknowledged after its stream ended (a subscription's last event), or never read
    because the stream was cancelled, must still be given back to it — else each end leaks
    up to an event's bytes until the connection stalls."""

    async def script(request: Request, answer: Answer) -> None:
        answer.respond()
        await answer.send(b"x" * 3_000)
        await answer.send(b"y" * 2_000, end=(how == "acknowledged after the end"))
        if how == "cancelled unread":
            await asyncio.sleep(5)

    async with ScriptedHttp2Server(script) as server:
        connection = await Http2Connection.open(server.url)
        given_back: list[int] = []  # what h2 was told (it credits the connection's window)
        protocol: Any = connection._h2
        tell = protocol.acknowledge_received_data

        def spied(size: int, stream_id: int) -> None:
            given_back.append(size)
            tell(size, stream_id)

        protocol.acknowledge_received_data = spied
        try:
            stream = await connection.post("/", [], BODY)
            assert await stream.response() == 200
            first = await stream.receive()
            assert isinstance(first, Data)
            if how == "acknowledged after the end":
                rest, closed = await read_all(stream, acknowledge=False)
                assert (rest, closed) == (b"y" * 2_000, Closed(True))
                stream.acknowledge(first.flow)
                stream.acknowledge(2_000)
            else:
                while connection.unacknowledged < 5_000:  # both arrived, one read, none taken
                    await asyncio.sleep(0.01)
                stream.cancel()
            assert connection.unacknowledged == 0
            stream.acknowledge(first.flow)  # again, or after the cancel: never twice
            assert connection.unacknowledged == 0 and sum(given_back) == 5_000
        finally:
            await connection.aclose()
