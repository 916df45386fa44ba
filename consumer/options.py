"""The consumer's options: one table (field, variable, flag, default, parser, help, commands)
that :mod:`kernel.options` turns into flags, environment variables and one-line errors, and
:mod:`consumer.config` into :class:`~consumer.config.Settings`."""

from __future__ import annotations

import os
import socket

from consumer.feeds import DEFAULT_FEED, FEEDS
from consumer.pipeline.alerts import parse_rules
from kernel.logs import LOG_LEVELS
from kernel.options import (
    DEFAULT_STREAM,
    Option,
    choice,
    flag,
    handler_spec,
    name,
    optional_name,
    port,
    positive_float,
    positive_int,
    timestamp,
)

INITIAL_POSITIONS = ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP")


def prefix(raw: str) -> str:
    """An S3 key prefix: empty, or ending with '/' (added when missing)."""
    value = raw.strip().lstrip("/")
    return value if not value or value.endswith("/") else value + "/"


def alert_rules(raw: str) -> str:
    """A JSON object of rule name -> JMESPath (checked again, compiled, at start-up)."""
    if raw.strip():
        parse_rules(raw)
    return raw.strip()


def feed_spec(raw: str) -> str:
    value = raw.strip()
    if value in FEEDS:
        return value
    module, colon, attribute = value.partition(":")
    if not (colon and module and attribute):
        raise ValueError(f"must be one of {', '.join(FEEDS)}, or package.module:object")
    return value


def _records_limit(raw: str) -> int:
    value = positive_int(raw)
    if value > 10_000:
        raise ValueError("must be 1-10000 (the GetRecords limit)")
    return value


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


RUN = frozenset({"run"})
ALL = frozenset({"run", "setup", "status", "demo", "dlq", "insights", "fanout"})
TABLES = frozenset({"run", "setup", "status", "dlq", "insights", "fanout"})
INSIGHTS = frozenset({"run", "setup", "insights"})

OPTIONS: tuple[Option, ...] = (
    Option(
        "feed",
        "TELEMAX_FEED",
        DEFAULT_FEED,
        feed_spec,
        "what the records are: " + " | ".join(FEEDS) + " | module:object (a Feed); it "
        "chooses the validation, the table's key and the default table names",
        ALL,
    ),
    Option("stream", "TELEMAX_STREAM", DEFAULT_STREAM, name, "Kinesis stream name", TABLES),
    Option(
        "table",
        "TELEMAX_TABLE",
        None,
        name,
        "DynamoDB table for the records (default: the feed's, TELEMAX for telemax)",
        TABLES,
    ),
    Option(
        "lease_table",
        "TELEMAX_LEASE_TABLE",
        None,
        name,
        "lease table (default: the feed's name + '-leases')",
        TABLES,
    ),
    Option(
        "member_table",
        "TELEMAX_MEMBER_TABLE",
        "",
        optional_name,
        "membership table (empty: the lease table's name + '-members')",
        TABLES,
    ),
    Option(
        "dlq_table",
        "TELEMAX_DLQ_TABLE",
        None,
        name,
        "dead-letter table (default: the feed's, TELEMAX-deadletter for telemax)",
        TABLES,
    ),
    Option(
        "worker_id", "TELEMAX_WORKER_ID", None, name, "lease owner name (default host-pid)", RUN
    ),
    Option(
        "initial_position",
        "TELEMAX_INITIAL_POSITION",
        "TRIM_HORIZON",
        choice(INITIAL_POSITIONS),
        "where a shard without checkpoint starts: " + " | ".join(INITIAL_POSITIONS),
        RUN,
    ),
    Option(
        "initial_timestamp",
        "TELEMAX_INITIAL_TIMESTAMP",
        None,
        timestamp,
        "ISO-8601 start time, required with AT_TIMESTAMP",
        RUN,
    ),
    Option(
        "lease_duration_s",
        "TELEMAX_LEASE_DURATION_S",
        "10",
        positive_float,
        "seconds a worker's beat may stand still before it counts as gone",
        RUN,
    ),
    Option(
        "metrics_port",
        "TELEMAX_METRICS_PORT",
        "9108",
        port,
        "port for /metrics /healthz /readyz (0 disables the server)",
        RUN,
    ),
    Option(
        "metrics_host",
        "TELEMAX_METRICS_HOST",
        "0.0.0.0",
        name,
        "address the HTTP server binds",
        RUN,
    ),
    Option(
        "log_level", "TELEMAX_LOG_LEVEL", "info", choice(LOG_LEVELS, lower=True), "log level", ALL
    ),
    Option(
        "shards",
        "TELEMAX_SHARDS",
        "2",
        positive_int,
        "shard count for a new stream",
        frozenset({"setup"}),
    ),
    Option(
        "shutdown_grace_s",
        "TELEMAX_SHUTDOWN_GRACE_S",
        "20",
        positive_float,
        "seconds SIGTERM may take to drain, checkpoint and release",
        RUN,
    ),
    Option(
        "write_concurrency",
        "TELEMAX_WRITE_CONCURRENCY",
        "16",
        positive_int,
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
        positive_int,
        "records a worker holds at most, fetched and not yet stored, over all its shards",
        RUN,
    ),
    Option(
        "idle_poll_s",
        "TELEMAX_IDLE_POLL_S",
        "0.8",
        positive_float,
        "longest pause between GetRecords calls to a caught-up shard (it doubles from 0.2 s "
        "with each empty answer up to this)",
        RUN,
    ),
    Option(
        "checkpoint_interval_s",
        "TELEMAX_CHECKPOINT_INTERVAL_S",
        "10",
        positive_float,
        "least time between two checkpoints of one shard (its only lease writes)",
        RUN,
    ),
    Option(
        "shard_sync_interval_s",
        "TELEMAX_SHARD_SYNC_INTERVAL_S",
        "60",
        positive_float,
        "seconds between two ListShards syncs of the leader (leases for new shards)",
        RUN,
    ),
    Option(
        "aws_read_timeout_s",
        "TELEMAX_AWS_READ_TIMEOUT_S",
        "20",
        positive_float,
        "seconds to wait for an AWS answer before the call counts as failed and is retried",
        RUN,
    ),
    Option(
        "aws_max_attempts",
        "TELEMAX_AWS_MAX_ATTEMPTS",
        "3",
        positive_int,
        "attempts botocore makes per AWS call before our own retry loops take over",
        RUN,
    ),
    Option(
        "retrieval",
        "TELEMAX_RETRIEVAL",
        "polling",
        choice(("polling", "fanout", "auto"), lower=True),
        "how shards are read: polling (GetRecords) | fanout (SubscribeToShard over HTTP/2, "
        "a registered stream consumer: 2 MB/s a shard of its own) | auto (fanout, else "
        "polling when the consumer cannot be registered, said in a warning)",
        RUN,
    ),
    Option(
        "consumer_name",
        "TELEMAX_CONSUMER_NAME",
        "",
        optional_name,
        "fan-out's stream consumer (default: the lease table's name)",
        frozenset({"run", "fanout"}),
    ),
    Option(
        "fast_path",
        "TELEMAX_FAST_PATH",
        "true",
        flag,
        "lean GetRecords, GetShardIterator, BatchWriteItem and lease-table item calls "
        "(false: botocore's generic path for everything)",
        RUN,
    ),
    Option(
        "alert_topic_arn",
        "TELEMAX_ALERT_TOPIC_ARN",
        "",
        optional_name,
        "SNS topic the feed's alerts are published to, each once (empty: alerts off)",
        RUN,
    ),
    Option(
        "alert_rules",
        "TELEMAX_ALERT_RULES",
        "",
        alert_rules,
        'alert rules, a JSON object {"name": "JMESPath expression"} (empty: the feed\'s)',
        frozenset({"run", "setup"}),
    ),
    Option(
        "alert_ledger_table",
        "TELEMAX_ALERT_LEDGER_TABLE",
        None,
        name,
        "the alerts' ledger: one item per alert sent (default: the records table + '-alerts')",
        TABLES,
    ),
    Option(
        "alert_ledger_retention_s",
        "TELEMAX_ALERT_LEDGER_RETENTION_S",
        "691200",
        positive_float,
        "how long the ledger remembers an alert sent (TTL; at least the stream's retention, "
        "or a replay older than this alerts again)",
        RUN,
    ),
    Option(
        "alert_rate",
        "TELEMAX_ALERT_RATE",
        "20",
        positive_float,
        "alerts a worker publishes per second at most (the rest wait their turn, counted)",
        RUN,
    ),
    Option(
        "source",
        "TELEMAX_SOURCE",
        "kinesis",
        choice(("kinesis", "sqs"), lower=True),
        "where records come from: kinesis (leased shards) | sqs (TELEMAX_QUEUE_URL, no leases)",
        RUN,
    ),
    Option(
        "queue_url",
        "TELEMAX_QUEUE_URL",
        "",
        optional_name,
        "the SQS queue to drain with TELEMAX_SOURCE=sqs",
        RUN,
    ),
    Option(
        "sqs_receivers",
        "TELEMAX_SQS_RECEIVERS",
        "4",
        positive_int,
        "receive loops per worker (each holds at most ten messages)",
        RUN,
    ),
    Option(
        "sqs_visibility_s",
        "TELEMAX_SQS_VISIBILITY_S",
        "30",
        positive_float,
        "visibility timeout of a received message, extended every third of it while in flight",
        RUN,
    ),
    Option(
        "sqs_wait_s",
        "TELEMAX_SQS_WAIT_S",
        "20",
        positive_int,
        "long-poll wait of a receive (at most 20)",
        RUN,
    ),
    Option(
        "sqs_max_receives",
        "TELEMAX_SQS_MAX_RECEIVES",
        "10",
        positive_int,
        "a message received this often without being done is dead-lettered, not retried",
        RUN,
    ),
    Option(
        "archive_bucket",
        "TELEMAX_ARCHIVE_BUCKET",
        "",
        optional_name,
        "S3 bucket every processed record (and dead letter) is archived to (empty: off)",
        RUN,
    ),
    Option(
        "archive_prefix",
        "TELEMAX_ARCHIVE_PREFIX",
        "telemax/",
        prefix,
        "key prefix of the archive's objects",
        RUN,
    ),
    Option(
        "archive_max_bytes",
        "TELEMAX_ARCHIVE_MAX_BYTES",
        "8388608",
        positive_int,
        "an archive object is written once its JSON lines reach this many bytes (before gzip)",
        RUN,
    ),
    Option(
        "archive_max_age_s",
        "TELEMAX_ARCHIVE_MAX_AGE_S",
        "60",
        positive_float,
        "... or once its oldest record waited this long (the checkpoint waits with it)",
        RUN,
    ),
    Option(
        "archive_kms_key",
        "TELEMAX_ARCHIVE_KMS_KEY",
        "",
        optional_name,
        "KMS key of the archive's objects (empty: the bucket's default key; SSE-KMS always)",
        RUN,
    ),
    Option(
        "insights",
        "TELEMAX_INSIGHTS",
        "off",
        flag,
        "aggregate the feed's event-time windows across every shard (on|off)",
        frozenset({"run", "setup"}),
    ),
    Option(
        "insights_table",
        "TELEMAX_INSIGHTS_TABLE",
        None,
        name,
        "the insights' table: partial aggregates per segment (default: the records table + "
        "'-insights')",
        INSIGHTS,
    ),
    Option(
        "insights_lateness_s",
        "TELEMAX_INSIGHTS_LATENESS_S",
        "3600",
        positive_float,
        "a record arriving this long after its window ended still counts; later ones are late",
        RUN,
    ),
    Option(
        "handler",
        "TELEMAX_HANDLER",
        None,
        handler_spec,
        "record handler, module:function (bytes -> DynamoDB item; default: the feed's)",
        frozenset({"run", "dlq"}),
    ),
)
