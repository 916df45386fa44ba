"""Lease-table rules (DESIGN §3): expiry on our own clock, collectable leases, parents done.

The leader's assignment plan that replaced the take/steal planner is tested in test_assign.py.
"""

from __future__ import annotations

import pytest

from consumer.lease.model import SHARD_END, Lease
from consumer.lease.planner import Seen, collectable, is_expired, observe, parents_done
from consumer.testing import FakeClock, lease

DURATION = 10.0


# --- observe / is_expired -------------------------------------------------------------------


def test_observe_records_first_sighting_at_now() -> None:
    seen = observe({}, [lease("a", counter=3), lease("b", counter=9)], now=50.0)
    assert seen == {"a": Seen(3, 50.0), "b": Seen(9, 50.0)}


def test_observe_keeps_since_while_counter_unchanged() -> None:
    seen = observe({"a": Seen(3, 50.0)}, [lease("a", counter=3)], now=58.0)
    assert seen == {"a": Seen(3, 50.0)}


def test_observe_restarts_clock_when_counter_changes() -> None:
    seen = observe({"a": Seen(3, 50.0)}, [lease("a", counter=4)], now=58.0)
    assert seen == {"a": Seen(4, 58.0)}


def test_observe_forgets_leases_that_vanished() -> None:
    seen = observe({"a": Seen(3, 50.0), "gone": Seen(1, 10.0)}, [lease("a", counter=3)], 60.0)
    assert seen == {"a": Seen(3, 50.0)}


@pytest.mark.parametrize(
    ("seen", "now", "expected"),
    [
        pytest.param(None, 10_000.0, False, id="never-seen"),
        pytest.param(Seen(1, 100.0), 100.0, False, id="just-seen"),
        pytest.param(Seen(1, 100.0), 109.999, False, id="just-before-duration"),
        pytest.param(Seen(1, 100.0), 110.0, True, id="exactly-duration"),
        pytest.param(Seen(1, 100.0), 500.0, True, id="long-after"),
    ],
)
def test_is_expired(seen: Seen | None, now: float, expected: bool) -> None:
    assert is_expired(seen, now, DURATION) is expected


def test_expiry_counts_on_our_clock_and_counter_change_restarts_it() -> None:
    clock = FakeClock(start=100.0)
    table = [lease("a", owner="other", counter=5)]
    seen = observe({}, table, clock())

    def expired_at(now: float) -> bool:
        nonlocal seen
        clock.now = now
        seen = observe(seen, table, clock())
        return is_expired(seen.get("a"), clock(), DURATION)

    assert not expired_at(100.0 + DURATION - 0.001)  # unchanged, not for long enough yet
    table = [lease("a", owner="other", counter=6)]  # the owner writes at t0 + duration / 2...
    assert not expired_at(100.0 + DURATION / 2 + 0.5)
    # ...so a full duration after the first sighting it is still alive,
    assert not expired_at(100.0 + DURATION)
    assert not expired_at(100.0 + DURATION / 2 + 0.5 + DURATION - 0.001)
    # and it expires a full duration after we saw the counter change.
    assert expired_at(100.0 + DURATION / 2 + 0.5 + DURATION)


def test_a_lease_never_seen_is_not_expired_even_long_after() -> None:
    seen = observe({}, [lease("b", owner="other", counter=5)], now=0.0)
    assert not is_expired(seen.get("a"), 1e9, DURATION)


COLLECT_CASES = [
    pytest.param([], [], id="empty"),
    pytest.param([lease("P", checkpoint="SHARD_END")], [], id="finished-without-children"),
    pytest.param(
        [lease("P", checkpoint="SHARD_END"), lease("C", parents=frozenset({"P"}))],
        [],
        id="child-not-started",
    ),
    pytest.param(
        [
            lease("P", checkpoint="SHARD_END"),
            lease("C", checkpoint="123", parents=frozenset({"P"})),
        ],
        ["P"],
        id="child-started",
    ),
    pytest.param(
        [
            lease("P", checkpoint="SHARD_END"),
            lease("C1", checkpoint="123", parents=frozenset({"P"})),
            lease("C2", parents=frozenset({"P"})),
        ],
        [],
        id="one-child-of-two-started",
    ),
    pytest.param(
        [
            lease("A", checkpoint="SHARD_END"),
            lease("B", checkpoint="SHARD_END"),
            lease("M", checkpoint="SHARD_END", parents=frozenset({"A", "B"})),
        ],
        ["A", "B"],
        id="merge-child-finished-too",
    ),
    pytest.param(
        [lease("P", checkpoint="555"), lease("C", checkpoint="123", parents=frozenset({"P"}))],
        [],
        id="parent-not-finished",
    ),
]


@pytest.mark.parametrize(("leases", "expected"), COLLECT_CASES)
def test_collectable(leases: list[Lease], expected: list[str]) -> None:
    assert sorted(x.key for x in collectable(leases)) == expected


PARENT_CASES = [
    pytest.param([], frozenset({"P"}), True, id="parent-without-a-lease"),
    pytest.param([lease("P", checkpoint=SHARD_END)], frozenset({"P"}), True, id="parent-ended"),
    pytest.param([lease("P", checkpoint="555")], frozenset({"P"}), False, id="parent-unfinished"),
    pytest.param([lease("P", owner="w2")], frozenset({"P"}), False, id="parent-not-started"),
    pytest.param(
        [lease("A", checkpoint=SHARD_END), lease("B", checkpoint="555")],
        frozenset({"A", "B"}),
        False,
        id="merge-one-parent-unfinished",
    ),
    pytest.param(
        [lease("A", checkpoint=SHARD_END)], frozenset({"A", "B"}), True, id="merge-one-cleaned-up"
    ),
    pytest.param(
        [lease("X", checkpoint="555"), lease("P", checkpoint=SHARD_END)],
        frozenset({"P"}),
        True,
        id="other-leases-do-not-count",
    ),
    pytest.param([lease("X")], frozenset(), True, id="no-parents"),
]


@pytest.mark.parametrize(("leases", "parents", "expected"), PARENT_CASES)
def test_parents_done(leases: list[Lease], parents: frozenset[str], expected: bool) -> None:
    assert parents_done(leases, parents) is expected
