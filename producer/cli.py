"""``telemax-producer`` / ``python -m producer``: generate readings and ship them to Kinesis."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Iterator, Sequence

import orjson

from consumer.aws import config_error_from, open_clients
from consumer.config import ConfigError
from producer.readings import readings
from producer.shipper import Entry, Shipper, Tally

PROG = "telemax-producer"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="send N realistic TELEMAX readings")
    gen.add_argument("--count", type=int, required=True, help="readings to send")
    gen.add_argument("--rate", type=float, default=0, help="records per second (0: no limit)")
    gen.add_argument(
        "--stream",
        default=os.environ.get("TELEMAX_STREAM", "telemax-stream"),
        help="stream name [env TELEMAX_STREAM, default telemax-stream]",
    )
    gen.add_argument("--devices", type=int, default=500, help="distinct hardwareIDs")
    gen.add_argument("--seed", type=int, default=None, help="random seed (repeatable data)")
    gen.add_argument("--concurrency", type=int, default=4, help="PutRecords calls in flight")
    gen.add_argument("--quiet", action="store_true", help="no progress line")
    return parser


def entries_for(count: int, devices: int, seed: int | None) -> Iterator[Entry]:
    """Made lazily: a large --count never sits in memory at once."""
    for reading in readings(count, devices=devices, seed=seed):
        yield Entry(orjson.dumps(reading), reading["hardwareID"])


async def _progress(shipper: Shipper, total: int) -> None:
    while True:
        await asyncio.sleep(1.0)
        tally = shipper.tally
        print(
            f"\r{PROG}: {tally.acknowledged}/{total} acknowledged "
            f"({tally.rate:,.0f} rec/s), {tally.failed} failed   ",
            end="",
            file=sys.stderr,
            flush=True,
        )


async def generate(args: argparse.Namespace) -> Tally:
    for name in ("count", "devices", "concurrency"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name} must be >= 1")
    if args.rate < 0:
        raise ConfigError("--rate must be >= 0")
    entries = entries_for(args.count, args.devices, args.seed)
    async with open_clients(pool=max(10, args.concurrency)) as clients:
        try:
            await clients.kinesis.describe_stream_summary(StreamName=args.stream)
        except Exception as exc:
            raise config_error_from(exc, f"Kinesis stream {args.stream!r}") or exc from None
        shipper = Shipper(
            clients.kinesis, args.stream, concurrency=args.concurrency, rate=args.rate or None
        )
        progress = None if args.quiet else asyncio.ensure_future(_progress(shipper, args.count))
        try:
            return await shipper.ship(entries)
        finally:
            if progress:
                progress.cancel()
                print(file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        tally = asyncio.run(generate(args))
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    elapsed = max(1e-9, time.monotonic() - tally.started)
    print(
        f"{PROG}: {tally.acknowledged} of {args.count} acknowledged, {tally.failed} failed, "
        f"{tally.throttled} throttled and retried, {elapsed:.1f} s "
        f"({tally.acknowledged / elapsed:,.0f} records/s)"
    )
    return 0 if tally.acknowledged == args.count else 1
