"""Insights exactly once with worker processes on kinesalite + dynalite (issue 14).

One stream of TELEMAX readings over the last hour (five-minute windows per link), out of order,
some within the allowed lateness and some beyond it. Every write of the insights table goes
through the fault proxy: batches refused (500), half-processed, applied with their answer lost
(botocore sends them again), and commits applied with their answer lost. w1 commits segments
but checkpoints late and is SIGKILLed mid-window while a commit hangs after its cells were
written (cells no commit names); the shard it was reading is then split and the
same windows go on in its children; w2, cutting segments elsewhere,
reads everything from w1's checkpoints. The insights
table must then equal a recomputation from scratch over the records produced.
"""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from devkit.faultproxy import Rule
from tests.faults.conftest import Faulty
from tests.fleet.test_resharding import shard_map, wait_active
from tests.insights_check import check_insights_exact
from tests.support import Stack, wait_until, worker_events

pytestmark = pytest.mark.timeout(150)

LATENESS_S = 3600
LINKS = 8
PER_PHASE = 1200


def reading(n: int, at: datetime) -> dict[str, Any]:
    return {
        "hardwareID": f"LINK-{n % LINKS}",
        "Timestamp": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "Data1": f"LNK-{n % 7}",
        "Data2": round(10 + (n * 37 % 1000) * 0.25, 2),
        "Data3": n % 97 + 0.5,
    }


def phase(first: int, now: datetime) -> list[dict[str, Any]]:
    """Readings ``first`` … over the last 45 minutes; every 10th from 50 minutes ago (its
    window ended within the lateness: counted, however the arrival stamps fall within the
    next ten minutes) and every 50th from three hours ago (late)."""
    out = []
    for n in range(first, first + PER_PHASE):
        at = now - timedelta(minutes=45) + timedelta(milliseconds=n * 1100)
        if n % 50 == 0:
            at = now - timedelta(hours=3) + timedelta(milliseconds=n)
        elif n % 10 == 0:
            at = now - timedelta(minutes=50) + timedelta(milliseconds=n)
        out.append(reading(n, at))
    return out


def put_spread(stack: Stack, readings: list[dict[str, Any]], first: int) -> None:
    """PutRecords with a partition key per record: every shard, and both halves of each."""
    for start in range(0, len(readings), 500):
        chunk = readings[start : start + 500]
        answer = stack.kinesis.put_records(
            StreamName=stack.stream,
            Records=[
                {"Data": orjson.dumps(r), "PartitionKey": f"pk-{first + start + i}"}
                for i, r in enumerate(chunk)
            ],
        )
        assert answer["FailedRecordCount"] == 0


def faults(insights_table: str) -> list[Rule]:
    ours = insights_table.encode()

    def of_insights(body: bytes) -> bool:
        return ours in body

    return [
        Rule("BatchWriteItem", "lose_answer", limit=2, body=of_insights),
        Rule("BatchWriteItem", "error", code="InternalServerError", status=500, limit=2,
             body=of_insights),
        Rule("BatchWriteItem", "unprocessed", fraction=0.5, limit=2, body=of_insights),
        Rule("PutItem", "lose_answer", limit=2, body=of_insights),
    ]  # fmt: skip


def insight_commits(stack: Stack, table: str) -> int:
    return sum(1 for item in stack.scan(table) if item["pk"]["S"].startswith("C#"))


def test_insights_equal_a_recomputation_across_a_kill_a_split_and_failed_writes(
    faulty: Faulty,
) -> None:
    stack = faulty.stack
    insights_table = f"{stack.table}-insights"
    stack.setup(shards=2, TELEMAX_INSIGHTS="on")
    now = datetime.now(UTC)
    before = phase(0, now)
    put_spread(stack, before, 0)
    env = {
        "TELEMAX_INSIGHTS": "on",
        "TELEMAX_INSIGHTS_LATENESS_S": str(LATENESS_S),
        "TELEMAX_ARCHIVE_MAX_BYTES": "3200",  # 50 records a segment: many segments
        "TELEMAX_ARCHIVE_MAX_AGE_S": "1",
        "TELEMAX_MAX_RECORDS": "100",
    }
    faulty.dynamodb.set_rules(faults(insights_table))
    # w1 commits segments but checkpoints late: w2 reads them again and must adopt them.
    first = faulty.worker("w1", **env, TELEMAX_CHECKPOINT_INTERVAL_S="60")
    wait_until(lambda: stack.count() >= PER_PHASE // 2, 45, "half of the first phase stored")
    wait_until(lambda: insight_commits(stack, insights_table) >= 4, 20, "w1's commits")
    # Then w1's next commit hangs after its cells were written, and w1 dies: cells that no
    # commit names, at a first position w2 will commit with another end.
    hang = Rule("PutItem", "blackhole", body=lambda body: insights_table.encode() in body)
    faulty.dynamodb.set_rules([hang])
    wait_until(lambda: faulty.dynamodb.injected[("PutItem", "blackhole")] > 0, 20, "a hung commit")
    first.signal(signal.SIGKILL)
    first.proc.wait()

    parent = shard_map(stack)["shardId-000000000000"]["HashKeyRange"]
    middle = (int(parent["StartingHashKey"]) + int(parent["EndingHashKey"])) // 2
    stack.kinesis.split_shard(
        StreamName=stack.stream,
        ShardToSplit="shardId-000000000000",
        NewStartingHashKey=str(middle),
    )
    wait_active(stack)
    after = phase(PER_PHASE, now)  # the same windows, now in the children
    put_spread(stack, after, PER_PHASE)

    faulty.dynamodb.set_rules(faults(insights_table))
    # Other segment sizes than w1's: w2's segments end elsewhere than the ones w1 wrote.
    second = faulty.worker("w2", **{**env, "TELEMAX_ARCHIVE_MAX_BYTES": "5000"})
    wait_until(lambda: stack.count() >= 2 * PER_PHASE, 60, "every reading stored")
    children = set(shard_map(stack)) - {"shardId-000000000000", "shardId-000000000001"}

    def children_checkpointed() -> bool:
        leases = stack.leases()
        return all(
            leases.get(child, {}).get("checkpoint", {}).get("S", "").isdigit() for child in children
        )

    wait_until(children_checkpointed, 30, "both children checkpointed")
    assert second.stop() == 0
    assert stack.count() == 2 * PER_PHASE and stack.count(stack.dlq_table) == 0

    injected = faulty.dynamodb.injected
    for kind in ("lose_answer", "error", "unprocessed"):
        assert injected[("BatchWriteItem", kind)] > 0, f"an insights batch write met {kind}"
    assert injected[("PutItem", "lose_answer")] > 0, "a commit's answer was lost"
    events = worker_events(second)
    assert any(e.name == "segment_adopted" for e in events), "w2 adopted w1's segments"
    ended = {e.fields.get("shard_id") for e in events if e.name == "shard_end_reached"}
    assert "shardId-000000000000" in ended, "the split parent was read to its end"

    late = check_insights_exact(
        stack,
        "telemax",
        [*before, *after],
        LATENESS_S,
        now - timedelta(hours=4),
        now + timedelta(hours=1),
    )
    assert late == 2 * PER_PHASE // 50, "the readings from three hours ago: counted late"
