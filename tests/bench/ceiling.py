"""The ceiling: what the local DynamoDB accepts at best, with no Kinesis and no decoding.

Pre-built items (wire format) written with aiobotocore ``batch_write_item``, 32 requests in
flight, parameter validation off. Same stdout protocol as the baseline; ``done`` reports the
CPU of the write phase only (item building excluded).
"""

from __future__ import annotations

import asyncio
import resource
import sys
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from tests.support import readings


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def write(table: str, total: int) -> None:
    items: list[dict[str, Any]] = [
        {
            "hardwareID": {"S": r["hardwareID"]},
            "Timestamp": {"S": r["Timestamp"]},
            "Data1": {"S": r["Data1"]},
            "Data2": {"N": repr(r["Data2"])},
            "Data3": {"N": repr(r["Data3"])},
        }
        for r in readings(total, prefix="CEIL")
    ]
    config = AioConfig(max_pool_connections=64, parameter_validation=False)
    async with get_session().create_client("dynamodb", config=config) as db:
        slots = asyncio.Semaphore(32)
        done = [0]

        async def one(chunk: list[dict[str, Any]]) -> None:
            async with slots:
                pending = chunk
                while pending:
                    answer = await db.batch_write_item(
                        RequestItems={table: [{"PutRequest": {"Item": i}} for i in pending]}
                    )
                    pending = [
                        r["PutRequest"]["Item"]
                        for r in answer.get("UnprocessedItems", {}).get(table, [])
                    ]
                done[0] += len(chunk)

        async def report() -> None:
            while True:
                print(f"progress {done[0]}", flush=True)
                await asyncio.sleep(0.25)

        started = cpu()
        reporter = asyncio.ensure_future(report())
        await asyncio.gather(*(one(items[i : i + 25]) for i in range(0, total, 25)))
        reporter.cancel()
        used = cpu() - started
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"done {total} {used:.3f} {rss}", flush=True)


def main() -> int:
    asyncio.run(write(sys.argv[1], int(sys.argv[2])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
