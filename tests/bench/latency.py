"""Put → stored latency with a second reader on the stream: telemax polling vs telemax fan-out,
side by side in one run (issue 15).

For each retrieval mode a fresh stream and tables on kinesis-local + dynalite (in a private
network namespace: kinesis-local listens on every interface): a telemax worker, and beside it
a Lambda-style polling reader of the same stream (a thread per shard, one GetRecords a second
from LATEST, as Lambda's event source mapping polls). A producer puts readings at a steady
rate, each with a hardware id of its own; a scanner reads the table every 100 ms and dates
when each first appears. Printed: latency p50 / p99 / max, and the throttles each reader met.

On kinesis-local the figures are the emulator's: it pushes one event a second per
subscription (measured: a record waits 1-2 s), and it throttles neither reader. AWS documents
about 70 ms for fan-out, and for polling 200 ms with one reader, up to 1 s with five.
``python -m tests.bench.latency`` (``make bench`` runs it).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from devkit.local import aws_env, free_port, local_client, scrape_or_nothing
from devkit.netns import fanout_backends, unavailable

MODES = ("polling", "fanout")


class Scenario:
    def __init__(self, kinesis: str, dynamodb: str, logs: Path, rate: float, seconds: float):
        self.kinesis, self.dynamodb, self.logs = kinesis, dynamodb, logs
        self.rate, self.seconds = rate, seconds

    def run(self, mode: str) -> dict[str, Any]:
        stream, table = f"lat-{mode}", f"LAT-{mode}"
        env = {
            **os.environ,
            **aws_env(self.kinesis),
            "AWS_ENDPOINT_URL_KINESIS": self.kinesis,
            "AWS_ENDPOINT_URL_DYNAMODB": self.dynamodb,
            "TELEMAX_STREAM": stream,
            "TELEMAX_TABLE": table,
            "TELEMAX_LEASE_TABLE": f"lat-{mode}-leases",
            "TELEMAX_DLQ_TABLE": f"LAT-{mode}-deadletter",
            "TELEMAX_SHARDS": "2",
            "TELEMAX_RETRIEVAL": mode,
            "TELEMAX_WORKER_ID": f"lat-{mode}",
            "TELEMAX_METRICS_HOST": "127.0.0.1",
            "TELEMAX_METRICS_PORT": str(free_port()),
        }
        subprocess.run([sys.executable, "-m", "consumer", "setup"], env=env, check=True)
        kinesis = local_client("kinesis", self.kinesis)
        dynamodb = local_client("dynamodb", self.dynamodb)
        stop = threading.Event()
        other = LambdaStyleReader(kinesis, stream, stop)
        other.start()
        with (self.logs / f"worker-{mode}.log").open("wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "consumer", "run"], env=env, stdout=log, stderr=log
            )
            try:
                self._put(kinesis, stream, "WARM", 0)  # the worker reads before we time
                _wait_for(lambda: _stored(dynamodb, table) >= {"WARM-0"}, 60)
                wanted = {f"{mode}-{n}" for n in range(int(self.rate * self.seconds))}
                seen: dict[str, float] = {}
                watcher = threading.Thread(target=self._watch, args=(dynamodb, table, wanted, seen))
                watcher.start()  # dates each record as it appears, while the producer runs
                put_at = self._produce(kinesis, stream, mode)
                watcher.join()
                metrics = scrape_or_nothing(int(env["TELEMAX_METRICS_PORT"]))
            finally:
                stop.set()
                worker.send_signal(signal.SIGTERM)
                worker.wait(30)
        latencies = sorted(seen[key] - put_at[key] for key in seen)
        return {
            "mode": mode,
            "records": len(put_at),
            "stored": len(seen),
            "p50": _quantile(latencies, 0.50),
            "p99": _quantile(latencies, 0.99),
            "max": latencies[-1] if latencies else float("nan"),
            "telemax_throttles": metrics.get("telemax_throttles_total", 0.0),
            "other_throttles": other.throttles,
            "other_records": other.records,
        }

    def _put(self, kinesis: Any, stream: str, prefix: str, n: int) -> None:
        reading = {
            "hardwareID": f"{prefix}-{n}",
            "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "Data1": "LNK-0001",
            "Data2": 1,
            "Data3": 2,
        }
        kinesis.put_record(StreamName=stream, Data=orjson.dumps(reading), PartitionKey=str(n))

    def _produce(self, kinesis: Any, stream: str, mode: str) -> dict[str, float]:
        put_at: dict[str, float] = {}
        interval, start = 1 / self.rate, time.monotonic()
        for n in range(int(self.rate * self.seconds)):
            delay = start + n * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._put(kinesis, stream, mode, n)
            put_at[f"{mode}-{n}"] = time.monotonic()
        return put_at

    def _watch(self, dynamodb: Any, table: str, wanted: set[str], seen: dict[str, float]) -> None:
        deadline = time.monotonic() + self.seconds + 30
        while len(seen) < len(wanted) and time.monotonic() < deadline:
            found = _stored(dynamodb, table)
            now = time.monotonic()
            for key in (found & wanted) - set(seen):
                seen[key] = now
            time.sleep(0.1)


class LambdaStyleReader:
    """A thread per shard: GetRecords once a second from LATEST, as Lambda polls."""

    def __init__(self, kinesis: Any, stream: str, stop: threading.Event) -> None:
        self.kinesis, self.stream, self.stop = kinesis, stream, stop
        self.throttles = 0
        self.records = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        shards = self.kinesis.list_shards(StreamName=self.stream)["Shards"]
        for shard in shards:
            threading.Thread(target=self._poll, args=(shard["ShardId"],), daemon=True).start()

    def _poll(self, shard_id: str) -> None:
        iterator = self.kinesis.get_shard_iterator(
            StreamName=self.stream, ShardId=shard_id, ShardIteratorType="LATEST"
        )["ShardIterator"]
        while not self.stop.wait(1.0):
            try:
                answer = self.kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            except self.kinesis.exceptions.ProvisionedThroughputExceededException:
                with self._lock:
                    self.throttles += 1
                continue
            iterator = answer.get("NextShardIterator") or iterator
            with self._lock:
                self.records += len(answer.get("Records", []))


def _stored(dynamodb: Any, table: str) -> set[str]:
    found: set[str] = set()
    for page in dynamodb.get_paginator("scan").paginate(
        TableName=table, ProjectionExpression="hardwareID"
    ):
        found |= {item["hardwareID"]["S"] for item in page["Items"]}
    return found


def _wait_for(condition: Any, limit: float) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {limit} s")
        time.sleep(0.2)


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def render(results: list[dict[str, Any]], rate: float, seconds: float) -> str:
    lines = [
        f"put -> stored latency, {rate:g} readings/s for {seconds:g} s, 2 shards, a Lambda-style "
        "polling reader on the same stream (kinesis-local + dynalite):",
        "| telemax | stored | p50 (s) | p99 (s) | max (s) | telemax throttles "
        "| the other reader's throttles |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['mode']} | {r['stored']}/{r['records']} | {r['p50']:.2f} | {r['p99']:.2f} "
            f"| {r['max']:.2f} | {r['telemax_throttles']:g} | {r['other_throttles']} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=20.0, help="readings a second")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to produce")
    args = parser.parse_args()
    why = unavailable()
    if why is not None:
        print(f"latency: skipped ({why})")
        return 0
    logs = Path(tempfile.mkdtemp(prefix="telemax-latency-"))
    with fanout_backends(logs) as (network, kinesis, dynamodb):
        scenario = Scenario(kinesis, dynamodb, logs, args.rate, args.seconds)
        results = network.run(lambda: [scenario.run(mode) for mode in MODES])
    print(render(results, args.rate, args.seconds))
    print(f"logs: {logs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
