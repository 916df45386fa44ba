"""A token bucket: ``rate`` a second, bursts up to ``burst``; time is a parameter (tests)."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """Tokens refill at ``rate`` a second up to ``burst`` (default: one second's worth);
    ``initial`` are there at first. Taking more than are there is a debt: the taker waits
    until it is paid, and later takers queue behind it, in the order they asked."""

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        initial: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = rate if burst is None else burst
        self._clock = clock
        self._tokens = min(self.burst, initial)
        self._at = clock()

    def delay_for(self, tokens: float = 1) -> float:
        """Take ``tokens``; answer how long to wait before using them (0: at once)."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= tokens
        return max(0.0, -self._tokens / self.rate)
