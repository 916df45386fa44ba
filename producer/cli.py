"""``telemax-producer`` / ``python -m producer``: generate records or tail log files into
Kinesis."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import TypeVar

from kernel import logs, options
from kernel.errors import ConfigError
from kernel.kpl.encode import DEFAULT_AGGREGATE_BYTES
from kernel.logs import LOG_LEVELS
from kernel.options import (
    DEFAULT_HANDLER,
    DEFAULT_STREAM,
    Option,
    choice,
    handler_spec,
    name,
    optional_name,
    port,
)
from producer.runtime import EXIT_CONFIG, EXIT_INCOMPLETE, EXIT_OK, failure
from producer.schemas import SCHEMAS
from producer.tail import state
from producer.tail.lines import JSON_ONLY

PROG = "telemax-producer"
T = TypeVar("T")

EXIT_CODES = f"""\
exit codes:
  {EXIT_OK}    generate: every record acknowledged; tail: stopped by SIGTERM/SIGINT with every
       line read acknowledged (or rejected) and the offsets saved
  {EXIT_INCOMPLETE}    generate: records failed after retries; tail: lines were still unacknowledged
       when the shutdown grace ran out (they are sent again at the next start); either: AWS
       failed in a way no retry fixes, mid-run
  {EXIT_CONFIG}    bad flag or environment variable, stream missing or not ACTIVE, no permission,
       no credentials or region, endpoint unreachable, unreadable file, state file invalid or
       in use, metrics port busy
  130  generate interrupted by SIGINT (143: SIGTERM); the summary is still printed
"""


GENERATE = "generate"
TAIL = "tail"
BOTH = frozenset({GENERATE, TAIL})


def _handler_or_json(raw: str) -> str:
    return JSON_ONLY if raw.strip() == JSON_ONLY else handler_spec(raw)


# The settings that come from the environment as well as from flags (the rest are flags only).
OPTIONS: tuple[Option, ...] = (
    Option("stream", "TELEMAX_STREAM", DEFAULT_STREAM, name, "stream name", BOTH),
    Option(
        "metrics_port",
        "TELEMAX_PRODUCER_METRICS_PORT",
        "0",
        port,
        "serve Prometheus /metrics (and /healthz, /readyz) on this port; 0: none",
        BOTH,
        flag_name="--metrics-port",
    ),
    Option(
        "metrics_host",
        "TELEMAX_PRODUCER_METRICS_HOST",
        "127.0.0.1",
        name,
        "address the metrics server binds",
        BOTH,
        flag_name="--metrics-host",
    ),
    Option(
        "log_level",
        "TELEMAX_LOG_LEVEL",
        "info",
        choice(LOG_LEVELS, lower=True),
        ", ".join(LOG_LEVELS),
        BOTH,
    ),
    Option(
        "state_file",
        "TELEMAX_TAIL_STATE_FILE",
        None,
        name,
        "acknowledged offsets, for restarts (default $XDG_STATE_HOME/telemax/tail-state.json)",
        frozenset({TAIL}),
        flag_name="--state-file",
    ),
    Option(
        "reject_file",
        "TELEMAX_TAIL_REJECT_FILE",
        "",
        optional_name,
        "where rejected lines go, as JSON lines with the reason (empty: "
        "STATE-FILE-NAME.rejects.jsonl beside the state file)",
        frozenset({TAIL}),
        flag_name="--reject-file",
    ),
    Option(
        "partition_key_field",
        "TELEMAX_TAIL_PARTITION_KEY",
        "hardwareID",
        name,
        "JSON field whose value is the partition key",
        frozenset({TAIL}),
        flag_name="--partition-key-field",
    ),
    Option(
        "handler",
        "TELEMAX_HANDLER",
        DEFAULT_HANDLER,
        _handler_or_json,
        "validate lines with this record handler (module:function, the consumer's contract), "
        f"or '{JSON_ONLY}' for any JSON object",
        frozenset({TAIL}),
    ),
)


def settle(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the options' values in ``args``: flag, else environment, else default."""
    found = options.values(OPTIONS, args.command, vars(args))
    vars(args).update(found)
    if args.command == TAIL and not getattr(args, "state_file", None):
        args.state_file = str(state.default_path())
    return args


def _generate_options(gen: argparse.ArgumentParser) -> None:
    gen.add_argument("--count", type=int, help="records to send")
    gen.add_argument("--duration", type=float, help="seconds to send for (with --count: first)")
    gen.add_argument("--rate", type=float, default=0, help="records per second (0: no limit)")
    gen.add_argument("--schema", choices=sorted(SCHEMAS), default="telemax", help="record kind")
    gen.add_argument(
        "--aggregate", action="store_true", help="pack records KPL-style (magic, protobuf, MD5)"
    )
    gen.add_argument(
        "--aggregate-max-bytes",
        type=int,
        default=DEFAULT_AGGREGATE_BYTES,
        help=f"size limit of one aggregated record (default {DEFAULT_AGGREGATE_BYTES}, as the KPL)",
    )
    gen.add_argument("--devices", type=int, default=500, help="distinct partition keys (about)")
    gen.add_argument("--seed", type=int, default=None, help="random seed (repeatable data)")
    gen.add_argument("--concurrency", type=int, default=4, help="PutRecords calls in flight")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")


def _tail_options(tail: argparse.ArgumentParser) -> None:
    tail.add_argument("paths", nargs="+", metavar="PATH", help="files or glob patterns (quoted)")
    tail.add_argument(
        "--initial-position",
        choices=("start", "end"),
        default="start",
        help="where the first run starts in files that already exist (later runs resume "
        "from the state file; new files are always read from the start) [default start]",
    )
    tail.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="PutRecords calls in flight; 1 keeps each file's lines in order [default 1]",
    )
    tail.add_argument("--poll-interval-s", type=float, default=0.25, help="file poll period")
    tail.add_argument(
        "--linger-s", type=float, default=0.1, help="wait this long to fill a PutRecords batch"
    )
    tail.add_argument(
        "--rotation-grace-s",
        type=float,
        default=1.0,
        help="keep reading a renamed or deleted file this long after its end (less when a new "
        "file already has data) [default 1]",
    )
    tail.add_argument(
        "--shutdown-grace-s",
        type=float,
        default=10.0,
        help="time SIGTERM may take to flush read lines [default 10]",
    )
    tail.add_argument(
        "--max-line-bytes",
        type=int,
        default=1024 * 1024,
        help="longer lines are rejected (too_long) [default 1048576, the record limit]",
    )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    gen = commands.add_parser(
        "generate",
        help="send realistic records (telemax, taxi, orders), paced and optionally aggregated",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    options.add_options(gen, OPTIONS, GENERATE)
    _generate_options(gen)
    tail = commands.add_parser(
        "tail",
        help="ship every line appended to files (the Kinesis Agent's job), until SIGTERM",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    options.add_options(tail, OPTIONS, TAIL)
    _tail_options(tail)
    return top


def _run_generate(args: argparse.Namespace) -> int:
    from producer.generate import generate

    # Logs go to stderr so that stdout carries only the summary line scripts read.
    logs.configure(args.log_level, stream=sys.stderr)
    outcome = asyncio.run(generate(args))
    print(outcome.summary(PROG))
    if outcome.interrupted_by is not None:
        return 128 + int(outcome.interrupted_by)
    return EXIT_OK if outcome.complete else EXIT_INCOMPLETE


def _run_tail(args: argparse.Namespace) -> int:
    from producer.tail.command import tail

    logs.configure(args.log_level)
    return tail(args)


def main(argv: Sequence[str] | None = None) -> int:
    args: argparse.Namespace | None = None
    try:
        args = settle(parser().parse_args(argv))
        if args.command == GENERATE:
            return _run_generate(args)
        return _run_tail(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        code, line = failure(exc, getattr(args, "stream", None) or "?")
        if code != EXIT_CONFIG and not isinstance(exc, ConfigError):
            logs.get().error("producer_failed", error=line)
        print(f"{PROG}: error: {line}", file=sys.stderr)
        return code
