"""The elected leader: the one worker that reads the lease table and assigns leases.

Leadership is a lease on the ``@leader`` item of the membership table, renewed every beat
interval and judged like any lease: by its counter staying unchanged for a lease duration of
the observer's clock. The successor the leader names watches that item every beat interval;
every other worker looks at it now and then, so that a fleet whose leader and successor died
together still elects one.

A round of the leader (every ``BUSY_ROUND_S`` while anything is moving or a member is late,
every ``CALM_ROUND_S`` otherwise): read every member's item (strongly consistent: a
member is gone when its beat has not changed for a lease duration *of what we saw*), read the
lease table when it is due (rarely: at election, after a shard ended, when a lease's owner is
not a member, and every ``LEASE_SCAN_S`` otherwise), plan with :func:`plan_moves`, and write
the plan: conditional lease writes naming the new owners, then the grants and revokes into
the members' items, which each member reads from its own next beat's answer.

Nothing here is safe on its own account: an assignment only replaces an owner that stopped
beating for a lease duration (so it fenced itself before, DESIGN §3.3), left, handed the lease
back, or is not a member and let the counter sit for a lease duration; a stale view makes a
conditional write fail, never a second owner.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from collections.abc import Set as AbstractSet

from consumer.config import Settings
from consumer.lease.assign import Assign, Moves, paced, plan_moves
from consumer.lease.held import Liveness
from consumer.lease.members import Leadership, Member, MemberStore
from consumer.lease.model import Lease, LeaseStore
from consumer.lease.planner import Seen, collectable, is_expired, observe
from consumer.lease.roster import Observed, Roster
from consumer.metrics import Metrics
from kernel.aws import describe
from kernel.backoff import sleep_or_stop
from kernel.logs import get as get_logger

BUSY_ROUND_S = 0.5  # a round of the leader (read the members, plan, write) while busy
CALM_ROUND_S = 1.0  # ... and when nothing moved and every member beat on time
LEASE_SCAN_S = 120.0  # the lease table is read at least this often by the leader
LEASE_RESCAN_S = 1.0  # ... and this soon after a shard ended or while an owner is unknown
# After a shard ended, finished leases are deleted once their children started: the table is
# read this often, for this long after the last end, while finished leases remain.
FINISHED_SCAN_S = 5.0
FINISHED_WINDOW_S = 120.0
# Writes a round may make for moves: a fleet of 10,000 shards starting, scaling or resharding
# moves its leases over a few seconds instead of in one burst a partition would throttle.
MAX_MOVES_PER_ROUND = 500
# How often the successor looks at the leader item: a dead leader's leases wait for its
# leadership to lapse (a lease duration after the last renewal seen) and for this look.
SUCCESSOR_WATCH_S = 1.0
WATCH_S = 30.0  # how often a worker that is not the successor looks at the leader item
# A round or a watch timed for a moment comes this long after it: a sum of floats a hair
# short of the moment would find nothing due, and sleep a hair, and again.
PAST_DUE_S = 0.001

# (lease keys that exist) -> leases created for new shards
SyncShards = Callable[[frozenset[str]], Awaitable[int]]


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
        self._leases = leases
        # Our own worker's incarnation (None: not known, we wait to see our beat change as
        # any member's) and a poke for its beat when we grant it something.
        self._incarnation = incarnation
        self._on_self_grant = on_self_grant
        self._liveness = liveness
        self._members = members
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._sync_shards = sync_shards
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
        self._deposed: str | None = None  # the leader we took over from, its leases free
        self._renewing = asyncio.Lock()
        self._reset()

    def _reset(self, keep_roster: bool = False) -> None:
        self.table: dict[str, Lease] = {}  # the lease table as we know it
        self._counters: dict[str, Seen] = {}  # lease counters, for owners not members
        s = self._settings
        if not keep_roster:  # kept: what a successor saw of the members before its claim
            self._roster = Roster(s.worker_id, s.lease_duration_s, s.beat_interval_s)
        self._next_scan = 0.0
        self._next_sync = 0.0
        self._ended_at = -math.inf
        self._successor: str | None = None
        self.members: dict[str, Member] = {}
        self.busy = True  # something is moving or late: the next round comes sooner
        self._elected = True  # until the first round: tell every member what it holds

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
        closely = self.busy or (self.successor and self.leadership is None)
        due = started + (BUSY_ROUND_S if closely else CALM_ROUND_S)
        if self.leadership is not None:
            return min(due, self._roster.next_expiry(self._clock()) + PAST_DUE_S)
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
            await self.round()

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
                members, _ = await self._read_members()
                await self._warn_of_succession(members, owner, watched)
            return
        sent_at = self._clock()
        claimed = await self._members.claim_leadership(self.me, seen)
        if claimed is None:
            return
        self._reset(keep_roster=True)
        self._led(claimed, sent_at)
        # A leader whose renewals stopped for a lease duration has fenced itself (its leases
        # are bound by its leadership, see Liveness): what names it is free now.
        self._deposed = seen.owner if seen is not None else None
        self._log.info("leadership_taken", previous=self._deposed)
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
        await asyncio.gather(*(self._members.expect(member, due) for member in others))

    def _note_leader_counter(self, counter: int, now: float) -> None:
        if self._watched is None or self._watched.counter != counter:
            if self._watched is not None:
                self._newcomer = False  # the leader lives: the usual pace from now on
            self._watched = Seen(counter, now)
            self._reset()  # the leader lives: what we saw of the members gets old

    def _watching_closely(self) -> bool:
        return self.successor or self._newcomer

    def _watch_interval(self) -> float:
        return SUCCESSOR_WATCH_S if self._watching_closely() else WATCH_S

    async def _read_members(self) -> tuple[dict[str, Member], Observed]:
        """Read every member's item and take it into the roster: each round does, and a
        successor whose leader item stands still."""
        members = {member.worker_id: member for member in await self._members.members()}
        mine = self._incarnation() if self._incarnation is not None else None
        return members, self._roster.observe(members, self.table, self._clock(), mine)

    async def _renew(self) -> None:
        assert self.leadership is not None
        sent_at = self._clock()
        renewed = await self._members.renew_leadership(self.leadership, self._successor)
        if renewed is None:
            self._abdicate("leadership_taken_over")
            return
        self._led(renewed, sent_at)

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
        self._reset()

    async def resign(self) -> None:
        """A graceful stop: one last round (our own leases go to others), then let go."""
        if not self.leading():
            return
        leadership = self.leadership
        assert leadership is not None
        try:
            await self.round()
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

    # -- a round -------------------------------------------------------------------------

    async def round(self) -> None:
        members, seen = await self._read_members()
        now = self._clock()
        self.members = members
        roster = self._roster
        for worker in sorted(seen.restarted):
            self._log.info("member_restarted", member=worker)
        if seen.ended:
            self._ended_at = now
            self._next_scan = min(self._next_scan, now + LEASE_RESCAN_S)
            self._next_sync = min(self._next_sync, now + LEASE_RESCAN_S)
        if now >= self._next_scan:
            await self._scan(members)
        if await self._sync_if_due(now):
            # New leases: read and assign them now, not a round on; a read that fails here
            # leaves the scan due, so the next round reads them (not LEASE_SCAN_S later).
            self._next_scan = now
            await self._scan(members)
        if self._deposed is not None:  # it fenced itself: what names it is free
            roster.free(self._deposed, self.table)
            self._deposed = None
        moves = self._plan(seen.live, seen.gone, seen.draining, now)
        moved = await self._perform(paced(moves, MAX_MOVES_PER_ROUND))
        pending = roster.revoking or roster.returned
        self.busy = bool(moved or pending or seen.gone or seen.changed or seen.draining)
        await self._warn_grantees(seen, now)
        if self._elected:
            await self._regrant(seen.live)
        await self._name_successor(seen.live)
        await self._forget(members, seen.gone)
        self._metrics.leader_round.labels(self._settings.stream).set(time.time())

    def _plan(
        self,
        live: AbstractSet[str],
        gone: AbstractSet[str],
        draining: AbstractSet[str],
        now: float,
    ) -> Moves:
        return plan_moves(
            list(self.table.values()),
            live=live,
            gone=gone,
            draining=draining,
            returned=self._roster.returned,
            revoking=self._roster.revoking,
            expired=lambda lease: is_expired(self._counters.get(lease.key), now, self._duration),
        )

    async def _warn_grantees(self, seen: Observed, now: float) -> None:
        """A member whose beat stands still may be dead: the members its leases would go to
        are told when (Member.expects), so that they beat often around then and take them
        within a fraction of a beat interval of the round that assigns them, not up to a
        whole one later. One write per grantee per stillness; nothing moves before it is due."""
        late = self._roster.newly_late(self.members, now)
        if not late:
            return
        moves = self._plan(seen.live, seen.gone | late.keys(), seen.draining - late.keys(), now)
        grantees = {
            move.to
            for move in moves.assign
            if move.key in self.table and self.table[move.key].owner in late
        }
        due = min(late.values())
        grantees.discard(self.me)  # a grant to ourselves wakes our own beat
        await asyncio.gather(
            *(self._members.expect(self.members[w], due - now) for w in sorted(grantees))
        )

    async def _scan(self, members: Mapping[str, Member]) -> None:
        scanned = await self._leases.list()
        now = self._clock()
        self.table = {lease.key: lease for lease in scanned}
        self._counters = observe(self._counters, scanned, now)
        unknown = any(
            lease.owner is not None and lease.owner not in members and not lease.finished
            for lease in scanned
        )
        self._next_scan = now + (LEASE_RESCAN_S if unknown else LEASE_SCAN_S)
        for finished in collectable(scanned):
            if await self._leases.delete_finished(finished):
                self.table.pop(finished.key, None)
                self._metrics.leases_deleted.labels(self._settings.stream).inc()
                self._log.info("lease_deleted", shard_id=finished.key, why="children_started")
        finishing = any(lease.finished for lease in self.table.values())
        if finishing and now - self._ended_at < FINISHED_WINDOW_S:
            self._next_scan = min(self._next_scan, now + FINISHED_SCAN_S)

    async def _sync_if_due(self, now: float) -> int:
        """List the shards and create leases for new ones (only the leader does); how many."""
        if self._sync_shards is None or now < self._next_sync:
            return 0
        # A failed sync is tried again soon: without leases there is nothing to consume.
        self._next_sync = now + LEASE_RESCAN_S
        created = await self._sync_shards(frozenset(self.table))
        self._next_sync = now + self._settings.shard_sync_interval_s
        return created

    async def _perform(self, moves: Moves) -> int:
        """Write the plan; the number of leases assigned or asked back."""
        if not self.leading():
            return 0  # lost meanwhile (a slow round): the next leader plans afresh
        results = await asyncio.gather(*(self._assign(move) for move in moves.assign))
        grants: dict[str, set[str]] = {}
        for move, done in zip(moves.assign, results, strict=True):
            if done:
                grants.setdefault(move.to, set()).add(move.key)
        members = self.members
        granted = await asyncio.gather(
            *(self._members.grant(members[w], frozenset(keys)) for w, keys in grants.items()),
        )
        if any(done and w == self.me for w, done in zip(grants, granted, strict=True)):
            self._on_self_grant()  # our next beat fetches them now, not a beat interval on
        asked = await asyncio.gather(
            *(self._members.revoke(members[w], frozenset(keys)) for w, keys in moves.revoke.items())
        )
        for (worker, keys), done in zip(moves.revoke.items(), asked, strict=True):
            for key in keys if done else ():
                self._roster.revoking[key] = worker
        moved = sum(map(len, grants.values()))
        revoked = sum(map(len, moves.revoke.values()))
        if moved or revoked:
            self._log.info(
                "leases_assigned", assigned=moved, revoked=revoked, members=len(moves.loads)
            )
        return moved + revoked

    async def _assign(self, move: Assign) -> bool:
        try:
            lease = await self._leases.assign(
                move.key, move.to, owners=move.owners, counter=move.counter
            )
            if lease is None:  # our view was stale: read the lease for the next round
                fresh = await self._leases.get(move.key)
                if fresh is None:
                    self.table.pop(move.key, None)
                    return False
                self.table[move.key] = fresh
                if fresh.owner != move.to or fresh.finished:
                    return False
                # It names the member already: our write landed and its answer was lost (or
                # an earlier attempt's did). Grant it, or nobody ever consumes it.
                lease = fresh
        except Exception as exc:
            self._log.warning("lease_assign_failed", shard_id=move.key, error=describe(exc))
            return False
        self.table[move.key] = lease
        self._roster.returned.pop(move.key, None)
        self._metrics.leases_assigned.labels(self._settings.stream).inc()
        return True

    async def _regrant(self, live: AbstractSet[str]) -> None:
        """Newly elected: grant every live member the leases that name it. A member restarted
        while nobody led holds nothing of what names it; one that holds a lease acknowledges
        it and carries on."""
        held: dict[str, set[str]] = {}
        revoking = self._roster.revoking
        for lease in self.table.values():
            owner, free = lease.owner, not lease.finished and lease.key not in revoking
            if owner is not None and owner in live and free:
                held.setdefault(owner, set()).add(lease.key)
        await asyncio.gather(
            *(self._members.grant(self.members[w], frozenset(keys)) for w, keys in held.items())
        )
        self._elected = False

    async def _name_successor(self, live: AbstractSet[str]) -> None:
        others = sorted(live - {self.me})
        successor = others[0] if others else None
        if successor == self._successor:
            return
        if successor is not None:
            await self._members.name_successor(successor, True)
        if self._successor is not None and self._successor in self.members:
            await self._members.name_successor(self._successor, False)
        self._successor = successor

    async def _forget(self, members: Mapping[str, Member], gone: AbstractSet[str]) -> None:
        """Delete the items of gone members that no lease names any more."""
        owners = {lease.owner for lease in self.table.values()}
        for worker in sorted(gone - owners - {self.me}):
            if await self._members.forget(members[worker]):
                self._roster.forget(worker)
