"""The phases of a run, each timed from its own event, and the figures they fill in."""

from __future__ import annotations

import dataclasses
import math
import signal
import time

from tests.leasecost.fleet import (
    READS,
    SETTLE_BEFORE_STEADY_S,
    EveryShardProducer,
    Fleet,
    holdings,
    say,
    up_after,
    wait_for,
)
from tests.leasecost.traffic import Meter, Traffic, lease_rates, moved
from tests.support import keys_of

# --- the run --------------------------------------------------------------------------------


@dataclasses.dataclass
class Figures:
    workers: int
    shards: int
    lease_duration_s: float
    balanced_s: float | None = None
    steady: Traffic | None = None
    checkpoints_per_s: float = 0.0
    ownership_changes: int = 0
    failover_s: float | None = None
    handover_s: float | None = None
    share_s: float | None = None
    share: int = 0
    produced: int = 0
    stored: int = 0
    dead_lettered: int = 0
    missing: int = 0
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def renew_interval_s(self) -> float:
        return self.lease_duration_s / 3


def seconds(value: float | None, limit: float | None = None) -> str:
    if value is None:
        return f"not reached{f' within {limit:.0f} s' if limit else ''}"
    return f"{value:.2f} s"


def phase_start(fleet: Fleet, figures: Figures, meter_roles: dict[str, str]) -> None:
    say(f"phase 1: starting {figures.workers} workers")
    meter = Meter(fleet.proxy, meter_roles)
    launched, launched_wall = time.monotonic(), time.time()
    workers = [fleet.start(f"w{i}") for i in range(1, figures.workers + 1)]
    figures.balanced_s = wait_for(fleet.is_even, 60, since=launched)
    say(
        f"  balanced (each worker {figures.shards // figures.workers} leases, every shard owned) "
        f"after {seconds(figures.balanced_s, 60)} from launch "
        f"(Python start-up included: every worker logged worker_started after "
        f"{up_after(workers, launched_wall)})"
    )
    say(f"  {lease_rates(meter.traffic())}")


def phase_steady(fleet: Fleet, figures: Figures, roles: dict[str, str], steady_s: float) -> None:
    say(f"phase 2: steady {steady_s:.0f} s")
    # The table names the owners before they have read their grants (a beat later): let
    # the start-up's last reads happen before the window opens.
    time.sleep(SETTLE_BEFORE_STEADY_S)
    owners_before = {k: v.owner for k, v in fleet.views().items()}
    checkpoints_before = fleet.metric("telemax_checkpoints_total")
    meter = Meter(fleet.proxy, roles)
    time.sleep(steady_s)
    figures.steady = meter.traffic()
    checkpoints = fleet.metric("telemax_checkpoints_total") - checkpoints_before
    figures.checkpoints_per_s = checkpoints / figures.steady.seconds
    owners_after = {k: v.owner for k, v in fleet.views().items()}
    figures.ownership_changes = sum(owners_before[k] != owners_after.get(k) for k in owners_before)
    say("  | table | operation | requests (refused) | requests/s | items/s | read consistently/s |")
    say("  |---|---|---|---|---|---|")
    for row in figures.steady.rows():
        consistent = f"{row.consistent_per_s:.1f}" if row.operation in READS else "—"
        say(
            f"  | {row.role} | {row.operation} | {row.requests:,} ({row.refused:,}) "
            f"| {row.requests_per_s:.1f} | {row.items_per_s:.1f} | {consistent} |"
        )
    say(
        f"  checkpoints (workers' telemax_checkpoints_total): {figures.checkpoints_per_s:.1f}/s; "
        f"lease owners changed in the window: {figures.ownership_changes}"
    )


def phase_failover(fleet: Fleet, figures: Figures, roles: dict[str, str], victim: str) -> None:
    say(f"phase 3: SIGKILL {victim}")
    worker = next(w for w in fleet.live() if w.worker_id == victim)
    orphans = {k for k, v in fleet.views().items() if v.owner == victim}
    meter = Meter(fleet.proxy, roles)
    killed_at = time.time()
    worker.proc.kill()
    worker.wait(10)
    limit = 60.0
    figures.failover_s, how = moved(fleet, orphans, killed_at, limit)
    say(
        f"  fail-over of {len(orphans)} leases: {seconds(figures.failover_s, limit)} ({how}); "
        f"{lease_rates(meter.traffic())}"
    )
    settle(fleet)


def phase_handover(fleet: Fleet, figures: Figures, roles: dict[str, str], leaver: str) -> None:
    say(f"phase 4: SIGTERM {leaver}")
    worker = next(w for w in fleet.live() if w.worker_id == leaver)
    handed = {k for k, v in fleet.views().items() if v.owner == leaver}
    meter = Meter(fleet.proxy, roles)
    signalled_at = time.time()
    worker.signal(signal.SIGTERM)
    figures.handover_s, how = moved(fleet, handed, signalled_at, 30)
    code = worker.wait(30)
    exited = time.time() - signalled_at
    say(
        f"  hand-over of {len(handed)} leases: {seconds(figures.handover_s, 30)} ({how}); "
        f"{leaver} exited {code} after {exited:.2f} s; {lease_rates(meter.traffic())}"
    )
    settle(fleet)


def phase_new_worker(fleet: Fleet, figures: Figures, roles: dict[str, str], newcomer: str) -> None:
    live = len(fleet.live()) + 1
    figures.share = math.ceil(figures.shards / live) - 1
    say(f"phase 5: start {newcomer} ({live} live workers; its share: {figures.share} leases)")
    meter = Meter(fleet.proxy, roles)
    launched, launched_wall = time.monotonic(), time.time()
    worker = fleet.start(newcomer)

    def has_share() -> bool:
        return holdings(fleet.views())[newcomer] >= figures.share

    figures.share_s = wait_for(has_share, 60, since=launched)
    say(
        f"  {newcomer} holds {figures.share} leases after {seconds(figures.share_s, 60)} "
        f"from launch (worker_started after {up_after([worker], launched_wall)}); "
        f"{lease_rates(meter.traffic())}"
    )
    settle(fleet)


def settle(fleet: Fleet) -> None:
    took = wait_for(fleet.is_even, 45)
    held = sorted(holdings(fleet.views()).items(), key=lambda kv: str(kv[0]))
    shown = ", ".join(f"{owner} {n}" for owner, n in held)
    say(f"  settled ({shown}) after {seconds(took, 45)} more")


def verify_records(fleet: Fleet, figures: Figures, producer: EveryShardProducer | None) -> None:
    produced = producer.finish() if producer else set()
    stack = fleet.stack
    say(f"records: producer stopped at {len(produced):,}; waiting for TELEMAX to hold them")
    wait_for(lambda: stack.count() >= len(produced), 90)
    stored = keys_of(stack.scan())
    figures.produced = len(produced)
    figures.stored = len(stored & produced)
    figures.dead_lettered = stack.count(stack.dlq_table)
    figures.missing = len(produced - stored)
    extra = len(stored - produced)
    say(
        f"  produced {figures.produced:,}, stored {figures.stored:,}, dead-lettered "
        f"{figures.dead_lettered:,}, missing {figures.missing:,}, unexpected {extra:,}"
    )
