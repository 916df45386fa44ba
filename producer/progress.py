"""The progress bar of ``generate`` on stderr: redrawn in place on a terminal, a plain line
every few seconds in a log or a pipe (so CI logs stay readable)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TextIO

from producer.shipper import Tally

TERMINAL_REDRAW_S = 0.25
LOG_LINE_EVERY_S = 5.0


class Progress:
    def __init__(
        self,
        tally: Callable[[], Tally],
        out: TextIO,
        *,
        total: int | None = None,
        duration_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        width: int = 24,
    ) -> None:
        self._tally = tally
        self._out = out
        self._total = total
        self._duration_s = duration_s
        self._clock = clock
        self._width = width
        self._started = clock()
        self._terminal = out.isatty()

    def _fraction(self, acknowledged: int, elapsed: float) -> float | None:
        fractions = []
        if self._total:
            fractions.append(acknowledged / self._total)
        if self._duration_s:
            fractions.append(elapsed / self._duration_s)
        return min(1.0, max(fractions)) if fractions else None

    def line(self) -> str:
        tally = self._tally()
        elapsed = max(1e-9, self._clock() - self._started)
        rate = tally.acknowledged / elapsed
        counts = f"{tally.acknowledged:,}" + (f"/{self._total:,}" if self._total else "")
        text = (
            f"{counts} acknowledged  {rate:,.0f} rec/s  "
            f"{tally.failed:,} failed  {tally.throttled:,} throttled"
        )
        fraction = self._fraction(tally.acknowledged, elapsed)
        if fraction is None:
            return f"{text}  {elapsed:,.0f} s"
        filled = int(fraction * self._width)
        bar = "#" * filled + "-" * (self._width - filled)
        left = elapsed / fraction - elapsed if fraction > 0 else None
        eta = f"ETA {left:,.0f} s" if left is not None else "ETA ?"
        return f"[{bar}] {fraction:4.0%}  {text}  {eta}"

    def draw(self) -> None:
        if self._terminal:
            self._out.write("\r" + self.line() + "\x1b[K")
        else:
            self._out.write(self.line() + "\n")
        self._out.flush()

    async def run(self) -> None:
        every = TERMINAL_REDRAW_S if self._terminal else LOG_LINE_EVERY_S
        while True:
            await asyncio.sleep(every)
            self.draw()

    def finish(self) -> None:
        """The final state, and a newline so the summary starts on its own line."""
        if self._terminal:
            self.draw()
            self._out.write("\n")
            self._out.flush()
