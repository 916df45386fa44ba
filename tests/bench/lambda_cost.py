"""What the Lambda handler costs: its cold start and a warm invocation's CPU per record, with
its records' writes on the lean path (the default) beside aiobotocore's
(``TELEMAX_FAST_PATH=false``), in one run.

``python -m tests.bench.lambda_cost [--events 200] [--repeats 3] [--archive]`` (or ``make
bench-lambda``): kinesalite and dynalite on 127.0.0.1, as for ``make bench`` (with
``--archive``, the S3 archive on too, moto's server as S3: each invocation lists the objects
its batch may be in and puts one, into a bucket of each run's own); events of 100
of the producer's TELEMAX readings, as Lambda's event source mapping delivers them; each
round runs one execution environment of each kind as a process of its own (the order turns
round by round), which handles every event in turn: CPU (user + system, ``getrusage``) of the
imports, of the first invocation (the clients, the table's key: the rest of a cold start),
and per record over the warm invocations after it. Medians of the rounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from devkit.local import local_client
from tests.bench.process import ROOT, emulators, setup
from tests.deploy.lambda_driver import Context, lambda_record

PATHS = {"lean": "true", "aiobotocore": "false"}  # name -> TELEMAX_FAST_PATH
PER_EVENT = 100
STREAM = "telemax-lambda-bench"


@dataclasses.dataclass(frozen=True)
class Invocations:
    path: str
    import_cpu_s: float
    first_cpu_s: float  # the first invocation: the clients and the table's key, then 100
    warm_us_per_record: float


def event(readings: list[dict[str, Any]], first: int) -> dict[str, Any]:
    """A Kinesis event of these readings, sequence numbers from ``first``."""
    return {
        "Records": [
            lambda_record(
                STREAM,
                "shardId-000000000000",
                f"{first + n:056d}",
                orjson.dumps(reading),
                reading["hardwareID"],
            )
            for n, reading in enumerate(readings)
        ]
    }


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(events_path: str) -> int:
    """One execution environment: every event in turn; its figures as one JSON line."""
    at = cpu()
    from consumer import lambda_handler

    events = json.loads(Path(events_path).read_text())
    imported = cpu()
    lambda_handler.handler(events[0], Context(60_000))
    first = cpu()
    for one in events[1:]:
        answer = lambda_handler.handler(one, Context(60_000))
        assert answer == {"batchItemFailures": []}, answer
    warm = cpu()
    lambda_handler.reset()
    records = sum(len(one["Records"]) for one in events[1:])
    figures = {
        "import_cpu_s": imported - at,
        "first_cpu_s": first - imported,
        "warm_us_per_record": (warm - first) / records * 1e6,
    }
    print(json.dumps(figures))
    return 0


def run_path(path: str, events_path: Path, env: dict[str, str]) -> Invocations:
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench.lambda_cost", "--child", str(events_path)],
        env={**os.environ, **env, "TELEMAX_FAST_PATH": PATHS[path], "TELEMAX_LOG_LEVEL": "warning"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return Invocations(path, **json.loads(done.stdout.splitlines()[-1]))


def report(runs: list[Invocations]) -> str:
    """A table of the medians, each path a column, and lean / aiobotocore."""

    def median(path: str, field: str) -> float:
        return float(statistics.median(getattr(r, field) for r in runs if r.path == path))

    rows = [
        ("imports, CPU-s", "import_cpu_s", "{:.2f}"),
        ("first invocation (clients, table key, 100 records), CPU-s", "first_cpu_s", "{:.3f}"),
        ("warm invocations, CPU µs per record", "warm_us_per_record", "{:.1f}"),
    ]
    lines = ["| | lean (default) | aiobotocore | lean / aiobotocore |", "|---|---|---|---|"]
    for label, field, form in rows:
        lean, generic = median("lean", field), median("aiobotocore", field)
        ratio = f"{lean / generic:.2f}x" if generic else "—"
        lines.append(f"| {label} | {form.format(lean)} | {form.format(generic)} | {ratio} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200, help=f"events of {PER_EVENT}")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of both paths")
    parser.add_argument("--archive", action="store_true", help="with the S3 archive on")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    from producer.readings import readings

    found = list(readings(args.events * PER_EVENT, devices=500, seed=7))
    events = [event(found[n : n + PER_EVENT], n) for n in range(0, len(found), PER_EVENT)]
    runs: list[Invocations] = []
    with tempfile.TemporaryDirectory(prefix="telemax-lambda-bench-") as tmp:
        events_path = Path(tmp, "events.json")
        events_path.write_text(json.dumps(events))
        with emulators(Path(tmp)) as env:
            env = {**env, "TELEMAX_STREAM": STREAM}
            setup(env)
            for round_ in range(args.repeats):
                order = list(PATHS) if round_ % 2 == 0 else list(reversed(PATHS))
                for path in order:
                    run_env = dict(env)
                    if args.archive:  # (a bucket a run: an object found would be adopted)
                        bucket = f"bench-lambda-{path}-{round_}"
                        local_client("s3", env["AWS_ENDPOINT_URL_S3"]).create_bucket(Bucket=bucket)
                        run_env["TELEMAX_ARCHIVE_BUCKET"] = bucket
                    runs.append(run_path(path, events_path, run_env))
                    print(f"bench-lambda: round {round_ + 1} {runs[-1]}", flush=True)
    print(
        f"\nthe Lambda handler{' with the archive' if args.archive else ''}, {len(events)} "
        f"events of {PER_EVENT} TELEMAX readings, medians of {args.repeats} rounds:"
    )
    print(report(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
