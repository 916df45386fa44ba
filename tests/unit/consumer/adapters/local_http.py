"""A one-exchange HTTP endpoint on 127.0.0.1 for the adapters' tests: a handler reads the
request and answers with :func:`answer`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def serving(handle: Handler) -> AsyncIterator[str]:
    """``handle`` serving on 127.0.0.1: its base URL (``http://127.0.0.1:{port}``)."""
    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    finally:
        listener.close()
        await listener.wait_closed()


async def answer(writer: asyncio.StreamWriter, status: int, body: bytes) -> None:
    """One answer, then the connection closed."""
    writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body))
    await writer.drain()
    writer.close()
