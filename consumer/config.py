"""The consumer's :class:`Settings`, loaded from its options (:mod:`consumer.options`); how a
table becomes flags, environment variables and one-line errors is :mod:`kernel.options`."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from consumer.feeds import DEFAULT_FEED, Feed, load_feed
from consumer.options import OPTIONS, default_worker_id
from consumer.pipeline.alerts import parse_rules
from kernel import options
from kernel.errors import ConfigError
from kernel.options import DEFAULT_HANDLER, DEFAULT_STREAM

__all__ = ["OPTIONS", "ConfigError", "Settings", "add_options", "feed_of", "load"]


@dataclasses.dataclass(frozen=True)
class Settings:
    """Defaults are the telemax feed's; :func:`load` fills another feed's in."""

    feed: str = DEFAULT_FEED
    stream: str = DEFAULT_STREAM
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
    retrieval: str = "polling"
    consumer_name: str = ""  # empty: the lease table's name
    alert_topic_arn: str = ""
    alert_rules: str = ""
    alert_ledger_table: str = "TELEMAX-alerts"
    alert_ledger_retention_s: float = 691200.0
    alert_rate: float = 20.0
    source: str = "kinesis"
    queue_url: str = ""
    sqs_receivers: int = 4
    sqs_visibility_s: float = 30.0
    sqs_wait_s: int = 20
    sqs_max_receives: int = 10
    archive_bucket: str = ""
    archive_prefix: str = "telemax/"
    archive_max_bytes: int = 8 * 1024 * 1024
    archive_max_age_s: float = 60.0
    archive_kms_key: str = ""
    insights: bool = False
    insights_table: str = "TELEMAX-insights"
    insights_lateness_s: float = 3600.0
    handler: str = DEFAULT_HANDLER

    @property
    def services(self) -> tuple[str, ...]:
        """The AWS services beyond Kinesis and DynamoDB this configuration uses."""
        return (
            *(("sns",) if self.alert_topic_arn else ()),
            *(("s3",) if self.archive_bucket else ()),
            *(("sqs",) if self.source == "sqs" else ()),
        )

    @property
    def member_table_name(self) -> str:
        """The membership table: ``member_table``, or the lease table's name + "-members"."""
        return self.member_table or f"{self.lease_table}-members"

    @property
    def stream_consumer_name(self) -> str:
        """Fan-out's stream consumer: ``consumer_name``, or the lease table's name."""
        return self.consumer_name or self.lease_table

    @property
    def beat_interval_s(self) -> float:
        """A worker's beat and the leader's renewal (DESIGN §3.4; README: the lease protocol)."""
        return max(0.1, min(1.0, self.lease_duration_s / 10))

    @property
    def fence_margin_s(self) -> float:
        """Stop processing this long before a peer could consider our lease expired."""
        return max(0.5, self.lease_duration_s / 10)


def feed_of(settings: Settings) -> Feed:
    """The feed ``settings`` name (loaded once per process: a module's object)."""
    return load_feed(settings.feed)


def alert_rules_of(settings: Settings) -> dict[str, str]:
    """The rules in force: ``TELEMAX_ALERT_RULES``, else the feed's."""
    if settings.alert_rules:
        return parse_rules(settings.alert_rules)
    return dict(feed_of(settings).alerts)


def add_options(parser: argparse.ArgumentParser, command: str) -> None:
    """Add the flags of every option that applies to ``command``; defaults come later."""
    options.add_options(parser, OPTIONS, command)


def load(
    command: str, flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Build :class:`Settings` from flags, then the environment, then defaults (the feed's
    where the feed has one)."""
    found = options.values(OPTIONS, command, flags, env)
    feed = load_feed(found.get("feed", DEFAULT_FEED))
    for field, default in (
        ("table", feed.table),
        ("dlq_table", feed.dlq_table),
        ("lease_table", feed.lease_table),
        ("handler", feed.handler_spec),
    ):
        found.setdefault(field, default)
    found.setdefault("alert_ledger_table", f"{found['table']}-alerts")
    found.setdefault("insights_table", f"{found['table']}-insights")
    settings = Settings(**found)
    if settings.source == "sqs" and not settings.queue_url:
        raise ConfigError("TELEMAX_SOURCE=sqs needs TELEMAX_QUEUE_URL (the queue to drain)")
    if settings.source == "sqs" and settings.retrieval != "polling":
        raise ConfigError("TELEMAX_RETRIEVAL=fanout reads Kinesis: not with TELEMAX_SOURCE=sqs")
    if settings.initial_position == "AT_TIMESTAMP" and settings.initial_timestamp is None:
        raise ConfigError(
            "TELEMAX_INITIAL_POSITION=AT_TIMESTAMP needs TELEMAX_INITIAL_TIMESTAMP (ISO-8601)"
        )
    return settings
