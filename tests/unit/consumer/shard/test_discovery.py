"""Shard discovery: ListShards parsing and which leases a sync creates (DESIGN §3.6)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from consumer.lease.model import AT_TIMESTAMP, LATEST, TRIM_HORIZON
from consumer.metrics import Metrics
from consumer.shard.discovery import (
    CREATE_IN_FLIGHT,
    Lineage,
    NewLease,
    Shard,
    list_shards,
    new_leases,
    shard_from_api,
    waves,
)


def shard(shard_id: str, *parents: str, closed: bool = False) -> Shard:
    return Shard(shard_id, frozenset(parents), closed)


def plan(shards: list[Shard], existing: set[str], position: str) -> dict[str, tuple[str, set[str]]]:
    created = new_leases(shards, existing, position)
    assert len({n.shard_id for n in created}) == len(created)  # no lease twice
    return {n.shard_id: (n.checkpoint, set(n.parents)) for n in created}


# A root split once: P (closed) -> C1, C2 (open); R is an unrelated open root.
SPLIT = [
    shard("P", closed=True),
    shard("C1", "P"),
    shard("C2", "P"),
    shard("R"),
]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(
            {"ShardId": "s0", "SequenceNumberRange": {"StartingSequenceNumber": "1"}},
            Shard("s0", frozenset(), closed=False),
            id="open-root",
        ),
        pytest.param(
            {
                "ShardId": "s1",
                "ParentShardId": "s0",
                "SequenceNumberRange": {"StartingSequenceNumber": "1", "EndingSequenceNumber": "9"},
            },
            Shard("s1", frozenset({"s0"}), closed=True),
            id="closed-child",
        ),
        pytest.param(
            {"ShardId": "m", "ParentShardId": "a", "AdjacentParentShardId": "b"},
            Shard("m", frozenset({"a", "b"}), closed=False),
            id="merge-child-no-range",
        ),
        pytest.param(
            {"ShardId": "x", "ParentShardId": "", "AdjacentParentShardId": None},
            Shard("x", frozenset(), closed=False),
            id="empty-parents-ignored",
        ),
    ],
)
def test_shard_from_api(raw: dict[str, Any], expected: Shard) -> None:
    assert shard_from_api(raw) == expected


class FakeKinesis:
    def __init__(self, pages: list[dict[str, Any]]) -> None:
        self.pages = pages
        self.requests: list[dict[str, Any]] = []

    async def list_shards(self, **kwargs: Any) -> dict[str, Any]:
        self.requests.append(kwargs)
        return self.pages[len(self.requests) - 1]


async def test_list_shards_follows_next_token_sent_alone() -> None:
    kinesis = FakeKinesis(
        [
            {"Shards": [{"ShardId": "a"}], "NextToken": "t1"},
            {"Shards": [{"ShardId": "b", "ParentShardId": "a"}], "NextToken": "t2"},
            {"Shards": []},
        ]
    )
    shards = await list_shards(kinesis, "stream")  # type: ignore[arg-type]
    assert shards == [shard("a"), shard("b", "a")]
    assert kinesis.requests == [{"StreamName": "stream"}, {"NextToken": "t1"}, {"NextToken": "t2"}]


def test_trim_horizon_creates_every_shard() -> None:
    assert plan(SPLIT, set(), TRIM_HORIZON) == {
        "P": (TRIM_HORIZON, set()),
        "C1": (TRIM_HORIZON, {"P"}),
        "C2": (TRIM_HORIZON, {"P"}),
        "R": (TRIM_HORIZON, set()),
    }


def test_at_timestamp_roots_start_at_timestamp_children_at_trim_horizon() -> None:
    assert plan(SPLIT, set(), AT_TIMESTAMP) == {
        "P": (AT_TIMESTAMP, set()),
        "C1": (TRIM_HORIZON, {"P"}),
        "C2": (TRIM_HORIZON, {"P"}),
        "R": (AT_TIMESTAMP, set()),
    }


def test_latest_skips_closed_roots_and_starts_open_shards_at_latest() -> None:
    assert plan(SPLIT, set(), LATEST) == {
        "C1": (LATEST, {"P"}),
        "C2": (LATEST, {"P"}),
        "R": (LATEST, set()),
    }


def test_latest_children_of_a_leased_parent_start_at_trim_horizon() -> None:
    assert plan(SPLIT, {"P", "R"}, LATEST) == {
        "C1": (TRIM_HORIZON, {"P"}),
        "C2": (TRIM_HORIZON, {"P"}),
    }


@pytest.mark.parametrize("position", [TRIM_HORIZON, LATEST, AT_TIMESTAMP])
def test_existing_leases_are_not_recreated(position: str) -> None:
    everything = {s.shard_id for s in SPLIT}
    assert new_leases(SPLIT, everything, position) == []
    assert plan(SPLIT, {"P", "C1"}, position) == {
        "C2": (TRIM_HORIZON, {"P"}),
        "R": (position, set()),
    }


def test_merge_child_of_known_parents() -> None:
    shards = [shard("A", closed=True), shard("B", closed=True), shard("M", "A", "B")]
    assert plan(shards, {"A"}, LATEST) == {"M": (TRIM_HORIZON, {"A", "B"})}
    assert plan(shards, set(), TRIM_HORIZON)["M"] == (TRIM_HORIZON, {"A", "B"})


def test_child_of_an_unlisted_parent_starts_at_initial_position() -> None:
    # The parent aged out of the stream and never had a lease: the child is a root for us.
    shards = [shard("C", "gone")]
    assert plan(shards, set(), TRIM_HORIZON) == {"C": (TRIM_HORIZON, {"gone"})}
    assert plan(shards, set(), AT_TIMESTAMP) == {"C": (AT_TIMESTAMP, {"gone"})}


def test_trim_horizon_grandchildren_start_at_trim_horizon() -> None:
    shards = [shard("P", closed=True), shard("C", "P", closed=True), shard("G", "C")]
    assert plan(shards, set(), TRIM_HORIZON) == {
        "P": (TRIM_HORIZON, set()),
        "C": (TRIM_HORIZON, {"P"}),
        "G": (TRIM_HORIZON, {"C"}),
    }


def test_latest_grandchild_of_leased_shard_starts_at_trim_horizon() -> None:
    # P is leased; since the last sync P split into C, and C split again into G.
    # C gets a lease now (TRIM_HORIZON, child of P) so G is a child too and must not skip
    # whatever arrived on it while C was being drained.
    shards = [shard("P", closed=True), shard("C", "P", closed=True), shard("G", "C")]
    assert plan(shards, {"P"}, LATEST) == {
        "C": (TRIM_HORIZON, {"P"}),
        "G": (TRIM_HORIZON, {"C"}),
    }


def test_new_lease_fields() -> None:
    (created,) = new_leases([shard("C1", "P")], {"P"}, LATEST)
    assert created == NewLease("C1", TRIM_HORIZON, frozenset({"P"}))


@pytest.mark.parametrize("position", [TRIM_HORIZON, LATEST])
def test_a_cleaned_up_parent_is_never_leased_again(position: str) -> None:
    # P finished, its children started, and P's lease was deleted; P still lists.
    shards = [shard("P", closed=True), shard("C1", "P"), shard("C2", "P")]
    assert plan(shards, {"C1", "C2"}, position) == {}


def test_children_listed_before_parents_still_count_as_children() -> None:
    shards = [shard("G", "C"), shard("C", "P", closed=True), shard("P", closed=True)]
    assert plan(shards, {"P"}, LATEST) == {
        "C": (TRIM_HORIZON, {"P"}),
        "G": (TRIM_HORIZON, {"C"}),
    }


# Issue 10, case 1: ancestry of any depth. Once any descendant of a shard has a lease (or
# finished, and its own children have leases), the shard is never leased again, however
# long ListShards keeps listing it (the stream's whole retention period).
# Split then merge: G -> P1, P2 -> M.  Two splits (UpdateShardCount 1 -> 2 -> 4):
# R -> A, B; A -> A1, A2; B -> B1, B2.
SPLIT_THEN_MERGE = [
    shard("G", closed=True),
    shard("P1", "G", closed=True),
    shard("P2", "G", closed=True),
    shard("M", "P1", "P2"),
]
TWO_SPLITS = [
    shard("R", closed=True),
    shard("A", "R", closed=True),
    shard("B", "R", closed=True),
    shard("A1", "A"),
    shard("A2", "A"),
    shard("B1", "B"),
    shard("B2", "B"),
]


@pytest.mark.parametrize("position", [TRIM_HORIZON, LATEST, AT_TIMESTAMP])
@pytest.mark.parametrize(
    ("shards", "existing", "expected"),
    [
        pytest.param(SPLIT_THEN_MERGE, {"M"}, {}, id="split-merge-only-grandchild-leased"),
        pytest.param(SPLIT_THEN_MERGE, {"P1", "M"}, {}, id="split-merge-one-parent-left"),
        pytest.param(TWO_SPLITS, {"A1", "A2", "B1", "B2"}, {}, id="two-splits-leaves-leased"),
        pytest.param(
            TWO_SPLITS,
            {"A1", "A2", "B"},
            {"B1": (TRIM_HORIZON, {"B"}), "B2": (TRIM_HORIZON, {"B"})},
            id="two-splits-one-branch-behind",
        ),
        pytest.param(
            TWO_SPLITS,
            {"A1", "A2", "B1"},
            {"B2": (TRIM_HORIZON, {"B"})},
            id="two-splits-one-leaf-missing",
        ),
    ],
)
def test_no_ancestor_of_a_leased_shard_is_leased_again(
    shards: list[Shard],
    existing: set[str],
    expected: dict[str, tuple[str, set[str]]],
    position: str,
) -> None:
    created = plan(shards, existing, position)
    ancestors = {"G", "P1", "P2", "R", "A", "B"} - existing
    assert not ancestors & created.keys()
    if position != LATEST or not expected:  # LATEST leaves unleased closed shards alone
        assert created == expected


def test_adopted_kcl_table_with_a_long_reshard_history() -> None:
    # Five generations, each shard split once; only the newest generation has leases, the
    # older ones were finished and cleaned up long ago, and every one of them still lists.
    shards = [shard("s0", closed=True)]
    generation = ["s0"]
    for depth in range(1, 5):
        closed = depth < 4
        children = []
        for parent in generation:
            for side in ("a", "b"):
                child = f"{parent}{side}"
                shards.append(shard(child, parent, closed=closed))
                children.append(child)
        generation = children
    assert plan(shards, set(generation), TRIM_HORIZON) == {}


def test_waves_create_a_childs_lease_after_its_parents() -> None:
    history = [
        shard("A", closed=True),
        shard("B", closed=True),
        shard("A1", "A", closed=True),
        shard("A2", "A"),
        shard("M", "A1", "B"),  # a merge of a child and a root: after the deeper parent
        shard("R"),
    ]
    created = new_leases(history, {"X"}, TRIM_HORIZON)
    assert [[n.shard_id for n in wave] for wave in waves(created)] == [
        ["A", "B", "R"],
        ["A1", "A2"],
        ["M"],
    ]
    # a parent leased already (not created now) does not hold its child back
    again = new_leases([shard("P", closed=True), shard("C", "P")], {"P"}, TRIM_HORIZON)
    assert [[n.shard_id for n in wave] for wave in waves(again)] == [["C"]]


class SlowStore:
    """A lease table whose creates take a while: records what was in flight and what existed
    when each create began."""

    def __init__(self) -> None:
        self.existing: set[str] = set()
        self.in_flight = 0
        self.most_in_flight = 0
        self.seen_at_create: dict[str, set[str]] = {}

    async def create(self, shard_id: str, *_: Any) -> bool:
        self.seen_at_create[shard_id] = set(self.existing)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0.01)
        self.in_flight -= 1
        self.existing.add(shard_id)
        return True


async def test_a_sync_creates_many_leases_at_once_parents_first() -> None:
    roots = [
        {"ShardId": f"r{n:03d}", "SequenceNumberRange": {"EndingSequenceNumber": "9"}}
        for n in range(40)
    ]
    children = [{"ShardId": f"c{n:03d}", "ParentShardId": f"r{n:03d}"} for n in range(40)]
    store = SlowStore()
    lineage = Lineage(
        store,  # type: ignore[arg-type]
        # children listed first: parents first interleaves them (r000, c000, r001, …), so
        # creating in one go would start a child beside its parent
        FakeKinesis([{"Shards": children + roots}]),  # type: ignore[arg-type]
        "stream",
        TRIM_HORIZON,
        Metrics("stream"),
        "w1",
    )
    assert await lineage.sync(frozenset()) == 80
    assert store.most_in_flight == CREATE_IN_FLIGHT
    for n in range(40):
        assert f"r{n:03d}" in store.seen_at_create[f"c{n:03d}"], "a child before its parent"


class FailingStore(SlowStore):
    async def create(self, shard_id: str, *_: Any) -> bool:
        if shard_id == "r003":
            raise RuntimeError("throttled")
        return await super().create(shard_id)


async def test_a_failed_create_fails_the_sync_with_no_create_left_running() -> None:
    roots = [{"ShardId": f"r{n:03d}"} for n in range(10)]
    store = FailingStore()
    lineage = Lineage(
        store,  # type: ignore[arg-type]
        FakeKinesis([{"Shards": roots}]),  # type: ignore[arg-type]
        "stream",
        TRIM_HORIZON,
        Metrics("stream"),
        "w1",
    )
    with pytest.raises(RuntimeError, match="throttled"):
        await lineage.sync(frozenset())
    assert store.in_flight == 0 and len(store.existing) == 9
