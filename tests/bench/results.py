"""What `make bench` reports of its runs (no I/O): a run's figures, the steady window's, the
medians side by side with each contender's ratio to ours, the paired ratios round by round,
and how each worker's figures move with the shard count."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Collection, Sequence

CONTENDERS = (
    "ceiling",
    "floor",
    "baseline",
    "before",
    "reference",
    "ours",
    "busy",
    "archive",
    "archive60s",
    "insights",
    "insights2s",
)
# ``python -m consumer run``: of a revision (a change's ``before``, or the ``reference``), of
# this tree (its writes stored, or answered at once by a table that keeps up: busy), of this
# tree with the archive or insights on
WORKERS = ("before", "reference", "ours", "busy", "archive", "archive60s", "insights", "insights2s")
# the contenders that run another revision's worker (``--before REV``, ``--reference REV``)
REVISIONS = ("before", "reference")
STEADY_FROM, STEADY_TO = 0.1, 0.9  # the steady window: between these shares of the records
ADDED = ("archive", "archive60s", "insights", "insights2s")  # read "X / ours": what each adds
# read against ours round by round ("X / ours" for the added, "ours / X" for the other two)
PAIRED_WITH_OURS = (*ADDED, "busy", *REVISIONS)


def contenders_of(only: Sequence[str] | None, revisions: Collection[str]) -> list[str]:
    """The contenders to run, in CONTENDERS' order: those ``--only`` names (all but the
    revisions' when it names none) and every revision given (``--before REV``,
    ``--reference REV``), named or not — a revision asked for is run. A revision's contender
    named without its revision stops the bench with one line."""
    for contender in only or ():
        if contender in REVISIONS and contender not in revisions:
            raise SystemExit(f"bench: --only {contender} needs --{contender} REV")
    named = set(only) if only else {c for c in CONTENDERS if c not in REVISIONS}
    return [c for c in CONTENDERS if c in named or c in revisions]


def round_order(contenders: list[str], repeat: int) -> list[str]:
    """The order of a round's runs: the contenders read against ours run around it, ours in
    their middle — each pair of runs a minute or so apart at most, not the several minutes a
    round takes, over which this machine's speed drifts (one pair's rounds read 0.88-1.68x,
    2026-12-06) —, the others before them, the baseline last (suspected, not confirmed, to
    burden the run after it: tests/bench/machine.py). Both groups turn round by round, so
    each contender in turn runs beside ours, and first."""

    def turned(names: list[str]) -> list[str]:
        turn = (repeat - 1) % max(len(names), 1)
        return names[turn:] + names[:turn]

    paired = [c for c in contenders if c in PAIRED_WITH_OURS] if "ours" in contenders else []
    around = ["ours"] if paired else []
    rest = [c for c in contenders if c != "baseline" and c not in paired + around]
    block = turned(paired)
    block[len(block) // 2 : len(block) // 2] = around
    return turned(rest) + block + (["baseline"] if "baseline" in contenders else [])


@dataclasses.dataclass
class Result:
    contender: str
    records: int
    wall_s: float
    steady_rps: float
    cpu_s: float
    first_s: float | None
    peak_rss_mb: float
    # CPU µs per record between 10 % and 90 % of the records: start-up and drain left out
    steady_cpu_us: float = float("nan")
    # a worker's CPU-seconds until it exited after SIGTERM: its last segments committed too
    drained_cpu_s: float | None = None
    # a worker's CPU-seconds from launch until its /readyz first answered 200: the start-up
    # (imports, clients, the first heartbeat) that the whole-run figure carries
    startup_cpu_s: float | None = None

    @property
    def overall_rps(self) -> float:
        return self.records / self.wall_s

    @property
    def per_cpu_s(self) -> float:
        return self.records / self.cpu_s

    @property
    def cpu_us_per_record(self) -> float:
        return self.cpu_s / self.records * 1e6

    @property
    def steady_busy(self) -> float:
        """The share of one core the process kept busy over the steady window. A worker
        waiting on a slow emulator is mostly idle, and on this VM the same work runs up to
        twice as slow after each idle spell (``python -m tests.bench.machine``): its CPU a
        record is read in that condition."""
        return self.steady_rps * self.steady_cpu_us / 1e6

    @property
    def drained_cpu_us(self) -> float | None:
        return None if self.drained_cpu_s is None else self.drained_cpu_s / self.records * 1e6


def steady(samples: list[tuple[float, int]], total: int) -> float:
    """Records per second between 10 % and 90 % of ``total``."""
    low = next((t for t, n in samples if n >= total * STEADY_FROM), None)
    high = next((t for t, n in samples if n >= total * STEADY_TO), None)
    if low is None or high is None or high <= low:
        return float("nan")
    return total * (STEADY_TO - STEADY_FROM) / (high - low)


def steady_cpu_us(samples: list[tuple[int, float]], total: int) -> float:
    """CPU µs per record between the first samples at or past 10 % and 90 % of ``total``."""
    low = next(((n, cpu) for n, cpu in samples if n >= total * STEADY_FROM), None)
    high = next(((n, cpu) for n, cpu in samples if n >= total * STEADY_TO), None)
    if low is None or high is None or high[0] <= low[0]:
        return float("nan")
    return (high[1] - low[1]) / (high[0] - low[0]) * 1e6


PAIRED = (
    ("whole", "cpu_us_per_record"),
    ("steady", "steady_cpu_us"),
    ("through the drain", "drained_cpu_us"),
)


def paired(results: dict[str, list[Result]]) -> str:
    """Each added contender against ours round by round: the two ran minutes apart in one
    round, so a slow phase of the machine weighs on both; the median of the rounds' ratios
    (and their range) says more than the ratio of the medians when rounds differ. For the
    destinations also the rounds' differences: a ratio against a cheap round of ours reads
    high for the same added work, the difference is what the destination itself costs."""
    lines = []
    for contender in [c for c in PAIRED_WITH_OURS if results[c] and results["ours"]]:
        rounds = list(zip(results[contender], results["ours"], strict=False))
        if contender not in ADDED:  # read "ours / before"
            rounds = [(o, r) for r, o in rounds]
        ratios, differences = [], []
        for label, field in PAIRED:
            pairs = [
                (a, b)
                for r, o in rounds
                if (a := getattr(r, field)) is not None
                and (b := getattr(o, field))
                and a == a
                and b == b
            ]
            if pairs:
                ratios.append(_spread(label, [a / b for a, b in pairs], "{:.2f}", "-", "x"))
                differences.append(_spread(label, [a - b for a, b in pairs], "{:+.2f}", " to "))
        if ratios:
            name = f"{contender} / ours" if contender in ADDED else f"ours / {contender}"
            lines.append(f"{name}, CPU µs per record, paired by round: " + ", ".join(ratios))
        if differences and contender in ADDED:
            lines.append(
                f"{contender} - ours, CPU µs per record, paired by round: " + ", ".join(differences)
            )
    return "\n".join(lines)


def _spread(label: str, values: list[float], form: str, between: str, unit: str = "") -> str:
    """``label median<unit> (least<between>most)``."""
    median, least, most = (
        form.format(v) for v in (statistics.median(values), min(values), max(values))
    )
    return f"{label} {median}{unit} ({least}{between}{most})"


def table(results: dict[str, list[Result]]) -> str:
    def med(contender: str, field: str) -> float | None:
        values = [getattr(r, field) for r in results[contender]]
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    rows = [
        ("records per wall-second, overall", "overall_rps", "{:,.0f}"),
        ("records per wall-second, steady", "steady_rps", "{:,.0f}"),
        ("process CPU-seconds", "cpu_s", "{:.2f}"),
        ("records per CPU-second", "per_cpu_s", "{:,.0f}"),
        ("CPU µs per record", "cpu_us_per_record", "{:.1f}"),
        ("CPU µs per record, steady (10-90 %)", "steady_cpu_us", "{:.1f}"),
        ("CPU µs per record, through the drain", "drained_cpu_us", "{:.1f}"),
        ("share of a core busy, steady", "steady_busy", "{:.0%}"),
        ("start-up CPU-seconds (launch to ready)", "startup_cpu_s", "{:.2f}"),
        ("first record stored after (s)", "first_s", "{:.2f}"),
        ("peak RSS (MB)", "peak_rss_mb", "{:.0f}"),
    ]
    shown = [c for c in CONTENDERS if results[c]]
    against: list[str] = [
        c for c in ("baseline", "ceiling", "floor", "busy", *REVISIONS) if c in shown
    ]
    against += [c for c in ADDED if c in shown]
    out = [
        "| | "
        + " | ".join([*shown, *(f"{c} / ours" if c in ADDED else f"ours / {c}" for c in against)])
        + " |",
        "|---|" + "---|" * (len(shown) + len(against)),
    ]
    for label, field, fmt in rows:
        values = {c: med(c, field) for c in shown}
        cells = [fmt.format(v) if v is not None else "—" for v in values.values()]
        ratios = []
        for other in against:
            a, b = values.get("ours"), values[other]
            if other in ADDED:
                a, b = b, a
            ratios.append(f"{a / b:.2f}x" if a is not None and b else "—")
        out.append(f"| {label} | " + " | ".join(cells + ratios) + " |")
    return "\n".join(out)


def empty_results() -> dict[str, list[Result]]:
    return {c: [] for c in CONTENDERS}


def shard_scaling(by_shards: dict[int, dict[str, list[Result]]], workers: list[str]) -> str:
    """The worker(s): CPU per record at each shard count against the fewest shards'."""
    counts = sorted(by_shards)
    out = [
        "| CPU µs per record | " + " | ".join(f"{n} shards" for n in counts) + " |",
        "|---|" + "---|" * len(counts),
    ]

    def median(n: int, contender: str, field: str) -> float:
        return float(statistics.median(getattr(r, field) for r in by_shards[n][contender]))

    for worker in workers:
        for label, field in (
            ("whole run", "cpu_us_per_record"),
            ("steady", "steady_cpu_us"),
            ("through the drain", "drained_cpu_us"),
        ):
            if any(getattr(r, field) is None for n in counts for r in by_shards[n][worker]):
                continue
            values = [median(n, worker, field) for n in counts]
            first, rest = values[0], values[1:]
            cells = [f"{first:.1f}"] + [f"{v:.1f} ({v / first - 1:+.0%})" for v in rest]
            out.append(f"| {worker}, {label} | " + " | ".join(cells) + " |")
    return "\n".join(out)
