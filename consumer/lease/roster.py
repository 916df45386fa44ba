"""The leader's view of the members, round by round: pure and synchronous, time a parameter.

From each round's read of the membership table, :meth:`Roster.observe` says who is *gone*
(left, or its beat unchanged for a lease duration of what this leader saw), who is *draining*
(gets nothing more but keeps what it holds: stopping, late, or not yet seen to beat by this
leader), and who is *live*; and it keeps the hand-backs: leases a member was asked to give
back (``revoking``) and leases given back or freed (``returned``), which the planner uses.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from consumer.lease.members import Member
from consumer.lease.model import Lease
from consumer.lease.planner import Seen, is_expired, observe_beats


@dataclasses.dataclass(frozen=True, slots=True)
class Observed:
    gone: frozenset[str]
    draining: frozenset[str]
    live: frozenset[str]
    changed: bool  # a member joined or restarted
    restarted: frozenset[str]  # members seen with a new incarnation: they hold nothing
    ended: bool  # a member reports a shard ended since the last round


class Roster:
    def __init__(self, me: str, duration: float, beat_interval: float) -> None:
        self._me = me
        self._duration = duration
        self._beat_interval = beat_interval
        self.beats: dict[str, Seen] = {}
        self.beating: set[str] = set()  # members whose beat we have seen change
        self.incarnations: dict[str, str] = {}
        self.ends: dict[str, int] = {}
        self.revoking: dict[str, str] = {}  # lease key -> member asked to hand it back
        self.returned: dict[str, str] = {}  # lease key -> member that handed it back
        self.warned: dict[str, float] = {}  # member -> the stillness its grantees were warned of

    def observe(
        self,
        members: Mapping[str, Member],
        table: Mapping[str, Lease],
        now: float,
        my_incarnation: str | None = None,
    ) -> Observed:
        """Take in one read of the members (``table``: the leases as the leader knows them)."""
        before = self.beats
        self.beats = observe_beats(before, members, now)
        self.beating = {w for w in self.beating if w in members} | {
            w for w, seen in self.beats.items() if w in before and before[w].counter != seen.counter
        }
        self._count_my_beat(members, now, my_incarnation)
        gone = {
            worker
            for worker, member in members.items()
            if member.leaving or is_expired(self.beats.get(worker), now, self._duration)
        }
        changed = any(self.incarnations.get(w) != m.incarnation for w, m in members.items())
        restarted = self._note_restarts(members, table)
        self._note_hand_backs(members, gone)
        ended = any(member.ends > self.ends.get(worker, 0) for worker, member in members.items())
        self.ends = {worker: member.ends for worker, member in members.items()}
        draining = self._not_receiving(members, now) - gone
        live = set(members) - gone - draining
        return Observed(
            frozenset(gone), frozenset(draining), frozenset(live), changed, restarted, ended
        )

    def next_expiry(self, now: float) -> float:
        """The first moment after ``now`` at which a member's beat, unchanged since, will
        have stood still for a lease duration (infinity when none will)."""
        ahead = (seen.since + self._duration for seen in self.beats.values())
        return min((at for at in ahead if at > now), default=math.inf)

    def newly_late(self, members: Mapping[str, Member], now: float) -> dict[str, float]:
        """Members whose beat has stood still for more than two beat intervals, not yet a
        lease duration, and whose grantees were not yet warned of this stillness: when each
        will be gone. Each stillness is answered once (it is taken as warned)."""
        found = {}
        for worker, member in members.items():
            seen = self.beats.get(worker)
            if seen is None or member.leaving or worker == self._me:
                continue
            still = now - seen.since
            if (
                2 * self._beat_interval < still < self._duration
                and self.warned.get(worker) != seen.since
            ):
                self.warned[worker] = seen.since
                found[worker] = seen.since + self._duration
        return found

    def _count_my_beat(
        self, members: Mapping[str, Member], now: float, my_incarnation: str | None
    ) -> None:
        """Our own beat has landed (our incarnation's item): we need not watch it change. But
        not while another member may yet be seen beating (first seen less than two beat
        intervals ago, as after an election): we would be the only one to receive, and every
        free lease would come to us first, to be handed back later."""
        mine = members.get(self._me)
        waiting = 2 * self._beat_interval
        others_pending = any(
            now - seen.since <= waiting
            for w, seen in self.beats.items()
            if w != self._me and w not in self.beating
        )
        if (
            mine is not None
            and my_incarnation is not None
            and mine.incarnation == my_incarnation
            and not others_pending
        ):
            self.beating.add(self._me)

    def _not_receiving(self, members: Mapping[str, Member], now: float) -> set[str]:
        """Members that get nothing more but keep what they hold: stopping, late (dying or
        cut off: a grant would wait for them), or not yet seen to beat by this leader (a
        member that died just before we were elected looks alive for a lease duration)."""
        late = 2 * self._beat_interval
        return {
            worker
            for worker, member in members.items()
            if member.draining
            or now - self.beats[worker].since > late
            or worker not in self.beating
        }

    def _note_restarts(
        self, members: Mapping[str, Member], table: Mapping[str, Lease]
    ) -> frozenset[str]:
        """A member with a new incarnation holds nothing: what names it is handed back."""
        restarted = set()
        for worker, member in members.items():
            before = self.incarnations.get(worker)
            if before is not None and before != member.incarnation:
                restarted.add(worker)
                for lease in table.values():
                    if lease.owner == worker:
                        self.returned[lease.key] = worker
                        self.revoking.pop(lease.key, None)
            self.incarnations[worker] = member.incarnation
        return frozenset(restarted)

    def _note_hand_backs(self, members: Mapping[str, Member], gone: set[str]) -> None:
        for key, worker in list(self.revoking.items()):
            member = members.get(worker)
            if member is None or worker in gone:
                del self.revoking[key]  # its leases are free anyway
            elif key not in member.revokes:
                del self.revoking[key]
                self.returned[key] = worker

    def free(self, owner: str, table: Mapping[str, Lease]) -> None:
        """What names ``owner`` is free (a deposed leader: it fenced itself)."""
        for lease in table.values():
            if lease.owner == owner and lease.key not in self.revoking:
                self.returned[lease.key] = owner

    def forget(self, worker: str) -> None:
        """A gone member's item was deleted."""
        self.beats.pop(worker, None)
        self.incarnations.pop(worker, None)
        self.warned.pop(worker, None)
