"""Structured concurrency for the few tasks that run beside a body of code.

:func:`running` gives a coroutine a task for exactly as long as a block runs: on leaving, the
task is cancelled *and awaited*, so nothing outlives its owner, and a failure of the task is
raised rather than left for the garbage collector to log. Unlike a ``TaskGroup``, an error of
the block itself comes out as it is (not wrapped in an ``ExceptionGroup``), which is what the
commands' one-line error handling needs.
"""

from __future__ import annotations

import asyncio
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
