"""The shard lifecycle as a transition table (DESIGN §4). Pure; an illegal move raises."""

from __future__ import annotations

import dataclasses
import enum

from kernel.errors import IllegalTransition


class State(enum.Enum):
    WAITING_ON_PARENTS = "waiting_on_parents"
    INITIALIZING = "initializing"
    PROCESSING = "processing"
    SHUTTING_DOWN = "shutting_down"
    DONE = "done"


class Reason(enum.Enum):
    LEASE_LOST = "lease_lost"  # someone else may own it: never checkpoint
    SHARD_END = "shard_end"  # every record read: checkpoint SHARD_END
    REQUESTED = "requested"  # we are stopping or handing over: checkpoint, then release


TRANSITIONS: dict[State, frozenset[State]] = {
    State.WAITING_ON_PARENTS: frozenset({State.INITIALIZING, State.SHUTTING_DOWN}),
    State.INITIALIZING: frozenset({State.PROCESSING, State.SHUTTING_DOWN}),
    State.PROCESSING: frozenset({State.SHUTTING_DOWN}),
    State.SHUTTING_DOWN: frozenset({State.DONE}),
    State.DONE: frozenset(),
}


@dataclasses.dataclass(frozen=True, slots=True)
class ShutdownPolicy:
    checkpoint: bool  # write the last durable position before letting go
    release: bool  # clear the owner so that a peer takes it at once


POLICIES: dict[Reason, ShutdownPolicy] = {
    Reason.LEASE_LOST: ShutdownPolicy(checkpoint=False, release=False),
    Reason.SHARD_END: ShutdownPolicy(checkpoint=True, release=True),
    Reason.REQUESTED: ShutdownPolicy(checkpoint=True, release=True),
}


class Lifecycle:
    """Current state of one shard consumer; ``reason`` is set on entering SHUTTING_DOWN."""

    def __init__(self, state: State = State.WAITING_ON_PARENTS) -> None:
        self.state = state
        self.reason: Reason | None = None

    def advance(self, to: State, reason: Reason | None = None) -> None:
        if to not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"{self.state.name} -> {to.name}")
        if (to is State.SHUTTING_DOWN) != (reason is not None):
            raise IllegalTransition(f"{to.name} needs a reason exactly when shutting down")
        self.state = to
        if reason is not None:
            self.reason = reason

    @property
    def policy(self) -> ShutdownPolicy | None:
        return POLICIES[self.reason] if self.reason else None
