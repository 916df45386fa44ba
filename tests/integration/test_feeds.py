"""Feeds end to end on moto's server: ``setup --feed`` and a worker with ``TELEMAX_FEED``."""

from __future__ import annotations

from typing import Any

import pytest

from producer.schemas import records
from tests.support import Stack, wait_until

pytestmark = pytest.mark.timeout(90)


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
    done = stack.cli("consumer", "setup", TELEMAX_FEED="orders", TELEMAX_SHARDS="2")
    assert done.returncode == 0, done.stderr
    valid = [order for order, _ in records("orders", 300, seed=13)]
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
