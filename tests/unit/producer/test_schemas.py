"""Generated records of every schema: unique keys, realistic fields, deterministic, endless."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import orjson
import pytest

from consumer.feeds.telemax import to_item
from producer.schemas import SCHEMAS, entries, records

START = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
KEY_FIELD = {"taxi": "tripID", "orders": "orderID"}


@pytest.mark.parametrize("schema", sorted(SCHEMAS))
def test_deterministic_and_unique(schema: str) -> None:
    first = list(records(schema, 300, devices=10, seed=4, start=START))
    assert first == list(records(schema, 300, devices=10, seed=4, start=START))
    assert first != list(records(schema, 300, devices=10, seed=5, start=START))
    if schema == "telemax":
        ids = {(r["hardwareID"], r["Timestamp"]) for r, _ in first}
    else:
        ids = {r[KEY_FIELD[schema]] for r, _ in first}
    assert len(ids) == 300


@pytest.mark.parametrize("schema", sorted(SCHEMAS))
def test_endless_when_no_count(schema: str) -> None:
    assert len(list(itertools.islice(records(schema, None, seed=1), 1500))) == 1500


def test_telemax_records_are_valid_for_the_consumer() -> None:
    for entry in entries("telemax", 50, devices=5, seed=2):
        item = to_item(entry.data)
        assert item["hardwareID"]["S"] == entry.partition_key


def test_taxi_trips() -> None:
    for trip, key in records("taxi", 500, seed=3, start=START):
        assert key == trip["tripID"]
        pickup = datetime.fromisoformat(trip["pickupTime"])
        assert datetime.fromisoformat(trip["dropoffTime"]) > pickup >= START
        assert 1 <= trip["pickupZone"] <= 263 and 1 <= trip["dropoffZone"] <= 263
        assert 0 < trip["tripDistance"] <= 60
        assert trip["fareAmount"] >= 3.0
        assert trip["totalAmount"] == round(trip["fareAmount"] + trip["tipAmount"] + 2.5, 2)
        if trip["paymentType"] != "card":
            assert trip["tipAmount"] == 0.0


def test_orders_some_large() -> None:
    sizes = []
    for order, key in records("orders", 1000, seed=6, start=START):
        assert key == order["customerID"]
        assert order["itemCount"] == sum(i["quantity"] for i in order["items"])
        assert order["total"] == pytest.approx(
            sum(i["quantity"] * i["unitPrice"] for i in order["items"]), abs=0.01
        )
        sizes.append(len(orjson.dumps(order)))
    large = [s for s in sizes if s > 10_000]
    assert 5 <= len(large) <= 50, "about one order in fifty is a bulk order"
    assert max(sizes) < 400 * 1024, "still fits one DynamoDB item"
