"""``producer tail``: wire the machine, the files, the sender and the state file together,
and stop cleanly: on SIGTERM stop reading, flush what was read, save the acknowledged offsets."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from pathlib import Path

from structlog.typing import FilteringBoundLogger

from kernel import logs
from kernel.aws import open_clients
from kernel.errors import ConfigError
from kernel.handlers import load_handler
from kernel.kpl.encode import Entry
from kernel.tasks import running
from producer.metrics import ProducerMetrics
from producer.runtime import (
    EXIT_INCOMPLETE,
    EXIT_OK,
    check_stream,
    metrics_server,
    stop_on_signals,
)
from producer.tail import state
from producer.tail.lines import JSON_ONLY, LineChecker, Validator
from producer.tail.machine import Line, SavedFile, TailMachine
from producer.tail.runner import RejectFile, Tailer
from producer.tail.sender import AckingSender


def reject_path_for(state_path: Path) -> Path:
    return state_path.with_name(state_path.stem + ".rejects.jsonl")


def _validator(spec: str) -> Validator | None:
    if spec == JSON_ONLY:
        return None
    return load_handler(spec, source="--handler")


def _check_args(args: argparse.Namespace) -> None:
    for name in ("poll_interval_s", "linger_s", "shutdown_grace_s", "rotation_grace_s"):
        if getattr(args, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0")
    if args.concurrency < 1:
        raise ConfigError("--concurrency must be >= 1")
    if not 1 <= args.max_line_bytes <= 1024 * 1024:
        raise ConfigError("--max-line-bytes must be 1-1048576 (the Kinesis record limit)")


def tail(args: argparse.Namespace) -> int:
    """Check everything that can be checked without AWS, hold the state file, run."""
    _check_args(args)
    log = logs.get(command="tail", stream=args.stream)
    validator = _validator(args.handler)
    state_path = Path(args.state_file).expanduser().absolute()
    with state.locked(state_path):
        saved = state.load(state_path)
        if not os.access(state_path.parent, os.W_OK):
            raise ConfigError(f"cannot write state file {state_path}: directory not writable")
        reject_path = Path(args.reject_file or reject_path_for(state_path)).expanduser()
        rejects = RejectFile(reject_path)
        try:
            return asyncio.run(_tail(args, log, saved, state_path, rejects, validator))
        finally:
            rejects.close()


async def _tail(
    args: argparse.Namespace,
    log: FilteringBoundLogger,
    saved: list[SavedFile] | None,
    state_path: Path,
    rejects: RejectFile,
    validator: Validator | None,
) -> int:
    machine = TailMachine(
        saved or [],
        # "end" means: what is already in the files when this tail first runs. Later runs
        # resume from the state file, and files that appear later are read from the start.
        start_at_end=args.initial_position == "end" and saved is None,
        rotation_grace_s=args.rotation_grace_s,
        max_line_bytes=args.max_line_bytes,
    )
    metrics = ProducerMetrics()

    def acknowledged(entry: Entry) -> None:
        assert isinstance(entry.context, Line)
        machine.done(entry.context)

    async with open_clients(pool=args.concurrency + 4) as clients:
        await check_stream(clients.kinesis, args.stream, log)
        sender = AckingSender(
            clients.kinesis,
            args.stream,
            acknowledged,
            concurrency=args.concurrency,
            linger_s=args.linger_s,
            metrics=metrics,
        )
        tailer = Tailer(
            args.paths,
            machine,
            sender,
            LineChecker(args.partition_key_field, validator),
            rejects,
            state_path,
            log=log,
            metrics=metrics,
            poll_s=args.poll_interval_s,
        )
        stop = asyncio.Event()
        async with (
            metrics_server(metrics, args.metrics_host, args.metrics_port, log),
            stop_on_signals(stop, log, lambda _: None),
        ):
            log.info(
                "tail_started",
                patterns=tailer.patterns,
                state_file=str(state_path),
                reject_file=str(rejects.path),
                resumed_files=len(saved or []),
            )
            return await _run_until_stopped(tailer, sender, stop, args.shutdown_grace_s, log)


async def _run_until_stopped(
    tailer: Tailer,
    sender: AckingSender,
    stop: asyncio.Event,
    grace_s: float,
    log: FilteringBoundLogger,
) -> int:
    started = time.monotonic()
    try:
        async with running(sender.run()) as sending, running(stop.wait()) as stopped:
            async with running(tailer.run(stop)) as reading:
                await asyncio.wait({sending, reading, stopped}, return_when=asyncio.FIRST_COMPLETED)
                # Stop reading first: lines read but not yet queued stay unacknowledged, so
                # the saved offsets stop before them and the next start reads them again.
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reading  # re-raises a reading failure (unreadable file at start, …)
            log.info("tail_stopping", unacknowledged=sender.held, grace_s=grace_s)
            await sender.close()
            try:
                async with asyncio.timeout(grace_s):
                    await sending  # re-raises a sending failure (no permission, …)
            except TimeoutError:
                log.warning("tail_flush_timed_out", unacknowledged=sender.held)
    finally:
        tailer.save(force=True)
        tailer.close_files()
    log.info(
        "tail_stopped",
        lines_read=tailer.lines_read,
        lines_rejected=tailer.lines_rejected,
        records_acknowledged=sender.tally.acknowledged,
        throttled=sender.tally.throttled,
        unacknowledged=sender.held,
        uptime_s=round(time.monotonic() - started, 3),
    )
    return EXIT_OK if sender.held == 0 else EXIT_INCOMPLETE
