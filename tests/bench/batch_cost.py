"""What a batch of TELEMAX readings costs our own code between the socket and the socket.

``python -m tests.bench.batch_cost [--records N] [--rounds R] [--before REV]``: a GetRecords
answer of N readings (the producer's, as kinesalite writes it: base64 ``Data``) is taken by
the worker's own stages, in this process, with no I/O: ``FastKinesis.get_records`` (the JSON
parse and the base64 decode), ``Converter`` (the handler, its encoder), then the write stage
(``WriteStage`` over ``Store.over``: the sink's identities and versions, its chunks and tasks,
``FastDynamoDB.batch_write`` building every request body) with a null API that answers at
once. Signing and HTTP are left out (``make bench-request`` measures them), so are the
emulators: the figure is stable to a few per cent here, unlike the whole-worker bench.

CPU (user + system, ``getrusage``) per record for each stage, median of R rounds after a
warm-up. With ``--before REV`` the same stages of git revision REV run in a process of their
own, rounds interleaved with ours, and each round's ratio is printed: a change's effect on
the hot path, measured in one run.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("read", "convert", "write")


def answer_body(records: int) -> bytes:
    """A GetRecords answer of ``records`` producer readings, as kinesalite writes it."""
    import orjson

    from producer.readings import readings

    stamp = time.time()
    listed = [
        {
            "SequenceNumber": f"4960{n:052d}",
            "ApproximateArrivalTimestamp": stamp,
            "Data": base64.b64encode(orjson.dumps(reading)).decode(),
            "PartitionKey": reading["hardwareID"],
        }
        for n, reading in enumerate(readings(records, devices=500, seed=14))
    ]
    return orjson.dumps(
        {"Records": listed, "NextShardIterator": "AAAA", "MillisBehindLatest": 1000}
    )


def measure(records: int, rounds: int) -> dict[str, list[float]]:
    """Rounds of the three stages in this process (the tree on ``sys.path``): µs a record."""
    import asyncio
    import gc

    import orjson
    import uvloop
    from prometheus_client import CollectorRegistry

    from consumer.adapters.fastpath import FastDynamoDB, FastKinesis
    from consumer.cli import GC_THRESHOLDS
    from consumer.feeds.telemax import KEY_NAMES, to_item
    from consumer.metrics import Metrics
    from consumer.pipeline.convert import Converter
    from consumer.pipeline.stage import Progress, WriteStage
    from consumer.pipeline.store import Store
    from kernel.logs import get as get_logger

    body = answer_body(records)

    class NullApi:
        """The JSON API with no network: GetRecords answers ``body``, the rest nothing left."""

        async def call(self, operation: str, request: bytes) -> Any:
            return orjson.loads(body) if operation == "GetRecords" else {}

    api: Any = NullApi()
    kinesis, dynamodb = FastKinesis(api), FastDynamoDB(api)
    metrics = Metrics("bench", CollectorRegistry())
    log = get_logger()
    figures: dict[str, list[float]] = {stage: [] for stage in STAGES}

    async def one_round() -> dict[str, float]:
        store = Store.over(
            dynamodb.batch_write,
            table="TELEMAX",
            key_names=KEY_NAMES,
            dlq_table="DLQ",
            write_slots=asyncio.Semaphore(16),
            metrics=metrics,
        )
        stage = WriteStage(store)
        converter = Converter(to_item, "bench", "shardId-000000000000", KEY_NAMES)
        at = cpu()
        answer = await kinesis.get_records("AAAA", records)
        read = cpu()
        converted = converter(answer["Records"])
        made = cpu()
        progress = Progress(converted, list(converted.dead))
        await stage.write(progress, "bench", "shardId-000000000000", log)
        progress.raise_if_failed()
        del answer, converted, progress  # freeing the batch is the write stage's too
        done = cpu()
        return {"read": read - at, "convert": made - read, "write": done - made}

    async def main() -> None:
        await one_round()  # warm: imports, caches, the metrics' children
        gc.freeze()  # as the worker runs (consumer.cli.run_command)
        gc.set_threshold(*GC_THRESHOLDS)
        keep_freed_memory = _tree_allocator()
        if keep_freed_memory is not None:
            keep_freed_memory()
        for _ in range(rounds):
            for stage, seconds in (await one_round()).items():
                figures[stage].append(seconds / records * 1e6)

    uvloop.run(main())
    return figures


def _tree_allocator() -> Any:
    """The worker's allocator setting (``consumer.allocator``) if the tree measured has one:
    not a newer tree's found by an editable install's finder beside an older tree's package."""
    import consumer

    try:
        from consumer import allocator
    except ImportError:
        return None
    same_tree = Path(allocator.__file__).parent == Path(consumer.__file__).parent
    return allocator.keep_freed_memory if same_tree else None


def cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_tree(tree: Path, records: int, rounds: int) -> dict[str, list[float]]:
    """``measure`` in a process of its own whose imports come from ``tree``."""
    code = (  # this file by its path: an older tree has no such module
        "import sys, json, runpy\n"
        f"sys.path.insert(0, {str(tree)!r})\n"
        f"measure = runpy.run_path({__file__!r})['measure']\n"
        f"print(json.dumps(measure({records}, {rounds})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tree, capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        raise RuntimeError(f"the stages of {tree} failed:\n{done.stderr[-2000:]}")
    out = done.stdout
    figures: dict[str, list[float]] = json.loads(out.splitlines()[-1])
    return figures


def line(name: str, figures: dict[str, list[float]]) -> str:
    medians = {stage: statistics.median(figures[stage]) for stage in STAGES}
    parts = ", ".join(f"{stage} {medians[stage]:.2f}" for stage in STAGES)
    return f"{name:7s} {sum(medians.values()):5.2f} µs a record ({parts})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=10_000, help="readings a batch")
    parser.add_argument("--rounds", type=int, default=10, help="measured rounds a process")
    parser.add_argument("--repeats", type=int, default=5, help="processes a tree")
    parser.add_argument("--before", metavar="REV", help="also the stages of git revision REV")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="telemax-batch-") as scratch:
        trees = {"ours": ROOT}
        if args.before:
            from tests.bench.process import export

            trees["before"] = export(args.before, Path(scratch) / "before")
        totals: dict[str, list[float]] = {name: [] for name in trees}
        for repeat in range(1, args.repeats + 1):
            for name, tree in trees.items():  # interleaved: drift weighs on both
                figures = run_tree(tree, args.records, args.rounds)
                totals[name].append(sum(statistics.median(figures[s]) for s in STAGES))
                print(f"repeat {repeat}: {line(name, figures)}", flush=True)
        if args.before:
            ratios = [
                ours / before for ours, before in zip(totals["ours"], totals["before"], strict=True)
            ]
            print(
                f"ours / before, paired by repeat: median {statistics.median(ratios):.2f}x "
                f"({min(ratios):.2f}-{max(ratios):.2f})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
