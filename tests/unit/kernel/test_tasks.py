"""kernel.tasks.running: the task lives exactly as long as its block (virtual time)."""

from __future__ import annotations

import asyncio

import pytest

from kernel.tasks import all_of, running, to_the_end

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


async def step(log: list[str], seconds: float, result: str = "done") -> str:
    await asyncio.sleep(seconds)
    log.append(result)
    return result


async def test_to_the_end_gives_the_result_when_nobody_cancels() -> None:
    log: list[str] = []
    assert await to_the_end(step(log, 1), grace_s=5) == "done"

    async def broken() -> None:
        raise KeyError("as it is")

    with pytest.raises(KeyError, match="as it is"):
        await to_the_end(broken(), grace_s=5)


async def test_a_cancelled_caller_lets_the_work_end_then_is_cancelled() -> None:
    """The work (a publish and its mark) ends although its caller was cancelled in between;
    the caller then stops as asked, after the work, not before."""
    log: list[str] = []
    loop = asyncio.get_running_loop()
    caller = asyncio.create_task(to_the_end(step(log, 2), grace_s=5))
    await asyncio.sleep(1)
    started = loop.time()
    caller.cancel()
    await asyncio.sleep(0.5)
    caller.cancel()  # asked twice (a shutdown on top of a lost lease): still within the grace
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert log == ["done"]
    assert loop.time() - started == pytest.approx(1)


async def test_the_work_is_cancelled_once_the_grace_is_spent() -> None:
    log: list[str] = []
    loop = asyncio.get_running_loop()
    caller = asyncio.create_task(to_the_end(step(log, 60), grace_s=3))
    await asyncio.sleep(1)
    started = loop.time()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert loop.time() - started == pytest.approx(3), "bounded: the grace, not the work"
    await asyncio.sleep(120)
    assert log == [], "the work was cancelled, not left running"


async def test_a_failure_of_the_work_after_the_cancel_is_not_lost_silently() -> None:
    """The caller was cancelled: the cancellation goes on; the work's failure is retrieved
    (no 'exception never retrieved' from the garbage collector), not swallowed unseen."""

    async def fails_late() -> None:
        await asyncio.sleep(2)
        raise KeyError("late")

    caller = asyncio.create_task(to_the_end(fails_late(), grace_s=5))
    await asyncio.sleep(1)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError) as cancelled:
        await caller
    assert isinstance(cancelled.value.__cause__, KeyError)
