"""kernel.tasks.running: the task lives exactly as long as its block (virtual time)."""

from __future__ import annotations

import asyncio

import pytest

from kernel.tasks import all_of, running

pytestmark = pytest.mark.looptime


async def forever(ended: list[str]) -> None:
    try:
        await asyncio.sleep(3600)
    finally:
        ended.append("ended")


async def test_the_task_is_cancelled_and_awaited_on_leaving() -> None:
    ended: list[str] = []
    async with running(forever(ended)) as task:
        await asyncio.sleep(1)
        assert not task.done()
    assert task.cancelled() and ended == ["ended"], "nothing outlives its block"


async def test_a_result_is_kept() -> None:
    async def answer() -> int:
        return 42

    async with running(answer()) as task:
        assert await task == 42
    assert task.result() == 42


async def test_a_failure_of_the_task_is_raised_not_lost() -> None:
    async def broken() -> None:
        raise KeyError("lost")

    async def block() -> None:
        async with running(broken()):
            await asyncio.sleep(1)

    with pytest.raises(KeyError):
        await block()


async def test_an_error_of_the_block_comes_out_as_it_is() -> None:
    ended: list[str] = []

    async def block() -> None:
        async with running(forever(ended)):
            await asyncio.sleep(1)  # the task has started (one cancelled before never runs)
            raise ValueError("block")

    with pytest.raises(ValueError, match="block"):  # not an ExceptionGroup
        await block()
    assert ended == ["ended"]


async def test_cancelling_the_owner_is_not_swallowed() -> None:
    ended: list[str] = []
    started = asyncio.Event()

    async def owner() -> None:
        async with running(forever(ended)):
            started.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(owner())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ended == ["ended"]


async def test_all_of_ends_every_call_before_raising_the_first_failure() -> None:
    ended: list[str] = []

    async def call(name: str, delay: float, fail: bool = False) -> str:
        await asyncio.sleep(delay)
        ended.append(name)
        if fail:
            raise ValueError(name)
        return name

    assert await all_of(call("a", 0.02), call("b", 0.01)) == ["a", "b"]
    ended.clear()
    with pytest.raises(ValueError, match="early"):
        await all_of(call("early", 0.0, fail=True), call("slow", 0.05), call("late", 0.01, True))
    assert sorted(ended) == ["early", "late", "slow"], "none left running"
