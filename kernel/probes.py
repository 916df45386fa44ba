"""The probes server of a worker or a producer: /metrics (Prometheus text), /healthz and /readyz."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

from aiohttp import web
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


def make_app(registry: CollectorRegistry, health: Health) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        ok = health.alive()
        return web.Response(
            status=200 if ok else 503, text="ok\n" if ok else "event loop stalled\n"
        )

    async def readyz(_: web.Request) -> web.Response:
        ok = health.ready()
        return web.Response(status=200 if ok else 503, text="ready\n" if ok else "not ready\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


@asynccontextmanager
async def serve(
    registry: CollectorRegistry, health: Health, host: str, port: int
) -> AsyncIterator[int | None]:
    """Serve until the block exits; yields the bound port (None when ``port`` is 0: disabled)."""
    if port == 0:
        yield None
        return
    runner = web.AppRunner(make_app(registry, health), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        yield port
    finally:
        await runner.cleanup()


async def listen(
    stack: AsyncExitStack, registry: CollectorRegistry, health: Health, host: str, port: int
) -> int | None:
    """:func:`serve` for as long as ``stack`` lasts; a port in use stops start-up with one
    line naming ``TELEMAX_METRICS_PORT``."""
    try:
        return await stack.enter_async_context(serve(registry, health, host, port))
    except OSError as exc:
        raise ConfigError(f"TELEMAX_METRICS_PORT={port}: cannot listen: {exc.strerror}") from None
