"""Configuration: one table of options drives environment variables, CLI flags and ``--help``.

Every option has an environment variable (12-factor) and a matching flag; a flag wins over the
environment. Invalid values raise :class:`ConfigError` whose message is one line naming the
variable, so start-up stops with that line instead of a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from kernel.errors import ConfigError
from kernel.logs import LOG_LEVELS

INITIAL_POSITIONS = ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP")


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError("must be a finite number > 0")
    return value


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number 0-65535")
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("must be an integer >= 1")
    return value


def _records_limit(raw: str) -> int:
    value = _positive_int(raw)
    if value > 10_000:
        raise ValueError("must be 1-10000 (the GetRecords limit)")
    return value


def _choice(choices: Sequence[str], *, lower: bool = False) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.lower() if lower else raw.upper()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return parse


def _name(raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def _optional_name(raw: str) -> str:
    """A name, or empty for the option's derived default."""
    return raw.strip()


def _timestamp(raw: str) -> datetime:
    text = raw.strip()
    if not text:
        raise ValueError("must not be empty")
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("must be an ISO-8601 timestamp, e.g. 2026-01-31T12:00:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _handler(raw: str) -> str:
    value = raw.strip()
    module, _, func = value.partition(":")
    if not module or not func:
        raise ValueError("must look like package.module:function")
    return value


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclasses.dataclass(frozen=True)
class Option:
    """One setting: its field on :class:`Settings`, env variable, flag, default and parser."""

    field: str
    env: str
    default: str | None
    parse: Callable[[str], Any]
    help: str
    commands: frozenset[str]

    @property
    def flag(self) -> str:
        return "--" + self.env.removeprefix("TELEMAX_").lower().replace("_", "-")


RUN = frozenset({"run"})
ALL = frozenset({"run", "setup", "status", "demo", "dlq"})
TABLES = frozenset({"run", "setup", "status", "dlq"})

OPTIONS: tuple[Option, ...] = (
    Option("stream", "TELEMAX_STREAM", "telemax-stream", _name, "Kinesis stream name", TABLES),
    Option("table", "TELEMAX_TABLE", "TELEMAX", _name, "DynamoDB table for the records", TABLES),
    Option("lease_table", "TELEMAX_LEASE_TABLE", "telemax-leases", _name, "lease table", TABLES),
    Option(
        "member_table",
        "TELEMAX_MEMBER_TABLE",
        "",
        _optional_name,
        "membership table (empty: the lease table's name + '-members')",
        TABLES,
    ),
    Option(
        "dlq_table", "TELEMAX_DLQ_TABLE", "TELEMAX-deadletter", _name, "dead-letter table", TABLES
    ),
    Option(
        "worker_id", "TELEMAX_WORKER_ID", None, _name, "lease owner name (default host-pid)", RUN
    ),
    Option(
        "initial_position",
        "TELEMAX_INITIAL_POSITION",
        "TRIM_HORIZON",
        _choice(INITIAL_POSITIONS),
        "where a shard without checkpoint starts: " + " | ".join(INITIAL_POSITIONS),
        RUN,
    ),
    Option(
        "initial_timestamp",
        "TELEMAX_INITIAL_TIMESTAMP",
        None,
        _timestamp,
        "ISO-8601 start time, required with AT_TIMESTAMP",
        RUN,
    ),
    Option(
        "lease_duration_s",
        "TELEMAX_LEASE_DURATION_S",
        "10",
        _positive_float,
        "seconds a worker's beat may stand still before it counts as gone",
        RUN,
    ),
    Option(
        "metrics_port",
        "TELEMAX_METRICS_PORT",
        "9108",
        _port,
        "port for /metrics /healthz /readyz (0 disables the server)",
        RUN,
    ),
    Option(
        "metrics_host",
        "TELEMAX_METRICS_HOST",
        "0.0.0.0",
        _name,
        "address the HTTP server binds",
        RUN,
    ),
    Option(
        "log_level", "TELEMAX_LOG_LEVEL", "info", _choice(LOG_LEVELS, lower=True), "log level", ALL
    ),
    Option(
        "shards",
        "TELEMAX_SHARDS",
        "2",
        _positive_int,
        "shard count for a new stream",
        frozenset({"setup"}),
    ),
    Option(
        "shutdown_grace_s",
        "TELEMAX_SHUTDOWN_GRACE_S",
        "20",
        _positive_float,
        "seconds SIGTERM may take to drain, checkpoint and release",
        RUN,
    ),
    Option(
        "write_concurrency",
        "TELEMAX_WRITE_CONCURRENCY",
        "16",
        _positive_int,
        "BatchWriteItem requests in flight per worker",
        RUN,
    ),
    Option(
        "max_records",
        "TELEMAX_MAX_RECORDS",
        "10000",
        _records_limit,
        "records per GetRecords call",
        RUN,
    ),
    Option(
        "max_in_flight_records",
        "TELEMAX_MAX_IN_FLIGHT_RECORDS",
        "40000",
        _positive_int,
        "records a worker holds at most, fetched and not yet stored, over all its shards",
        RUN,
    ),
    Option(
        "idle_poll_s",
        "TELEMAX_IDLE_POLL_S",
        "0.8",
        _positive_float,
        "longest pause between GetRecords calls to a caught-up shard (it doubles from 0.2 s "
        "with each empty answer up to this)",
        RUN,
    ),
    Option(
        "checkpoint_interval_s",
        "TELEMAX_CHECKPOINT_INTERVAL_S",
        "10",
        _positive_float,
        "least time between two checkpoints of one shard (its only lease writes)",
        RUN,
    ),
    Option(
        "shard_sync_interval_s",
        "TELEMAX_SHARD_SYNC_INTERVAL_S",
        "60",
        _positive_float,
        "seconds between two ListShards syncs of the leader (leases for new shards)",
        RUN,
    ),
    Option(
        "aws_read_timeout_s",
        "TELEMAX_AWS_READ_TIMEOUT_S",
        "20",
        _positive_float,
        "seconds to wait for an AWS answer before the call counts as failed and is retried",
        RUN,
    ),
    Option(
        "aws_max_attempts",
        "TELEMAX_AWS_MAX_ATTEMPTS",
        "3",
        _positive_int,
        "attempts botocore makes per AWS call before our own retry loops take over",
        RUN,
    ),
    Option(
        "fast_path",
        "TELEMAX_FAST_PATH",
        "true",
        _flag,
        "lean GetRecords, GetShardIterator, BatchWriteItem and lease-table item calls "
        "(false: botocore's generic path for everything)",
        RUN,
    ),
    Option(
        "handler",
        "TELEMAX_HANDLER",
        "consumer.pipeline.telemax:to_item",
        _handler,
        "record handler, module:function (bytes -> DynamoDB item)",
        frozenset({"run", "dlq"}),
    ),
)


@dataclasses.dataclass(frozen=True)
class Settings:
    stream: str = "telemax-stream"
    table: str = "TELEMAX"
    lease_table: str = "telemax-leases"
    member_table: str = ""  # empty: see member_table_name
    dlq_table: str = "TELEMAX-deadletter"
    worker_id: str = dataclasses.field(default_factory=default_worker_id)
    initial_position: str = "TRIM_HORIZON"
    initial_timestamp: datetime | None = None
    lease_duration_s: float = 10.0
    metrics_port: int = 9108
    metrics_host: str = "0.0.0.0"
    log_level: str = "info"
    shards: int = 2
    shutdown_grace_s: float = 20.0
    write_concurrency: int = 16
    max_records: int = 10_000
    max_in_flight_records: int = 40_000
    idle_poll_s: float = 0.8
    checkpoint_interval_s: float = 10.0
    shard_sync_interval_s: float = 60.0
    aws_read_timeout_s: float = 20.0
    aws_max_attempts: int = 3
    fast_path: bool = True
    handler: str = "consumer.pipeline.telemax:to_item"

    @property
    def member_table_name(self) -> str:
        """The membership table: ``member_table``, or the lease table's name + "-members"."""
        return self.member_table or f"{self.lease_table}-members"

    @property
    def beat_interval_s(self) -> float:
        """A worker's beat and the leader's renewal (DESIGN §3.4; README: the lease protocol)."""
        return max(0.1, min(1.0, self.lease_duration_s / 10))

    @property
    def fence_margin_s(self) -> float:
        """Stop processing this long before a peer could consider our lease expired."""
        return max(0.5, self.lease_duration_s / 10)


def add_options(parser: argparse.ArgumentParser, command: str) -> None:
    """Add the flags of every option that applies to ``command``; defaults come later."""
    for option in OPTIONS:
        if command in option.commands:
            default = option.default if option.default is not None else "see help"
            parser.add_argument(
                option.flag,
                dest=option.field,
                default=None,
                metavar="VALUE",
                help=f"{option.help} [env {option.env}, default {default}]",
            )


def load(
    command: str, flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Build :class:`Settings` from flags, then the environment, then defaults."""
    env = os.environ if env is None else env
    flags = flags or {}
    values: dict[str, Any] = {}
    for option in OPTIONS:
        if command not in option.commands:
            continue
        raw = flags.get(option.field)
        source = option.flag
        if raw is None:
            raw, source = env.get(option.env), option.env
        if raw is None:
            raw, source = option.default, option.env
        if raw is None:
            continue
        try:
            values[option.field] = option.parse(str(raw))
        except ValueError as exc:
            raise ConfigError(f"{source}={raw!r} is invalid: {_reason(exc)}") from None
    settings = Settings(**values)
    if settings.initial_position == "AT_TIMESTAMP" and settings.initial_timestamp is None:
        raise ConfigError(
            "TELEMAX_INITIAL_POSITION=AT_TIMESTAMP needs TELEMAX_INITIAL_TIMESTAMP (ISO-8601)"
        )
    return settings


def _reason(exc: ValueError) -> str:
    text = str(exc)
    if text.startswith(("invalid literal", "could not convert")):
        return "not a number"
    return text
