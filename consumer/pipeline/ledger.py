"""The ledger table (``TELEMAX_ALERT_LEDGER_TABLE``): claims that make a side effect happen
once — an alert published (:mod:`consumer.pipeline.publish`), a queue message archived
(:mod:`consumer.sources.archive`). Items are keyed by ``alertId`` (the name it was born with)
and expire through the table's TTL attribute ``expiresAt``."""

from __future__ import annotations

from consumer.config import Settings
from kernel.aws import Check, Clients


def ledger_check(clients: Clients, settings: Settings) -> Check:
    """Start-up: the ledger table is there and ours to use."""
    return (
        f"DynamoDB ledger table {settings.alert_ledger_table!r}",
        lambda: clients.dynamodb.describe_table(TableName=settings.alert_ledger_table),
    )


def needs_ledger(settings: Settings) -> bool:
    """Whether the SQS source's archive needs the ledger (alerts check it themselves)."""
    return settings.source == "sqs" and bool(settings.archive_bucket)
