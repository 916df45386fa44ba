"""Wait for a quiet machine between the bench's runs.

Why: in `make bench` of 2026-12-04 (200,000 readings) ours, always run right after the
Lambda-style baseline, cost 33 to 35 µs a record on 64 shards in two of three rounds against
28 to 30 for the insights worker run two places later, which does more: a contender that
starts while the emulators still work off the previous run shares the 2 cores with them.
Waiting for a quiet machine was not enough on its own (the next run: ours right after the
baseline, 33.1 µs on 64 shards after a quiet start), so each round also runs the baseline last
and turns the others' order (tests/bench/__main__.py); the baseline's 200,000 writes seem to leave
dynalite slower to answer for the next run, not only busy — a fresh dynalite a run is the
next step.
"""

from __future__ import annotations

import os
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
