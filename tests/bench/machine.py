"""Wait for a quiet machine between the bench's runs.

Why: in `make bench` of 2026-12-04 (200,000 readings) ours, always run right after the
Lambda-style baseline, cost 33 to 35 µs a record on 64 shards in two of three rounds against
28 to 30 for the insights worker, which does more. So each run now starts on a quiet machine
(this module), with a dynalite of its own, the baseline last in each round. That did not
change the picture: the next `make bench` gave ours 30.7, 38.4 and 35.0 µs on 64 shards and
the insights 38.3, 35.2 and 33.8 — this machine's run-to-run noise (start-up CPU, the same
work in every run, moved by up to a quarter between neighbouring runs). The runs start equal
now; compare medians, and ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

QUIET = 0.15  # busy CPU, in cores, below which the machine counts as quiet
INTERVAL_S = 0.5
LIMIT_S = 30.0


def cpu_times(stat: str) -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs, from /proc/stat's text."""
    fields = [int(value) for value in stat.splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_cores(before: Sequence[int], after: Sequence[int], cores: int) -> float:
    """The CPUs' busy share between two cpu_times readings, in cores."""
    busy, total = after[0] - before[0], after[1] - before[1]
    return cores * busy / total if total > 0 else 0.0


def wait_quiet(
    read: Callable[[], str] = lambda: Path("/proc/stat").read_text(),
    sleep: Callable[[float], None] = time.sleep,
    cores: int = os.cpu_count() or 1,
    limit_s: float = LIMIT_S,
) -> float | None:
    """Seconds waited until an INTERVAL_S in which the machine was busy less than QUIET
    cores (None: still busy after ``limit_s``; the run starts all the same)."""
    waited = 0.0
    before = cpu_times(read())
    while waited < limit_s:
        sleep(INTERVAL_S)
        waited += INTERVAL_S
        after = cpu_times(read())
        if busy_cores(before, after, cores) < QUIET:
            return waited
        before = after
    return None


# What idling does to the next piece of work (``python -m tests.bench.machine``): the same
# pure-Python work (a JSON document of 60 small objects parsed three times), timed back to
# back and after each pause of ``GAPS_MS``. On this VM (2026-12-06, three runs) it took 70-72
# µs back to back, 77-149 after 1 ms idle, 141-155 after 10 ms: a worker that waits on a slow
# emulator between answers — as the bench's does, about a tenth busy — pays that on every
# record, whatever code runs.
GAPS_MS = (0.0, 0.2, 1.0, 3.0, 10.0)
_DOCUMENT = json.dumps([{"a": n, "b": str(n) * 3, "c": [1, 2, 3]} for n in range(60)])


def _work() -> None:
    for _ in range(3):
        json.loads(_DOCUMENT)


def work_after_gap(gap_s: float, works: int, work: Callable[[], None] = _work) -> float:
    """The median wall time of ``work``, in µs, each run after ``gap_s`` of sleep (0: back to
    back)."""
    times = []
    for _ in range(works):
        if gap_s:
            time.sleep(gap_s)
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description="the same work after each pause")
    parser.add_argument("--works", type=int, default=500, help="timed works a pause")
    args = parser.parse_args()
    first = None
    for gap_ms in GAPS_MS:
        cost = work_after_gap(gap_ms / 1000, args.works)
        first = first or cost
        print(f"after {gap_ms:4.1f} ms idle: {cost:6.1f} µs a work ({cost / first:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
