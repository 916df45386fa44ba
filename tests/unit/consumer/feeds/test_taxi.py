"""The taxi feed: trips that make sense (issue 13, feeds)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from consumer.feeds import taxi
from consumer.feeds.taxi import to_item
from kernel.errors import InvalidRecord
from producer.schemas import records


def trip(**changes: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "tripID": "TRIP-1",
        "pickupTime": "2026-12-02T10:00:00Z",
        "dropoffTime": "2026-12-02T10:12:30Z",
        "pickupZone": 132,
        "dropoffZone": 48,
        "passengerCount": 1,
        "tripDistance": 3.2,
        "fareAmount": 14.5,
        "tipAmount": 2.0,
        "totalAmount": 19.0,
        "paymentType": "card",
    }
    value.update(changes)
    return {k: v for k, v in value.items() if v is not ...}


def reason_of(value: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(InvalidRecord) as caught:
        to_item(orjson.dumps(value))
    return caught.value.reason, caught.value.detail


def test_a_valid_trip_is_stored_whole_keyed_by_trip_id() -> None:
    item = to_item(orjson.dumps(trip()))
    assert item["tripID"] == {"S": "TRIP-1"}
    assert item["pickupZone"] == {"N": "132"}
    assert len(item) == 11
    assert taxi.FEED.key_names == ("tripID",)


def test_zero_distance_and_fare_are_allowed_optional_fields_may_be_absent() -> None:
    to_item(orjson.dumps(trip(tripDistance=0, fareAmount=0.0, tipAmount=..., totalAmount=...)))


def test_times_in_other_zones_compare_as_instants() -> None:
    # 11:00+02:00 is 09:00Z: before the 10:12:30Z drop-off
    to_item(orjson.dumps(trip(pickupTime="2026-12-02T11:00:00+02:00")))


@pytest.mark.parametrize(
    ("changes", "reason", "detail"),
    [
        ({"tripID": ...}, "missing_field", "tripID"),
        ({"pickupTime": "noon"}, "bad_timestamp", "pickupTime 'noon' is not ISO-8601"),
        (
            {"dropoffTime": "2026-12-02T09:59:59Z"},
            "dropoff_not_after_pickup",
            "pickupTime 2026-12-02T10:00:00Z is not before dropoffTime 2026-12-02T09:59:59Z",
        ),
        (
            {"dropoffTime": "2026-12-02T10:00:00Z"},
            "dropoff_not_after_pickup",
            "pickupTime 2026-12-02T10:00:00Z is not before dropoffTime 2026-12-02T10:00:00Z",
        ),
        ({"tripDistance": -0.1}, "negative_distance", "tripDistance must be >= 0, got -0.1"),
        ({"tripDistance": ...}, "missing_field", "tripDistance"),
        ({"fareAmount": -3}, "negative_fare", "fareAmount must be >= 0, got -3"),
        ({"fareAmount": "3"}, "wrong_type", "fareAmount must be a number, got '3'"),
        ({"tipAmount": -1}, "negative_amount", "tipAmount must be >= 0, got -1"),
        (
            {"paymentType": "bitcoin"},
            "unknown_payment_type",
            "paymentType 'bitcoin' is not one of card, cash, disputed, no_charge, unknown, wallet",
        ),
        ({"paymentType": ...}, "missing_field", "paymentType"),
        ({"pickupZone": "132"}, "wrong_type", "pickupZone must be an integer, got '132'"),
        ({"passengerCount": -1}, "bad_passenger_count", "passengerCount must be >= 0, got -1"),
    ],
)
def test_every_violation_has_its_own_reason(
    changes: dict[str, Any], reason: str, detail: str
) -> None:
    assert reason_of(trip(**changes)) == (reason, detail)


def test_every_generated_trip_is_valid() -> None:
    for record, _ in records("taxi", 2000, seed=9):
        to_item(orjson.dumps(record))
