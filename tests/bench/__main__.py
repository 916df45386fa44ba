"""`make bench`: the worker beside a Lambda-style baseline and the backend's ceiling, one run.

kinesalite + dynalite on 127.0.0.1; a 4-shard stream pre-filled with RECORDS readings; then,
``--repeats`` times, each contender in its own process drains it (or, for the ceiling, writes
as many pre-built items) into a fresh table:

- ceiling: pre-built items, aiobotocore BatchWriteItem, 32 in flight, no Kinesis;
- floor: the same items through the worker's own write path (``FastDynamoDB``, 16 in flight,
  uvloop): what writing alone costs the worker a record — its steady figure's floor;
- baseline: Lambda-style, a thread per shard, GetRecords + boto3 ``batch_writer``;
- ours: ``python -m consumer run``;
- busy: the same worker with its ``BatchWriteItem`` calls answered at once, as written, by the
  fault proxy (``absorb``; nothing is stored, every other call goes on to dynalite): what a
  record costs the worker when the table keeps up, as DynamoDB does, rather than pacing it
  to dynalite's few thousand items a second (the worker then idles less, and on this VM work
  after idling costs more: "share of a core busy");
- before (with ``--before REV``): the same worker as of git revision REV (exported beside, run
  with the same interpreter and settings), interleaved with ours so that drift of the machine
  weighs on both: a change's cost, measured in one run;
- reference (with ``--reference REV``; ``make bench``: 80157bd, the tree issue 16 measured at
  about 15 µs a record): the same as before, a fixed point that tells the machine's phase —
  this VM moves every absolute figure by up to a third between runs, and "ours / reference"
  reads a goal set in µs at the phase it was set in;
- archive: ours with the S3 archive on (moto's server as S3; objects of at most 1 MiB or 2 s,
  so that objects are written all through the steady window): the archive's cost per object,
  at its worst;
- archive60s: the same with the archive's defaults (objects of 8 MiB or 60 s a shard; most are
  written in the drain, which the "through the drain" figure counts): the archive as run;
- insights: ours with the insights on (TELEMAX's 5-minute windows per hardwareID, into an
  insights table on dynalite), segments cut as by default (60 s or 131,072 readings a shard:
  8 MiB at 64 bytes an entry without a line; most are committed in the drain, which the
  "through the drain" figure counts);
- insights2s: the same with a segment every 2 s a shard (the archive's setting), so that
  commits run all through the steady window: the cost per commit, at its worst.

Each run has a dynalite of its own, started for it, and starts once the machine is quiet
(tests/bench/machine.py); the baseline runs last in each round, and ours in the middle of the
contenders read against it (busy, before, reference, the destinations), so that a pair's runs
are close in time (``results.round_order``); the order turns round by round.

A worker's CPU is read when its last record is stored (start-up included), over the steady
window, and "through the drain": when it has exited after SIGTERM, its last segments and
checkpoints written.

Per contender: records per wall-second (overall, and steady between 10 % and 90 % done),
process CPU-seconds (user+sys) and records per CPU-second, time to the first stored record
(from process launch, polled in DynamoDB), peak RSS. Medians are printed side by side with
the ratios, and every run is written to .bench/results.json.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from devkit.faultproxy import FaultProxy, Rule
from devkit.local import free_port, local_client, scrape_or_nothing
from producer.readings import readings
from tests.bench.machine import LIMIT_S, wait_quiet
from tests.bench.process import (
    ROOT,
    compiled,
    emulators,
    export,
    proc_cpu,
    proc_usage,
    ready,
    setup,
    wait_cpu,
    worker_pid,
)
from tests.bench.results import (
    CONTENDERS,
    REVISIONS,
    STEADY_FROM,
    STEADY_TO,
    WORKERS,
    Result,
    contenders_of,
    empty_results,
    paired,
    round_order,
    shard_scaling,
    steady,
    steady_cpu_us,
    table,
)
from tests.bench.steady_profile import SteadyProfile, py_spy, report
from tests.conftest import emulator

ARCHIVE_ENV = {"TELEMAX_ARCHIVE_MAX_BYTES": str(1 << 20), "TELEMAX_ARCHIVE_MAX_AGE_S": "2"}


def records_table(contender: str, repeat: int) -> str:
    return f"bench-{contender}-{repeat}"


@contextlib.contextmanager
def answered_at_once(endpoint: str, contender: str, repeat: int) -> Iterator[str]:
    """The DynamoDB endpoint ``contender`` talks to: for ``busy``, a fault proxy in front of
    ``endpoint`` that answers the records table's writes itself (``absorb``)."""
    if contender != "busy":
        yield endpoint
        return
    name = b'"%s"' % records_table(contender, repeat).encode()
    rule = Rule("BatchWriteItem", "absorb", body=lambda body: name in body)
    with FaultProxy(endpoint, [rule]) as proxy:
        yield proxy.endpoint


class Bench:
    def __init__(
        self,
        records: int,
        shards: int,
        log_dir: Path,
        profile: bool = False,
        trees: dict[str, Path] | None = None,
    ) -> None:
        self.profile = profile
        self.trees = trees or {}  # the revision contenders' exported trees
        self.records = records
        self.shards = shards
        self.log_dir = log_dir
        self.stream = f"bench-stream-{shards}"

    def clients(self, env: dict[str, str]) -> tuple[Any, Any]:
        kinesis = local_client("kinesis", env["AWS_ENDPOINT_URL_KINESIS"])
        dynamodb = local_client("dynamodb", env["AWS_ENDPOINT_URL_DYNAMODB"])
        return kinesis, dynamodb

    def prefill(self, env: dict[str, str]) -> None:
        started = time.monotonic()
        setup(
            {
                **env,
                "TELEMAX_SHARDS": str(self.shards),
                "TELEMAX_STREAM": self.stream,
                "TELEMAX_TABLE": "bench-setup",
                "TELEMAX_LEASE_TABLE": "bench-setup-leases",
                "TELEMAX_DLQ_TABLE": "bench-setup-dlq",
            }
        )
        kinesis, _ = self.clients(env)
        # The producer's readings of 500 devices, timed from a few minutes ago: the insights
        # aggregate them (readings from long ago would only be counted late).
        start = datetime.now(UTC) - timedelta(minutes=5)
        batch = list(readings(self.records, devices=500, seed=14, start=start))
        lock = threading.Lock()
        chunks = [batch[i : i + 500] for i in range(0, len(batch), 500)]

        def put_some(part: list[list[dict[str, Any]]]) -> None:
            for chunk in part:
                records = [
                    {"Data": orjson.dumps(r), "PartitionKey": r["hardwareID"]} for r in chunk
                ]
                while records:
                    answer = kinesis.put_records(StreamName=self.stream, Records=records)
                    records = [
                        rec
                        for rec, res in zip(records, answer["Records"], strict=True)
                        if "ErrorCode" in res
                    ]
            with lock:
                pass

        threads = [threading.Thread(target=put_some, args=(chunks[i::8],)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(
            f"bench: pre-filled {self.records:,} readings over {self.shards} shards "
            f"in {time.monotonic() - started:.1f} s",
            flush=True,
        )

    def fresh_tables(self, env: dict[str, str], name: str) -> dict[str, str]:
        tables = {
            "TELEMAX_TABLE": name,
            "TELEMAX_LEASE_TABLE": name + "-leases",
            "TELEMAX_DLQ_TABLE": name + "-dlq",
            "TELEMAX_STREAM": self.stream,
        }
        setup({**env, **tables})
        return tables

    def drop_tables(self, env: dict[str, str], tables: dict[str, str]) -> None:
        _, dynamodb = self.clients(env)
        for key in ("TELEMAX_TABLE", "TELEMAX_LEASE_TABLE", "TELEMAX_DLQ_TABLE"):
            dynamodb.delete_table(TableName=tables[key])
        with contextlib.suppress(dynamodb.exceptions.ResourceNotFoundException):
            # the insights contender's, named alike on every stream of the run
            dynamodb.delete_table(TableName=f"{tables['TELEMAX_TABLE']}-insights")

    def run(
        self,
        contender: str,
        env: dict[str, str],
        repeat: int,
        steady_profile: SteadyProfile | None = None,
    ) -> Result:
        """One run of ``contender`` on a DynamoDB emulator of its own, started for it (no
        run pays for what an earlier one left in dynalite), once the machine is quiet."""
        logs = self.log_dir / f"dynalite-{self.shards}-{contender}-{repeat}"
        logs.mkdir(exist_ok=True)
        with (
            emulator("dynalite", logs) as dynamodb,
            answered_at_once(dynamodb.endpoint, contender, repeat) as endpoint,
        ):
            if wait_quiet() is None:
                print(f"bench: the machine is still busy after {LIMIT_S:.0f} s; running anyway")
            here = {**env, "AWS_ENDPOINT_URL_DYNAMODB": endpoint}
            return self._run(contender, here, repeat, steady_profile)

    def _run(
        self,
        contender: str,
        env: dict[str, str],
        repeat: int,
        steady_profile: SteadyProfile | None,
    ) -> Result:
        tables = self.fresh_tables(env, records_table(contender, repeat))
        _, dynamodb = self.clients(env)
        full_env = {**os.environ, **env, **tables}
        log = (self.log_dir / f"{contender}-{repeat}.log").open("wb")
        port = free_port()
        cwd = ROOT
        if contender in REVISIONS:
            assert contender in self.trees, f"--{contender} REV"
            cwd = self.trees[contender]
            full_env["PYTHONPATH"] = str(cwd)
        if contender.startswith("archive"):
            bucket = f"bench-{contender}-{self.shards}-{repeat}"
            local_client("s3", env["AWS_ENDPOINT_URL_S3"]).create_bucket(Bucket=bucket)
            full_env |= {"TELEMAX_ARCHIVE_BUCKET": bucket}
            if contender == "archive":
                full_env |= ARCHIVE_ENV
        if contender.startswith("insights"):
            table = f"{tables['TELEMAX_TABLE']}-insights"
            dynamodb.create_table(
                TableName=table,
                KeySchema=[
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                AttributeDefinitions=[
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"},
                ],
                BillingMode="PAY_PER_REQUEST",
            )
            full_env |= {"TELEMAX_INSIGHTS": "on", "TELEMAX_INSIGHTS_TABLE": table}
            if contender == "insights2s":
                full_env |= ARCHIVE_ENV
        if contender in WORKERS:
            full_env |= {
                "TELEMAX_METRICS_PORT": str(port),
                "TELEMAX_METRICS_HOST": "127.0.0.1",
                "TELEMAX_WORKER_ID": f"bench-{repeat}",
                "TELEMAX_LOG_LEVEL": "info",
            }
            command = [sys.executable, "-m", "consumer", "run"]
            if self.profile:  # py-spy's samples; its own process makes the CPU figures moot
                out = self.log_dir / f"{contender}-{repeat}.folded"
                command = [
                    py_spy() or "py-spy",
                    "record",
                    "--format",
                    "raw",
                    "-r",
                    "250",
                    "-o",
                    str(out),
                    "--",
                    *command,
                ]
        elif contender == "baseline":
            command = [
                sys.executable,
                "-m",
                "tests.bench.baseline",
                self.stream,
                tables["TELEMAX_TABLE"],
                str(self.records),
            ]
        else:
            command = [
                sys.executable,
                "-m",
                "tests.bench.ceiling",
                tables["TELEMAX_TABLE"],
                str(self.records),
                *(["--lean"] if contender == "floor" else []),
            ]
        launched = time.monotonic()
        # The worker logs to stdout (kept in the log); the others speak the progress protocol.
        stdout: Any = log if contender in WORKERS else subprocess.PIPE
        proc = subprocess.Popen(
            command, env=full_env, cwd=cwd, stdout=stdout, stderr=log, text=True
        )
        state: dict[str, Any] = {"count": 0, "done": None}
        reader = threading.Thread(target=self._read_protocol, args=(proc, state, log), daemon=True)
        reader.start()
        samples: list[tuple[float, int]] = []
        cpu_samples: list[tuple[int, float]] = []  # (records done, process CPU-seconds)
        sampled = worker_pid(proc.pid) if self.profile and contender in WORKERS else proc.pid
        first: float | None = None
        stored_in = tables["TELEMAX_TABLE"]
        stores = contender != "busy"  # (busy's writes are answered, never stored)
        startup_cpu_s: float | None = None
        while True:
            time.sleep(0.02 if first is None else 0.2)
            now = time.monotonic()
            if contender in WORKERS and startup_cpu_s is None and ready(port):
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                    startup_cpu_s = proc_cpu(sampled)
            if first is None and stores and dynamodb.scan(TableName=stored_in, Limit=1)["Count"]:
                first = now - launched
            if contender in WORKERS:
                # the one counter (name[]): the whole exposition five times a second was
                # ~7 % of the worker's steady CPU; Prometheus scrapes every 15-60 s
                written = scrape_or_nothing(port, names=(WRITTEN,))
                count = int(written.get(WRITTEN, 0))
                if first is None and not stores and count:
                    first = now - launched  # its first write answered
            else:
                count = state["count"]
            samples.append((now, count))
            if steady_profile is not None and contender in WORKERS:
                if not steady_profile.started and count >= self.records * STEADY_FROM:
                    steady_profile.start(proc.pid)
                elif not steady_profile.stopped and count >= self.records * STEADY_TO:
                    steady_profile.stop()
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                # (it may have just exited: its own report has the totals)
                cpu_samples.append((count, proc_cpu(sampled)))
            if contender in WORKERS and count >= self.records:
                pid = worker_pid(proc.pid) if self.profile else proc.pid
                cpu_s, rss_kb = proc_usage(pid)
                wall = now - launched
                os.kill(pid, signal.SIGTERM)  # under py-spy: it writes its samples on exit
                break
            if state["done"] is not None:
                count, cpu_s, rss_kb = state["done"]
                wall = now - launched
                break
            if proc.poll() is not None and state["done"] is None:
                raise RuntimeError(f"{contender} exited with {proc.returncode}; see {log.name}")
            if now - launched > 240:
                proc.kill()
                raise RuntimeError(f"{contender} did not finish in 240 s; see {log.name}")
        drained_cpu_s = None
        if contender in WORKERS and not self.profile:
            drained_cpu_s = wait_cpu(proc, timeout=60)
        proc.wait(timeout=30)
        log.close()
        self.drop_tables(env, tables)
        if contender in ("ceiling", "floor"):
            first = None  # it writes pre-built items: no "first record" in the same sense
        return Result(
            contender,
            self.records,
            wall,
            steady(samples, self.records),
            cpu_s,
            first,
            rss_kb / 1024,
            steady_cpu_us(cpu_samples, self.records),
            drained_cpu_s,
            startup_cpu_s,
        )

    @staticmethod
    def _read_protocol(proc: subprocess.Popen[str], state: dict[str, Any], log: Any) -> None:
        if proc.stdout is None:
            return
        for line in proc.stdout:
            parts = line.split()
            if parts[:1] == ["progress"]:
                state["count"] = int(parts[1])
            elif parts[:1] == ["done"]:
                state["done"] = (int(parts[1]), float(parts[2]), int(parts[3]))


WRITTEN = "telemax_records_written_total"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--shards", type=int, nargs="+", default=[4, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=CONTENDERS, action="append")
    parser.add_argument("--profile", action="store_true", help="run the workers under py-spy")
    parser.add_argument(
        "--steady-profile",
        nargs="?",
        const="ours",
        choices=WORKERS,
        metavar="WORKER",
        help="then run WORKER (ours) once more, py-spy attached over its steady window only",
    )
    parser.add_argument(
        "--before",
        metavar="REV",
        help="also run the worker of git revision REV (interleaved; whatever --only names)",
    )
    parser.add_argument(
        "--reference",
        metavar="REV",
        help="also run the worker of git revision REV as the machine's fixed point "
        "(whatever --only names)",
    )
    args = parser.parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="telemax-bench-"))
    revisions = {c: getattr(args, c) for c in REVISIONS if getattr(args, c)}
    contenders = contenders_of(args.only, revisions.keys())
    trees = {c: export(revision, log_dir / c) for c, revision in revisions.items()}
    for tree in (ROOT, *trees.values()):
        compiled(tree)
    with emulators(log_dir) as env:
        benches = [
            Bench(args.records, n, log_dir, profile=args.profile, trees=trees) for n in args.shards
        ]
        for bench in benches:
            bench.prefill(env)
        # Repeats outermost, shard counts inside: a machine that speeds up or slows down
        # during the run (shared CPUs do) weighs on every shard count alike.
        by_shards = {bench.shards: empty_results() for bench in benches}
        for repeat in range(1, args.repeats + 1):
            for bench in benches:
                run_round(bench, env, repeat, contenders, by_shards)
        profiles = [
            steady_profile(bench, env, args.repeats + 1, args.steady_profile)
            for bench in (benches if args.steady_profile else [])
        ]
    for results in by_shards.values():
        for contender in contenders:
            if not results[contender]:
                results[contender].append(
                    Result(
                        contender, 1, float("nan"), float("nan"), float("nan"), None, float("nan")
                    )
                )
    for shards, results in by_shards.items():
        print()
        print(f"medians of {args.repeats} runs, {args.records:,} records, {shards} shards:")
        print(table(results))
        pairs = paired(results)
        if pairs:
            print(pairs)
    if len(by_shards) > 1:
        print()
        print(shard_scaling(by_shards, [c for c in WORKERS if c in contenders]))
    out = ROOT / ".bench" / "results.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                str(shards): {
                    c: [dataclasses.asdict(r) | {"records_per_cpu_s": r.per_cpu_s} for r in rs]
                    for c, rs in results.items()
                }
                for shards, results in by_shards.items()
            },
            indent=2,
        )
    )
    for found in profiles:
        if found is not None:
            print()
            print(report(found))
    print(f"\nevery run: {out}; logs: {log_dir}")
    return 0


def steady_profile(bench: Bench, env: dict[str, str], repeat: int, worker: str) -> Path | None:
    """One more run of ``worker``, py-spy attached over its steady window (not among the
    measured runs: a sampler beside it takes CPU from the emulators); the samples' file."""
    out = ROOT / ".bench" / f"steady-{worker}-{bench.shards}-shards.folded"
    out.parent.mkdir(exist_ok=True)
    out.unlink(missing_ok=True)
    profile = SteadyProfile(out)
    try:
        bench.run(worker, env, repeat, steady_profile=profile)
    finally:
        if profile.started and not profile.stopped:
            profile.stop()
    return out if out.exists() else None


def run_round(
    bench: Bench,
    env: dict[str, str],
    repeat: int,
    contenders: list[str],
    by_shards: dict[int, dict[str, list[Result]]],
) -> None:
    for contender in round_order(contenders, repeat):
        result = bench.run(contender, env, repeat)
        by_shards[bench.shards][contender].append(result)
        first = "—" if result.first_s is None else f"{result.first_s:.2f} s"
        if result.startup_cpu_s is not None:
            first += f", start-up {result.startup_cpu_s:.2f} CPU-s"
        drained = (
            f", through the drain {result.drained_cpu_us:.1f} µs"
            if result.drained_cpu_us is not None
            else ""
        )
        print(
            f"bench: {bench.shards} shards, run {repeat} {contender:<8} "
            f"{result.overall_rps:>8,.0f} rec/s wall, "
            f"{result.per_cpu_s:>8,.0f} rec/CPU-s ({result.cpu_us_per_record:.1f} µs, "
            f"steady {result.steady_cpu_us:.1f} µs{drained}), first {first}, "
            f"RSS {result.peak_rss_mb:.0f} MB",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
