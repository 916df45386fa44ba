"""The insights' own CPU per reading, in one process: what a stored batch costs (its entries
and facts, `entries_of` with the insights alone), what a segment's commit costs (aggregating
the facts into cells, encoding them) and the bytes its cells take, on the producer's TELEMAX
readings with as many devices a shard as `make bench` has (500 devices: 8 a shard at 64
shards, 125 at 4).

    python -m tests.bench.insights_cost [--devices 8] [--readings 60000] [--segment 3000]

(The 4-shard bench's shard: ``--devices 125 --readings 200000 --segment 50000``. A shard
of devices that report every second, 60 s segments: ``--devices 1000 --readings 240000
--segment 60000``; every 30 s: ``--devices 2500 --readings 262144 --segment 5000`` — two
readings a device a segment.)

Minimum of seven rounds, the worker's GC thresholds and C allocator settings
(``consumer.allocator.keep_freed_memory``, as ``consumer run`` sets them); ``--glibc-defaults``
leaves glibc's own, as the Lambda handler runs: there a bytes object kept alive among many
costs far more (orjson's output of a short line 2.7 µs kept against 0.3 copied and dropped;
with the worker's settings 0.26 and 0.30). No I/O.
"""

from __future__ import annotations

import argparse
import functools
import gc
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from consumer.allocator import keep_freed_memory
from consumer.cli import GC_THRESHOLDS
from consumer.feeds import FEEDS
from consumer.insights.cells import Partial
from consumer.insights.codec import parts_by_day
from consumer.insights.kept import add_segment, batch_facts
from consumer.pipeline.archive import ArchiveBuffer
from consumer.pipeline.convert import convert
from consumer.pipeline.entries import entries_of
from consumer.pipeline.pieces import NO_LINE_BYTES
from consumer.pipeline.stage import Progress
from producer.readings import readings

BATCH = 500  # readings a GetRecords answer
SEGMENT = 3_000  # readings a segment: a 64-shard bench's shard holds about 3,125


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=8, help="devices a shard")
    parser.add_argument("--readings", type=int, default=60_000)
    parser.add_argument("--segment", type=int, default=SEGMENT, help="readings a segment")
    parser.add_argument(
        "--glibc-defaults",
        action="store_true",
        help="leave the C allocator as glibc sets it (the Lambda handler's), not as the worker",
    )
    args = parser.parse_args()
    if not args.glibc_defaults:
        keep_freed_memory()  # before anything is made, as the worker
    feed = FEEDS["telemax"]
    spec = feed.insights
    assert spec is not None
    start = datetime.now(UTC) - timedelta(minutes=3)
    records: list[dict[str, Any]] = [
        {
            "SequenceNumber": str(10**20 + n),
            "Data": orjson.dumps(reading),
            "PartitionKey": reading["hardwareID"],
            "ApproximateArrivalTimestamp": time.time(),
        }
        for n, reading in enumerate(
            readings(args.readings, devices=args.devices, seed=1, start=start)
        )
    ]
    batches = [records[i : i + BATCH] for i in range(0, len(records), BATCH)]
    progresses = []
    for batch in batches:
        converted = convert(batch, feed.to_item, "s", "shardId-0", feed.key_names)
        progress = Progress(converted, list(converted.dead))
        progress.items_durable(range(len(converted.items)))
        progresses.append(progress)
    facts = functools.partial(batch_facts, spec)

    def store() -> ArchiveBuffer:
        # cut as a worker's is, by size: segments of SEGMENT readings
        buffer = ArchiveBuffer("shardId-0", NO_LINE_BYTES * args.segment, 1e9)
        for progress, batch in zip(progresses, batches, strict=True):
            entries = entries_of(
                progress, batch, "telemax", "s", "shardId-0", lines=False, facts=facts
            )
            buffer.add(entries, 0.0)
        return buffer

    def commit(buffer: ArchiveBuffer) -> int:
        """The segments' cells committed; the bytes of their parts (what DynamoDB stores)."""
        stored = 0
        while (segment := buffer.next_segment(0.0, final=True)) is not None:
            partial = Partial(spec, 3600)
            add_segment(partial, segment.entries)
            days = parts_by_day(partial.cells)
            stored += sum(len(part) for parts in days.values() for part in parts)
            buffer.written(segment.last, 0.0)
        return stored

    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    stored, committed = [], []
    for _ in range(7):
        began = time.process_time()
        buffer = store()
        middle = time.process_time()
        size = commit(buffer)
        stored.append(middle - began)
        committed.append(time.process_time() - middle)
    per = 1e6 / len(records)
    print(
        f"{len(records):,} readings, {args.devices} devices a shard, segments of "
        f"{args.segment:,}: a stored batch "
        f"{min(stored) * per:.2f} µs a reading, a segment's commit {min(committed) * per:.2f} µs"
        f"; its cells {size / len(records):.1f} bytes a reading (gzip)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
