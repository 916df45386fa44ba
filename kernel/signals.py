"""SIGTERM and SIGINT as a stop: the first sets the event (a graceful stop under the owner's
deadline), a second exits at once."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from contextlib import contextmanager

from structlog.typing import FilteringBoundLogger

SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def stopping_on_signals(stop: asyncio.Event, log: FilteringBoundLogger) -> Iterator[None]:
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.warning("second_signal_exiting_now", signal=sig.name)
            raise SystemExit(1)
        log.info("signal_received", signal=sig.name)
        stop.set()

    for sig in SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield
    finally:
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)
