"""The leader's view of the members (pure, time a parameter): gone, draining, live; restarts
and hand-backs."""

from __future__ import annotations

import pytest

from consumer.lease.members import Member
from consumer.lease.roster import Observed, Roster
from consumer.testing import lease

DURATION = 10.0
BEAT = 1.0


def member(
    worker: str,
    beat: int,
    incarnation: str = "i1",
    revokes: frozenset[str] = frozenset(),
    leaving: bool = False,
    draining: bool = False,
) -> Member:
    return Member(worker, beat, incarnation, revokes=revokes, leaving=leaving, draining=draining)


def observed_after(*rounds: tuple[float, list[Member]]) -> Observed:
    roster = Roster("me", DURATION, BEAT)
    seen = [roster.observe({m.worker_id: m for m in members}, {}, now) for now, members in rounds]
    return seen[-1]


@pytest.mark.parametrize(
    ("rounds", "gone", "draining", "live"),
    [
        pytest.param([(0.0, [member("a", 1)])], set(), {"a"}, set(), id="first-sight-draining"),
        pytest.param(
            [(0.0, [member("a", 1)]), (1.0, [member("a", 2)])], set(), set(), {"a"}, id="beating"
        ),
        pytest.param(
            [(0.0, [member("a", 1)]), (1.0, [member("a", 2)]), (3.5, [member("a", 2)])],
            set(),
            {"a"},
            set(),
            id="late-draining",
        ),
        pytest.param(
            [(0.0, [member("a", 1)]), (1.0, [member("a", 2)]), (11.5, [member("a", 2)])],
            {"a"},
            set(),
            set(),
            id="silent-a-lease-duration-gone",
        ),
        pytest.param(
            [(0.0, [member("a", 1)]), (1.0, [member("a", 2, leaving=True)])],
            {"a"},
            set(),
            set(),
            id="leaving-gone",
        ),
        pytest.param(
            [(0.0, [member("a", 1)]), (1.0, [member("a", 2, draining=True)])],
            set(),
            {"a"},
            set(),
            id="stopping-draining",
        ),
    ],
)
def test_gone_draining_live(
    rounds: list[tuple[float, list[Member]]], gone: set[str], draining: set[str], live: set[str]
) -> None:
    seen = observed_after(*rounds)
    assert (set(seen.gone), set(seen.draining), set(seen.live)) == (gone, draining, live)


def test_a_restarted_member_hands_back_what_names_it() -> None:
    roster = Roster("me", DURATION, BEAT)
    table = {"s1": lease("s1", owner="a"), "s2": lease("s2", owner="b")}
    roster.revoking["s1"] = "a"
    roster.observe({"a": member("a", 1)}, table, 0.0)
    seen = roster.observe({"a": member("a", 1, incarnation="i2")}, table, 1.0)
    assert seen.restarted == {"a"} and seen.changed
    assert roster.returned == {"s1": "a"} and roster.revoking == {}


def test_a_hand_back_is_noted_once_the_member_no_longer_lists_it() -> None:
    roster = Roster("me", DURATION, BEAT)
    roster.revoking["s1"] = "a"
    roster.observe({"a": member("a", 1, revokes=frozenset({"s1"}))}, {}, 0.0)
    assert roster.revoking == {"s1": "a"}
    roster.observe({"a": member("a", 2)}, {}, 1.0)
    assert (roster.revoking, roster.returned) == ({}, {"s1": "a"})


def test_our_own_beat_counts_once_our_incarnation_landed_and_no_peer_is_pending() -> None:
    roster = Roster("me", DURATION, BEAT)
    seen = roster.observe({"me": member("me", 1)}, {}, 0.0, my_incarnation="i1")
    assert seen.live == {"me"}
    roster = Roster("me", DURATION, BEAT)
    both = {"me": member("me", 1), "b": member("b", 1)}
    seen = roster.observe(both, {}, 0.0, my_incarnation="i1")
    assert "me" not in seen.live, "a peer first seen just now may yet beat"


def test_a_member_late_by_two_beats_is_reported_once_per_stillness_with_its_expiry() -> None:
    roster = Roster("me", DURATION, BEAT)

    def late_at(now: float, beat: int, leaving: bool = False) -> dict[str, float]:
        members = {"a": member("a", beat, leaving=leaving), "me": member("me", 1)}
        roster.observe(members, {}, now)
        return roster.newly_late(members, now)

    assert late_at(0.0, 1) == {}
    assert late_at(2.0, 1) == {}, "two beat intervals still is not late yet"
    assert late_at(2.5, 1) == {"a": DURATION}, "gone a lease duration after first seen"
    assert late_at(3.5, 1) == {}, "this stillness was reported"
    assert late_at(4.5, 2) == {}, "it beats again"
    assert late_at(7.0, 2) == {"a": 4.5 + DURATION}, "a new stillness"
    assert late_at(20.0, 3) == {}
    assert late_at(20.0 + DURATION, 3) == {}, "gone already: nothing to warn of"
    assert late_at(40.0, 4) == {}
    assert late_at(43.0, 4, leaving=True) == {}, "a leaving member handed its leases back"
