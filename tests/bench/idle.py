"""What an idle shard costs one worker, and how soon a record after a quiet spell is stored.

For each shard count (default 4 and 128) a fresh stream, tables and worker process: once the
worker holds every lease, its CPU (user+sys from /proc) is sampled over ``--window`` seconds
with no records at all. The cost of one idle shard is the slope between the two counts, so
the per-worker part (beats, the leader's rounds, metrics) cancels out. Then, with every shard
quiet for at least ``--quiet`` seconds, single readings are put one at a time, each to a
shard that has been quiet that long, and the time from PutRecord's answer to the item being
in the table (GetItem polled every 10 ms) is the "first record after a quiet spell".

``python -m tests.bench.idle`` (or ``make bench-idle``); the emulators are kinesalite and
dynalite on 127.0.0.1, as for ``make bench``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from devkit.local import free_port, scrape_or_nothing
from tests.bench.__main__ import Bench
from tests.bench.process import ROOT, emulators, proc_cpu, proc_usage, setup
from tests.bench.steady_profile import py_spy
from tests.support import readings


@dataclasses.dataclass
class IdleResult:
    shards: int
    cpu_ms_per_s: float  # the whole worker process, idle
    latencies_s: list[float]
    startup_cpu_s: float  # from launch until every lease is held


def run_one(
    env: dict[str, str],
    log_dir: Path,
    shards: int,
    window: float,
    quiet: float,
    probes: int,
    profile: bool = False,
) -> IdleResult:
    stream = f"idle-{shards}"
    bench = Bench(0, shards, log_dir)
    bench.stream = stream
    kinesis, dynamodb = bench.clients(env)
    tables = {
        "TELEMAX_STREAM": stream,
        "TELEMAX_SHARDS": str(shards),
        "TELEMAX_TABLE": f"{stream}-records",
        "TELEMAX_LEASE_TABLE": f"{stream}-leases",
        "TELEMAX_DLQ_TABLE": f"{stream}-dlq",
    }
    setup({**env, **tables})
    full_env = {**os.environ, **env, **tables}
    port = free_port()
    full_env |= {
        "TELEMAX_METRICS_PORT": str(port),
        "TELEMAX_METRICS_HOST": "127.0.0.1",
        "TELEMAX_WORKER_ID": f"idle-{shards}",
    }
    with (log_dir / f"idle-{shards}.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "consumer", "run"],
            env=full_env,
            cwd=ROOT,
            stdout=log,
            stderr=log,
        )
        try:
            wait_for_leases(port, shards, proc)
            startup_cpu_s = proc_cpu(proc.pid)
            time.sleep(max(quiet, 5.0))  # past start-up and into the idle cadence
            cpu0, _ = proc_usage(proc.pid)
            started = time.monotonic()
            spy = py_spy() if profile else None
            if profile and spy is None:
                print("bench-idle: py-spy not found: no profile", file=sys.stderr)
            if spy is not None:  # py-spy attached: the CPU figure then includes its sampling
                out = log_dir / f"idle-{shards}.folded"
                subprocess.run(
                    [
                        spy,
                        "record",
                        "--format",
                        "raw",
                        "-r",
                        "500",
                        "-d",
                        str(int(window)),
                        "-p",
                        str(proc.pid),
                        "-o",
                        str(out),
                    ],
                    check=True,
                    capture_output=True,
                )
            else:
                time.sleep(window)
            cpu1, _ = proc_usage(proc.pid)
            cpu_ms_per_s = (cpu1 - cpu0) * 1000 / (time.monotonic() - started)
            latencies = []
            for i in range(probes):
                time.sleep(quiet)
                latencies.append(probe(kinesis, dynamodb, stream, tables["TELEMAX_TABLE"], i))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return IdleResult(shards, cpu_ms_per_s, latencies, startup_cpu_s)


def wait_for_leases(port: int, shards: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited with {proc.returncode}")
        if scrape_or_nothing(port).get("telemax_leases_held", 0) >= shards:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the worker did not hold {shards} leases in 120 s")


def probe(kinesis: Any, dynamodb: Any, stream: str, table: str, index: int) -> float:
    """Seconds from PutRecord's answer to the reading being in the table."""
    reading = readings(1, prefix=f"QUIET{index}")[0]
    kinesis.put_record(
        StreamName=stream, Data=orjson.dumps(reading), PartitionKey=reading["hardwareID"]
    )
    put_at = time.monotonic()
    key = {
        "hardwareID": {"S": reading["hardwareID"]},
        "Timestamp": {"S": reading["Timestamp"]},
    }
    while time.monotonic() - put_at < 30:
        if "Item" in dynamodb.get_item(TableName=table, Key=key):
            return time.monotonic() - put_at
        time.sleep(0.01)
    raise RuntimeError("a reading put after a quiet spell was not stored in 30 s")


def report(results: list[IdleResult]) -> str:
    """The table of each run, then the slope between the fewest and the most shards (none
    with one shard count: a quiet shard's cost is a difference)."""
    lines = [
        "| idle worker | CPU ms per second | first record after a quiet spell, p50 / max "
        "| CPU-s from launch to every lease held |",
        "|---|---|---|---|",
    ]
    for r in results:
        lat = sorted(r.latencies_s)
        lines.append(
            f"| {r.shards} shards | {r.cpu_ms_per_s:.2f} | "
            f"{statistics.median(lat):.2f} s / {lat[-1]:.2f} s | {r.startup_cpu_s:.2f} |"
        )
    worst = max(max(r.latencies_s) for r in results)
    measured = [f"| first record after a quiet spell, worst | {worst:.2f} s | ≤ 1 s |"]
    low, high = min(results, key=_shards), max(results, key=_shards)
    if high.shards > low.shards:
        shards = high.shards - low.shards
        per_shard = (high.cpu_ms_per_s - low.cpu_ms_per_s) / shards
        take = (high.startup_cpu_s - low.startup_cpu_s) / shards
        measured = [
            f"| CPU of one quiet shard (the slope), ms per second | {per_shard:.3f} | ≤ 0.2 |",
            *measured,
            f"| CPU to take one more shard at start-up, ms | {take * 1000:.1f} | |",
        ]
    return "\n".join([*lines, "", "| | measured | goal |", "|---|---|---|", *measured])


def _shards(result: IdleResult) -> int:
    return result.shards


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shards", type=int, nargs="+", default=[4, 64])
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--quiet", type=float, default=5.0)
    parser.add_argument("--probes", type=int, default=8)
    parser.add_argument("--profile", action="store_true", help="py-spy over the idle window")
    args = parser.parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="telemax-idle-"))
    results = []
    with emulators(log_dir) as env:
        for shards in args.shards:
            result = run_one(
                env, log_dir, shards, args.window, args.quiet, args.probes, args.profile
            )
            print(
                f"idle: {shards} shards: {result.cpu_ms_per_s:.2f} CPU ms/s, first record "
                f"after quiet {statistics.median(result.latencies_s):.2f} s p50",
                flush=True,
            )
            results.append(result)
    print()
    print(report(results))
    print(f"\nlogs: {log_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
