"""``producer generate``: a paced, optionally aggregated load of realistic records."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys
import time
from contextlib import AsyncExitStack

from kernel import logs
from kernel.aws import open_clients
from kernel.errors import ConfigError
from kernel.kpl import MAX_RECORD_BYTES
from kernel.kpl.encode import DEFAULT_AGGREGATE_BYTES
from kernel.tasks import running
from producer import schemas
from producer.metrics import ProducerMetrics
from producer.progress import Progress
from producer.runtime import check_stream, metrics_server, stop_on_signals
from producer.shipper import Shipper, Tally

MIN_AGGREGATE_BYTES = 1024


@dataclasses.dataclass
class Outcome:
    tally: Tally
    target: int  # what the summary counts against: --count, or what was sent
    elapsed_s: float
    aggregated: bool
    interrupted_by: signal.Signals | None = None

    @property
    def complete(self) -> bool:
        t = self.tally
        return self.interrupted_by is None and t.failed == 0 and t.acknowledged == self.target

    def summary(self, prog: str) -> str:
        t = self.tally
        elapsed = max(1e-9, self.elapsed_s)
        line = (
            f"{prog}: {t.acknowledged} of {self.target} acknowledged, {t.failed} failed, "
            f"{t.throttled} throttled and retried, {elapsed:.1f} s "
            f"({t.acknowledged / elapsed:,.0f} records/s)"
        )
        if self.aggregated:
            line += f", in {t.kinesis_records} Kinesis records (KPL-aggregated)"
        if self.interrupted_by is not None:
            line += f", interrupted by {self.interrupted_by.name}"
        return line


def check_args(args: argparse.Namespace) -> None:
    if args.count is None and args.duration is None:
        raise ConfigError("give --count N or --duration SECONDS (or both: whichever ends first)")
    if args.count is not None and args.count < 1:
        raise ConfigError("--count must be >= 1")
    if args.duration is not None and not args.duration > 0:
        raise ConfigError("--duration must be > 0")
    for name in ("devices", "concurrency"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name} must be >= 1")
    if args.rate < 0:
        raise ConfigError("--rate must be >= 0")
    if not MIN_AGGREGATE_BYTES <= args.aggregate_max_bytes <= MAX_RECORD_BYTES:
        raise ConfigError(
            f"--aggregate-max-bytes must be {MIN_AGGREGATE_BYTES}-{MAX_RECORD_BYTES}"
            f" (default {DEFAULT_AGGREGATE_BYTES})"
        )


async def generate(args: argparse.Namespace) -> Outcome:
    check_args(args)
    log = logs.get(command="generate", stream=args.stream)
    metrics = ProducerMetrics()
    entries = schemas.entries(args.schema, args.count, devices=args.devices, seed=args.seed)
    async with open_clients(pool=max(10, args.concurrency)) as clients:
        await check_stream(clients.kinesis, args.stream, log)
        shipper = Shipper(
            clients.kinesis,
            args.stream,
            concurrency=args.concurrency,
            rate=args.rate or None,
            aggregate_bytes=args.aggregate_max_bytes if args.aggregate else None,
            metrics=metrics,
        )
        stop = asyncio.Event()
        signals: list[signal.Signals] = []
        async with (
            metrics_server(metrics, args.metrics_host, args.metrics_port, log),
            stop_on_signals(stop, log, signals.append),
        ):
            log.info(
                "generate_started",
                schema=args.schema,
                count=args.count,
                duration_s=args.duration,
                rate=args.rate or None,
                aggregate=args.aggregate,
            )
            deadline = (
                asyncio.get_running_loop().call_later(args.duration, stop.set)
                if args.duration
                else None
            )
            progress = Progress(
                lambda: shipper.tally, sys.stderr, total=args.count, duration_s=args.duration
            )
            try:
                async with AsyncExitStack() as drawing:
                    if not args.quiet:
                        await drawing.enter_async_context(running(progress.run()))
                        drawing.callback(progress.finish)
                    tally = await shipper.ship(entries, stop)
                    elapsed_s = time.monotonic() - tally.started
            finally:
                if deadline:
                    deadline.cancel()
    outcome = Outcome(
        tally=tally,
        target=args.count if args.count is not None and args.duration is None else tally.sent,
        elapsed_s=elapsed_s,
        aggregated=args.aggregate,
        interrupted_by=signals[0] if signals else None,
    )
    log.info(
        "generate_finished",
        acknowledged=tally.acknowledged,
        failed=tally.failed,
        throttled=tally.throttled,
        kinesis_records=tally.kinesis_records,
        elapsed_s=round(outcome.elapsed_s, 3),
    )
    return outcome
