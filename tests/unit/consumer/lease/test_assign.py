"""The leader's pure plan (consumer.lease.assign), table by table."""

from __future__ import annotations

from collections.abc import Mapping

from consumer.lease.assign import Assign, Moves, plan_moves
from consumer.lease.model import SHARD_END, Lease
from consumer.testing import lease


def plan(
    leases: list[Lease],
    live: set[str],
    *,
    gone: set[str] = frozenset(),  # type: ignore[assignment]
    draining: set[str] = frozenset(),  # type: ignore[assignment]
    returned: Mapping[str, str] | None = None,
    revoking: Mapping[str, str] | None = None,
    expired: set[str] = frozenset(),  # type: ignore[assignment]
) -> Moves:
    return plan_moves(
        leases,
        live=live,
        gone=gone,
        draining=draining,
        returned=returned or {},
        revoking=revoking or {},
        expired=lambda lease: lease.key in expired,
    )


def owned(moves: Moves) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for move in moves.assign:
        out.setdefault(move.to, []).append(move.key)
    return {worker: sorted(keys) for worker, keys in out.items()}


def test_cold_start_spreads_unowned_leases_evenly() -> None:
    moves = plan([lease(f"s{n}") for n in range(7)], {"a", "b", "c"})
    assert sorted(map(len, owned(moves).values())) == [2, 2, 3]
    assert all(move.owners == frozenset({None}) and move.counter is None for move in moves.assign)
    assert moves.revoke == {}


def test_a_balanced_fleet_stays_still() -> None:
    leases = [lease("1", "a"), lease("2", "a"), lease("3", "b"), lease("4", "b"), lease("5", "c")]
    assert plan(leases, {"a", "b", "c"}) == Moves((), {}, {"a": 2, "b": 2, "c": 1})


def test_a_new_worker_gets_its_share_by_hand_backs_never_by_taking() -> None:
    leases = [lease(f"a{n}", "a") for n in range(3)] + [lease(f"b{n}", "b") for n in range(3)]
    moves = plan(leases, {"a", "b", "c"})
    assert moves.assign == ()
    assert {worker: len(keys) for worker, keys in moves.revoke.items()} == {"a": 1, "b": 1}


def test_leases_being_handed_back_are_not_asked_for_twice() -> None:
    leases = [lease(f"a{n}", "a") for n in range(3)] + [lease(f"b{n}", "b") for n in range(3)]
    moves = plan(leases, {"a", "b", "c"}, revoking={"a2": "a", "b2": "b"})
    assert moves == Moves((), {}, {"a": 2, "b": 2, "c": 0})


def test_a_handed_back_lease_goes_to_the_worker_short_of_its_share() -> None:
    leases = [lease("a0", "a"), lease("a1", "a"), lease("a2", "a"), lease("b0", "b")]
    moves = plan(leases, {"a", "b", "c"}, returned={"a2": "a"})
    assert moves.assign == (Assign("a2", "c", frozenset({None, "a"})),)
    assert moves.loads == {"a": 2, "b": 1, "c": 1}


def test_the_leases_of_a_gone_worker_are_reassigned_conditional_on_it() -> None:
    moves = plan([lease("1", "x"), lease("2", "x"), lease("3", "a")], {"a", "b"}, gone={"x"})
    assert {move.key: move.owners for move in moves.assign} == {
        "1": frozenset({None, "x"}),
        "2": frozenset({None, "x"}),
    }
    assert owned(moves) == {"a": ["1"], "b": ["2"]}
    assert moves.loads == {"a": 2, "b": 1}


def test_an_owner_that_is_no_member_is_waited_for_until_its_counter_sat_a_lease_duration() -> None:
    leases = [lease("1", "kcl-worker", counter=7), lease("2", "a")]
    assert plan(leases, {"a", "b"}).assign == ()
    moves = plan(leases, {"a", "b"}, expired={"1"})
    assert moves.assign == (Assign("1", "b", frozenset({"kcl-worker"}), 7),)


def test_a_child_waits_until_every_parent_has_ended() -> None:
    parent = lease("p", "a")
    child = lease("c", parents=frozenset({"p"}))
    assert plan([parent, child], {"a", "b"}).assign == ()
    ended = lease("p", "a", checkpoint=SHARD_END)
    assert [m.key for m in plan([ended, child], {"a", "b"}).assign] == ["c"]
    assert [m.key for m in plan([child], {"a", "b"}).assign] == ["c"]  # parent deleted


def test_a_kcl_hand_off_under_way_is_neither_revoked_nor_taken() -> None:
    leases = [lease(f"{n}", "a", checkpoint_owner="a") for n in range(4)]
    assert plan(leases, {"a", "b"}).revoke == {}
    assert plan([lease("1", "kcl", checkpoint_owner="kcl")], {"a"}, expired={"1"}).assign == ()


def test_uneven_counts_keep_the_extra_lease_where_it_is() -> None:
    leases = [lease(f"a{n}", "a") for n in range(5)]
    moves = plan(leases, {"a", "b"})
    assert moves.revoke == {"a": ("a3", "a4")}
    assert moves.loads == {"a": 3, "b": 0}


def test_nothing_to_do_without_live_workers() -> None:
    assert plan([lease("1")], set()) == Moves()


def test_free_leases_spread_over_every_worker_short_of_its_share() -> None:
    leases = [lease(f"f{n}") for n in range(4)] + [lease(f"a{n}", "a") for n in range(4)]
    moves = plan(leases, {"a", "b", "c", "d"})
    assert moves.revoke == {"a": ("a2", "a3")}
    assert owned(moves) == {"b": ["f0", "f3"], "c": ["f1"], "d": ["f2"]}


def test_a_stopping_worker_gets_nothing_more_and_keeps_what_it_holds() -> None:
    leases = [lease("a", "a"), lease("b", "a"), lease("c"), lease("d", "b")]
    moves = plan(leases, {"b", "c"}, draining={"a"})
    assert [(m.key, m.to) for m in moves.assign] == [("c", "c")]
    assert moves.revoke == {}
