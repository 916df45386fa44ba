"""Structured concurrency for the few tasks that run beside a body of code.

:func:`running` gives a coroutine a task for exactly as long as a block runs: on leaving, the
task is cancelled *and awaited*, so nothing outlives its owner, and a failure of the task is
raised rather than left for the garbage collector to log. Unlike a ``TaskGroup``, an error of
the block itself comes out as it is (not wrapped in an ``ExceptionGroup``), which is what the
commands' one-line error handling needs.

:func:`to_the_end` is the one shield: a step that must not stop half-way (an alert SNS took
but the ledger does not yet call sent) runs to its end under a bounded grace when its caller
is cancelled, and the caller's cancellation then goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

T = TypeVar("T")


@asynccontextmanager
async def running(coro: Coroutine[Any, Any, T]) -> AsyncIterator[asyncio.Task[T]]:
    task = asyncio.create_task(coro)
    try:
        yield task
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            # The task's own end, as asked; but if *we* are being cancelled, that goes on.
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise


async def all_of(*aws: Awaitable[T]) -> list[T]:
    """Every awaitable run at once, their results in order. Unlike a plain ``gather``, none is
    left running unowned when one fails: all end first, then the first failure is raised as it
    is (not wrapped in an ``ExceptionGroup``)."""
    results = await asyncio.gather(*aws, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]


async def to_the_end(coro: Coroutine[Any, Any, T], grace_s: float) -> T:
    """``coro``'s result, awaited to its end even if the caller is cancelled meanwhile — for at
    most ``grace_s`` more seconds, after which it is cancelled too. A cancelled caller is
    cancelled still (re-raised once the work has ended), with the work's failure, if any, as
    the cause; further cancellations during the grace do not cut it short: the grace is
    the bound."""
    work = asyncio.ensure_future(coro)
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError as cancelled:
        await _end_within(work, grace_s)
        failure = None if work.cancelled() else work.exception()
        if failure is None:
            raise
        raise cancelled from failure


async def _end_within(work: asyncio.Future[Any], grace_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    while not work.done():
        left = deadline - loop.time()
        if left <= 0:
            work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({work}, timeout=max(left, 0) or None)
