"""Split one shard and merge two while producing, with three workers (kinesalite: moto's
Kinesis keeps writing to a split parent and never ends a closed shard)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.fleet.test_fleet import SHARDS, assert_everything_stored, balanced, start_fleet
from tests.support import BackgroundProducer, Stack, wait_until, worker_events

pytestmark = pytest.mark.timeout(150)


def wait_active(fleet: Stack) -> None:
    def active() -> bool:
        summary = fleet.kinesis.describe_stream_summary(StreamName=fleet.stream)
        return bool(summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE")

    wait_until(active, 20, "stream ACTIVE")


def shard_map(fleet: Stack) -> dict[str, dict[str, Any]]:
    return {s["ShardId"]: s for s in fleet.kinesis.list_shards(StreamName=fleet.stream)["Shards"]}


def test_split_and_merge_while_producing(fleet: Stack) -> None:
    fleet.setup(shards=SHARDS)
    with BackgroundProducer(fleet, rate=300) as producer:
        workers = start_fleet(fleet)
        wait_until(lambda: balanced(fleet, workers), 20, "a balanced fleet")
        time.sleep(1)

        before = shard_map(fleet)
        first = before["shardId-000000000000"]["HashKeyRange"]
        middle = (int(first["StartingHashKey"]) + int(first["EndingHashKey"])) // 2
        fleet.kinesis.split_shard(
            StreamName=fleet.stream,
            ShardToSplit="shardId-000000000000",
            NewStartingHashKey=str(middle),
        )
        wait_active(fleet)
        time.sleep(1)
        fleet.kinesis.merge_shards(
            StreamName=fleet.stream,
            ShardToMerge="shardId-000000000002",
            AdjacentShardToMerge="shardId-000000000003",
        )
        wait_active(fleet)
        after = shard_map(fleet)
        children = {
            shard_id: {s["ParentShardId"], s.get("AdjacentParentShardId")} - {None}
            for shard_id, s in after.items()
            if shard_id not in before
        }
        assert len(children) == 3, children
        time.sleep(3)  # keep producing into the children
        produced = producer.stop()

    assert_everything_stored(fleet, produced)

    events = worker_events(*workers)
    ended = {str(e.fields["shard_id"]): e.at for e in events if e.name == "shard_end_reached"}
    for parent in ("shardId-000000000000", "shardId-000000000002", "shardId-000000000003"):
        assert parent in ended, f"{parent} was read to its end"
    for child, parents in children.items():
        starts = [
            e.at
            for e in events
            if e.name == "shard_processing" and e.fields.get("shard_id") == child
        ]
        assert starts, f"{child} was processed"
        assert min(starts) >= max(ended[p] for p in parents), f"{child} read before {parents}"

    # Once every child has a checkpoint, the finished parents' leases are cleaned up.
    wait_until(
        lambda: set(fleet.leases()) == set(after) - set(ended),
        3 * 6.0,
        "parent leases deleted after their children started",
    )
    assert all(w.stop() == 0 for w in workers)
