"""Alerts as the settings ask for them: the destination a worker or the Lambda handler builds
(rules compiled, the topic's wire behind a sink), and the start-up check that the topic and
the ledger table are there and ours to use."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from consumer.config import Settings, alert_rules_of, feed_of
from consumer.metrics import Metrics
from consumer.pipeline.alerts import Alerter, Rule, compile_rules
from consumer.pipeline.ledger import ledger_check
from consumer.pipeline.publish import AlertWire
from consumer.pipeline.sink import Sink
from consumer.pipeline.stage import Alerting
from kernel.aws import Check, Clients, check_usable
from kernel.errors import ConfigError

ALERT_CONCURRENCY = 4  # chunks of alerts in flight per worker: alerts are rare


def alerting_for(
    settings: Settings,
    clients: Clients,
    metrics: Metrics,
    key_names: Sequence[str],
    *,
    finish_grace_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Alerting | None:
    """The alert destination ``settings`` ask for, or None when alerts are off; a rule that
    does not compile, or a topic without rules, is one ConfigError line."""
    if not settings.alert_topic_arn:
        return None
    rules = rules_for(settings)
    wire = AlertWire(
        clients.sns,
        clients.dynamodb,
        topic_arn=settings.alert_topic_arn,
        ledger_table=settings.alert_ledger_table,
        owner=settings.worker_id,
        metrics=metrics,
        rate=settings.alert_rate,
        stale_after_s=settings.lease_duration_s,
        retention_s=settings.alert_ledger_retention_s,
        finish_grace_s=finish_grace_s,
        clock=clock,
    )
    sink = Sink(
        wire,
        concurrency=asyncio.Semaphore(ALERT_CONCURRENCY),
        metrics=metrics,
        wants="an alert id",
    )
    return Alerting(Alerter(feed_of(settings).name, rules, tuple(key_names)), sink)


def rules_for(settings: Settings) -> tuple[Rule, ...]:
    """The alert rules in force, compiled; ConfigError (one line) for a bad one, or for a
    topic without rules."""
    feed = feed_of(settings)
    source = "TELEMAX_ALERT_RULES" if settings.alert_rules else f"feed {feed.name}"
    rules = compile_rules(alert_rules_of(settings), source)
    if not rules:
        raise ConfigError(
            f"TELEMAX_ALERT_TOPIC_ARN is set but feed {feed.name} has no alert rules: "
            "set TELEMAX_ALERT_RULES"
        )
    return rules


async def check_alerting(clients: Clients, settings: Settings) -> None:
    """Start-up: the topic and the ledger table are there and ours to use (one line if not)."""
    if not settings.alert_topic_arn:
        return
    rules_for(settings)
    checks: list[Check] = [
        (
            f"SNS topic {settings.alert_topic_arn!r}",
            lambda: clients.sns.get_topic_attributes(TopicArn=settings.alert_topic_arn),
        ),
        ledger_check(clients, settings),
    ]
    await check_usable(checks)
