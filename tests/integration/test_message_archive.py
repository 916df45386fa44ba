"""The queue messages' archive on moto's server (S3 and the ledger in DynamoDB): a message in
exactly one object whatever SQS delivers again — a redelivery after the delete failed, a
claimant that died between its claim and its object, one that may still be writing."""

from __future__ import annotations

import gzip
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from consumer.metrics import Metrics
from consumer.pipeline.archiver import ArchiveTarget
from consumer.pipeline.pieces import Entry
from consumer.sources.archive import MessageArchive, MessageArchiveWire
from devkit.local import local_client
from kernel.aws import Clients, open_clients
from tests.support import Stack

pytestmark = pytest.mark.timeout(60)

HOUR = "dt=2026-12-03/hour=07"
STALE_S = 30.0


@pytest.fixture
async def clients(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Clients]:
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    async with open_clients(services=("s3",)) as opened:
        yield opened


@pytest.fixture
def place(stack: Stack, moto_endpoint: str) -> tuple[Any, str, str]:
    """(s3, bucket, ledger table)."""
    suffix = uuid.uuid4().hex[:8]
    s3 = local_client("s3", moto_endpoint)
    bucket, ledger = f"archive-{suffix}", f"ledger-{suffix}"
    s3.create_bucket(Bucket=bucket)
    stack.dynamodb.create_table(
        TableName=ledger,
        KeySchema=[{"AttributeName": "alertId", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "alertId", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return s3, bucket, ledger


def archive_for(clients: Clients, bucket: str, ledger: str, now: float | None = None) -> Any:
    wire = MessageArchiveWire(
        clients.s3,
        clients.dynamodb,
        ArchiveTarget(bucket, "arch/", "orders"),
        ledger_table=ledger,
        queue="orders",
        stale_after_s=STALE_S,
        retention_s=3600,
        wall_clock=(lambda: now) if now is not None else time.time,
    )
    return MessageArchive(wire, Metrics("s"))


def entries(*ids: str, letter: bool = False) -> list[Entry]:
    return [
        Entry((mid, 0), HOUR, orjson.dumps({"sequenceNumber": mid}) + b"\n", letter) for mid in ids
    ]


def lines(s3: Any, bucket: str) -> dict[str, list[str]]:
    """Message ids per part, over every object."""
    found: dict[str, list[str]] = {"records": [], "deadletters": []}
    for entry in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        body = s3.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read()
        part = entry["Key"].split("/")[1]
        found[part] += [orjson.loads(x)["sequenceNumber"] for x in gzip.decompress(body).split()]
    return found


async def test_a_redelivered_message_is_archived_once(
    clients: Clients, place: tuple[Any, str, str]
) -> None:
    s3, bucket, ledger = place
    archive: MessageArchive = archive_for(clients, bucket, ledger)
    assert await archive.write(entries("m1", "m2", "m3") + entries("m4", letter=True)) == set()
    # m2, m3, m4 again (their delete failed), with m5 and m6 new
    again = entries("m2", "m3", "m5") + entries("m4", "m6", letter=True)
    assert await archive.write(again) == set()
    found = lines(s3, bucket)
    assert sorted(found["records"]) == ["m1", "m2", "m3", "m5"]
    assert sorted(found["deadletters"]) == ["m4", "m6"]


async def test_a_claim_without_its_object_waits_then_is_taken_over(
    clients: Clients, place: tuple[Any, str, str], stack: Stack
) -> None:
    s3, bucket, ledger = place
    now = time.time()
    for mid in ("m1", "m2"):  # a receiver claimed them, then died before its put
        stack.dynamodb.put_item(
            TableName=ledger,
            Item={
                "alertId": {"S": f"archive|records|orders|{mid}"},
                "object": {"S": "sqs-dead"},
                "claimedAt": {"N": str(int(now * 1000))},
            },
        )
    soon = archive_for(clients, bucket, ledger, now=now + STALE_S / 2)
    assert await soon.write(entries("m1", "m2", "m3")) == {"m1", "m2"}, "may still be writing"
    assert lines(s3, bucket)["records"] == ["m3"]
    later = archive_for(clients, bucket, ledger, now=now + STALE_S + 1)
    assert await later.write(entries("m1", "m2")) == set()
    assert sorted(lines(s3, bucket)["records"]) == ["m1", "m2", "m3"]
    claims = stack.dynamodb.scan(TableName=ledger)["Items"]
    assert "sqs-dead" not in {c["object"]["S"] for c in claims}, "both claims taken over"
