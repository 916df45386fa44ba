"""Feeds end to end on moto's server: ``setup --feed`` and a worker with ``TELEMAX_FEED``."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devkit.local import local_client
from tests.insights_check import check_insights_exact
from tests.support import AlertTopic, Stack, archived, check_alerts_once, wait_until

pytestmark = pytest.mark.timeout(90)


def small_order(n: int, price: float, created: str = "2026-12-02T10:00:00Z") -> dict[str, Any]:
    """One line, so that moto's server stays quick (the generator's bulk orders are 100 KB)."""
    return {
        "orderID": f"ORD-{n:06d}",
        "customerID": f"CUST-{n % 97}",
        "createdAt": created,
        "currency": "EUR",
        "items": [{"sku": f"SKU-{n}", "quantity": 1, "unitPrice": price}],
        "total": price,
    }


def key_schema(stack: Stack) -> list[tuple[str, str, str]]:
    table = stack.dynamodb.describe_table(TableName=stack.table)["Table"]
    types = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
    return [
        (k["AttributeName"], k["KeyType"], types[k["AttributeName"]]) for k in table["KeySchema"]
    ]


@pytest.mark.parametrize(("feed", "key"), [("orders", "orderID"), ("taxi", "tripID")])
def test_setup_creates_the_records_table_the_feed_keys(stack: Stack, feed: str, key: str) -> None:
    done = stack.cli("consumer", "setup", TELEMAX_FEED=feed)
    assert done.returncode == 0, done.stderr
    assert key_schema(stack) == [(key, "HASH", "S")]


def test_the_orders_feed_stores_valid_orders_and_dead_letters_each_violation(stack: Stack) -> None:
    stack.setup(shards=2, TELEMAX_FEED="orders")
    valid = [small_order(n, 10.0 + n % 50) for n in range(300)]  # the validation, not the size
    bad: list[dict[str, Any]] = [
        {**valid[0], "orderID": "BAD-CURRENCY", "currency": "XXX"},
        {**valid[1], "orderID": "BAD-TOTAL", "total": valid[1]["total"] + 0.01},
        {
            **valid[2],
            "orderID": "BAD-QUANTITY",
            "items": [{"sku": "S", "quantity": 0, "unitPrice": 1}],
        },
    ]
    stack.put([*valid, *bad], key="customer")
    worker = stack.worker("w1", TELEMAX_FEED="orders")
    wait_until(lambda: stack.count() >= len(valid), 45, "every valid order stored")
    wait_until(lambda: stack.count(stack.dlq_table) >= len(bad), 20, "every bad order lettered")

    stored = {item["orderID"]["S"] for item in stack.scan()}
    assert stored == {order["orderID"] for order in valid}
    reasons = {item["reason"]["S"] for item in stack.scan(stack.dlq_table)}
    assert reasons == {"unknown_currency", "total_mismatch", "bad_quantity"}
    assert worker.stop() == 0


def test_every_destination_holds_each_record_once_across_a_sigkill(
    stack: Stack, moto_endpoint: str
) -> None:
    """A worker SIGKILLed mid-stream and replaced, some orders sent twice: every valid order
    stored once, every bad one dead-lettered with its reason, every large one alerted once
    (twice only where the replacement took over a claim of the killed worker's), every record
    in exactly one archive object and counted once in the insights. The archive and the
    insights share one segment stream: w1 commits segments beyond its checkpoint and is
    killed; w2 reads them again and must adopt each in both."""
    topic = AlertTopic(stack, moto_endpoint)
    s3 = local_client("s3", moto_endpoint)
    bucket = f"archive-{stack.table.lower()}"
    s3.create_bucket(Bucket=bucket)
    stack.setup(shards=2, TELEMAX_FEED="orders", TELEMAX_INSIGHTS="on")
    now = datetime.now(UTC)
    at = [(now - timedelta(hours=40) + timedelta(minutes=3 * n)).isoformat() for n in range(800)]
    price = [1500.0 if n % 20 == 10 else 10.0 + n % 7 + (n % 5) / 100 for n in range(800)]
    valid = [small_order(n, price[n], at[n]) for n in range(800)]
    too_late = (now - timedelta(days=5)).isoformat()  # beyond the 3 days of lateness
    valid[::80] = [small_order(n, 99.5, too_late) for n in range(0, 800, 80)]
    bad = [{**small_order(n, 5.0), "orderID": f"BAD-{n}", "total": 1.0} for n in range(30)]
    resent = valid[:150]  # a producer retrying: the same orders again, later in the stream
    large = {o["orderID"] for o in valid if o["total"] >= 1000}
    assert len(large) == 40
    stack.put([*valid[:400], *bad, *valid[400:], *resent], key="customer")
    env = {
        "TELEMAX_FEED": "orders",
        "TELEMAX_ALERT_TOPIC_ARN": topic.arn,
        "TELEMAX_INSIGHTS": "on",
        "TELEMAX_INSIGHTS_LATENESS_S": str(3 * 86400),
        "TELEMAX_ARCHIVE_BUCKET": bucket,
        "TELEMAX_ARCHIVE_PREFIX": "shop",
        "TELEMAX_ARCHIVE_MAX_BYTES": "30000",  # many segments: many chances to be cut off
        "TELEMAX_ARCHIVE_MAX_AGE_S": "1",
        "TELEMAX_MAX_RECORDS": "50",
    }
    # w1 writes objects but checkpoints late: its successor reads them all again and must
    # adopt every object w1 wrote beyond its checkpoint, cutting its own elsewhere.
    first = stack.worker("w1", **env, TELEMAX_CHECKPOINT_INTERVAL_S="60")
    wait_until(lambda: stack.count() >= 250, 45, "some orders stored")
    wait_until(lambda: keys_in(s3, bucket), 20, "w1's first archive objects")
    first.signal(signal.SIGKILL)
    second = stack.worker("w2", **{**env, "TELEMAX_ARCHIVE_MAX_BYTES": "70000"})
    wait_until(lambda: stack.count() >= len(valid), 60, "every valid order stored")
    records_sent = len(valid) + len(resent)

    def complete() -> dict[str, list[dict[str, Any]]] | None:
        found = archived(s3, bucket)
        enough = len(found["records"]) >= records_sent and len(found["deadletters"]) >= len(bad)
        return found if enough else None

    found = wait_until(complete, 30, "every record archived")
    received: list[dict[str, Any]] = []

    def every_alert() -> bool:
        received.extend(topic.received())
        return len(received) >= len(large)

    wait_until(every_alert, 30, "every alert")
    time.sleep(1.5)  # anything more would be a duplicate: give it time to arrive
    received.extend(topic.received())
    check_alerts_once(received, large, second)  # reads w2's metrics: before it stops
    assert second.stop() == 0
    assert {item["orderID"]["S"] for item in stack.scan()} == {o["orderID"] for o in valid}
    table_letters = stack.scan(stack.dlq_table)
    assert {i["reason"]["S"] for i in table_letters} == {"total_mismatch"}
    assert len(table_letters) == len(bad)
    adopted = [line for line in second.log_lines() if "segment_adopted" in line]
    assert adopted, "w2 adopted the objects w1 wrote beyond its checkpoint"
    found = archived(s3, bucket)  # after the last flush of the stop
    records = [(r["shard"], r["sequenceNumber"], r["subSequenceNumber"]) for r in found["records"]]
    assert len(records) == len(set(records)) == records_sent, "each record in exactly one object"
    assert sorted(r["record"]["orderID"] for r in found["records"]) == sorted(
        o["orderID"] for o in [*valid, *resent]
    )
    letters = found["deadletters"]
    assert sorted(r["reason"] for r in letters) == ["total_mismatch"] * len(bad)
    assert all(key.startswith("shop/") for key in keys_in(s3, bucket))
    assert any("/feed=orders/dt=" in key and "/hour=" in key for key in keys_in(s3, bucket))
    late = check_insights_exact(
        stack,
        "orders",
        [*valid, *resent],
        3 * 86400,
        now - timedelta(days=6),
        now + timedelta(hours=1),
    )
    assert late == 12, "the orders beyond the lateness (two of them resent): counted late"


def keys_in(s3: Any, bucket: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [entry["Key"] for page in pages for entry in page.get("Contents", [])]
