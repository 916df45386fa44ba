"""``setup [--feed F]``: create the stream and the tables if missing — records (keyed as feed F
says), leases, members, dead letters, and the ledger when F has alert rules (or an SQS source
archives) — and wait until ACTIVE."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from consumer.config import Settings, alert_rules_of, feed_of
from consumer.pipeline.keys import KEY_TYPES
from consumer.pipeline.ledger import needs_ledger
from kernel.aws import AWS_ERRORS, Clients, config_error_from, describe, error_code
from kernel.errors import ConfigError

WAIT_TIMEOUT_S = 300.0
TTL = "expiresAt"


@dataclasses.dataclass(frozen=True)
class TableSpec:
    role: str
    name: str
    keys: tuple[tuple[str, str], ...]  # (attribute name, HASH | RANGE)
    types: tuple[str, ...] = ()  # each key attribute's type (S, N or B); default all S
    ttl: str = ""  # the attribute DynamoDB's TTL expires items by, if any

    def create_args(self) -> dict[str, Any]:
        types = self.types or ("S",) * len(self.keys)
        return {
            "TableName": self.name,
            "AttributeDefinitions": [
                {"AttributeName": n, "AttributeType": t}
                for (n, _), t in zip(self.keys, types, strict=True)
            ],
            "KeySchema": [{"AttributeName": n, "KeyType": t} for n, t in self.keys],
            "BillingMode": "PAY_PER_REQUEST",
        }


def table_specs(settings: Settings) -> list[TableSpec]:
    feed = feed_of(settings)
    return [
        TableSpec(
            "records",
            settings.table,
            tuple(zip(feed.key_names, KEY_TYPES, strict=False)),
            tuple(kind for _, kind in feed.key),
        ),
        TableSpec("leases", settings.lease_table, (("leaseKey", "HASH"),)),
        TableSpec("members", settings.member_table_name, (("workerId", "HASH"),)),
        TableSpec("dead letters", settings.dlq_table, (("shardId", "HASH"), ("position", "RANGE"))),
        *(
            [TableSpec("ledger", settings.alert_ledger_table, (("alertId", "HASH"),), ttl=TTL)]
            if alert_rules_of(settings) or needs_ledger(settings)
            else []
        ),
        *(
            [TableSpec("insights", settings.insights_table, (("pk", "HASH"), ("sk", "RANGE")))]
            if settings.insights
            else []
        ),
    ]


@dataclasses.dataclass
class Report:
    created: list[str] = dataclasses.field(default_factory=list)
    existing: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)

    def lines(self) -> list[str]:
        return (
            [f"created  {what}" for what in self.created]
            + [f"exists   {what}" for what in self.existing]
            + [f"warning  {what}" for what in self.warnings]
        )


async def _until(check: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    while not await check():
        if time.monotonic() > deadline:
            raise ConfigError(f"{what} did not become ACTIVE within {WAIT_TIMEOUT_S:.0f} s")
        await asyncio.sleep(1.0)


async def ensure_stream(clients: Clients, settings: Settings, report: Report) -> None:
    kinesis = clients.kinesis
    what = f"stream {settings.stream}"
    try:
        await kinesis.create_stream(StreamName=settings.stream, ShardCount=settings.shards)
        report.created.append(f"{what} ({settings.shards} shards)")
    except AWS_ERRORS as exc:
        if error_code(exc) != "ResourceInUseException":
            raise config_error_from(exc, f"Kinesis {what}") or exc from None
        summary = await kinesis.describe_stream_summary(StreamName=settings.stream)
        shards = summary["StreamDescriptionSummary"]["OpenShardCount"]
        report.existing.append(f"{what} ({shards} open shards)")

    async def active() -> bool:
        summary = await kinesis.describe_stream_summary(StreamName=settings.stream)
        return summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE"

    await _until(active, what)


async def ensure_table(clients: Clients, spec: TableSpec, report: Report) -> None:
    db = clients.dynamodb
    what = f"table {spec.name} ({spec.role})"
    try:
        await db.create_table(**spec.create_args())
        report.created.append(what)
    except AWS_ERRORS as exc:
        if error_code(exc) != "ResourceInUseException":
            raise config_error_from(exc, f"DynamoDB {what}") or exc from None
        described = await db.describe_table(TableName=spec.name)
        have = tuple((k["AttributeName"], k["KeyType"]) for k in described["Table"]["KeySchema"])
        if have != spec.keys:
            raise ConfigError(
                f"DynamoDB {what} exists with key schema {have}, expected {spec.keys}"
            ) from None
        report.existing.append(what)

    async def active() -> bool:
        described = await db.describe_table(TableName=spec.name)
        return described["Table"]["TableStatus"] == "ACTIVE"

    await _until(active, what)
    if spec.ttl:
        await _ensure_ttl(db, spec, report)


async def _ensure_ttl(db: Any, spec: TableSpec, report: Report) -> None:
    """Expire items by ``spec.ttl``. An endpoint without TTL (dynalite) is said, not fatal:
    the items are small and only cost storage."""
    try:
        await db.update_time_to_live(
            TableName=spec.name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": spec.ttl},
        )
    except AWS_ERRORS as exc:
        if "already enabled" in describe(exc):
            return
        report.warnings.append(f"TTL on {spec.name} not enabled: {describe(exc)}")


async def setup(clients: Clients, settings: Settings) -> Report:
    report = Report()
    await ensure_stream(clients, settings, report)
    for spec in table_specs(settings):
        await ensure_table(clients, spec, report)
    return report
