"""The shard supervisor: owns one task per held shard inside its own task group.

The invariant (DESIGN §3.9): every lease this worker may consume under has exactly one running
consumer, and every running consumer holds its lease. It is enforced in one place,
:meth:`ShardSupervisor.reconcile`, which applies the pure decision :func:`reconcile` and runs
after every change: a lease taken, lost or released (the coordinator's ``on_change``) and a
consumer task that ended. A lease taken back while the task of its previous hold is still
ending gets its consumer as soon as that task is gone.

A task consumes, then (shard end, or a requested stop) *finishes*: it hands its lease back
through ``release``. A finishing task is never cancelled by reconciliation: its lease is
being released, and the release ends on its own within a few attempts. A consumer that fails
unexpectedly is logged and restarted from its checkpoint after a backoff (the lease stays ours
while we hold it); it never takes the worker down.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Generic, TypeVar

from consumer.lease.held import HeldLease
from consumer.shard.lifecycle import POLICIES, Reason
from consumer.shard.processing import ShardConsumer, ShardContext
from kernel.backoff import Backoff, sleep_or_stop
from kernel.errors import ConfigError
from kernel.logs import get as get_logger

Hold = TypeVar("Hold")


@dataclasses.dataclass(frozen=True, slots=True)
class Changes:
    start: tuple[str, ...]  # held, without a consumer: start one
    cancel: tuple[str, ...]  # consuming under a lease no longer held (lost or replaced)


@dataclasses.dataclass(frozen=True, slots=True)
class Running(Generic[Hold]):
    hold: Hold  # the hold the task consumes under
    finishing: bool  # done consuming, releasing its lease


def reconcile(
    held: Mapping[str, Hold], running: Mapping[str, Running[Hold]], *, stopping: bool
) -> Changes:
    """What makes the consumers match the leases (pure; holds compare by identity).

    ``held``: the leases a consumer may work under (valid, not being released). ``running``:
    the live tasks. A task whose hold is not the one held is cancelled, unless it is
    finishing; a held lease without a task gets one, unless the worker is stopping. A held
    lease whose key still has a task (an earlier hold, ending) waits for that task to end.
    """
    cancel = tuple(
        sorted(
            key
            for key, task in running.items()
            if not task.finishing and held.get(key) is not task.hold
        )
    )
    start = () if stopping else tuple(sorted(key for key in held if key not in running))
    return Changes(start, cancel)


@dataclasses.dataclass(slots=True)
class _Task:
    hold: HeldLease
    task: asyncio.Task[None]
    stop: asyncio.Event  # a graceful stop of this consumer alone (a hand-back)
    finishing: bool = False


class ShardSupervisor:
    def __init__(
        self,
        context: ShardContext,
        *,
        leases: Callable[[], Mapping[str, HeldLease]],
        release: Callable[[str, str], Awaitable[None]],
        on_shard_end: Callable[[str], None] = lambda shard_id: None,
    ) -> None:
        self._ctx = context
        self._leases = leases
        self._release = release
        self._on_shard_end = on_shard_end
        self._group: asyncio.TaskGroup | None = None
        self._closed = asyncio.Event()
        self._stop = asyncio.Event()  # graceful stop for every consumer
        self.ready = asyncio.Event()
        self._tasks: dict[str, _Task] = {}
        self._log = get_logger(worker_id=context.worker_id)

    @property
    def tasks(self) -> dict[str, asyncio.Task[None]]:
        return {key: entry.task for key, entry in self._tasks.items()}

    async def run(self) -> None:
        """Own the consumers' task group until :meth:`close`."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            self.ready.set()
            self.reconcile()
            await self._closed.wait()
            self._group = None
            for entry in self._tasks.values():
                entry.task.cancel()

    def reconcile(self) -> None:
        """Bring the consumers in line with the leases held (the only place that starts or
        cancels a consumer)."""
        if self._group is None:
            return
        held = self._leases()
        running = {key: Running(e.hold, e.finishing) for key, e in self._tasks.items()}
        changes = reconcile(held, running, stopping=self._stop.is_set())
        for key in changes.cancel:
            self._tasks[key].task.cancel()
        for key in changes.start:
            hold = held[key]
            stop = asyncio.Event()
            task = self._group.create_task(self._supervise(hold, stop), name=key)
            self._tasks[key] = _Task(hold, task, stop)
            # A callback, not a ``finally``: a task cancelled before it ever ran has none.
            task.add_done_callback(functools.partial(self._ended, hold))

    async def stop_all(self, timeout: float) -> None:
        """Ask every consumer to drain, checkpoint and release; cancel those still busy after
        ``timeout`` seconds."""
        self._stop.set()
        for entry in self._tasks.values():
            entry.stop.set()
        tasks = [entry.task for entry in self._tasks.values()]
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=timeout)
        for task in late:
            self._log.warning("shard_drain_timeout", shard_id=task.get_name())
            task.cancel()
        if late:
            await asyncio.wait(late)

    def hand_back(self, key: str) -> bool:
        """Ask the consumer of ``key`` to drain, checkpoint and release (the leader wants the
        lease back); False when none runs, and the caller releases the lease itself."""
        entry = self._tasks.get(key)
        if entry is None or entry.finishing:
            return entry is not None
        entry.stop.set()
        return True

    def close(self) -> None:
        self._closed.set()

    def _ended(self, held: HeldLease, _: asyncio.Task[None]) -> None:
        entry = self._tasks.get(held.key)
        if entry is not None and entry.hold is held:
            del self._tasks[held.key]
        self._ctx.metrics.forget_shard(held.key)
        self.reconcile()

    async def _supervise(self, held: HeldLease, stop: asyncio.Event) -> None:
        reason = await self._consume(held, stop)
        if reason is Reason.SHARD_END:
            self._on_shard_end(held.key)
        if POLICIES[reason].release:
            self._tasks[held.key].finishing = True
            await self._release(held.key, reason.value)

    async def _consume(self, held: HeldLease, stop: asyncio.Event) -> Reason:
        """Run the shard's consumer; restart it after a failure while the lease is ours."""
        backoff = Backoff(base=1.0, cap=30.0)
        while True:
            try:
                return await ShardConsumer(held, self._ctx).run(stop)
            except ConfigError as exc:  # not a passing failure: retrying would loop
                if self._ctx.on_config_error(exc):
                    continue  # the worker adapted (fan-out → polling): start again at once
                self._log.error("shard_consumer_refused", shard_id=held.key, error=str(exc))
                return Reason.REQUESTED
            except Exception:
                self._log.exception("shard_consumer_failed", shard_id=held.key)
                if await sleep_or_stop(backoff.next_delay(), stop):
                    return Reason.REQUESTED
                if not held.valid():
                    return Reason.LEASE_LOST
