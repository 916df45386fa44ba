"""The shard supervisor: owns one task per held shard inside its own task group.

A consumer that fails unexpectedly is logged and restarted from its checkpoint after a
backoff (the lease stays ours while we renew it); it never takes the worker down. A lost lease
cancels the consumer at once. A consumer that ends normally hands its lease back through
``release``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from consumer.backoff import Backoff, sleep_or_stop
from consumer.lease.held import HeldLease
from consumer.logs import get as get_logger
from consumer.shard.consumer import ShardConsumer, ShardContext
from consumer.shard.lifecycle import POLICIES, Reason


class ShardSupervisor:
    def __init__(
        self,
        context: ShardContext,
        *,
        release: Callable[[str, str], Awaitable[None]],
        on_shard_end: Callable[[str, dict[str, frozenset[str]] | None], None] = (
            lambda shard_id, children: None
        ),
    ) -> None:
        self._ctx = context
        self._release = release
        self._on_shard_end = on_shard_end
        self._group: asyncio.TaskGroup | None = None
        self._closed = asyncio.Event()
        self._stop = asyncio.Event()  # graceful stop for every consumer
        self.ready = asyncio.Event()
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._log = get_logger(worker_id=context.worker_id)

    async def run(self) -> None:
        """Own the consumers' task group until :meth:`close`."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            self.ready.set()
            await self._closed.wait()
            for task in self.tasks.values():
                task.cancel()
        self._group = None

    def start(self, held: HeldLease) -> None:
        if self._group is None or self._stop.is_set() or held.key in self.tasks:
            return
        self.tasks[held.key] = self._group.create_task(self._supervise(held), name=held.key)

    def cancel(self, shard_id: str) -> None:
        """The lease is gone: stop at once, write nothing more."""
        task = self.tasks.get(shard_id)
        if task is not None:
            task.cancel()

    async def stop_all(self, timeout: float) -> None:
        """Ask every consumer to drain, checkpoint and release; cancel those still busy after
        ``timeout`` seconds."""
        self._stop.set()
        tasks = list(self.tasks.values())
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=timeout)
        for task in late:
            self._log.warning("shard_drain_timeout", shard_id=task.get_name())
            task.cancel()
        if late:
            await asyncio.wait(late)

    def close(self) -> None:
        self._closed.set()

    async def _supervise(self, held: HeldLease) -> None:
        backoff = Backoff(base=1.0, cap=30.0)
        try:
            while True:
                consumer = ShardConsumer(held, self._ctx)
                try:
                    reason = await consumer.run(self._stop)
                    break
                except Exception:
                    self._log.exception("shard_consumer_failed", shard_id=held.key)
                    if await sleep_or_stop(backoff.next_delay(), self._stop):
                        reason = Reason.REQUESTED
                        break
                    if not held.valid():
                        reason = Reason.LEASE_LOST
                        break
            policy = POLICIES[reason]
            if reason is Reason.SHARD_END:
                self._on_shard_end(held.key, consumer.children)
            if policy.release:
                await self._release(held.key, reason.value)
        finally:
            self.tasks.pop(held.key, None)
            self._ctx.metrics.forget_shard(held.key)
