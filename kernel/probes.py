"""The probes server of a worker or a producer: /metrics (Prometheus text), /healthz and /readyz."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from kernel.errors import ConfigError

HEARTBEAT_S = 1.0
STALL_LIMIT_S = 10.0  # an event loop that missed this many seconds of heartbeats is stuck


@dataclasses.dataclass
class Health:
    """What the probes report. ``ready`` is supplied by the worker."""

    ready: Callable[[], bool] = lambda: False
    clock: Callable[[], float] = time.monotonic
    beat_at: float = dataclasses.field(default_factory=time.monotonic)

    def alive(self) -> bool:
        return self.clock() - self.beat_at < STALL_LIMIT_S

    async def beat_forever(self) -> None:
        while True:
            self.beat_at = self.clock()
            await asyncio.sleep(HEARTBEAT_S)


# The answers a route gives: (status, content type, body)
Answer = tuple[int, str, bytes]
TEXT = "text/plain; charset=utf-8"
REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}
MAX_REQUEST_BYTES = 16 * 1024  # a request line and headers; a probe sends a few hundred
READ_TIMEOUT_S = 10.0  # a client that sends nothing is let go


def routes(registry: CollectorRegistry, health: Health) -> dict[str, Callable[[str], Answer]]:
    """Each path's answer, given the request's query string."""

    def metrics(query: str) -> Answer:
        # ``name[]=…`` narrows the answer to those samples, as prometheus_client's own
        # handler allows: a poller of one counter does not pay the whole exposition.
        names = urllib.parse.parse_qs(query).get("name[]")
        source = registry.restricted_registry(names) if names else registry
        return 200, CONTENT_TYPE_LATEST, generate_latest(source)

    def healthz(query: str) -> Answer:
        ok = health.alive()
        return (200, TEXT, b"ok\n") if ok else (503, TEXT, b"event loop stalled\n")

    def readyz(query: str) -> Answer:
        ok = health.ready()
        return (200, TEXT, b"ready\n") if ok else (503, TEXT, b"not ready\n")

    return {"/metrics": metrics, "/healthz": healthz, "/readyz": readyz}


def answer_to(head: bytes, table: dict[str, Callable[[str], Answer]]) -> tuple[Answer, bool]:
    """The answer to a request's head (its request line and headers), and whether to send its
    body (not for HEAD). Pure: the server below only reads and writes."""
    try:
        method, target, _version = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
    except ValueError:
        return (400, TEXT, b"bad request\n"), True
    path, _, query = target.partition("?")
    route = table.get(path)
    if route is None:
        return (404, TEXT, b"not found\n"), method != "HEAD"
    if method not in ("GET", "HEAD"):
        return (405, TEXT, b"GET only\n"), True
    return route(query), method == "GET"


def encode(answer: Answer, with_body: bool) -> bytes:
    status, content_type, body = answer
    head = (
        f"HTTP/1.1 {status} {REASONS[status]}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + (body if with_body else b"")


@asynccontextmanager
async def serve(
    registry: CollectorRegistry, health: Health, host: str, port: int
) -> AsyncIterator[int | None]:
    """Serve until the block exits; yields the bound port (None when ``port`` is 0: disabled).
    One request a connection, answered and closed: what Prometheus and kubelet probes need,
    on asyncio alone (aiohttp's server cost ~0.13 CPU-s of every start-up to import)."""
    if port == 0:
        yield None
        return
    table = routes(registry, health)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            writer.write(encode(*answer_to(head, table)))
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away or sent no request: nothing to answer
        finally:
            writer.close()

    server = await asyncio.start_server(
        handle, host, port, reuse_address=True, limit=MAX_REQUEST_BYTES
    )
    try:
        yield port
    finally:
        server.close()
        await server.wait_closed()


async def listen(
    stack: AsyncExitStack, registry: CollectorRegistry, health: Health, host: str, port: int
) -> int | None:
    """:func:`serve` for as long as ``stack`` lasts; a port in use stops start-up with one
    line naming ``TELEMAX_METRICS_PORT``."""
    try:
        return await stack.enter_async_context(serve(registry, health, host, port))
    except OSError as exc:
        raise ConfigError(f"TELEMAX_METRICS_PORT={port}: cannot listen: {exc.strerror}") from None
