"""The lease planner: pure, synchronous, time as an argument (DESIGN §3).

Given the lease table as just read, what this worker has observed before, the local
monotonic time and who "me" is, decide which leases to take and which held leases are gone.
The coordinator performs the plan; tests drive this module with a fake clock.

Expiry never compares clocks across hosts: a lease is expired when its ``leaseCounter`` has
not changed for ``duration`` seconds of *our* clock since we first saw that counter value.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet

from consumer.lease.model import Lease


@dataclasses.dataclass(frozen=True, slots=True)
class Seen:
    """When (our monotonic clock) we first saw a lease with this counter value."""

    counter: int
    since: float


def observe(previous: Mapping[str, Seen], leases: Iterable[Lease], now: float) -> dict[str, Seen]:
    """Update observations: a changed counter restarts the lease's expiry clock."""
    seen: dict[str, Seen] = {}
    for lease in leases:
        before = previous.get(lease.key)
        if before is not None and before.counter == lease.counter:
            seen[lease.key] = before
        else:
            seen[lease.key] = Seen(lease.counter, now)
    return seen


def is_expired(seen: Seen | None, now: float, duration: float) -> bool:
    return seen is not None and now - seen.since >= duration


class TakeReason(enum.Enum):
    RECLAIM = "reclaim"  # the table names us but we do not hold it (restart with the same id)
    UNOWNED = "unowned"  # released or never owned
    EXPIRED = "expired"  # owner stopped renewing
    STEAL = "steal"  # owner is alive but has more than its share


@dataclasses.dataclass(frozen=True, slots=True)
class Take:
    lease: Lease
    reason: TakeReason


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    takes: tuple[Take, ...]
    lost: tuple[str, ...]  # held lease keys the table says are no longer ours
    target: int  # ceil(active leases / live workers)
    live_workers: int


def plan(
    leases: Sequence[Lease],
    seen: Mapping[str, Seen],
    *,
    me: str,
    held: AbstractSet[str],
    now: float,
    duration: float,
    rng: random.Random,
    may_take: bool = True,
) -> Plan:
    """Decide this pass's takes and losses. ``seen`` must already include ``leases``."""
    by_key = {lease.key: lease for lease in leases}
    lost = tuple(sorted(k for k in held if k not in by_key or by_key[k].owner != me))
    active = [lease for lease in leases if not lease.finished]

    def expired(lease: Lease) -> bool:
        return is_expired(seen.get(lease.key), now, duration)

    live_owners = {
        lease.owner
        for lease in active
        if lease.owner is not None and lease.owner != me and not expired(lease)
    }
    live_workers = len(live_owners) + 1
    target = math.ceil(len(active) / live_workers) if active else 0
    mine = sum(1 for lease in active if lease.key in held and lease.key not in lost)

    if not may_take or mine >= target:
        return Plan((), lost, target, live_workers)

    candidates: dict[TakeReason, list[Lease]] = {reason: [] for reason in TakeReason}
    for lease in active:
        if lease.key in held:
            continue
        if lease.owner == me:
            candidates[TakeReason.RECLAIM].append(lease)
        elif lease.owner is None:
            candidates[TakeReason.UNOWNED].append(lease)
        elif expired(lease):
            candidates[TakeReason.EXPIRED].append(lease)

    need = target - mine
    takes: list[Take] = []
    for reason in (TakeReason.RECLAIM, TakeReason.UNOWNED, TakeReason.EXPIRED):
        # Shuffle so that workers starting together do not all race for the same lease.
        group = sorted(candidates[reason], key=lambda lease: lease.key)
        rng.shuffle(group)
        takes.extend(Take(lease, reason) for lease in group[: need - len(takes)])
    if takes:
        return Plan(tuple(takes), lost, target, live_workers)

    steal = _steal_one(active, expired, me=me, mine=mine, target=target, rng=rng)
    return Plan((steal,) if steal else (), lost, target, live_workers)


def _steal_one(
    active: Sequence[Lease],
    expired: Callable[[Lease], bool],
    *,
    me: str,
    mine: int,
    target: int,
    rng: random.Random,
) -> Take | None:
    """Steal at most one lease from the most loaded live worker, without ping-pong.

    Steal only if the victim is above target, or at least two leases ahead of us: a fleet
    within one lease of even stays still.
    """
    owned = [
        lease
        for lease in active
        if lease.owner is not None and lease.owner != me and not expired(lease)
    ]
    # A lease in a KCL 3.x hand-off (checkpointOwner set) is still being finished: not stolen.
    owned_stealable = [lease for lease in owned if lease.checkpoint_owner is None]
    counts = Counter(lease.owner for lease in owned)
    if not counts:
        return None
    victim, victim_count = min(counts.items(), key=lambda item: (-item[1], str(item[0])))
    if not (victim_count > target or victim_count - mine >= 2):
        return None
    choices = sorted(
        (lease for lease in owned_stealable if lease.owner == victim), key=lambda x: x.key
    )
    return Take(rng.choice(choices), TakeReason.STEAL) if choices else None


def collectable(leases: Sequence[Lease]) -> list[Lease]:
    """Finished leases whose children have all started: nobody needs them any more.

    A child that has checkpointed a sequence number (or finished) no longer waits on its
    parents. The children are those whose leases name the lease as a parent, and those its
    ``childShardIds`` name (each must have a lease); a finished lease without any known child
    is kept until its children's leases exist. Leases go oldest first: one whose own parent
    still has a lease waits, so that no parent is left behind without children to vouch for
    its end.
    """
    by_key = {lease.key: lease for lease in leases}
    children: dict[str, set[str]] = {}
    for lease in leases:
        for parent in lease.parents:
            children.setdefault(parent, set()).add(lease.key)
    collected = []
    for lease in leases:
        if not lease.finished or any(parent in by_key for parent in lease.parents):
            continue
        named = children.get(lease.key, set()) | lease.children
        if named and all(
            child in by_key and (by_key[child].has_sequence or by_key[child].finished)
            for child in named
        ):
            collected.append(lease)
    return collected


def parents_done(leases: Iterable[Lease], parents: AbstractSet[str]) -> bool:
    """A child may start when each parent is at SHARD_END or has no lease (cleaned up, or a
    shard that never had one: aged out, or before the initial position)."""
    pending = {lease.key for lease in leases if lease.key in parents and not lease.finished}
    return not pending
