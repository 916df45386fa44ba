"""The lease planner (DESIGN §3): expiry on our own clock, takes, balance, losses."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

import pytest

from consumer.lease.model import SHARD_END, Lease
from consumer.lease.planner import (
    Plan,
    Seen,
    TakeReason,
    collectable,
    is_expired,
    observe,
    plan,
)
from consumer.testing import FakeClock, lease

DURATION = 10.0
ME = "me"


def plan_now(
    leases: list[Lease],
    *,
    held: set[str] | frozenset[str] = frozenset(),
    now: float = 1000.0,
    seen: dict[str, Seen] | None = None,
    seed: int = 7,
    may_take: bool = True,
    me: str = ME,
) -> Plan:
    """One pass on a table just observed (nothing is expired unless ``seen`` says so)."""
    observed = observe(seen or {}, leases, now)
    return plan(
        leases,
        observed,
        me=me,
        held=frozenset(held),
        now=now,
        duration=DURATION,
        rng=random.Random(seed),
        may_take=may_take,
    )


def owned(counts: dict[str | None, int]) -> list[Lease]:
    """Leases shard-000, shard-001, ... owned as ``counts`` says (None: unowned)."""
    leases: list[Lease] = []
    for owner, count in counts.items():
        for _ in range(count):
            leases.append(lease(f"shard-{len(leases):03d}", owner=owner))
    return leases


def keys_of(leases: list[Lease], owner: str | None) -> set[str]:
    return {lease.key for lease in leases if lease.owner == owner}


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

    def reasons_at(now: float) -> list[TakeReason]:
        nonlocal seen
        clock.now = now
        seen = observe(seen, table, clock())
        result = plan(
            table,
            seen,
            me=ME,
            held=frozenset(),
            now=clock(),
            duration=DURATION,
            rng=random.Random(1),
        )
        return [take.reason for take in result.takes]

    assert reasons_at(100.0 + DURATION - 0.001) == []  # unchanged, not for long enough yet
    table = [lease("a", owner="other", counter=6)]  # the owner renews at t0 + duration / 2...
    assert reasons_at(100.0 + DURATION / 2 + 0.5) == []
    # ...so a full duration after the first sighting it is still alive,
    assert reasons_at(100.0 + DURATION) == []
    assert reasons_at(100.0 + DURATION / 2 + 0.5 + DURATION - 0.001) == []
    # and it expires a full duration after we saw the counter change.
    assert reasons_at(100.0 + DURATION / 2 + 0.5 + DURATION) == [TakeReason.EXPIRED]


def test_never_seen_lease_is_not_expired_even_long_after() -> None:
    table = [lease("a", owner="other", counter=5)]
    result = plan(
        table, {}, me=ME, held=frozenset(), now=1e9, duration=DURATION, rng=random.Random(1)
    )
    assert result.takes == ()
    assert result.live_workers == 2  # the unseen owner counts as alive


def test_expired_owner_is_not_a_live_worker() -> None:
    table = [lease("a", owner="dead", counter=5), lease("b", owner="dead", counter=5)]
    seen = {"a": Seen(5, 0.0), "b": Seen(5, 0.0)}
    result = plan(
        table, seen, me=ME, held=frozenset(), now=100.0, duration=DURATION, rng=random.Random(1)
    )
    assert result.live_workers == 1
    assert result.target == 2
    assert sorted((t.lease.key, t.reason) for t in result.takes) == [
        ("a", TakeReason.EXPIRED),
        ("b", TakeReason.EXPIRED),
    ]


# --- takes ----------------------------------------------------------------------------------


def test_fresh_table_single_worker_takes_everything() -> None:
    table = owned({None: 4})
    result = plan_now(table)
    assert sorted(t.lease.key for t in result.takes) == sorted(keys_of(table, None))
    assert {t.reason for t in result.takes} == {TakeReason.UNOWNED}
    assert (result.target, result.live_workers, result.lost) == (4, 1, ())


def test_owned_by_me_but_not_held_is_reclaimed() -> None:
    table = [lease("a", owner=ME), lease("b", owner=ME)]
    result = plan_now(table)
    assert sorted((t.lease.key, t.reason) for t in result.takes) == [
        ("a", TakeReason.RECLAIM),
        ("b", TakeReason.RECLAIM),
    ]
    assert result.live_workers == 1  # our own name is not another live worker


def test_reclaim_comes_before_unowned() -> None:
    # 4 active, 2 live workers: target 2; we hold 1, so exactly one more may be taken.
    table = [
        lease("held", owner=ME),
        lease("peer", owner="peer"),
        lease("mine-in-table", owner=ME),
        lease("free", owner=None),
    ]
    result = plan_now(table, held={"held"})
    assert [(t.lease.key, t.reason) for t in result.takes] == [
        ("mine-in-table", TakeReason.RECLAIM)
    ]


def test_unowned_comes_before_expired() -> None:
    table = [
        lease("held", owner=ME, counter=3),
        lease("peer", owner="peer", counter=3),
        lease("stale", owner="dead", counter=3),
        lease("free", owner=None, counter=3),
    ]
    seen = {
        "held": Seen(3, 995.0),
        "peer": Seen(3, 995.0),
        "stale": Seen(3, 0.0),
        "free": Seen(3, 995.0),
    }
    result = plan_now(table, held={"held"}, seen=seen)
    assert result.target == 2
    assert [(t.lease.key, t.reason) for t in result.takes] == [("free", TakeReason.UNOWNED)]


def test_no_take_beyond_target_even_if_unowned_remain() -> None:
    table = [lease("a", owner=ME), lease("b", owner=ME), lease("c", "peer"), lease("d")]
    result = plan_now(table, held={"a", "b"})
    assert result.target == 2
    assert result.takes == ()


def test_takes_are_limited_to_target_and_shuffled_by_rng() -> None:
    table = owned({"peer": 1, None: 7})  # 8 active, 2 live workers: target 4
    chosen = set()
    for seed in range(10):
        result = plan_now(table, seed=seed)
        assert len(result.takes) == 4
        assert {t.reason for t in result.takes} == {TakeReason.UNOWNED}
        chosen.add(frozenset(t.lease.key for t in result.takes))
    assert len(chosen) > 1  # workers starting together do not all race for the same leases


def test_same_seed_same_plan() -> None:
    table = owned({"peer": 1, None: 9})
    assert plan_now(table, seed=42) == plan_now(table, seed=42)


def test_finished_leases_are_never_taken_and_do_not_count_toward_target() -> None:
    table = [
        lease("done-1", checkpoint=SHARD_END),
        lease("done-2", owner="peer", checkpoint=SHARD_END),
        lease("live-1"),
        lease("live-2"),
    ]
    result = plan_now(table)
    assert sorted(t.lease.key for t in result.takes) == ["live-1", "live-2"]
    assert result.target == 2
    assert result.live_workers == 1  # a peer owning only finished leases is not counted


def test_finished_expired_lease_is_not_taken() -> None:
    table = [lease("done", owner="dead", counter=4, checkpoint=SHARD_END)]
    result = plan_now(table, seen={"done": Seen(4, 0.0)})
    assert result.takes == ()
    assert result.target == 0


def test_may_take_false_takes_nothing_but_reports_lost() -> None:
    table = [lease("a", owner="peer"), lease("b"), lease("c")]
    result = plan_now(table, held={"a"}, may_take=False)
    assert result.takes == ()
    assert result.lost == ("a",)


# --- lost -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "held", "lost"),
    [
        pytest.param([lease("a", owner=ME)], {"a"}, (), id="still-mine"),
        pytest.param([lease("a", owner="peer")], {"a"}, ("a",), id="owner-changed"),
        pytest.param([lease("a", owner=None)], {"a"}, ("a",), id="owner-cleared"),
        pytest.param([], {"a"}, ("a",), id="vanished"),
        pytest.param(
            [lease("a", owner=ME), lease("b", owner="peer")],
            {"c", "b", "a"},
            ("b", "c"),
            id="several-sorted",
        ),
        pytest.param([lease("a", owner="peer")], set(), (), id="not-held-not-lost"),
    ],
)
def test_lost(table: list[Lease], held: set[str], lost: tuple[str, ...]) -> None:
    assert plan_now(table, held=held).lost == lost


def test_lost_lease_does_not_count_as_mine() -> None:
    # We think we hold a and b, but b went to the peer: we have 1 of target 2, so we take c.
    table = [lease("a", owner=ME), lease("b", owner="peer"), lease("c"), lease("d", "peer")]
    result = plan_now(table, held={"a", "b"})
    assert result.lost == ("b",)
    assert [(t.lease.key, t.reason) for t in result.takes] == [("c", TakeReason.UNOWNED)]


# --- stealing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("counts", "mine", "victim"),
    [
        pytest.param({"a": 3}, 1, "a", id="victim-above-target"),
        pytest.param({"a": 4}, 0, "a", id="one-per-pass-although-two-needed"),
        pytest.param({"a": 2, "b": 2}, 0, "a", id="victim-at-target-but-two-ahead"),
        pytest.param({"a": 1, "b": 3}, 0, "b", id="most-loaded-is-the-victim"),
        pytest.param({"b": 2, "a": 2}, 0, "a", id="tie-broken-by-name"),
    ],
)
def test_steals_exactly_one_from_most_loaded(
    counts: dict[str | None, int], mine: int, victim: str
) -> None:
    table = owned({ME: mine, **counts})
    result = plan_now(table, held=keys_of(table, ME))
    assert len(result.takes) == 1
    (take,) = result.takes
    assert take.reason is TakeReason.STEAL
    assert take.lease.owner == victim


@pytest.mark.parametrize(
    ("counts", "mine"),
    [
        pytest.param({"a": 2, "b": 1}, 1, id="2-1-1-on-4"),
        pytest.param({"a": 1, "b": 2}, 1, id="1-2-1-on-4"),
        pytest.param({"a": 3}, 2, id="3-2-on-5"),
        pytest.param({"a": 3, "b": 3, "c": 2}, 2, id="3-3-2-2-on-10"),
        pytest.param({"a": 1}, 0, id="1-0-on-1"),
        pytest.param({"a": 2}, 1, id="2-1-on-3"),
    ],
)
def test_within_one_of_even_no_steal(counts: dict[str | None, int], mine: int) -> None:
    table = owned({ME: mine, **counts})
    result = plan_now(table, held=keys_of(table, ME))
    assert result.takes == ()


def test_never_steals_when_at_target() -> None:
    # "a" is above target, but we already have our share: levelling it is "b"'s job.
    table = owned({ME: 2, "a": 3, "b": 1})
    result = plan_now(table, held=keys_of(table, ME))
    assert (result.target, result.live_workers) == (2, 3)
    assert result.takes == ()
    # Same table seen by "b", which is below target: it steals from "a".
    result = plan_now(table, me="b", held=keys_of(table, "b"))
    assert [(t.reason, t.lease.owner) for t in result.takes] == [(TakeReason.STEAL, "a")]


def test_unowned_is_preferred_to_stealing() -> None:
    table = owned({"a": 3, None: 1})
    result = plan_now(table)
    assert [t.reason for t in result.takes] == [TakeReason.UNOWNED]


def test_stable_fleet_produces_no_takes_for_anyone() -> None:
    for counts in ({"w1": 2, "w2": 1, "w3": 1}, {"w1": 3, "w2": 2}):
        table = owned(counts)  # type: ignore[arg-type]
        for worker in counts:
            result = plan_now(table, me=worker, held=keys_of(table, worker))
            assert result.takes == (), (counts, worker)
            assert result.lost == ()


# --- a fleet converging ---------------------------------------------------------------------


class Fleet:
    """Workers sharing an in-memory lease table; writes increment the counter like the
    repository does, and conditional writes on a stale counter lose."""

    def __init__(self, shards: int, workers: list[str], seed: int) -> None:
        self.table = {f"shard-{i:03d}": lease(f"shard-{i:03d}") for i in range(shards)}
        self.workers = workers
        self.held: dict[str, set[str]] = {w: set() for w in workers}
        self.seen: dict[str, dict[str, Seen]] = {w: {} for w in workers}
        self.rng = {w: random.Random(seed * 1000 + n) for n, w in enumerate(workers)}
        self.clock = FakeClock()
        self.takes: list[tuple[str, str, TakeReason]] = []

    def renew_all(self) -> None:
        for worker, keys in self.held.items():
            for key in keys:
                current = self.table[key]
                if current.owner == worker:
                    self.table[key] = dataclasses.replace(current, counter=current.counter + 1)

    def take_pass(self, me: str) -> Plan:
        now = self.clock()
        leases = [self.table[k] for k in sorted(self.table)]
        self.seen[me] = observe(self.seen[me], leases, now)
        result = plan(
            leases,
            self.seen[me],
            me=me,
            held=frozenset(self.held[me]),
            now=now,
            duration=DURATION,
            rng=self.rng[me],
        )
        for key in result.lost:
            self.held[me].discard(key)
        for take in result.takes:
            current = self.table[take.lease.key]
            if current.counter != take.lease.counter:
                continue  # lost the race
            self.table[current.key] = dataclasses.replace(
                current, owner=me, counter=current.counter + 1
            )
            self.held[me].add(current.key)
            self.takes.append((me, current.key, take.reason))
        return result

    def round(self) -> list[Plan]:
        self.clock.advance(1.0)
        self.renew_all()
        return [self.take_pass(worker) for worker in self.workers]

    def counts(self) -> list[int]:
        owners = Counter(lease.owner for lease in self.table.values())
        return sorted((owners[w] for w in self.workers), reverse=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    ("shards", "workers", "expected"),
    [
        pytest.param(4, 2, [2, 2], id="4-shards-2-workers"),
        pytest.param(4, 3, [2, 1, 1], id="4-shards-3-workers"),
        pytest.param(10, 4, [3, 3, 2, 2], id="10-shards-4-workers"),
        pytest.param(5, 2, [3, 2], id="5-shards-2-workers"),
    ],
)
def test_fleet_converges_and_then_stays_still(
    shards: int, workers: int, expected: list[int], seed: int
) -> None:
    fleet = Fleet(shards, [f"w{i}" for i in range(workers)], seed)
    for _ in range(3 * shards):
        fleet.round()
    assert fleet.counts() == expected
    assert all(fleet.held[w] == keys_of(list(fleet.table.values()), w) for w in fleet.workers)
    settled = len(fleet.takes)
    for _ in range(5):
        plans = fleet.round()
        assert all(p.takes == () for p in plans)
    assert len(fleet.takes) == settled
    assert fleet.counts() == expected


def test_fleet_first_worker_takes_all_then_second_steals_one_per_pass() -> None:
    fleet = Fleet(4, ["w0", "w1"], seed=3)
    fleet.clock.advance(1.0)
    first = fleet.take_pass("w0")
    assert len(first.takes) == 4
    assert fleet.counts() == [4, 0]
    steals = []
    for _ in range(2):
        fleet.clock.advance(1.0)
        fleet.renew_all()
        result = fleet.take_pass("w1")
        steals.append([t.reason for t in result.takes])
    assert steals == [[TakeReason.STEAL], [TakeReason.STEAL]]
    assert fleet.counts() == [2, 2]
    lost = fleet.take_pass("w0").lost
    assert len(lost) == 2
    assert fleet.held["w0"] == keys_of(list(fleet.table.values()), "w0")


def test_fleet_takes_over_a_dead_workers_leases_after_duration() -> None:
    fleet = Fleet(4, ["w0", "w1"], seed=5)
    for _ in range(12):
        fleet.round()
    assert fleet.counts() == [2, 2]
    fleet.workers = ["w0"]  # w1 dies: no more renewals or passes
    dead_keys = set(fleet.held.pop("w1"))
    expired_at = None
    for step in range(1, 20):
        fleet.clock.advance(1.0)
        fleet.renew_all()
        if fleet.take_pass("w0").takes:
            expired_at = step
            break
    assert expired_at == DURATION  # not a pass earlier
    assert {key for _, key, reason in fleet.takes if reason is TakeReason.EXPIRED} == dead_keys


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
