"""What the elected leader does each round (:mod:`consumer.lease.leader` holds the election).

A round: read every member's item (strongly consistent: a member is gone when its beat has
not changed for a lease duration *of what we saw*), read the lease table when it is due
(rarely: at election, after a shard ended, when a lease's owner is not a member, and every
``LEASE_SCAN_S`` otherwise), plan with :func:`plan_moves`, and write the plan: conditional
lease writes naming the new owners, then the grants and revokes into the members' items,
which each member reads from its own next beat's answer.

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
from consumer.lease.members import Member, MemberStore
from consumer.lease.model import Lease, LeaseStore
from consumer.lease.planner import Seen, collectable, is_expired, observe
from consumer.lease.roster import Observed, Roster
from consumer.metrics import Metrics
from kernel.aws import describe
from kernel.logs import get as get_logger
from kernel.tasks import all_of

LEASE_SCAN_S = 120.0  # the lease table is read at least this often by the leader
LEASE_RESCAN_S = 1.0  # ... and this soon after a shard ended or while an owner is unknown
# After a shard ended, finished leases are deleted once their children started: the table is
# read this often, for this long after the last end, while finished leases remain.
FINISHED_SCAN_S = 5.0
FINISHED_WINDOW_S = 120.0
# Writes a round may make for moves: a fleet of 10,000 shards starting, scaling or resharding
# moves its leases over a few seconds instead of in one burst a partition would throttle.
MAX_MOVES_PER_ROUND = 500

# (lease keys that exist) -> leases created for new shards
SyncShards = Callable[[frozenset[str]], Awaitable[int]]


class Rounds:
    """The leader's view (the lease table, the members) and its rounds over it. ``leading``
    says whether the leadership still holds: a plan is written only while it does."""

    def __init__(
        self,
        leases: LeaseStore,
        members: MemberStore,
        settings: Settings,
        metrics: Metrics,
        *,
        leading: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
        sync_shards: SyncShards | None = None,
        incarnation: Callable[[], str] | None = None,
        on_self_grant: Callable[[], None] = lambda: None,
    ) -> None:
        self._leases = leases
        self._members = members
        self._settings = settings
        self._metrics = metrics
        self._leading = leading
        self._clock = clock
        self._sync_shards = sync_shards
        # Our own worker's incarnation (None: not known, we wait to see our beat change as
        # any member's) and a poke for its beat when we grant it something.
        self._incarnation = incarnation
        self._on_self_grant = on_self_grant
        self._log = get_logger(worker_id=settings.worker_id)
        self.deposed: str | None = None  # the leader we took over from, its leases free
        self.reset()

    def reset(self, keep_roster: bool = False) -> None:
        """Forget the view (kept: what a successor saw of the members before its claim)."""
        self.table: dict[str, Lease] = {}  # the lease table as we know it
        self._counters: dict[str, Seen] = {}  # lease counters, for owners not members
        s = self._settings
        if not keep_roster:
            self.roster = Roster(s.worker_id, s.lease_duration_s, s.beat_interval_s)
        self._next_scan = 0.0
        self._next_sync = 0.0
        self._ended_at = -math.inf
        self.successor: str | None = None  # the successor we named
        self.members: dict[str, Member] = {}
        self.busy = True  # something is moving or late: the next round comes sooner
        self._elected = True  # until the first round: tell every member what it holds
        # Leases named (or perhaps named: the write's answer was lost) for a member whose
        # grant was not written: key -> that member. Sent again each round until written:
        # otherwise the lease names a live member that never hears of it, and no plan moves
        # a lease a live member holds — the shard would go unconsumed until a new leader.
        self.ungranted: dict[str, str] = {}

    @property
    def me(self) -> str:
        return self._settings.worker_id

    @property
    def _duration(self) -> float:
        return self._settings.lease_duration_s

    async def read_members(self) -> tuple[dict[str, Member], Observed]:
        """Read every member's item and take it into the roster: each round does, and a
        successor whose leader item stands still."""
        members = {member.worker_id: member for member in await self._members.members()}
        mine = self._incarnation() if self._incarnation is not None else None
        return members, self.roster.observe(members, self.table, self._clock(), mine)

    async def round(self) -> None:
        members, seen = await self.read_members()
        now = self._clock()
        self.members = members
        roster = self.roster
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
        if self.deposed is not None:  # it fenced itself: what names it is free
            roster.free(self.deposed, self.table)
            self.deposed = None
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
            returned=self.roster.returned,
            revoking=self.roster.revoking,
            expired=lambda lease: is_expired(self._counters.get(lease.key), now, self._duration),
        )

    async def _warn_grantees(self, seen: Observed, now: float) -> None:
        """A member whose beat stands still may be dead: the members its leases would go to
        are told when (Member.expects), so that they beat often around then and take them
        within a fraction of a beat interval of the round that assigns them, not up to a
        whole one later. One write per grantee per stillness; nothing moves before it is due."""
        late = self.roster.newly_late(self.members, now)
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
        await all_of(*(self._members.expect(self.members[w], due - now) for w in sorted(grantees)))

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
        if not self._leading():
            return 0  # lost meanwhile (a slow round): the next leader plans afresh
        results = await all_of(*(self._assign(move) for move in moves.assign))
        grants: dict[str, set[str]] = {}
        for key, worker in self.ungranted.items():  # (what our view of it says is moot: a
            lease = self.table.get(key)  # member reads a lease before it takes it)
            if lease is not None and not lease.finished:
                grants.setdefault(worker, set()).add(key)
        for move, done in zip(moves.assign, results, strict=True):
            if done:
                grants.setdefault(move.to, set()).add(move.key)
        await self._grant(grants)
        members = self.members
        asked = await all_of(
            *(self._members.revoke(members[w], frozenset(keys)) for w, keys in moves.revoke.items())
        )
        for (worker, keys), done in zip(moves.revoke.items(), asked, strict=True):
            for key in keys if done else ():
                self.roster.revoking[key] = worker
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
            # It may have landed (its answer lost): grant it all the same (in _perform).
            self.ungranted[move.key] = move.to
            return False
        self.table[move.key] = lease
        self.roster.returned.pop(move.key, None)
        self._metrics.leases_assigned.labels(self._settings.stream).inc()
        return True

    async def _grant(self, grants: dict[str, set[str]]) -> None:
        """Tell each member what was assigned to it. A grant refused (the member left or
        restarted after this round read it) gives its leases back; one that failed is sent
        again next round (a grant the lease does not back is read and ignored: it is safe)."""
        members = self.members
        grants = {w: keys for w, keys in grants.items() if w in members}
        self.ungranted = {}
        outcomes = await asyncio.gather(
            *(self._members.grant(members[w], frozenset(keys)) for w, keys in grants.items()),
            return_exceptions=True,
        )
        refused: list[tuple[str, str]] = []
        for (worker, keys), outcome in zip(grants.items(), outcomes, strict=True):
            if outcome is True:
                if worker == self.me:
                    self._on_self_grant()  # our next beat fetches them now, not a beat on
            elif outcome is False:
                refused += [(key, worker) for key in sorted(keys)]
            elif isinstance(outcome, Exception):
                self._log.warning("grant_failed", member=worker, error=describe(outcome))
                self.ungranted.update(dict.fromkeys(keys, worker))
            else:
                raise outcome  # cancelled: never swallowed
        await all_of(*(self._unassign(key, worker) for key, worker in refused))

    async def _unassign(self, key: str, worker: str) -> None:
        """A grant refused: the member left (or restarted) after this round read it, and
        takes nothing. The lease we named it in goes back to free (conditional on that
        write), not left naming a worker that has gone: the next round gives it to a live
        member, and a fleet that stops altogether leaves nothing owned."""
        lease = self.table.get(key)
        if lease is None or lease.owner != worker:
            return  # not known to name it: nothing of the member's to give back
        try:
            released = await self._leases.release(lease)
        except Exception as exc:  # a later round reassigns it: the member is gone
            self._log.warning("lease_unassign_failed", shard_id=key, error=describe(exc))
            return
        if released is not None:
            self.table[key] = released
            self._log.info("lease_unassigned", shard_id=key, why="grant_refused")

    async def _regrant(self, live: AbstractSet[str]) -> None:
        """Newly elected: grant every live member the leases that name it. A member restarted
        while nobody led holds nothing of what names it; one that holds a lease acknowledges
        it and carries on."""
        held: dict[str, set[str]] = {}
        revoking = self.roster.revoking
        for lease in self.table.values():
            owner, free = lease.owner, not lease.finished and lease.key not in revoking
            if owner is not None and owner in live and free:
                held.setdefault(owner, set()).add(lease.key)
        await all_of(
            *(self._members.grant(self.members[w], frozenset(keys)) for w, keys in held.items())
        )
        self._elected = False

    async def _name_successor(self, live: AbstractSet[str]) -> None:
        others = sorted(live - {self.me})
        successor = others[0] if others else None
        if successor == self.successor:
            return
        if successor is not None:
            await self._members.name_successor(successor, True)
        if self.successor is not None and self.successor in self.members:
            await self._members.name_successor(self.successor, False)
        self.successor = successor

    async def _forget(self, members: Mapping[str, Member], gone: AbstractSet[str]) -> None:
        """Delete the items of gone members that no lease names any more."""
        owners = {lease.owner for lease in self.table.values()}
        for worker in sorted(gone - owners - {self.me}):
            if await self._members.forget(members[worker]):
                self.roster.forget(worker)
