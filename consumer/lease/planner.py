"""Lease-table rules: pure, synchronous, time as an argument (DESIGN §3).

Expiry never compares clocks across hosts: a counter (a lease's ``leaseCounter``, a member's
beat, the leader item's counter) is expired when it has not changed for ``duration`` seconds of
*our* clock since we first saw that value. Also here: which finished leases nobody needs any
more, and when a child shard may start. The leader's assignment plan is in
:mod:`consumer.lease.assign`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet

from consumer.lease.members import Member
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


def observe_beats(
    previous: Mapping[str, Seen], members: Mapping[str, Member], now: float
) -> dict[str, Seen]:
    """A changed beat restarts the member's expiry clock (as a lease's counter does)."""
    seen: dict[str, Seen] = {}
    for worker, member in members.items():
        before = previous.get(worker)
        keep = before is not None and before.counter == member.beat
        seen[worker] = before if keep and before is not None else Seen(member.beat, now)
    return seen
