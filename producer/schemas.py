"""Record schemas ``generate`` can produce: TELEMAX readings, taxi trips, e-commerce orders.

Each schema yields (record, partition key) lazily and endlessly when ``count`` is None, is
deterministic for a seed and a start time, and gives every record a unique key, so a consumer
that stores them can be checked for completeness.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from kernel.kpl.encode import Entry
from producer.readings import iso_micro, readings

Record = dict[str, Any]
Generator = Callable[[int | None, int, int | None, datetime], Iterator[tuple[Record, str]]]

PAYMENT_TYPES = ("card", "card", "card", "cash", "wallet", "disputed")
CURRENCIES = ("USD", "EUR", "INR", "BRL", "NGN", "IDR", "KES", "VND")
COUNTRIES = ("US", "DE", "IN", "BR", "NG", "ID", "KE", "VN")
LARGE_ORDER_EVERY = 50  # about one order in fifty is a bulk order of 300-3,000 lines (15-150 KB)


def _numbers(count: int | None) -> Iterator[int]:
    return iter(range(count)) if count is not None else itertools.count()


def _telemax(
    count: int | None, devices: int, seed: int | None, start: datetime
) -> Iterator[tuple[Record, str]]:
    for reading in readings(count, devices=devices, seed=seed, start=start):
        yield reading, reading["hardwareID"]


def _taxi(
    count: int | None, devices: int, seed: int | None, start: datetime
) -> Iterator[tuple[Record, str]]:
    """Trips with pickup/dropoff times and zones, distance (miles), fare and tip (USD)."""
    rng = random.Random(seed)
    run = f"{rng.randrange(16**8):08x}"
    for n in _numbers(count):
        pickup = start + timedelta(milliseconds=n * 250 + rng.randrange(250))
        distance = round(min(60.0, rng.lognormvariate(0.9, 0.7)), 2)
        minutes = distance / rng.uniform(6.0, 25.0) * 60 + rng.uniform(1.0, 6.0)
        fare = round(3.0 + 2.5 * distance + 0.5 * minutes, 2)
        payment = rng.choice(PAYMENT_TYPES)
        tip = round(fare * rng.choice((0.0, 0.1, 0.15, 0.2, 0.25)), 2) if payment == "card" else 0.0
        trip_id = f"TRIP-{run}-{n:09d}"
        yield (
            {
                "tripID": trip_id,
                "vendorID": rng.choice((1, 2)),
                "pickupTime": iso_micro(pickup),
                "dropoffTime": iso_micro(pickup + timedelta(minutes=minutes)),
                "pickupZone": rng.randrange(1, 264),
                "dropoffZone": rng.randrange(1, 264),
                "passengerCount": rng.choice((1, 1, 1, 1, 2, 2, 3, 4, 5, 6)),
                "tripDistance": distance,
                "fareAmount": fare,
                "tipAmount": tip,
                "totalAmount": round(fare + tip + 2.5, 2),  # + congestion surcharge
                "paymentType": payment,
            },
            trip_id,
        )


def _order_line(rng: random.Random) -> Record:
    return {
        "sku": f"SKU-{rng.randrange(100_000):05d}",
        "quantity": rng.choice((1, 1, 1, 2, 2, 3, 5, 10)),
        "unitPrice": round(rng.lognormvariate(2.5, 1.0), 2),
    }


def _orders(
    count: int | None, devices: int, seed: int | None, start: datetime
) -> Iterator[tuple[Record, str]]:
    """E-commerce orders; about one in fifty is a large bulk order (tens of KB)."""
    rng = random.Random(seed)
    run = f"{rng.randrange(16**8):08x}"
    customers = max(1, devices * 20)
    for n in _numbers(count):
        large = rng.randrange(LARGE_ORDER_EVERY) == 0
        lines = rng.randrange(300, 3000) if large else rng.randrange(1, 8)
        items = [_order_line(rng) for _ in range(lines)]
        customer = f"CUST-{rng.randrange(customers):07d}"
        country = rng.choice(COUNTRIES)
        yield (
            {
                "orderID": f"ORD-{run}-{n:09d}",
                "customerID": customer,
                "createdAt": iso_micro(
                    start + timedelta(milliseconds=n * 100 + rng.randrange(100))
                ),
                "currency": rng.choice(CURRENCIES),
                "status": "placed",
                "items": items,
                "itemCount": sum(i["quantity"] for i in items),
                "total": round(sum(i["quantity"] * i["unitPrice"] for i in items), 2),
                "shipping": {"country": country, "postcode": f"{rng.randrange(100_000):05d}"},
            },
            customer,
        )


SCHEMAS: dict[str, Generator] = {"telemax": _telemax, "taxi": _taxi, "orders": _orders}


def records(
    schema: str,
    count: int | None,
    *,
    devices: int = 500,
    seed: int | None = None,
    start: datetime | None = None,
) -> Iterator[tuple[Record, str]]:
    """(record, partition key) pairs of ``schema``; ``devices`` sizes the key space."""
    return SCHEMAS[schema](count, devices, seed, start or datetime.now(UTC))


def entries(
    schema: str, count: int | None, *, devices: int = 500, seed: int | None = None
) -> Iterator[Entry]:
    """Made lazily: a large --count never sits in memory at once."""
    for record, key in records(schema, count, devices=devices, seed=seed):
        yield Entry(orjson.dumps(record), key)
