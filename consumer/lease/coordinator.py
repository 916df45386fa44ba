"""The lease coordinator: one worker's side of the lease protocol (DESIGN §3).

The worker *beats* every ``beat_interval_s``: one write to its own item in the membership
table, whose answer carries what the leader wants of it: leases granted (the leader already
named us their owner; we read each once and start) and leases to hand back (we stop their
consumer, checkpoint and release, then acknowledge). The worker never reads the lease table
as a whole and never renews a lease: its beats keep every lease it holds, and when they stop
being answered for a lease duration (less a margin) it fences itself and drops them all, before
the leader may reassign any (DESIGN §3.3). A worker that fenced itself beats on under a new
incarnation, which tells the leader it holds nothing.

Every change to what it holds is reported through ``on_change``, so that the shard supervisor
brings its consumers in line (DESIGN §3.9); this module never touches Kinesis. ``held`` is
what this worker holds, including leases whose release is still under way: a lease stays held
until its release has ended. The elected leader's work is in :mod:`consumer.lease.leader` (the
election) and :mod:`consumer.lease.rounds`; every worker runs one, which mostly watches.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Callable

from consumer.config import Settings
from consumer.lease.held import HeldLease, Liveness
from consumer.lease.leader import Leader
from consumer.lease.members import Beat, Member, MemberStore
from consumer.lease.model import Lease, LeaseStore
from consumer.lease.rounds import SyncShards
from consumer.metrics import Metrics
from kernel.aws import describe
from kernel.backoff import Backoff, sleep_or_stop
from kernel.logs import get as get_logger

FENCE_CHECK_S = 0.25
RELEASE_ATTEMPTS = 4

# (lease key) -> True when a consumer was asked to stop and will release the lease itself
HandBack = Callable[[str], bool]


def new_incarnation() -> str:
    return uuid.uuid4().hex[:12]


class LeaseCoordinator:
    def __init__(
        self,
        repository: LeaseStore,
        members: MemberStore,
        settings: Settings,
        metrics: Metrics,
        *,
        on_change: Callable[[], None],
        hand_back: HandBack = lambda key: False,
        clock: Callable[[], float] = time.monotonic,
        sync_shards: SyncShards | None = None,
    ) -> None:
        self._repository = repository
        self._members = members
        self._settings = settings
        self._metrics = metrics
        self._on_change = on_change
        self._hand_back = hand_back
        self._clock = clock
        self.liveness = Liveness(
            duration=settings.lease_duration_s, margin=settings.fence_margin_s, clock=clock
        )
        self.leader = Leader(
            repository,
            members,
            settings,
            metrics,
            clock=clock,
            sync_shards=sync_shards,
            liveness=self.liveness,
            incarnation=lambda: self.incarnation,
            on_self_grant=lambda: self._beat_now.set(),
        )
        self.incarnation = new_incarnation()
        self.held: dict[str, HeldLease] = {}
        self.taking = True
        self.beats = 0  # beats answered
        self.aws_ok = False
        self._acked_grants: set[str] = set()
        self._acked_revokes: set[str] = set()
        self._handing_back: set[str] = set()
        self._ends = 0
        self._pokes = 0
        self._expects = 0
        self._expecting = (math.inf, -math.inf)  # grants expected in between: beat often
        self._leaving = False
        self._beat_now = asyncio.Event()
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

    # -- beats ---------------------------------------------------------------------------

    async def beat(self) -> Member:
        """Beat once and follow what the answer asks of us."""
        member = await self._send_beat()
        await self._after_beat(member)
        return member

    async def _send_beat(self) -> Member:
        grants, revokes = frozenset(self._acked_grants), frozenset(self._acked_revokes)
        sent_at = self._clock()
        fresh = self.beats == 0
        member = await self._members.beat(
            self.me,
            Beat(
                self.incarnation,
                grants,
                revokes,
                self._ends,
                self._leaving,
                draining=not self.taking,
                fresh=fresh,
            ),
        )
        self._acked_grants -= grants
        self._acked_revokes -= revokes
        self.liveness.renewed(sent_at)
        self.beats += 1
        self._metrics.last_beat.labels(self._settings.stream).set(time.time())
        return member

    async def _after_beat(self, member: Member) -> None:
        if member.pokes != self._pokes:
            self._pokes = member.pokes
            self.leader.wake.set()
        if member.expects != self._expects:
            self._expects = member.expects
            self._expect_grants(member.expect_s)
        if not self._leaving:
            self.leader.name_successor(member.successor)
            await self._follow(member)

    async def _follow(self, member: Member) -> None:
        # A lease granted and revoked before we beat was never ours to start: acknowledging
        # the revoke and then starting on the grant would make two owners.
        for key in sorted(member.grants & member.revokes - self.held.keys()):
            self._acked_grants.add(key)
            self._acked_revokes.add(key)
        for key in sorted(member.revokes - self._acked_revokes):
            await self._give_back(key)
        granted = sorted(member.grants - member.revokes - self._acked_grants)
        if self.taking:
            await asyncio.gather(*(self._take_granted(key) for key in granted))
        else:
            await asyncio.gather(*(self._decline(key) for key in granted if key not in self.held))

    def _expect_grants(self, seconds: float) -> None:
        """The leader expects to grant us leases ``seconds`` after it wrote so, which was
        before this beat and after the one before it: at most a beat interval ago."""
        now, beat = self._clock(), self._settings.beat_interval_s
        self._expecting = (now + seconds - beat, now + seconds + beat)

    def _pause(self, interval: float) -> float:
        """Until the next beat: ``interval``, or a quarter beat interval while grants are
        expected (and no later than when that starts)."""
        now, (start, end) = self._clock(), self._expecting
        if now < start:
            return min(interval, start - now)
        if now <= end:
            return min(interval, self._settings.beat_interval_s / 4)
        return interval

    async def _decline(self, key: str) -> None:
        """Stopping, we take nothing more: a lease granted meanwhile is released at once, so
        that no lease is left naming a worker that has gone."""
        await self._let_go(await self._repository.get(key))
        self._acked_grants.add(key)

    async def _let_go(self, lease: Lease | None) -> None:
        if lease is not None and lease.owner == self.me and not lease.finished:
            await self._repository.release(lease)

    async def _take_granted(self, key: str) -> None:
        """The leader named us the owner: read the lease once and start, or find that it is
        not ours (a stale grant) and acknowledge it all the same."""
        if key in self.held:
            self._acked_grants.add(key)
            return
        try:
            lease = await self._repository.get(key)
        except Exception as exc:  # the grant stays; the next beat tries again
            self._log.warning("lease_read_failed", shard_id=key, error=describe(exc))
            return
        if not self.taking:
            # The stop began while we read: its sweep has released what was held by now, so
            # a lease taken after it would be left naming a worker that has gone. (A release
            # that fails leaves the grant unacknowledged: the next beat declines it.)
            await self._let_go(lease)
            self._acked_grants.add(key)
            return
        self._acked_grants.add(key)
        if lease is None or lease.owner != self.me or lease.finished:
            self._log.info("grant_not_ours", shard_id=key, owner=lease.owner if lease else None)
            return
        self.held[key] = HeldLease(
            lease,
            self._repository,
            liveness=self.liveness,
            clock=self._clock,
            on_recovered=self._note_recovered,
        )
        self._metrics.leases_taken.labels(self._settings.stream, "granted").inc()
        self._held_gauge.set(len(self.held))
        self._log.info("lease_taken", shard_id=key, reason="granted", checkpoint=lease.checkpoint)
        self._on_change()

    async def _give_back(self, key: str) -> None:
        """The leader asks for the lease back: the consumer drains, checkpoints and releases
        it (or we release it now when none runs); acknowledged once released."""
        if key in self._handing_back:
            return
        held = self.held.get(key)
        if held is None:
            self._acked_revokes.add(key)
            return
        self._handing_back.add(key)
        self._metrics.leases_handed_back.labels(self._settings.stream).inc()
        if not self._hand_back(key):
            await self.release(key, "handed_back")

    def _note_recovered(self, operation: str) -> None:
        self._metrics.lease_writes_recovered.labels(self._settings.stream, operation).inc()
        self._log.info("lease_write_recovered", operation=operation)

    def note_shard_end(self) -> None:
        """A shard ended here: the next beat tells the leader to read the lease table."""
        self._ends += 1
        self._beat_now.set()

    # -- fencing and releases ------------------------------------------------------------

    def fence(self) -> None:
        """Drop every lease once our beats (or, leading, our leadership renewals) have gone
        unanswered too long (self-fencing), and every lease whose write was refused."""
        now = self._clock()
        alive = self.liveness.valid(now)
        for key, lease in list(self.held.items()):
            if not lease.valid(now):
                self._lose(key, "write_refused" if alive else "not_beaten_in_time")
        if alive or self.held:
            return
        if self.beats or self.liveness.lapsed:
            # The leader may not know we let go (our beats may have landed unanswered).
            self.incarnation = new_incarnation()
            self.beats = 0
            leading = self.leader.leading(now)
            self.liveness.restart(self.leader.led_since if leading else None)

    def _lose(self, key: str, why: str) -> None:
        lease = self.held.pop(key, None)
        if lease is None:
            return
        lease.lost = True
        self._end_hand_back(key)
        self._metrics.leases_lost.labels(self._settings.stream).inc()
        self._held_gauge.set(len(self.held))
        self._log.warning("lease_lost", shard_id=key, why=why)
        self._on_change()

    def _end_hand_back(self, key: str) -> None:
        if key in self._handing_back:
            self._handing_back.discard(key)
            self._acked_revokes.add(key)
            self._beat_now.set()

    async def release(self, key: str, why: str) -> None:
        """Give a lease back (owner cleared) so that the leader reassigns it at once.

        The lease stays in ``held`` (marked ``releasing``: no consumer) until the release has
        ended, whatever its outcome; a release that keeps failing gives up after a few
        attempts, and the lease is reassigned when we are gone or hand it back."""
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
            self._end_hand_back(key)
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

    async def leave(self) -> None:
        """After a graceful stop released what we held: say so, and resign if we lead."""
        self._leaving = True
        try:
            member = await self._members.beat(
                self.me,
                Beat(
                    self.incarnation,
                    frozenset(self._acked_grants),
                    ends=self._ends,
                    leaving=True,
                    draining=True,
                ),
            )
            # Granted while we drained, after our last beat: not left naming us (a fleet
            # that stops altogether has no leader left to reassign it).
            await asyncio.gather(*(self._decline(key) for key in member.grants - self.held.keys()))
        except Exception as exc:
            self._log.warning("leave_failed", error=describe(exc))
            return
        if self.leader.leading():
            await self.leader.resign()
            return
        # The leader notices on its next beat, not its next round: our shards move sooner.
        try:
            leadership = await self._members.leader()
            if leadership is not None and leadership.owner not in (None, self.me):
                await self._members.poke(leadership.owner)
        except Exception as exc:
            self._log.warning("leader_poke_failed", error=describe(exc))

    # -- loops ---------------------------------------------------------------------------

    async def run_beats(self) -> None:
        """Beat until cancelled: a stopping worker beats on while it drains and releases. The
        leader beats twice as often: a poke reaches it within half a beat interval."""
        while True:
            interval = self._settings.beat_interval_s / (2 if self.leader.leading() else 1)
            # The beat alone is bounded by the beat interval; what its answer asks (a lease
            # read per grant, a release) gets longer, so that a throttled read is not cut
            # short every time, but never so long that our beats lapse.
            member = None
            try:
                async with asyncio.timeout(max(interval, self._settings.fence_margin_s)):
                    member = await self._send_beat()
                self.aws_ok = True
            except TimeoutError:
                self.aws_ok = False
                self._log.warning("beat_timed_out")
            except Exception as exc:
                self.aws_ok = False
                self._log.warning("beat_failed", error=describe(exc))
            if member is not None:
                try:
                    async with asyncio.timeout(self._settings.lease_duration_s / 3):
                        await self._after_beat(member)
                except Exception as exc:  # the grants stay: the next beat answers them again
                    self._log.warning("beat_answer_not_followed", error=describe(exc))
            self.fence()
            if await sleep_or_stop(self._pause(interval), self._beat_now):
                self._beat_now.clear()

    async def run_fencing(self) -> None:
        """Self-fencing by the clock alone: a hung request must not delay it."""
        while True:
            await asyncio.sleep(FENCE_CHECK_S)
            self.fence()
