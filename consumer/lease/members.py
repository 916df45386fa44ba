"""The membership table: one small item per worker, and the leader's item (DESIGN §3).

A worker proves it is alive by its *beat*: an unconditional UpdateItem of its own item that
adds one to ``beat`` and answers the item as written. The elected leader writes into that item
what it wants of the worker (``grants``: leases it assigned to the worker; ``revokes``: leases
to hand back for balance), so the worker learns of them from its own beat's answer, without a
read. The worker acknowledges them in a later beat by deleting them from the sets.

The leader holds the ``@leader`` item as a lease: a counter it advances every beat interval,
conditional on the counter it last wrote. Nobody compares clocks: a leader (or a worker) is
gone when its counter has not changed for the lease duration of the observer's own clock.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

LEADER_KEY = "@leader"  # worker ids may not start with "@"


@dataclasses.dataclass(frozen=True, slots=True)
class Member:
    """A worker's item as last read or written."""

    worker_id: str
    beat: int  # advanced by every beat: the liveness counter
    incarnation: str  # a new process, or a worker that self-fenced, starts a new one
    grants: frozenset[str] = frozenset()  # leases the leader assigned, not yet acknowledged
    revokes: frozenset[str] = frozenset()  # leases to hand back, not yet acknowledged
    leaving: bool = False  # a graceful stop: the worker has released what it held
    draining: bool = False  # a graceful stop under way: no more leases for it
    ends: int = 0  # shard ends this worker has written (the leader reads the table again)
    successor: bool = False  # named by the leader: watch the leader item closely
    pokes: int = 0  # a leaving worker asked the leader (this member) for a round now
    # The leader expects to grant this member leases of a member whose beat stands still,
    # ``expect_s`` seconds after it wrote so (``expects`` counts the warnings): the member
    # beats more often around then, so it learns of the grant sooner than a beat on.
    expects: int = 0
    expect_s: float = 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class Leadership:
    """The leader item as last read or written; ``owner`` None when released."""

    owner: str | None
    counter: int
    successor: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Beat:
    """What a worker writes with one beat."""

    incarnation: str
    acked_grants: frozenset[str] = frozenset()
    acked_revokes: frozenset[str] = frozenset()
    ends: int = 0
    leaving: bool = False
    draining: bool = False
    fresh: bool = False  # the first beat of an incarnation: drop grants and revokes meant
    # for an earlier one


class MemberStore(Protocol):
    """The membership table as the worker and the leader use it. Conditional writes answer
    None (or False) when their condition failed: a lost race is a return value."""

    async def beat(self, worker_id: str, beat: Beat) -> Member: ...

    async def members(self) -> list[Member]:
        """Every worker's item, read consistently (expiry is judged on what it shows)."""
        ...

    async def grant(self, member: Member, keys: frozenset[str]) -> bool:
        """Add to a worker's grants, conditional on its incarnation being ``member``'s: a
        worker that restarted (or fenced itself) since never sees a grant meant for the one
        before, and a worker that left (beat its last) sees none at all. False when the
        condition failed."""
        ...

    async def revoke(self, member: Member, keys: frozenset[str]) -> bool: ...

    async def name_successor(self, worker_id: str, successor: bool) -> bool: ...

    async def poke(self, worker_id: str) -> bool:
        """Ask the leader for a round now (it learns of it from its next beat's answer)."""
        ...

    async def expect(self, member: Member, seconds: float) -> bool:
        """Warn a worker of grants ``seconds`` from now, conditional as :meth:`grant` is."""
        ...

    async def forget(self, member: Member) -> bool:
        """Delete a gone worker's item unless it beat since ``member`` was read."""
        ...

    async def leader(self) -> Leadership | None: ...

    async def claim_leadership(self, me: str, seen: Leadership | None) -> Leadership | None:
        """Become leader: the item is absent (``seen`` None), or unchanged since ``seen``."""
        ...

    async def renew_leadership(
        self, current: Leadership, successor: str | None
    ) -> Leadership | None: ...

    async def release_leadership(self, current: Leadership) -> bool: ...
