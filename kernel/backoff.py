"""Waiting: capped exponential backoff with full jitter, and sleeps that a stop interrupts."""

from __future__ import annotations

import asyncio
import random

# One generator for every Backoff: a Random() of its own would seed itself from the OS, and
# the sink makes a Backoff per request.
_SHARED_RNG = random.Random()


class Backoff:
    """Delays ``uniform(0, min(cap, base * 2**attempt))`` (AWS "full jitter")."""

    def __init__(self, base: float = 0.05, cap: float = 5.0, rng: random.Random | None = None):
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rng = rng or _SHARED_RNG

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return self._rng.uniform(0, ceiling)

    def reset(self) -> None:
        self.attempt = 0

    async def sleep(self) -> None:
        await asyncio.sleep(self.next_delay())


async def sleep_or_stop(delay: float, stop: asyncio.Event) -> bool:
    """Sleep ``delay`` seconds unless ``stop`` is set first; True when stopped."""
    if stop.is_set():
        return True
    try:
        async with asyncio.timeout(delay):
            await stop.wait()
    except TimeoutError:
        return False
    return True
