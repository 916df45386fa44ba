"""The leader's plan: which lease goes to which worker, and which to hand back for balance.

Pure and synchronous, like the planner it replaces (DESIGN §3): the leader passes the lease
table as it knows it, which workers are alive, which are gone, and the hand-backs under way;
this module answers the writes to make. It never takes a lease from a live worker: a lease
moves away from a live worker only after the worker handed it back (a *revoke*), so no two
workers ever consider one shard theirs.

Every active lease is in exactly one of these states:

- *held*: its owner is a live member; it counts towards the owner's load;
- *moving*: handed back or being handed back; it counts for nobody and goes to whoever
  needs it once the owner has let go;
- *free*: no owner, an owner that is gone (stopped beating, left, restarted), or an owner
  that is not a member (a KCL worker, a forgotten one) whose lease counter has not changed for
  a lease duration: assigned now, conditional on that owner (and counter) still being there;
- *waiting*: a parent shard not yet finished, an owner that is stopping (draining) or is no
  member and not yet expired, or a KCL 3.x hand-off under way: left alone, counted for nobody.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet

from consumer.lease.model import Lease


@dataclasses.dataclass(frozen=True, slots=True)
class Assign:
    key: str
    to: str
    owners: frozenset[str | None]  # the owners this write may replace (None: no owner)
    counter: int | None = None  # also fence on the counter (an owner that is not a member)


@dataclasses.dataclass(frozen=True, slots=True)
class Moves:
    assign: tuple[Assign, ...] = ()
    revoke: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    loads: Mapping[str, int] = dataclasses.field(default_factory=dict)  # held, after the moves


def plan_moves(
    leases: Sequence[Lease],
    *,
    live: AbstractSet[str],
    gone: AbstractSet[str],
    draining: AbstractSet[str] = frozenset(),
    returned: Mapping[str, str],
    revoking: Mapping[str, str],
    expired: Callable[[Lease], bool],
) -> Moves:
    """Decide this round's writes.

    ``live``: members that beat and may get leases. ``gone``: members whose leases may be
    reassigned (stopped beating for a lease duration, or left). ``draining``: members that
    get nothing more and keep what they hold (stopping, late, or not yet seen to beat).
    ``returned``: lease key -> the member that handed it back (revoke acknowledged, or a
    restarted member's earlier leases); the lease may still name it. ``revoking``: lease
    key -> member asked to hand it back, not yet done. ``expired``: whether a lease whose
    owner is not a member has kept its counter for a lease duration.
    """
    loads: dict[str, int] = dict.fromkeys(live, 0)
    holdings: dict[str, list[Lease]] = {worker: [] for worker in live}
    free: list[Assign] = []
    moving = 0
    unfinished = {lease.key for lease in leases if not lease.finished}
    for lease in leases:
        if lease.finished or lease.parents & unfinished:  # a child waits for its parents
            continue
        owner = lease.owner
        if lease.key in revoking:
            moving += 1
        elif lease.key in returned:
            free.append(Assign(lease.key, "", frozenset({None, returned[lease.key]})))
        elif owner is None:
            free.append(Assign(lease.key, "", frozenset({None})))
        elif owner in live:
            loads[owner] += 1
            holdings[owner].append(lease)
        elif owner in gone:
            free.append(Assign(lease.key, "", frozenset({None, owner})))
        elif owner in draining:
            continue
        elif lease.checkpoint_owner is None and expired(lease):
            free.append(Assign(lease.key, "", frozenset({owner}), lease.counter))
    if not live:
        return Moves()

    desired = _desired(loads, sum(loads.values()) + len(free) + moving)
    revoke: dict[str, tuple[str, ...]] = {}
    for worker, load in loads.items():
        excess = load - desired[worker]
        keys = sorted(lease.key for lease in holdings[worker] if lease.checkpoint_owner is None)
        if excess > 0 and keys:
            revoke[worker] = tuple(keys[-excess:])
    slots = _slots({worker: desired[worker] - loads[worker] for worker in loads})
    assigned = tuple(
        dataclasses.replace(move, to=to)
        for move, to in zip(sorted(free, key=lambda move: move.key), slots, strict=False)
    )
    after = dict(loads)
    for move in assigned:
        after[move.to] += 1
    for worker, handed in revoke.items():
        after[worker] -= len(handed)
    return Moves(assigned, revoke, after)


def _desired(loads: Mapping[str, int], total: int) -> dict[str, int]:
    """An even share each; the ``total % workers`` most loaded keep one more (fewest moves)."""
    share, extra = divmod(total, len(loads))
    order = sorted(loads, key=lambda worker: (-loads[worker], worker))
    return {worker: share + (rank < extra) for rank, worker in enumerate(order)}


def _slots(deficits: Mapping[str, int]) -> list[str]:
    """Receivers round by round, so that free leases spread over every worker short of its
    share rather than filling one worker first."""
    slots: list[str] = []
    rounds = max(deficits.values(), default=0)
    for round_ in range(rounds):
        slots.extend(sorted(w for w, deficit in deficits.items() if deficit > round_))
    return slots


def paced(moves: Moves, limit: int) -> Moves:
    """At most ``limit`` assignments and ``limit`` hand-backs; the rest wait for later rounds."""
    revoke: dict[str, tuple[str, ...]] = {}
    room = limit
    for worker, keys in moves.revoke.items():
        if room <= 0:
            break
        revoke[worker] = keys[:room]
        room -= len(revoke[worker])
    return Moves(moves.assign[:limit], revoke, moves.loads)
