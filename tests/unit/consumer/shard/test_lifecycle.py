"""The shard lifecycle state machine (DESIGN §4)."""

from __future__ import annotations

import itertools

import pytest

from consumer.shard.lifecycle import POLICIES, TRANSITIONS, Lifecycle, Reason, ShutdownPolicy, State
from kernel.errors import IllegalTransition

PAIRS = list(itertools.product(State, State))
LEGAL = [(a, b) for a, b in PAIRS if b in TRANSITIONS[a]]
ILLEGAL = [(a, b) for a, b in PAIRS if b not in TRANSITIONS[a]]


def ids(pair: tuple[State, State]) -> str:
    return f"{pair[0].name}->{pair[1].name}"


def test_transition_table_is_the_documented_one() -> None:
    assert {
        State.WAITING_ON_PARENTS: {State.INITIALIZING, State.SHUTTING_DOWN},
        State.INITIALIZING: {State.PROCESSING, State.SHUTTING_DOWN},
        State.PROCESSING: {State.SHUTTING_DOWN},
        State.SHUTTING_DOWN: {State.DONE},
        State.DONE: set(),
    } == TRANSITIONS
    assert len(LEGAL) == 6
    assert len(ILLEGAL) == len(State) ** 2 - 6


def test_starts_waiting_on_parents_without_reason() -> None:
    lifecycle = Lifecycle()
    assert lifecycle.state is State.WAITING_ON_PARENTS
    assert lifecycle.reason is None
    assert lifecycle.policy is None


@pytest.mark.parametrize("pair", LEGAL, ids=ids)
def test_legal_transition(pair: tuple[State, State]) -> None:
    start, to = pair
    lifecycle = Lifecycle(start)
    reason = Reason.REQUESTED if to is State.SHUTTING_DOWN else None
    lifecycle.advance(to, reason)
    assert lifecycle.state is to
    assert lifecycle.reason is reason


@pytest.mark.parametrize("pair", ILLEGAL, ids=ids)
def test_illegal_transition_raises_and_keeps_state(pair: tuple[State, State]) -> None:
    start, to = pair
    lifecycle = Lifecycle(start)
    reason = Reason.REQUESTED if to is State.SHUTTING_DOWN else None
    with pytest.raises(IllegalTransition, match=f"{start.name} -> {to.name}"):
        lifecycle.advance(to, reason)
    assert lifecycle.state is start
    assert lifecycle.reason is None


@pytest.mark.parametrize(
    "start", [s for s in State if State.SHUTTING_DOWN in TRANSITIONS[s]], ids=lambda s: s.name
)
def test_shutting_down_requires_a_reason(start: State) -> None:
    lifecycle = Lifecycle(start)
    with pytest.raises(IllegalTransition, match="needs a reason"):
        lifecycle.advance(State.SHUTTING_DOWN)
    assert lifecycle.state is start


@pytest.mark.parametrize("pair", [p for p in LEGAL if p[1] is not State.SHUTTING_DOWN], ids=ids)
@pytest.mark.parametrize("reason", list(Reason), ids=lambda r: r.name)
def test_reason_is_refused_for_other_states(pair: tuple[State, State], reason: Reason) -> None:
    start, to = pair
    lifecycle = Lifecycle(start)
    with pytest.raises(IllegalTransition, match="needs a reason"):
        lifecycle.advance(to, reason)
    assert lifecycle.state is start
    assert lifecycle.reason is None


@pytest.mark.parametrize("reason", list(Reason), ids=lambda r: r.name)
def test_full_path_keeps_reason_and_policy(reason: Reason) -> None:
    lifecycle = Lifecycle()
    lifecycle.advance(State.INITIALIZING)
    lifecycle.advance(State.PROCESSING)
    lifecycle.advance(State.SHUTTING_DOWN, reason)
    assert lifecycle.policy == POLICIES[reason]
    lifecycle.advance(State.DONE)
    assert (lifecycle.state, lifecycle.reason) == (State.DONE, reason)
    assert lifecycle.policy == POLICIES[reason]


@pytest.mark.parametrize(
    ("reason", "policy"),
    [
        pytest.param(Reason.LEASE_LOST, ShutdownPolicy(checkpoint=False, release=False), id="lost"),
        pytest.param(Reason.SHARD_END, ShutdownPolicy(checkpoint=True, release=True), id="end"),
        pytest.param(Reason.REQUESTED, ShutdownPolicy(checkpoint=True, release=True), id="req"),
    ],
)
def test_policies(reason: Reason, policy: ShutdownPolicy) -> None:
    assert POLICIES[reason] == policy


def test_every_reason_has_a_policy() -> None:
    assert set(POLICIES) == set(Reason)
