"""The lean path's HTTP/1.1 pool against a real socket on 127.0.0.1: what it does when an
answer does not come."""

from __future__ import annotations

import asyncio

import pytest
from botocore.exceptions import ReadTimeoutError

from consumer.adapters.http1 import Http1Pool
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
