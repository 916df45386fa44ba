"""Issue 10, case 1: two reshard generations must not make the grandparent leasable again.

One shard is split, then its two children are merged, with two worker processes and a
producer writing into every generation (kinesalite + dynalite). Once the finished leases of
the grandparent and of the children have been cleaned up (a finished lease is deleted once
all its children have started), ListShards still lists the three closed shards; the shard
syncs that follow (every ``SYNC_S``) must not lease any of them again. Checked at the end:
no record was received twice, every record is stored, no shard has a lease while one of its
descendants has one, and exactly one lease was ever created per shard.

Why the producer pauses around each reshard: with two workers, the leases of a reshard's
children often land on one worker first and the other steals one (DESIGN §3.4). A consumer
that loses its lease to a steal does not checkpoint what it has read (at-least-once), so the
thief reads those records again: a legitimate duplicate that would make "received ==
produced" fail for a reason other than the bug. So before each reshard the test stops
producing and waits until every record is stored *and checkpointed*, and starts producing
again only once the leases have settled (every active lease owned, each worker's own count
matching the table, the two within one of each other: no steal can follow). Every
generation still gets records: the grandparent before the split, the children between the
split and the merge, the grandchild after the merge.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from devkit.local import WorkerProcess
from tests.fleet.test_resharding import shard_map, wait_active
from tests.support import BackgroundProducer, Stack, keys_of, wait_until, worker_events

pytestmark = pytest.mark.timeout(60)  # a run takes 14-19 s on the 2-core machine

SYNC_S = 1.0  # TELEMAX_SHARD_SYNC_INTERVAL_S of the workers
SYNCS_AFTER_CLEANUP = 5  # shard syncs every worker gets after the last lease deletion
PRODUCE_S = 1.5  # per generation
RATE = 300.0  # records per second
SHARD_END = "SHARD_END"


def assert_alive(workers: list[WorkerProcess]) -> None:
    """Fail at once, with the end of its log, when a worker process has exited."""
    for worker in workers:
        code = worker.proc.poll()
        if code is not None:
            tail = "\n".join(worker.log_lines()[-20:])
            raise AssertionError(f"{worker.worker_id} exited with {code}:\n{tail}")


def metric_sum(workers: list[WorkerProcess], name: str) -> float:
    """``name`` summed over every series of every worker (labels may change over time)."""
    assert_alive(workers)
    total = 0.0
    for worker in workers:
        seen = worker.metrics()
        assert seen, f"{worker.worker_id} serves no metrics"
        total += seen.get(name, 0.0)
    return total


def checkpoint_of(lease: dict[str, Any]) -> str:
    return str(lease["checkpoint"]["S"])


def owner_of(lease: dict[str, Any]) -> str | None:
    owner = lease.get("leaseOwner", {}).get("S")
    return None if owner is None else str(owner)


def settled(fleet: Stack, workers: list[WorkerProcess], active: set[str]) -> bool:
    """The unfinished leases are exactly ``active``, all owned by ``workers``, each worker's
    own ``telemax_leases_held`` agrees with the table and the counts are within one of each
    other: nobody will take or steal anything."""
    assert_alive(workers)
    leases = fleet.leases()
    unfinished = {k: owner_of(v) for k, v in leases.items() if checkpoint_of(v) != SHARD_END}
    if set(unfinished) != active or None in unfinished.values():
        return False
    per_worker = Counter(unfinished.values())
    ids = {w.worker_id for w in workers}
    if not set(per_worker) <= ids:
        return False
    counts = [per_worker.get(i, 0) for i in ids]
    if max(counts) - min(counts) > 1:
        return False
    return all(
        w.metrics().get("telemax_leases_held") == per_worker.get(w.worker_id, 0) for w in workers
    )


def last_sequence(fleet: Stack, shard_id: str) -> str | None:
    """The sequence number of the shard's last record (None: no record), read directly."""
    iterator = fleet.kinesis.get_shard_iterator(
        StreamName=fleet.stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    last = None
    while iterator:
        page = fleet.kinesis.get_records(ShardIterator=iterator, Limit=10000)
        if not page["Records"]:
            break
        last = page["Records"][-1]["SequenceNumber"]
        iterator = page.get("NextShardIterator")
    return last


def all_checkpointed(fleet: Stack) -> bool:
    """Every unfinished lease is checkpointed at its shard's last record: a hand-over or a
    steal from here on reads nothing twice."""
    for shard_id, lease in fleet.leases().items():
        checkpoint = checkpoint_of(lease)
        if checkpoint == SHARD_END:
            continue
        last = last_sequence(fleet, shard_id)
        if last is not None and checkpoint != last:
            return False
    return True


def produce(fleet: Stack, prefix: str, produced: set[tuple[str, str]]) -> None:
    """Write for PRODUCE_S, then wait until everything so far is stored and checkpointed."""
    with BackgroundProducer(fleet, rate=RATE, prefix=prefix) as producer:
        time.sleep(PRODUCE_S)
        produced |= producer.stop()
    wait_until(lambda: fleet.count() >= len(produced), 10, f"{len(produced)} items stored")
    wait_until(lambda: all_checkpointed(fleet), 10, "every open lease checkpointed at its end")


def descendants(shards: dict[str, dict[str, Any]]) -> dict[str, set[str]]:
    children: dict[str, set[str]] = {shard_id: set() for shard_id in shards}
    for shard_id, shard in shards.items():
        for parent in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")):
            if parent in children:
                children[parent].add(shard_id)

    def below(shard_id: str) -> set[str]:
        found: set[str] = set()
        for child in children[shard_id]:
            found |= {child} | below(child)
        return found

    return {shard_id: below(shard_id) for shard_id in shards}


def test_two_reshard_generations_never_lease_an_ancestor_again(fleet: Stack) -> None:
    began = time.monotonic()
    fleet.setup(shards=1)
    workers = [fleet.worker(f"w{i}", TELEMAX_SHARD_SYNC_INTERVAL_S=str(SYNC_S)) for i in (1, 2)]
    (grandparent,) = shard_map(fleet)
    wait_until(lambda: settled(fleet, workers, {grandparent}), 15, "the root lease taken")
    produced: set[tuple[str, str]] = set()

    # Generation 0: the grandparent.
    produce(fleet, "G0", produced)
    in_grandparent = len(produced)

    # Split: two children.
    hash_range: Any = shard_map(fleet)[grandparent]["HashKeyRange"]
    middle = (int(hash_range["StartingHashKey"]) + int(hash_range["EndingHashKey"])) // 2
    fleet.kinesis.split_shard(
        StreamName=fleet.stream, ShardToSplit=grandparent, NewStartingHashKey=str(middle)
    )
    wait_active(fleet)
    children = sorted(
        shard_id
        for shard_id, s in shard_map(fleet).items()
        if s.get("ParentShardId") == grandparent
    )
    assert len(children) == 2, children
    wait_until(lambda: settled(fleet, workers, set(children)), 15, "the children leased, 1 each")
    produce(fleet, "G1", produced)

    # Merge the children: one grandchild.
    fleet.kinesis.merge_shards(
        StreamName=fleet.stream, ShardToMerge=children[0], AdjacentShardToMerge=children[1]
    )
    wait_active(fleet)
    shards = shard_map(fleet)
    (grandchild,) = set(shards) - {grandparent, *children}
    assert {
        shards[grandchild]["ParentShardId"],
        shards[grandchild]["AdjacentParentShardId"],
    } == set(children)
    wait_until(lambda: settled(fleet, workers, {grandchild}), 15, "the grandchild leased")

    # Generation 2 gets records, checkpoints a sequence number: the children's leases go.
    with BackgroundProducer(fleet, rate=RATE, prefix="G2") as producer:
        wait_until(
            lambda: metric_sum(workers, "telemax_leases_deleted_total") >= 3,
            15,
            "the leases of the grandparent and of both children deleted",
        )
        time.sleep(0.5)
        produced |= producer.stop()
    deletions = [e.at for e in worker_events(*workers) if e.name == "lease_deleted"]
    cleaned_up_at = max(deletions, default=time.time())
    cleaned_up_mono = time.monotonic() - (time.time() - cleaned_up_at)

    wait_until(lambda: fleet.count() >= len(produced), 15, f"{len(produced)} items stored")
    # Several shard syncs of every worker after the cleanup, then let any reading finish.
    time.sleep(max(0.0, cleaned_up_mono + SYNCS_AFTER_CLEANUP * SYNC_S + 0.5 - time.monotonic()))

    def quiet() -> tuple[float] | None:
        before = metric_sum(workers, "telemax_records_received_total")
        time.sleep(0.5)
        busy = metric_sum(workers, "telemax_records_in_flight")
        after = metric_sum(workers, "telemax_records_received_total")
        return (after,) if after == before and busy == 0 else None

    (received,) = wait_until(quiet, 10, "the workers idle")
    created = metric_sum(workers, "telemax_leases_created_total")
    deleted = metric_sum(workers, "telemax_leases_deleted_total")
    leases = fleet.leases()
    below = descendants(shards)
    ancestors_leased = {
        shard_id: sorted(below[shard_id] & set(leases))
        for shard_id in sorted(leases)
        if below.get(shard_id, set()) & set(leases)
    }
    events = worker_events(*workers)
    retaken = [
        f"{e.worker} took {e.fields['shard_id']} at {e.fields.get('checkpoint')} "
        f"{e.at - cleaned_up_at:+.1f} s after the cleanup"
        for e in events
        if e.name == "lease_taken" and e.at > cleaned_up_at
    ]
    summary = (
        f"produced {len(produced)} (grandparent {in_grandparent}), "
        f"received {received:.0f}, stored {fleet.count()}; "
        f"leases created {created:.0f} for {len(shards)} shards, deleted {deleted:.0f}; "
        f"lease table {sorted(leases)}; leased ancestors {ancestors_leased}; "
        f"takes after the cleanup: {retaken or 'none'}; "
        f"test ran {time.monotonic() - began:.1f} s"
    )
    print(summary)

    failures = []
    if received != len(produced):
        failures.append(f"(a) {received:.0f} records received for {len(produced)} produced")
    if keys_of(fleet.scan()) != produced:
        failures.append("(b) TELEMAX does not hold exactly the produced keys")
    if fleet.count(fleet.dlq_table):
        failures.append("(b) records were dead-lettered")
    if ancestors_leased:
        failures.append(f"(c) ancestors of leased shards are leased: {ancestors_leased}")
    if created != len(shards):
        failures.append(f"(c) {created:.0f} leases created for {len(shards)} shards")
    assert not failures, "; ".join(failures) + f"\n{summary}"
    assert all(w.stop() == 0 for w in workers)
