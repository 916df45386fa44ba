"""The ceiling: what the local DynamoDB accepts at best, with no Kinesis and no decoding.

Pre-built items (wire format) written with aiobotocore ``batch_write_item``, 32 requests in
flight, parameter validation off. Same stdout protocol as the baseline; ``done`` reports the
CPU of the write phase only (item building excluded).

``--lean`` (the bench's ``floor``): the same readings through the worker's own write path —
already encoded as the worker's TELEMAX encoder writes them (:func:`entries_of`), written by
the worker's sink (``BatchSink``: batches of 10,000, four at a time as four shards', their
chunks prepared ahead, 16 requests in flight) into ``FastDynamoDB``'s bodies, signed by our
SigV4 and sent on our HTTP/1.1 pool on uvloop, as the worker runs it —: what writing alone
costs the worker a record, with reading, converting and the shard's bookkeeping free. The
worker's steady figure cannot go below it with this client. (Until 2026-12-06 the floor
wrote item dicts, which orjson encoded a request at a time: 0.6-0.8 µs an item dearer than
the worker's own write — ``python -m tests.bench.request_cost``: 1.45-1.48 µs an item
against 2.04-2.24; until the night of 2026-12-06 it sent each chunk's request as it was
made, a task a chunk, not through the sink.)
"""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from consumer.adapters.credentials import Frozen, StaticCredentials
from consumer.adapters.fastpath import FastDynamoDB
from consumer.adapters.json_api import DYNAMODB, JsonApi
from consumer.cli import GC_THRESHOLDS
from consumer.feeds import telemax
from consumer.feeds.telemax import encode_batch
from consumer.metrics import Metrics
from consumer.pipeline.table import BatchSink
from kernel.handlers import Encoded
from tests.support import readings

ENCODED_AT_ONCE = 10_000  # readings: the most a GetRecords answer holds
SHARDS = 4  # the floor's batches written at once (the worker's, one a shard)


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def items_of(total: int) -> list[dict[str, Any]]:
    return [
        {
            "hardwareID": {"S": r["hardwareID"]},
            "Timestamp": {"S": r["Timestamp"]},
            "Data1": {"S": r["Data1"]},
            "Data2": {"N": repr(r["Data2"])},
            "Data3": {"N": repr(r["Data3"])},
        }
        for r in readings(total, prefix="CEIL")
    ]


def entries_of(total: int) -> list[Encoded]:
    """The same readings as :func:`items_of`, as the worker writes them: each one's entry from
    the TELEMAX encoder (its item's JSON, made once), made a GetRecords answer's worth at a
    time (all at once, the readings, their JSON and the matches held together took the
    floor's process to 1 GB)."""
    entries: list[Encoded] = []
    for start in range(0, total, ENCODED_AT_ONCE):
        chunk = readings(min(ENCODED_AT_ONCE, total - start), prefix="CEIL", offset=start)
        entries += [entry for entry in encode_batch(list(map(orjson.dumps, chunk))) if entry]
    assert len(entries) == total, "every bench reading is canonical"
    return entries


Write = Callable[[list[Any]], Awaitable[list[Any]]]


async def write_all(items: list[Any], write: Write, in_flight: int) -> None:
    """Every item written, 25 a request, ``in_flight`` requests at once; prints the protocol."""
    slots = asyncio.Semaphore(in_flight)
    done = [0]

    async def one(chunk: list[Any]) -> None:
        async with slots:
            pending = chunk
            while pending:
                pending = await write(pending)
            done[0] += len(chunk)

    await reported(
        asyncio.gather(*(one(items[i : i + 25]) for i in range(0, len(items), 25))),
        len(items),
        done,
    )


async def reported(writing: Awaitable[Any], total: int, done: list[int]) -> None:
    """Await ``writing``, printing ``done[0]`` as it grows and then the CPU it took."""

    async def report() -> None:
        while True:
            print(f"progress {done[0]}", flush=True)
            await asyncio.sleep(0.25)

    started = cpu()
    reporter = asyncio.ensure_future(report())
    await writing
    reporter.cancel()
    used = cpu() - started
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"done {total} {used:.3f} {rss}", flush=True)


async def write(table: str, total: int) -> None:
    items = items_of(total)
    config = AioConfig(max_pool_connections=64, parameter_validation=False)
    async with get_session().create_client("dynamodb", config=config) as db:

        async def batch(pending: list[dict[str, Any]]) -> list[dict[str, Any]]:
            answer = await db.batch_write_item(
                RequestItems={table: [{"PutRequest": {"Item": i}} for i in pending]}
            )
            return [
                r["PutRequest"]["Item"] for r in answer.get("UnprocessedItems", {}).get(table, [])
            ]

        await write_all(items, batch, 32)


async def write_lean(table: str, total: int) -> None:
    entries = entries_of(total)
    gc.freeze()  # as the worker does (consumer.cli): the entries are its start-up objects here
    gc.set_threshold(*GC_THRESHOLDS)
    frozen = Frozen(
        os.environ["AWS_ACCESS_KEY_ID"],
        os.environ["AWS_SECRET_ACCESS_KEY"],
        os.environ.get("AWS_SESSION_TOKEN"),
    )
    api = JsonApi(
        StaticCredentials(frozen),
        endpoint=os.environ.get("AWS_ENDPOINT_URL_DYNAMODB") or os.environ["AWS_ENDPOINT_URL"],
        region=os.environ["AWS_REGION"],
        service=DYNAMODB,
        pool=64,
        read_timeout=30.0,
    )
    client = FastDynamoDB(api)
    sink = BatchSink(
        client.batch_write,
        table,
        telemax.KEY_NAMES,
        concurrency=asyncio.Semaphore(16),  # the worker's default TELEMAX_WRITE_CONCURRENCY
        metrics=Metrics("floor"),
        preparer=client.preparer,
    )
    batches = iter(range(0, len(entries), ENCODED_AT_ONCE))
    done = [0]

    def durable(positions: Sequence[int]) -> None:
        done[0] += len(positions)

    async def shard() -> None:
        for start in batches:
            await sink.write(entries[start : start + ENCODED_AT_ONCE], durable)

    try:
        await reported(asyncio.gather(*(shard() for _ in range(SHARDS))), len(entries), done)
    finally:
        api.close()


def main() -> int:
    table, total = sys.argv[1], int(sys.argv[2])
    if sys.argv[3:] == ["--lean"]:
        import uvloop

        uvloop.run(write_lean(table, total))
    else:
        asyncio.run(write(table, total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
