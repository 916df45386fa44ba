"""The ``taxi`` feed: taxi trips, stored by ``tripID``.

A trip has ``tripID``, ``pickupTime`` strictly before ``dropoffTime`` (both ISO-8601), a
non-negative ``tripDistance`` and ``fareAmount``, and a known ``paymentType``; ``tipAmount``
and ``totalAmount``, when given, are non-negative numbers, ``pickupZone`` and
``dropoffZone`` integers, ``passengerCount`` a non-negative integer. Other fields are kept.
"""

from __future__ import annotations

from decimal import Decimal

from consumer.feeds.feed import Feed
from consumer.feeds.fields import (
    decode_object,
    integer,
    item_of,
    number,
    required_string,
    required_time,
    shown,
)
from consumer.insights.windows import Attributes, InsightSpec, Measure, field, number_of
from consumer.pipeline.keys import declare_keys
from kernel.errors import InvalidRecord
from kernel.handlers import Item

KEY = (("tripID", "S"),)
PAYMENT_TYPES = frozenset({"card", "cash", "wallet", "disputed", "no_charge", "unknown"})
_NON_NEGATIVE = (
    ("tripDistance", "negative_distance", False),
    ("fareAmount", "negative_fare", False),
    ("tipAmount", "negative_amount", True),
    ("totalAmount", "negative_amount", True),
)
_INTEGERS = ("pickupZone", "dropoffZone", "passengerCount")


@declare_keys("tripID")
def to_item(data: bytes) -> Item:
    trip = decode_object(data)
    required_string(trip, "tripID")
    pickup = required_time(trip, "pickupTime")
    dropoff = required_time(trip, "dropoffTime")
    if not pickup < dropoff:
        raise InvalidRecord(
            "dropoff_not_after_pickup",
            f"pickupTime {trip['pickupTime']} is not before dropoffTime {trip['dropoffTime']}",
        )
    for name, reason, optional in _NON_NEGATIVE:
        value = number(trip, name, optional=optional)
        if value is not None and value < 0:
            raise InvalidRecord(reason, f"{name} must be >= 0, got {value}")
    payment = required_string(trip, "paymentType")
    if payment not in PAYMENT_TYPES:
        raise InvalidRecord(
            "unknown_payment_type",
            f"paymentType {shown(payment)} is not one of {', '.join(sorted(PAYMENT_TYPES))}",
        )
    for name in _INTEGERS:
        if (value := trip.get(name)) is not None:
            integer(value, name)
    passengers = trip.get("passengerCount")
    if passengers is not None and passengers < 0:
        raise InvalidRecord("bad_passenger_count", f"passengerCount must be >= 0, got {passengers}")
    return item_of(trip, data)


def tip_rate(item: Attributes) -> Decimal | None:
    """The tip as a share of the fare (none for a trip without fare or tip)."""
    fare, tip = number_of(item, "fareAmount"), number_of(item, "tipAmount")
    if not fare or tip is None:
        return None
    return tip / fare


FEED = Feed(
    name="taxi",
    to_item=to_item,
    key=KEY,
    table="taxi-trips",
    # per hour and pickup zone: trips (the count), fares, tip rates and distances
    insights=InsightSpec(
        window_s=3600,
        time_field="pickupTime",
        group_fields=("pickupZone",),
        measures=(field("fareAmount"), Measure("tipRate", tip_rate), field("tripDistance")),
    ),
    description="taxi trips: pickup before drop-off, fares and distances never negative",
)
