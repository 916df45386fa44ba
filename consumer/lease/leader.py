"""The elected leader: the one worker that reads the lease table and assigns leases
(its rounds: :mod:`consumer.lease.rounds`).

Leadership is a lease on the ``@leader`` item of the membership table, renewed every beat
interval and judged like any lease: by its counter staying unchanged for a lease duration of
the observer's clock. The successor the leader names watches that item every beat interval;
every other worker looks at it now and then, so that a fleet whose leader and successor died
together still elects one.

A round (:class:`~consumer.lease.rounds.Rounds`) comes every ``BUSY_ROUND_S`` while anything
is moving or a member is late, every ``CALM_ROUND_S`` otherwise, and at the moment a member's
beat will have stood still for a lease duration.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from consumer.config import Settings
from consumer.lease.held import Liveness
from consumer.lease.members import Leadership, Member, MemberStore
from consumer.lease.model import LeaseStore
from consumer.lease.planner import Seen, is_expired
from consumer.lease.rounds import Rounds, SyncShards
from consumer.metrics import Metrics
from kernel.aws import describe
from kernel.backoff import sleep_or_stop
from kernel.logs import get as get_logger
from kernel.tasks import all_of

BUSY_ROUND_S = 0.5  # a round of the leader (read the members, plan, write) while busy
CALM_ROUND_S = 1.0  # ... and when nothing moved and every member beat on time
# How often the successor looks at the leader item: a dead leader's leases wait for its
# leadership to lapse (a lease duration after the last renewal seen) and for this look.
SUCCESSOR_WATCH_S = 1.0
WATCH_S = 30.0  # how often a worker that is not the successor looks at the leader item
# A round or a watch timed for a moment comes this long after it: a sum of floats a hair
# short of the moment would find nothing due, and sleep a hair, and again.
PAST_DUE_S = 0.001


class Leader:
    def __init__(
        self,
        leases: LeaseStore,
        members: MemberStore,
        settings: Settings,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        sync_shards: SyncShards | None = None,
        liveness: Liveness | None = None,
        incarnation: Callable[[], str] | None = None,
        on_self_grant: Callable[[], None] = lambda: None,
    ) -> None:
        self._liveness = liveness
        self._members = members
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self.rounds = Rounds(
            leases,
            members,
            settings,
            metrics,
            leading=self.leading,
            clock=clock,
            sync_shards=sync_shards,
            incarnation=incarnation,
            on_self_grant=on_self_grant,
        )
        self._log = get_logger(worker_id=settings.worker_id)
        self.successor = False  # set from our own beat's answer, by name_successor
        # Until we see the leader item change once, we watch it as closely as a successor: a
        # leader that died before naming us (a one-replica fleet whose worker was replaced)
        # must not keep its leases for WATCH_S.
        self._newcomer = True
        self.wake = asyncio.Event()  # a leaving worker poked us: a round now
        self.leadership: Leadership | None = None
        self._led_since = 0.0  # when the last renewal (or claim) that was answered was sent
        self._watched: Seen | None = None
        self._warned_of: Seen | None = None  # the leader item's stillness we warned of
        self._next_watch = 0.0
        self._renewing = asyncio.Lock()

    def name_successor(self, successor: bool) -> None:
        """Our beat's answer says whether we are the successor: one watches closely at once."""
        if successor and not self.successor:
            self._next_watch = 0.0
        self.successor = successor

    @property
    def me(self) -> str:
        return self._settings.worker_id

    @property
    def _duration(self) -> float:
        return self._settings.lease_duration_s

    @property
    def led_since(self) -> float:
        """When the last leadership claim or renewal that was answered was sent."""
        return self._led_since

    def leading(self, now: float | None = None) -> bool:
        now = self._clock() if now is None else now
        valid_until = self._led_since + self._duration - self._settings.fence_margin_s
        return self.leadership is not None and now < valid_until

    async def run(self, stop: asyncio.Event) -> None:
        """Lead while elected; otherwise watch the leader item. Ends when ``stop`` is set
        (set :attr:`wake` too, to end a pause at once). Leadership is renewed by a loop of
        its own: a round slowed by Scans that take seconds must not let it lapse."""
        async with asyncio.TaskGroup() as group:
            renewals = group.create_task(self._renew_forever())
            try:
                while not stop.is_set():
                    started = self._clock()
                    try:
                        async with asyncio.timeout(max(5.0, self._duration)):
                            await self.step()
                    except TimeoutError:
                        self._log.warning("leader_round_timed_out")
                    except Exception as exc:
                        self._log.warning("leader_round_failed", error=describe(exc))
                    await sleep_or_stop(
                        max(0.0, self._next_round(started) - self._clock()), self.wake
                    )
                    self.wake.clear()
            finally:
                renewals.cancel()

    def _next_round(self, started: float) -> float:
        """When the next round starts: a round period after this one started (its own length
        does not stretch the period), or sooner, when a member's beat will have stood still
        for a lease duration: the round that finds it gone reassigns its leases then, not up
        to a period later (fail-over within the lease duration + 2 s, DESIGN §3)."""
        closely = self.rounds.busy or (self.successor and self.leadership is None)
        due = started + (BUSY_ROUND_S if closely else CALM_ROUND_S)
        if self.leadership is not None:
            return min(due, self.rounds.roster.next_expiry(self._clock()) + PAST_DUE_S)
        if self._next_watch > started:  # not when a failed watch left it behind: no spin
            due = min(due, self._next_watch + PAST_DUE_S)
        return due

    async def step(self) -> None:
        now = self._clock()
        if self.leadership is not None and not self.leading(now):
            self._abdicate("not_renewed_in_time")
        if self.leadership is None:
            if now >= self._next_watch:
                await self._watch()
            if self.leadership is None:
                return
        await self.renew_if_due()
        if self.leading():
            await self.rounds.round()

    async def renew_if_due(self) -> None:
        """Renew leadership once a beat interval has passed since the last renewal; the
        rounds and the renewal loop both ask, one at a time."""
        async with self._renewing:
            due = self._clock() - self._led_since >= self._settings.beat_interval_s
            if self.leadership is not None and due:
                await self._renew()

    async def _renew_forever(self) -> None:
        interval = self._settings.beat_interval_s
        while True:
            try:
                async with asyncio.timeout(max(interval, self._settings.fence_margin_s)):
                    await self.renew_if_due()
            except Exception as exc:  # the next try comes soon; lapsing is the clock's job
                self._log.warning("leadership_renewal_failed", error=describe(exc))
            await asyncio.sleep(interval / 4)

    # -- election ------------------------------------------------------------------------

    async def _watch(self) -> None:
        seen = await self._members.leader()
        now = self._clock()
        if seen is not None and seen.owner is not None:
            self._note_leader_counter(seen.counter, now)
        watched = self._watched
        self._next_watch = now + self._watch_interval()
        if watched is not None and self._watching_closely():
            # The claim comes when the leadership lapses, not up to a watch interval later.
            self._next_watch = min(self._next_watch, watched.since + self._duration)
        owner = seen.owner if seen is not None else None
        alive = watched is not None and not is_expired(watched, now, self._duration)
        if owner not in (None, self.me) and alive:
            assert watched is not None
            if self.successor and now - watched.since >= self._duration / 2:
                # The leader may be dying: read the members as a round would, so that the
                # first round after a claim knows who beats and assigns at once (a fresh
                # leader must otherwise see every beat change first, a round or two later).
                members, _ = await self.rounds.read_members()
                await self._warn_of_succession(members, owner, watched)
            return
        sent_at = self._clock()
        claimed = await self._members.claim_leadership(self.me, seen)
        if claimed is None:
            return
        self.rounds.reset(keep_roster=True)
        self._led(claimed, sent_at)
        # A leader whose renewals stopped for a lease duration has fenced itself (its leases
        # are bound by its leadership, see Liveness): what names it is free now.
        self.rounds.deposed = seen.owner if seen is not None else None
        self._log.info("leadership_taken", previous=self.rounds.deposed)
        self._metrics.leader.labels(self._settings.stream).set(1)

    async def _warn_of_succession(
        self, members: Mapping[str, Member], leader: str | None, watched: Seen
    ) -> None:
        """Once per stillness of the leader item: whoever gets the leader's leases after our
        claim is not known before it, so every other member is told when the claim may come
        (Member.expects): they beat often around then and take their grants at once."""
        if self._warned_of == watched:
            return
        self._warned_of = watched
        due = watched.since + self._duration - self._clock()
        others = [
            member
            for worker, member in sorted(members.items())
            if worker not in (self.me, leader) and not (member.leaving or member.draining)
        ]
        await all_of(*(self._members.expect(member, due) for member in others))

    def _note_leader_counter(self, counter: int, now: float) -> None:
        if self._watched is None or self._watched.counter != counter:
            if self._watched is not None:
                self._newcomer = False  # the leader lives: the usual pace from now on
            self._watched = Seen(counter, now)
            self.rounds.reset()  # the leader lives: what we saw of the members gets old

    def _watching_closely(self) -> bool:
        return self.successor or self._newcomer

    def _watch_interval(self) -> float:
        return SUCCESSOR_WATCH_S if self._watching_closely() else WATCH_S

    async def _renew(self) -> None:
        assert self.leadership is not None
        sent_at = self._clock()
        renewed = await self._members.renew_leadership(self.leadership, self.rounds.successor)
        if renewed is None and await self._an_abandoned_renewal_landed():
            sent_at = self._clock()
            renewed = await self._members.renew_leadership(self.leadership, self.rounds.successor)
        if renewed is None:
            self._abdicate("leadership_taken_over")
            return
        self._led(renewed, sent_at)

    async def _an_abandoned_renewal_landed(self) -> bool:
        """A failed condition is not always a lost leadership (DESIGN §3.1, as for a held
        lease): a renewal abandoned by its timeout, or sent again by botocore after its
        answer was lost, may have been applied. If the item names us one past the counter we
        know, nobody else wrote it: adopt that counter and renew again. ``leading_since``
        stays at the last renewal answered (when the one that landed was sent is not known:
        the earlier time is the safe one)."""
        assert self.leadership is not None
        current = await self._members.leader()
        known = self.leadership
        if current is None or current.owner != self.me or current.counter != known.counter + 1:
            return False
        self.leadership = current
        self._log.info("leadership_renewal_recovered", counter=current.counter)
        stream = self._settings.stream
        self._metrics.lease_writes_recovered.labels(stream, "leadership_renewal").inc()
        return True

    def _led(self, leadership: Leadership, sent_at: float) -> None:
        self.leadership, self._led_since = leadership, max(self._led_since, sent_at)
        if self._liveness is not None:
            self._liveness.led(sent_at)

    def _abdicate(self, why: str) -> None:
        self._log.warning("leadership_lost", why=why)
        if self._liveness is not None and self._liveness.leading_since is not None:
            self._liveness.lapse()  # every lease we hold is fenced, now
        self.leadership = None
        self._watched = None
        self._next_watch = 0.0
        self._metrics.leader.labels(self._settings.stream).set(0)
        self.rounds.reset()

    async def resign(self) -> None:
        """A graceful stop: one last round (our own leases go to others), then let go."""
        if not self.leading():
            return
        leadership = self.leadership
        assert leadership is not None
        try:
            await self.rounds.round()
        except Exception as exc:  # our shards wait for our beats to lapse instead
            self._log.warning("last_round_failed", error=describe(exc))
        try:
            await self._members.release_leadership(leadership)
        except Exception as exc:  # the successor waits a lease duration instead
            self._log.warning("leadership_release_failed", error=describe(exc))
        self.leadership = None
        self._metrics.leader.labels(self._settings.stream).set(0)
        if self._liveness is not None:
            self._liveness.leading_since = None
