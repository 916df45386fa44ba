"""The lean path's HTTP/1.1 pool against a real socket on 127.0.0.1: what it does when an
answer does not come."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from botocore.exceptions import ReadTimeoutError

from consumer.adapters.http1 import Http1Pool, _Answer
from tests.unit.consumer.adapters.local_http import answer, serving


async def test_an_answer_later_than_the_read_timeout_is_a_read_timeout() -> None:
    """The exchange gives up after ``read_timeout`` (botocore's ReadTimeoutError, which the
    callers retry), drops that connection, and the next exchange gets a fresh one."""
    answered = asyncio.Event()

    async def slow_then_quick(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if not answered.is_set():
            answered.set()
            await asyncio.sleep(3.0)  # the first connection: no answer in time
        await answer(writer, 200, b"{}")

    async with serving(slow_then_quick) as url:
        pool = Http1Pool(url + "/", size=2, read_timeout=0.3)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ReadTimeoutError):
            await pool.post(b"{}", {})
        assert 0.25 <= loop.time() - started < 2.0
        assert await pool.post(b"{}", {}) == (200, {"content-length": "2"}, b"{}")
        pool.close()


def keep_alive(
    delays: list[float],
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """A handler answering the requests of one connection in turn, each after its delay
    (the connection kept open)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for delay in delays:
            await reader.readuntil(b"\r\n\r\n")  # (the tests' requests have empty bodies)
            await asyncio.sleep(delay)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()
        await reader.read()

    return handle


REQUEST = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"


async def connected(url: str) -> _Answer:
    port = int(url.rsplit(":", 1)[1])
    _, connection = await asyncio.get_running_loop().create_connection(_Answer, "127.0.0.1", port)
    return connection


@pytest.mark.parametrize("pause", [0.1, 0.5])
async def test_each_exchange_on_a_connection_gets_its_own_read_timeout(pause: float) -> None:
    """The second exchange on a kept-alive connection, sent before (0.1 s) or after (0.5 s)
    the first one's deadline, times out its own read timeout after it was sent: not at the
    first's deadline, not never."""
    async with serving(keep_alive([0.0, 3.0])) as url:
        pool = Http1Pool(url + "/", size=1, read_timeout=0.3)
        loop = asyncio.get_running_loop()
        assert await pool.post(b"", {}) == (200, {"content-length": "2"}, b"{}")
        await asyncio.sleep(pause)
        started = loop.time()
        with pytest.raises(ReadTimeoutError):
            await pool.post(b"", {})
        assert 0.29 <= loop.time() - started < 1.5
        pool.close()


async def test_a_shorter_read_timeout_after_a_longer_one_is_kept() -> None:
    """A connection's timer armed for a long deadline is brought forward by a later exchange
    with a shorter one."""
    async with serving(keep_alive([0.0, 3.0])) as url:
        connection = await connected(url)
        assert (await connection.send(REQUEST, 60.0))[0] == 200
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            await connection.send(REQUEST, 0.2)
        assert 0.19 <= asyncio.get_running_loop().time() - started < 1.5
        assert connection.transport is not None
        connection.transport.close()


async def test_a_closed_connection_leaves_no_timer() -> None:
    """The timer of an answered exchange goes when its connection closes (the loop would
    hold the connection until the timer fired)."""
    async with serving(keep_alive([0.0])) as url:
        connection = await connected(url)
        assert (await connection.send(REQUEST, 60.0))[0] == 200
        assert connection._timer is not None
        assert connection.transport is not None
        connection.transport.close()
        for _ in range(100):
            if connection.closed:
                break
            await asyncio.sleep(0.01)
        assert connection.closed and connection._timer is None


async def test_an_idle_connection_answers_after_its_timer_has_fired() -> None:
    """The timer of an exchange long answered fires on an idle connection: nothing times
    out, and the next exchange is answered."""
    async with serving(keep_alive([0.0, 0.0])) as url:
        pool = Http1Pool(url + "/", size=1, read_timeout=0.1)
        assert await pool.post(b"", {}) == (200, {"content-length": "2"}, b"{}")
        await asyncio.sleep(0.3)
        assert await pool.post(b"", {}) == (200, {"content-length": "2"}, b"{}")
        pool.close()
