"""Realistic TELEMAX readings: hardwareID, Timestamp, Data1 (link), Data2 (Mbps), Data3 (ms).

Deterministic for a given seed and start time. Timestamps are ISO-8601 UTC with microseconds
and strictly increase per hardwareID, so (hardwareID, Timestamp) is unique per reading.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

Reading = dict[str, Any]


def iso_micro(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def readings(
    count: int | None,
    *,
    devices: int = 500,
    seed: int | None = None,
    start: datetime | None = None,
) -> Iterator[Reading]:
    """``count`` readings (endless when None) round-robin over ``devices`` devices, one per
    device per second."""
    rng = random.Random(seed)
    start = start or datetime.now(UTC)
    links = [f"LNK-{rng.randrange(10_000):04d}" for _ in range(devices)]
    for n in range(count) if count is not None else itertools.count():
        device, tick = n % devices, n // devices
        moment = start + timedelta(seconds=tick, microseconds=rng.randrange(1_000_000))
        yield {
            "hardwareID": f"HW-{device:06d}",
            "Timestamp": iso_micro(moment),
            "Data1": links[device],
            "Data2": round(rng.uniform(5.0, 950.0), 2),  # throughput, Mbps
            "Data3": round(rng.lognormvariate(3.0, 0.5), 2),  # latency, ms
        }
