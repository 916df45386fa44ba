"""`make sim`: the lease protocol at scale, telemax beside the KCL 2.x model, on virtual time.

For each model, one fleet goes through the scenarios in turn (cold start, steady state, a
SIGKILL of 10 % of the workers, a rolling restart, scale out and in, a throttled lease table,
Scans that take seconds); each scenario is measured on its own window: lease-table read and
write units per second (mean, peak, and the busiest partition's peak), shards without an owner
after a kill or a stop (fail-over, hand-over), time to balance, lease moves, and every moment
two workers owned one shard at once.

    python -m tests.sim --shards 1000 --workers 50 [--steady 600] [--only telemax]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Awaitable, Callable

import looptime

from consumer import logs
from tests.sim.run import Fleet, Outcome, throttle_randomly

BALANCE_BOUND_S = 600.0
SETTLE_S = 30.0  # after a disturbance, how long to watch for orphans and overlaps

Step = Callable[[Fleet, argparse.Namespace], Awaitable[Outcome]]


async def cold_start(fleet: Fleet, args: argparse.Namespace) -> Outcome:
    since = fleet.clock()
    await fleet.spawn_many(args.workers)
    balanced = await fleet.until_balanced(BALANCE_BOUND_S)
    outcome = fleet.outcome("cold start", since, balanced_after=balanced)
    return outcome


async def steady(fleet: Fleet, args: argparse.Namespace) -> Outcome:
    await asyncio.sleep(SETTLE_S)  # let take passes and renewals reach their rhythm
    since = fleet.clock()
    await asyncio.sleep(args.steady)
    return fleet.outcome(f"steady {args.steady:.0f} s", since)


async def sigkill(fleet: Fleet, args: argparse.Namespace) -> Outcome:
    since = fleet.clock()
    victims = random.Random(3).sample(sorted(fleet.workers), max(1, args.workers // 10))
    for name in victims:
        fleet.kill(name)
    balanced = await fleet.until_balanced(BALANCE_BOUND_S)
    await asyncio.sleep(SETTLE_S)
    outcome = fleet.outcome(f"SIGKILL {len(victims)} (fail-over)", since, balanced_after=balanced)
    for _ in victims:
        fleet.spawn()  # back to full strength before the next scenario
    await fleet.until_balanced(BALANCE_BOUND_S)
    return outcome


async def rolling_restart(fleet: Fleet, args: argparse.Namespace) -> Outcome:
    """Each worker in turn: SIGTERM; its replacement starts 5 s later (a pod's start-up), and
    the next worker stops 5 s after that (a rollout with ``maxUnavailable: 1``). The hand-over
    is measured on the peers: the replacement is not there yet when the shards move."""
    since = fleet.clock()
    for name in sorted(fleet.workers)[: args.rolling]:
        await fleet.terminate(name)
        await asyncio.sleep(5.0)
        fleet.spawn()
        await asyncio.sleep(5.0)
    balanced = await fleet.until_balanced(BALANCE_BOUND_S)
    await asyncio.sleep(SETTLE_S)
    outcome = fleet.outcome(
        f"rolling restart of {args.rolling} (hand-over)", since, balanced_after=balanced
    )
    return outcome


async def scale_out(fleet: Fleet, args: argparse.Namespace) -> Outcome:
    since = fleet.clock()
    await fleet.spawn_many(args.workers)
    balanced = await fleet.until_balanced(BALANCE_BOUND_S)
    outcome = fleet.outcome(
        f"scale {args.workers} -> {2 * args.workers}", since, balanced_after=balanced
    )
    return outcome


async def scale_in(fleet: Fleet, args: argparse.Namespace) -> Outcome:
    since = fleet.clock()
    keep = max(1, args.workers // 2)
    leaving = sorted(fleet.workers)[keep:]
    await asyncio.gather(*(fleet.terminate(name) for name in leaving))
    balanced = await fleet.until_balanced(BALANCE_BOUND_S)
    await asyncio.sleep(SETTLE_S)
    outcome = fleet.outcome(
        f"scale {keep + len(leaving)} -> {keep} (hand-over)", since, balanced_after=balanced
    )
    return outcome


async def throttled(fleet: Fleet, args: argparse.Namespace) -> Outcome:
    since = fleet.clock()
    throttle_randomly(fleet.table, 0.2, random.Random(5))
    await asyncio.sleep(60.0)
    fleet.table.fault = lambda op, key: None
    await asyncio.sleep(SETTLE_S)
    return fleet.outcome("lease table throttled (20 % for 60 s)", since)


async def slow_scans(fleet: Fleet, args: argparse.Namespace) -> Outcome:
    since = fleet.clock()
    fleet.table.latency["list"] = 4.0
    await asyncio.sleep(60.0)
    fleet.table.latency["list"] = 0.0
    await asyncio.sleep(SETTLE_S)
    return fleet.outcome("Scans take 4 s (60 s)", since)


SCENARIOS: tuple[Step, ...] = (
    cold_start,
    steady,
    sigkill,
    rolling_restart,
    scale_out,
    scale_in,
    throttled,
    slow_scans,
)


async def simulate(model: str, args: argparse.Namespace) -> list[Outcome]:
    fleet = Fleet(model, args.shards, partitions=args.partitions)
    outcomes = []
    for step in SCENARIOS:
        started = time.perf_counter()
        outcome = await step(fleet, args)
        outcomes.append(outcome)
        print(
            f"sim: {model:8} {outcome.name:42} done at t={fleet.clock():7.1f} s "
            f"({time.perf_counter() - started:5.1f} s real)",
            file=sys.stderr,
        )
    for name in list(fleet.workers):
        fleet.kill(name)
    return outcomes


def cell(value: float | None, unit: str = "", digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}{unit}"


def report(results: dict[str, list[Outcome]], args: argparse.Namespace) -> str:
    models = list(results)
    lines = [
        f"lease protocol, {args.shards:,} shards, {args.workers} workers, lease duration 10 s, "
        f"{args.partitions} partitions; units per second (read units / write units)",
        "",
        "| scenario | measure | " + " | ".join(models) + " |",
        "|---|---|" + "---|" * len(models),
    ]
    for index, first in enumerate(results[models[0]]):
        rows: list[tuple[str, Callable[[Outcome], str]]] = [
            ("reads mean / peak / partition peak", _units("read")),
            ("writes mean / peak / partition peak", _units("write")),
            ("shards without owner p50 / max", _gaps),
            ("balanced after", lambda o: cell(o.balanced_after, " s")),
            ("lease moves", lambda o: f"{o.moves:,}"),
            ("two owners at once (count, longest)", _overlaps),
        ]
        for label, render in rows:
            values = [render(results[m][index]) for m in models]
            lines.append(f"| {first.name} | {label} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def _units(kind: str) -> Callable[[Outcome], str]:
    """Mean / peak / busiest partition's peak of ``kind`` ("read" or "write") units."""

    def render(o: Outcome) -> str:
        if o.rates is None:
            return "—"
        mean, peak, partition = (
            getattr(o.rates, f"{kind}_{what}") for what in ("mean", "peak", "partition_peak")
        )
        return f"{mean:,.1f} / {peak:,.0f} / {partition:,.0f}"

    return render


def _gaps(o: Outcome) -> str:
    return (
        "—" if not o.gaps else f"{cell(o.gap_p50, ' s')} / {cell(o.gap_max, ' s')} ({len(o.gaps)})"
    )


def _overlaps(o: Outcome) -> str:
    return "never" if not o.overlaps else f"{o.overlaps}, {o.overlap_max:.2f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim", description=__doc__)
    parser.add_argument("--shards", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--steady", type=float, default=600.0, help="seconds of steady state")
    parser.add_argument("--rolling", type=int, default=10, help="workers restarted in turn")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--only", choices=("telemax", "kcl"))
    args = parser.parse_args(argv)
    logs.configure("error")
    results: dict[str, list[Outcome]] = {}
    started = time.perf_counter()
    for model in ("telemax", "kcl"):
        if args.only and model != args.only:
            continue
        loop = looptime.new_event_loop()
        try:
            results[model] = loop.run_until_complete(simulate(model, args))
        finally:
            loop.close()
    print(report(results, args))
    print(f"\n(simulated in {time.perf_counter() - started:.0f} s of real time)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
