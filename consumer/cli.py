"""``telemax-consumer`` / ``python -m consumer``: run | setup | status | dlq | insights | demo."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from consumer import config
from consumer.config import Settings
from kernel import logs
from kernel.aws import AWS_ERRORS, Clients, config_error_from, open_clients
from kernel.errors import ConfigError

PROG = "telemax-consumer"

Command = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]


# The worker allocates about ten containers per record while tens of thousands of records
# are in flight. Those are acyclic (reference counting frees them), but each allocation burst
# triggers a cyclic-GC pass over the whole young heap: measured at a fifth of the worker's CPU.
# Start-up objects are frozen out of collection and collections run far less often: at
# 100,000 the few collections of a 200,000-record run still cost the archive and insights
# workers 0.07-0.15 CPU-s (what their segments hold is young until collected once: gc
# callbacks, `make bench` runs of 2026-12-05), at 500,000 none ran after start-up.
GC_THRESHOLDS = (500_000, 50, 100)


async def run_command(settings: Settings, _: argparse.Namespace) -> int:
    from consumer.allocator import keep_freed_memory
    from consumer.clients import fast_path_for, run_clients
    from consumer.worker import Worker, preflight

    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    keep_freed_memory()

    # Connections: every write slot, one reader per shard, and the lease traffic.
    pool = settings.write_concurrency + 32
    async with run_clients(settings, pool) as clients:
        if settings.source == "sqs":
            return await run_sqs(clients, settings, pool)
        checked = await preflight(clients, settings)
        fast = await fast_path_for(clients, settings, pool)
        subscriber = None
        if settings.retrieval != "polling":
            from consumer.fanout.registration import retrieval_for

            subscriber = await retrieval_for(clients, settings)
        try:
            await Worker(
                settings,
                clients,
                checked.handler,
                fast=fast,
                subscriber=subscriber,
                key_names=checked.key_names,
            ).run()
        finally:
            if fast is not None:
                fast.close()
            if subscriber is not None:
                await subscriber.aclose()
    return 0


async def run_sqs(clients: Clients, settings: Settings, pool: int) -> int:
    """The SQS source's worker, its records' writes on the lean path (and its queue's calls,
    with the lean clients: consumer.clients.run_clients)."""
    from consumer.clients import fast_path_for, records_writes
    from consumer.sources.sqs import SqsWorker, preflight_sqs

    handler, key_names = await preflight_sqs(clients, settings)
    fast = await fast_path_for(clients, settings, pool)
    writer, preparer = records_writes(fast, clients.dynamodb)
    try:
        await SqsWorker(
            settings, clients, handler, key_names, writer=writer, preparer=preparer
        ).run()
    finally:
        if fast is not None:
            fast.close()
    return 0


async def setup_command(settings: Settings, _: argparse.Namespace) -> int:
    from consumer.ops.provision import setup

    async with open_clients() as clients:
        report = await setup(clients, settings)
    for line in report.lines():
        print(line)
    return 0


async def status_command(settings: Settings, _: argparse.Namespace) -> int:
    from consumer.lease.member_table import MemberRepository
    from consumer.lease.repository import LeaseRepository
    from consumer.ops.status import render, render_members

    async with open_clients() as clients:
        try:
            leases = await LeaseRepository(clients.dynamodb, settings.lease_table).list()
        except AWS_ERRORS as exc:
            what = f"DynamoDB lease table {settings.lease_table!r}"
            raise config_error_from(exc, what) or exc from None
        table = MemberRepository(clients.dynamodb, settings.member_table_name)
        try:
            members, leadership = await table.members(), await table.leader()
        except AWS_ERRORS as exc:
            what = f"DynamoDB membership table {settings.member_table_name!r}"
            raise config_error_from(exc, what) or exc from None
    print(render(leases, settings.stream, settings.lease_table))
    print()
    print(render_members(members, leadership))
    return 0


async def dlq_command(settings: Settings, args: argparse.Namespace) -> int:
    from consumer.ops.dlq import dead_letters, render, replay
    from kernel.handlers import load_handler

    what = f"DynamoDB dead-letter table {settings.dlq_table!r}"
    async with open_clients() as clients:
        try:
            if args.action == "list":
                letters = [
                    letter
                    async for letter in dead_letters(clients, settings.dlq_table, args.reason)
                ]
                print(render(letters[: args.limit] if args.limit else letters))
                return 0
            handler = load_handler(settings.handler)
            report = await replay(
                clients,
                settings.table,
                settings.dlq_table,
                handler,
                reason=args.reason,
                handler_spec=settings.handler,
            )
        except AWS_ERRORS as exc:
            raise config_error_from(exc, what) or exc from None
    for line in report.lines():
        print(line)
    return 0


async def insights_command(settings: Settings, args: argparse.Namespace) -> int:
    from consumer.ops.insights import insights

    async with open_clients() as clients:
        text = await insights(
            clients,
            settings,
            start=args.start,
            end=args.end,
            by=args.by,
            output=args.format,
            plot=args.plot,
        )
    print(text, end="")
    return 0


async def fanout_command(settings: Settings, args: argparse.Namespace) -> int:
    from consumer.ops.fanout import deregister_consumer, describe_consumer

    name, stream = settings.stream_consumer_name, settings.stream
    async with open_clients() as clients:
        try:
            if args.action == "show":
                found = await describe_consumer(clients.kinesis, stream, name)
                print(
                    f"stream consumer {name!r} of {stream!r}: "
                    + (
                        "not registered"
                        if found is None
                        else f"{found['ConsumerStatus']}, {found['ConsumerARN']}"
                    )
                )
                return 0
            gone = await deregister_consumer(clients.kinesis, stream, name)
        except AWS_ERRORS as exc:
            raise config_error_from(exc, f"Kinesis stream {stream!r}") or exc from None
    print(
        f"stream consumer {name!r} of {stream!r}: "
        + (
            "deregistered (workers with TELEMAX_RETRIEVAL=fanout register it again)"
            if gone
            else "was not registered"
        )
    )
    return 0


async def demo_command(settings: Settings, args: argparse.Namespace) -> int:
    try:  # the development kit: in a checkout and in the package, not in the image
        from devkit.demo import Demo
        from devkit.feed_demo import FeedDemo
    except ImportError:
        raise ConfigError(
            "the demo needs the development kit: run `make demo` in a checkout, or "
            "pip install 'telemax[demo]'"
        ) from None

    if settings.feed != "telemax":  # a feed with every destination: alerts, archive
        count = args.count if args.count is not None else 2000
        return await FeedDemo(settings.feed, count, args.shards, args.workers).run()
    count = args.count if args.count is not None else 10_000
    return await Demo(count=count, shards=args.shards, workers=args.workers).run()


COMMANDS: dict[str, tuple[Command, str]] = {
    "run": (run_command, "run a worker until SIGTERM"),
    "setup": (setup_command, "create the stream and tables if missing"),
    "status": (status_command, "show the lease table"),
    "dlq": (dlq_command, "list dead letters, or replay them through the current handler"),
    "insights": (insights_command, "the feed's event-time windows, merged across every shard"),
    "fanout": (fanout_command, "show or deregister the enhanced fan-out stream consumer"),
    "demo": (demo_command, "run everything end to end on an embedded moto server"),
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog=PROG,
        description="Drain a Kinesis stream into DynamoDB with KCL-style leased workers. "
        "Every option can also be set by the environment variable shown.",
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        config.add_options(command, name)
        if name == "dlq":
            command.add_argument("action", choices=("list", "replay"), help="what to do")
            command.add_argument("--reason", default=None, help="only dead letters of this reason")
            command.add_argument("--limit", type=int, default=0, help="list at most N (0: all)")
        if name == "insights":
            command.add_argument("--from", dest="start", help="ISO-8601 (default: a day ago)")
            command.add_argument("--to", dest="end", help="ISO-8601, excluded (default: now)")
            command.add_argument(
                "--by", default="hour", help="hour, group, or a grouping field (zone, …)"
            )
            command.add_argument("--format", choices=("text", "json", "csv"), default="text")
            command.add_argument("--plot", metavar="FILE.png", help="also render the charts")
        if name == "fanout":
            command.add_argument("action", choices=("show", "deregister"), help="what to do")
        if name == "demo":
            command.add_argument(
                "--count",
                type=int,
                default=None,
                help="records to produce (10,000; 2,000 of a feed)",
            )
            command.add_argument("--shards", type=int, default=2, help="shards of the demo stream")
            command.add_argument("--workers", type=int, default=2, help="worker processes")
    return top


def run_async(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return asyncio.run(coro)
    result: int = uvloop.run(coro)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    command, _ = COMMANDS[args.command]
    try:
        settings = config.load(args.command, vars(args))
        logs.configure(settings.log_level)
        return run_async(command(settings, args))
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except AWS_ERRORS as exc:
        error = config_error_from(exc, "AWS")
        print(f"{PROG}: error: {error or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
