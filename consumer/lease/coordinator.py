"""The lease coordinator: performs the planner's decisions against the lease table.

Two loops, both owned by the worker's task group: *take passes* (scan, observe, plan, take)
every ``take_interval`` and *renewals* of every held lease every ``renew_interval``. Between
them it fences: a held lease that could not be renewed in time is declared lost before any
peer may take it. Every change to what it holds is reported through ``on_change``, so that the
shard supervisor brings its consumers in line (DESIGN §3.9); this module never touches Kinesis.

``held`` is what this worker holds, including leases whose release is still under way: a
lease stays held until its release has ended, so that no take pass takes it back meanwhile.

Observations are dated to when the Scan *completed* (DESIGN §3.10): a renewal a peer wrote
while a slow Scan was in flight is in its answer, and dating it to the Scan's start would let
us count its expiry from before it was written.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from consumer.aws import describe
from consumer.backoff import Backoff, sleep_or_stop
from consumer.config import Settings
from consumer.lease.held import HeldLease
from consumer.lease.model import Lease, LeaseStore
from consumer.lease.planner import Seen, TakeReason, collectable, observe, plan
from consumer.logs import get as get_logger
from consumer.metrics import Metrics

FENCE_CHECK_S = 0.25
RELEASE_ATTEMPTS = 4


class LeaseCoordinator:
    def __init__(
        self,
        repository: LeaseStore,
        settings: Settings,
        metrics: Metrics,
        *,
        on_change: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._repository = repository
        self._settings = settings
        self._metrics = metrics
        self._on_change = on_change
        self._clock = clock
        self._rng = rng or random.Random()
        self._seen: dict[str, Seen] = {}
        self.held: dict[str, HeldLease] = {}
        self.leases: list[Lease] = []  # the table as last read
        self.passes = 0
        self.aws_ok = False
        self.taking = True
        self._log = get_logger(worker_id=settings.worker_id)
        self._held_gauge = metrics.leases_held.labels(settings.stream)

    @property
    def me(self) -> str:
        return self._settings.worker_id

    def consumable(self) -> dict[str, HeldLease]:
        """Held leases a consumer may work under: not being released, not lost, still valid."""
        now = self._clock()
        return {
            key: held for key, held in self.held.items() if not held.releasing and held.valid(now)
        }

    async def take_pass(self) -> None:
        """Read the table once, note losses, and take what the planner says."""
        self.leases = await self._repository.list()
        now = self._clock()  # when the read completed, never earlier (DESIGN §3.10)
        self._seen = observe(self._seen, self.leases, now)
        decided = plan(
            self.leases,
            self._seen,
            me=self.me,
            held=self.held.keys(),
            now=now,
            duration=self._settings.lease_duration_s,
            rng=self._rng,
            may_take=self.taking,
        )
        for key in decided.lost:
            if not self.held[key].releasing:  # a release under way ends on its own
                self._lose(key, "owner_changed")
        for take in decided.takes:
            await self._take(take.lease, take.reason)
        for finished in collectable(self.leases):
            if await self._repository.delete_finished(finished):
                self._metrics.leases_deleted.labels(self._settings.stream).inc()
                self._log.info("lease_deleted", shard_id=finished.key, why="children_started")
        self.passes += 1
        self._held_gauge.set(len(self.held))

    async def _take(self, lease: Lease, reason: TakeReason) -> None:
        sent_at = self._clock()
        taken = await self._repository.take(lease, self.me)
        if taken is None:
            taken = await self._taken_after_all(lease)
        if taken is None:
            self._log.debug("lease_take_lost_race", shard_id=lease.key)
            return
        held = HeldLease(
            taken,
            self._repository,
            acquired_at=sent_at,
            duration=self._settings.lease_duration_s,
            margin=self._settings.fence_margin_s,
            clock=self._clock,
            on_recovered=self._note_recovered,
        )
        self.held[taken.key] = held
        if reason is TakeReason.STEAL:
            self._metrics.leases_stolen.labels(self._settings.stream).inc()
        else:
            self._metrics.leases_taken.labels(self._settings.stream, reason.value).inc()
        self._log.info(
            "lease_taken",
            shard_id=taken.key,
            reason=reason.value,
            previous_owner=lease.owner,
            checkpoint=taken.checkpoint,
        )
        self._on_change()

    async def _taken_after_all(self, lease: Lease) -> Lease | None:
        """A take whose condition failed: ours after all when the table names us with the
        counter our take produced (botocore sent it again after its answer was lost)."""
        current = await self._repository.get(lease.key)
        if current is None or current.owner != self.me or current.counter != lease.counter + 1:
            return None
        self._note_recovered("take")
        return current

    def _note_recovered(self, operation: str) -> None:
        self._metrics.lease_writes_recovered.labels(self._settings.stream, operation).inc()
        self._log.info("lease_write_recovered", operation=operation)

    async def renew_pass(self) -> None:
        held = [lease for lease in self.held.values() if not lease.releasing]
        # A renewal that hangs (black-holed network) must not hold up the others or the next
        # pass; abandoning it can only cost us that lease, never let us keep one we lost.
        limit = self._settings.renew_interval_s
        results = await asyncio.gather(
            *(asyncio.wait_for(lease.renew(), timeout=limit) for lease in held),
            return_exceptions=True,
        )
        for lease, result in zip(held, results, strict=True):
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, TimeoutError):
                self._log.warning("lease_renew_timed_out", shard_id=lease.key)
            elif isinstance(result, BaseException):
                self._log.warning("lease_renew_failed", shard_id=lease.key, error=describe(result))
            elif not result:
                self._lose(lease.key, "renew_refused")
        self.fence()

    def fence(self) -> None:
        """Declare lost every held lease we could not renew in time (self-fencing)."""
        now = self._clock()
        for key, lease in list(self.held.items()):
            if not lease.valid(now):
                # A write refused (a peer took the lease) marks it lost before its time is up.
                self._lose(key, "write_refused" if lease.lost else "not_renewed_in_time")

    def _lose(self, key: str, why: str) -> None:
        lease = self.held.pop(key, None)
        if lease is None:
            return
        lease.lost = True
        self._metrics.leases_lost.labels(self._settings.stream).inc()
        self._held_gauge.set(len(self.held))
        self._log.warning("lease_lost", shard_id=key, why=why)
        self._on_change()

    async def release(self, key: str, why: str) -> None:
        """Give a lease back (owner cleared) so that a peer takes it at once.

        The lease stays in ``held`` (marked ``releasing``: no renewals, no consumer) until the
        release has ended, whatever its outcome; a release that keeps failing gives up after
        a few attempts and the lease expires on its own, or is taken back by a later pass."""
        lease = self.held.get(key)
        if lease is None or lease.releasing:
            return
        lease.releasing = True
        try:
            if await self._release(lease):
                self._metrics.leases_released.labels(self._settings.stream).inc()
                self._log.info("lease_released", shard_id=key, why=why)
        finally:
            if self.held.get(key) is lease:
                del self.held[key]
            self._held_gauge.set(len(self.held))
            self._on_change()

    async def _release(self, lease: HeldLease) -> bool:
        backoff = Backoff(base=0.1, cap=1.0)
        for attempt in range(1, RELEASE_ATTEMPTS + 1):
            try:
                return await lease.release()
            except Exception as exc:  # the condition makes a retry safe
                self._log.warning(
                    "lease_release_failed", shard_id=lease.key, error=describe(exc), attempt=attempt
                )
                if attempt < RELEASE_ATTEMPTS:
                    await backoff.sleep()
        return False

    async def run_takes(self, stop: asyncio.Event) -> None:
        while True:
            try:
                # Bounded like renewals: a hung scan must not stop later passes.
                async with asyncio.timeout(max(5.0, self._settings.lease_duration_s)):
                    await self.take_pass()
                self.aws_ok = True
            except TimeoutError:
                self.aws_ok = False
                self._log.warning("lease_pass_timed_out")
            except Exception as exc:
                self.aws_ok = False
                self._log.warning("lease_pass_failed", error=describe(exc))
            self.fence()
            if await sleep_or_stop(self._settings.take_interval_s, stop):
                return

    async def run_renewals(self) -> None:
        while True:
            await asyncio.sleep(self._settings.renew_interval_s)
            await self.renew_pass()

    async def run_fencing(self) -> None:
        """Self-fencing by the clock alone: a hung request must not delay it."""
        while True:
            await asyncio.sleep(FENCE_CHECK_S)
            self.fence()
