"""The fleet under measurement: workers, the lease table as any observer sees it, and a
producer on every shard."""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson

from devkit.faultproxy import FaultProxy
from devkit.local import WorkerProcess
from tests.support import Stack, readings, worker_events

PROTOCOL = ("lease", "members")
KCL_SCAN_INTERVAL_S = 20.0  # KCL 2.x: a take pass (full eventually consistent Scan) per worker
READS = frozenset({"Scan", "Query", "GetItem", "BatchGetItem", "TransactGetItems"})
WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})
# make_stack's test knobs; the fleet measured here runs with the worker's own defaults.
TEST_KNOBS = (
    "TELEMAX_IDLE_POLL_S",
    "TELEMAX_CHECKPOINT_INTERVAL_S",
    "TELEMAX_SHUTDOWN_GRACE_S",
)
POLL_S = 0.25
SETTLE_BEFORE_STEADY_S = 5.0


def say(text: str = "") -> None:
    print(text, flush=True)


# --- the lease table, as any observer sees it --------------------------------------------


@dataclasses.dataclass(frozen=True)
class LeaseView:
    owner: str | None
    checkpoint: str | None


def lease_views(stack: Stack) -> dict[str, LeaseView]:
    """Every shard lease (items with a ``checkpoint``; other items a protocol may keep in the
    table are skipped), read from the emulator directly."""
    return {
        key: LeaseView(item.get("leaseOwner", {}).get("S"), item["checkpoint"].get("S"))
        for key, item in stack.leases().items()
        if "checkpoint" in item
    }


def holdings(views: dict[str, LeaseView]) -> Counter[str | None]:
    return Counter(view.owner for view in views.values())


def is_even(views: dict[str, LeaseView], live: set[str]) -> bool:
    """Every lease owned by a live worker, each holding floor or ceil of its even share."""
    held = holdings(views)
    low, high = len(views) // len(live), math.ceil(len(views) / len(live))
    return set(held) <= live and all(low <= held[w] <= high for w in live)


# --- the fleet -----------------------------------------------------------------------------


@dataclasses.dataclass
class Fleet:
    stack: Stack
    proxy: FaultProxy
    shards: int
    started: list[WorkerProcess] = dataclasses.field(default_factory=list)

    def start(self, worker_id: str) -> WorkerProcess:
        """A worker whose DynamoDB traffic goes through the counting proxy."""
        worker = self.stack.worker(worker_id, AWS_ENDPOINT_URL_DYNAMODB=self.proxy.endpoint)
        self.started.append(worker)
        return worker

    def live(self) -> list[WorkerProcess]:
        return [w for w in self.started if w.proc.poll() is None]

    def live_ids(self) -> set[str]:
        return {w.worker_id for w in self.live()}

    def views(self) -> dict[str, LeaseView]:
        return lease_views(self.stack)

    def is_even(self) -> bool:
        views = self.views()
        return len(views) == self.shards and is_even(views, self.live_ids())

    def metric(self, name: str) -> float:
        """``name`` summed over the live workers' /metrics."""
        return sum(w.metrics().get(name, 0.0) for w in self.live())


def up_after(workers: list[WorkerProcess], launched_wall: float) -> str:
    """Seconds from launch until the last of ``workers`` logged ``worker_started``."""
    started = [e.at for e in worker_events(*workers) if e.name == "worker_started"]
    if len(started) < len(workers):
        return "not all logged worker_started"
    return f"{max(started) - launched_wall:.2f} s"


def wait_for(
    condition: Callable[[], bool], timeout: float, since: float | None = None
) -> float | None:
    """Seconds from ``since`` (monotonic; default now) until ``condition()`` held (polled), or
    None after ``timeout``."""
    started = time.monotonic() if since is None else since
    while not condition():
        if time.monotonic() - started > timeout:
            return None
        time.sleep(POLL_S)
    return time.monotonic() - started


# --- the producer ---------------------------------------------------------------------------


class EveryShardProducer(threading.Thread):
    """Valid readings at ``rate`` per second, one PutRecords in flight, each record sent to the
    next shard in turn (``ExplicitHashKey``: every shard busy, so every shard checkpoints);
    remembers every acknowledged key."""

    def __init__(self, stack: Stack, rate: float, batch: int = 20) -> None:
        super().__init__(name="lease-cost-producer", daemon=True)
        self._stack = stack
        self._batch = batch
        self._interval = batch / rate
        self._stopping = threading.Event()
        self.keys: set[tuple[str, str]] = set()
        self.errors: list[BaseException] = []

    def finish(self) -> set[tuple[str, str]]:
        self._stopping.set()
        self.join(timeout=30)
        if self.errors:
            raise RuntimeError(f"producer failed: {self.errors[0]!r}")
        return self.keys

    def run(self) -> None:
        hash_keys = self._shard_midpoints()
        sent = 0
        while not self._stopping.is_set():
            started = time.monotonic()
            chunk = readings(self._batch, prefix="LC", offset=sent)
            entries = [
                {
                    "Data": orjson.dumps(r),
                    "PartitionKey": r["hardwareID"],
                    "ExplicitHashKey": hash_keys[(sent + i) % len(hash_keys)],
                }
                for i, r in enumerate(chunk)
            ]
            sent += len(chunk)
            try:
                self._put_all(entries)
            except Exception as exc:  # reported by finish()
                self.errors.append(exc)
                return
            self.keys.update((r["hardwareID"], r["Timestamp"]) for r in chunk)
            self._stopping.wait(max(0.0, self._interval - (time.monotonic() - started)))

    def _shard_midpoints(self) -> list[str]:
        shards = self._stack.kinesis.list_shards(StreamName=self._stack.stream)["Shards"]
        ranges = [
            s["HashKeyRange"]
            for s in shards
            if "EndingSequenceNumber" not in s.get("SequenceNumberRange", {})
        ]
        return [str((int(r["StartingHashKey"]) + int(r["EndingHashKey"])) // 2) for r in ranges]

    def _put_all(self, entries: list[dict[str, Any]]) -> None:
        for _ in range(20):
            answer = self._stack.kinesis.put_records(StreamName=self._stack.stream, Records=entries)
            entries = [
                e for e, r in zip(entries, answer["Records"], strict=True) if "ErrorCode" in r
            ]
            if not entries:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{len(entries)} records still failing after 20 attempts")
