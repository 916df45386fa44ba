"""ShardSupervisor: one consumer per lease held, every consumer under a lease held (DESIGN §3.9).

The decision is a pure function (a table of cases); the supervisor applies it after every
change. Process-level scenarios (throttled releases, reclaims) are in test_worker_core.py.
"""

from __future__ import annotations

import pytest

from consumer.shard.supervisor import Changes, Running, reconcile

A1, A2, B1 = object(), object(), object()  # holds: A1 and A2 are two holds of lease A


@pytest.mark.parametrize(
    ("held", "running", "stopping", "expected"),
    [
        pytest.param({}, {}, False, Changes((), ()), id="nothing"),
        pytest.param({"A": A1}, {}, False, Changes(("A",), ()), id="new-lease-gets-a-consumer"),
        pytest.param(
            {"A": A1}, {"A": Running(A1, False)}, False, Changes((), ()), id="in-line-stays"
        ),
        pytest.param(
            {}, {"A": Running(A1, False)}, False, Changes((), ("A",)), id="lost-lease-cancelled"
        ),
        pytest.param(
            {}, {"A": Running(A1, True)}, False, Changes((), ()), id="finishing-not-cancelled"
        ),
        pytest.param(
            {"A": A2},
            {"A": Running(A1, False)},
            False,
            Changes((), ("A",)),
            id="replaced-hold-old-consumer-cancelled-new-waits",
        ),
        pytest.param(
            {"A": A2},
            {"A": Running(A1, True)},
            False,
            Changes((), ()),
            id="taken-back-while-releasing-waits-for-the-old-task",
        ),
        pytest.param(
            {"A": A1, "B": B1},
            {"A": Running(A1, False)},
            True,
            Changes((), ()),
            id="stopping-starts-nothing",
        ),
        pytest.param(
            {"B": B1},
            {"A": Running(A1, False)},
            True,
            Changes((), ("A",)),
            id="stopping-still-cancels-lost",
        ),
        pytest.param(
            {"B": B1, "A": A1},
            {"C": Running(object(), False)},
            False,
            Changes(("A", "B"), ("C",)),
            id="several-sorted",
        ),
    ],
)
def test_reconcile(
    held: dict[str, object],
    running: dict[str, Running[object]],
    stopping: bool,
    expected: Changes,
) -> None:
    assert reconcile(held, running, stopping=stopping) == expected


def test_after_reconciling_every_hold_has_one_consumer() -> None:
    """Applying the changes, then letting the cancelled tasks end, reaches the invariant."""
    held = {"A": A2, "B": B1}
    running = {"A": Running(A1, False), "C": Running(object(), False)}
    for _ in range(3):  # reconcile runs again whenever a task ends
        changes = reconcile(held, running, stopping=False)
        for key in changes.cancel:
            del running[key]  # the cancelled task ends
        for key in changes.start:
            running[key] = Running(held[key], False)
    assert {key: task.hold for key, task in running.items()} == held
