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

from kernel import logs
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
    throttle_randomly(fleet, 0.2, random.Random(5))
    await asyncio.sleep(60.0)
    throttle_randomly(fleet, 0.0, random.Random(5))
    await asyncio.sleep(SETTLE_S)
    return fleet.outcome("lease table throttled (20 % for 60 s)", since)


async def slow_scans(fleet: Fleet, args: argparse.Namespace) -> Outcome:
    since = fleet.clock()
    fleet.table.latency["list"] = fleet.members.latency["members"] = 4.0
    await asyncio.sleep(60.0)
    fleet.table.latency["list"] = fleet.members.latency["members"] = 0.0
    await asyncio.sleep(SETTLE_S)
    return fleet.outcome("Scans take 4 s (60 s)", since)


async def reshard(fleet: Fleet, args: argparse.Namespace) -> Outcome:
    """Every open shard splits in two: its owner reads it to the end, creates the children's
    leases and checkpoints SHARD_END; "without owner" is each child's wait from then."""
    since = fleet.clock()
    items = fleet.table.items
    before = sum(1 for lease in items.values() if not lease.finished)
    fleet.table.closed.update(key for key, lease in items.items() if not lease.finished)
    balanced = await fleet.until_balanced(BALANCE_BOUND_S)
    await asyncio.sleep(SETTLE_S)
    return fleet.outcome(
        f"reshard {before:,} -> {2 * before:,} shards", since, balanced_after=balanced
    )


SCENARIOS: tuple[Step, ...] = (
    cold_start,
    steady,
    sigkill,
    rolling_restart,
    scale_out,
    scale_in,
    throttled,
    slow_scans,
    reshard,
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
    await asyncio.sleep(1.0)  # let the cancelled tasks end before the loop closes
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


# DynamoDB on-demand list prices, us-east-1, since November 2024 (USD per million units).
READ_PRICE, WRITE_PRICE = 0.125, 0.625


def costs(results: dict[str, list[Outcome]], args: argparse.Namespace) -> str:
    """Steady-state read and write units per 1,000 shard-hours, and their on-demand price."""
    lines = [
        "",
        "| steady state, per 1,000 shard-hours | read units | write units | on-demand USD |",
        "|---|---|---|---|",
    ]
    for model, outcomes in results.items():
        rates = next(o.rates for o in outcomes if o.name.startswith("steady"))
        if rates is None:
            continue
        per = 3600 * 1000 / args.shards
        reads, writes = rates.read_mean * per, rates.write_mean * per
        price = (reads * READ_PRICE + writes * WRITE_PRICE) / 1e6
        lines.append(f"| {model} | {reads:,.0f} | {writes:,.0f} | {price:,.2f} |")
    return "\n".join(lines)


def goals(results: dict[str, list[Outcome]], args: argparse.Namespace) -> str:
    """The issue's goals for telemax, each with its figure and whether it is met."""
    ours = {o.name.split(" ")[0]: o for o in results.get("telemax", [])}
    kcl = {o.name.split(" ")[0]: o for o in results.get("kcl", [])}
    if not ours:
        return ""
    duration, renew = 10.0, 10.0 / 3
    share_bound = 30.0 if args.shards <= 1000 else 120.0
    rows: list[tuple[str, float | None, str, bool]] = []
    steady = ours["steady"].rates
    assert steady is not None
    if "steady" in kcl and kcl["steady"].rates is not None:
        ratio = 100 * steady.read_mean / kcl["steady"].rates.read_mean
        rows.append(("steady reads, % of the KCL 2.x model's", ratio, "≤ 10 %", ratio <= 10))
    per_shard = steady.write_mean * renew / args.shards
    rows.append(("steady writes per shard per renew interval", per_shard, "≤ 1", per_shard <= 1))
    failover = ours["SIGKILL"].gap_max
    rows.append(
        ("fail-over max (s)", failover, "≤ 12", failover is not None and failover <= duration + 2)
    )
    rolling = ours["rolling"].gap_max or 0.0
    rows.append(("hand-over max, rolling restart (s)", rolling, "≤ 2", rolling <= 2))
    scale_out = next(
        o for o in results["telemax"] if "hand-over" not in o.name and "scale" in o.name
    )
    share = scale_out.balanced_after
    rows.append(
        (
            "new workers get their share (s)",
            share,
            f"≤ {share_bound:.0f}",
            share is not None and share <= share_bound,
        )
    )
    reads, writes = steady.read_partition_peak, steady.write_partition_peak
    rows.append(("busiest partition, steady, read units/s", reads, "≤ 3,000", reads <= 3000))
    rows.append(("busiest partition, steady, write units/s", writes, "≤ 1,000", writes <= 1000))
    overlaps = sum(o.overlaps for o in results["telemax"])
    rows.append(("two owners at once (all scenarios)", float(overlaps), "never", overlaps == 0))
    lines = ["", "| telemax goal | figure | goal | met |", "|---|---|---|---|"]
    for label, value, goal, met in rows:
        lines.append(f"| {label} | {cell(value, digits=2)} | {goal} | {'yes' if met else 'NO'} |")
    rates = [(o.name, o.rates) for o in results["telemax"] if o.rates is not None]
    name, busiest = max(rates, key=lambda item: item[1].write_partition_peak)
    scale_in = next(o for o in results["telemax"] if "hand-over" in o.name and "scale" in o.name)
    lines += [
        "",
        f"Transients (not goals): the busiest partition peaked at "
        f"{busiest.write_partition_peak:,.0f} write units/s ({name}); the scale-in "
        f"({scale_in.name.split('(')[0].strip()}, all at once) handed over in "
        f"{cell(scale_in.gap_p50, ' s')} / {cell(scale_in.gap_max, ' s')} (p50 / max).",
    ]
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
    print(costs(results, args))
    print(goals(results, args))
    print(f"\n(simulated in {time.perf_counter() - started:.0f} s of real time)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
