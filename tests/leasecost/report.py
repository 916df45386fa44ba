"""The figures beside the KCL 2.x model for the same fleet."""

from __future__ import annotations

from typing import NamedTuple

from tests.leasecost.fleet import KCL_SCAN_INTERVAL_S, say
from tests.leasecost.phases import Figures, seconds
from tests.leasecost.traffic import Traffic


class Row(NamedTuple):
    label: str
    telemax: str
    model: str
    ratio: str
    goal: str
    met: bool | None  # None: no goal


def cost_rows(figures: Figures, steady: Traffic) -> list[Row]:
    """Lease-table reads and writes in the steady window beside the KCL 2.x model's."""
    w, s, renew = figures.workers, figures.shards, figures.renew_interval_s
    reads, writes, checkpoints = (
        steady.items_read_per_s(),
        steady.items_written_per_s(),
        figures.checkpoints_per_s,
    )
    model_reads = w * s / KCL_SCAN_INTERVAL_S
    model_renewals = s / renew
    model_writes = model_renewals + checkpoints
    write_goal = s / renew  # one write per shard per renew interval, checkpoints included
    return [
        Row(
            "lease + membership items read /s",
            f"{reads:.1f}",
            f"{model_reads:.1f} ({w} x {s} / {KCL_SCAN_INTERVAL_S:.0f})",
            f"{reads / model_reads:.1f}x",
            f"≤ {model_reads:.1f}",
            reads <= model_reads,
        ),
        Row(
            "lease + membership items written /s",
            f"{writes:.1f} ({steady.write_requests_per_s():.1f} requests)",
            f"{model_writes:.1f} ({model_renewals:.1f} renewals + {checkpoints:.1f} checkpoints)",
            f"{writes / model_writes:.2f}x",
            f"≤ {write_goal:.1f} ({s} / {renew:.1f} s)",
            writes <= write_goal,
        ),
    ]


def timing_rows(figures: Figures) -> list[Row]:
    d, take = figures.lease_duration_s, KCL_SCAN_INTERVAL_S

    def within(value: float | None, limit: float) -> bool:
        return value is not None and value <= limit

    return [
        Row(
            "fail-over (SIGKILL)",
            seconds(figures.failover_s),
            f"≤ {d + take:g} s ({d:g} s + a {take:g} s take pass)",
            "",
            f"≤ {d + 2:g} s",
            within(figures.failover_s, d + 2),
        ),
        Row(
            "hand-over (SIGTERM)",
            seconds(figures.handover_s),
            "not modelled",
            "",
            "≤ 2 s",
            within(figures.handover_s, 2),
        ),
        Row(
            f"new worker holds {figures.share} leases",
            seconds(figures.share_s),
            "not modelled",
            "",
            "≤ 15 s",
            within(figures.share_s, 15),
        ),
        Row(
            f"balanced from start ({figures.shards // figures.workers} each)",
            seconds(figures.balanced_s),
            "not modelled",
            "",
            "—",
            None,
        ),
        Row(
            "records produced / stored / dead-lettered / missing",
            f"{figures.produced:,} / {figures.stored:,} / {figures.dead_lettered:,} / "
            f"{figures.missing:,}",
            "",
            "",
            "missing 0",
            figures.missing == 0,
        ),
    ]


def summary(figures: Figures) -> None:
    if figures.steady is None:
        return
    say()
    say(
        f"summary: {figures.workers} workers, {figures.shards} shards, lease duration "
        f"{figures.lease_duration_s:g} s (renew every {figures.renew_interval_s:.1f} s), "
        f"steady window {figures.steady.seconds:.0f} s"
    )
    say("| | telemax | KCL 2.x model, same fleet | telemax / model | goal (issue 11) | met |")
    say("|---|---|---|---|---|---|")
    for row in [*cost_rows(figures, figures.steady), *timing_rows(figures)]:
        met = "—" if row.met is None else ("yes" if row.met else "no")
        say(f"| {row.label} | {row.telemax} | {row.model} | {row.ratio} | {row.goal} | {met} |")
    say(
        "The model's writes include telemax's own checkpoints (same workload); its reads are "
        "one eventually consistent full Scan per worker every 20 s. Items are counted at the "
        "proxy: Scan/Query ScannedCount, GetItem 1 when found, writes the items a request names."
    )
