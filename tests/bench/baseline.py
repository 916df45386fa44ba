"""The baseline: a Lambda-style consumer, as the seeds' Lambda function does it.

One thread per shard (Lambda runs one invocation per shard at a time): GetRecords (10,000 per
call, the most Lambda allows), ``json.loads`` with Decimal floats, and boto3's
``Table.batch_writer`` (25-item BatchWriteItem requests, duplicates overwritten by key).
Protocol on stdout: ``progress N`` lines, then ``done N cpu_s rss_kb`` once N records are stored.
"""

from __future__ import annotations

import json
import resource
import sys
import threading
import time
from decimal import Decimal

import boto3


def drain(
    stream: str,
    shard_id: str,
    table_name: str,
    counter: list[int],
    lock: threading.Lock,
    total: int,
) -> None:
    kinesis = boto3.client("kinesis")
    table = boto3.resource("dynamodb").Table(table_name)
    iterator = kinesis.get_shard_iterator(
        StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    while True:
        with lock:
            if counter[0] >= total:
                return
        answer = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
        iterator = answer["NextShardIterator"]
        records = answer["Records"]
        if not records:
            time.sleep(0.2)
            continue
        with table.batch_writer(overwrite_by_pkeys=["hardwareID", "Timestamp"]) as writer:
            for n, record in enumerate(records, 1):
                writer.put_item(Item=json.loads(record["Data"], parse_float=Decimal))
                if n % 25 == 0:  # batch_writer sends a request every 25 items
                    with lock:
                        counter[0] += 25
        with lock:
            counter[0] += len(records) % 25


def main() -> int:
    stream, table_name, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
    kinesis = boto3.client("kinesis")
    shards = [s["ShardId"] for s in kinesis.list_shards(StreamName=stream)["Shards"]]
    counter, lock = [0], threading.Lock()
    threads = [
        threading.Thread(target=drain, args=(stream, s, table_name, counter, lock, total))
        for s in shards
    ]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        print(f"progress {counter[0]}", flush=True)
        time.sleep(0.25)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"done {counter[0]} {usage.ru_utime + usage.ru_stime:.3f} {usage.ru_maxrss}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
