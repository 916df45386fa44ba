"""The ``orders`` feed: e-commerce orders, validated as a shop would before storing them.

An order has ``orderID`` (the table's key), ``customerID``, ``createdAt`` (ISO-8601), a
``currency`` (an active ISO 4217 code), ``items`` (a non-empty list of lines, each a ``sku``, a
positive integer ``quantity`` and a positive ``unitPrice``) and a ``total`` of at most two
decimal places that equals the sum of quantity times unit price over the lines, rounded to the
cent (half up), in exact decimal arithmetic: ``0.1 + 0.2`` is ``0.3`` here. An ``itemCount``,
when given, is the sum of the quantities. Other fields are kept as they are. Every violation
is its own dead-letter reason, with the field and the value in the detail.

Alert rule by default: ``large_order``, a total of 1,000 or more.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from consumer.feeds.feed import Feed
from consumer.feeds.fields import (
    decode_object,
    integer,
    item_of,
    number,
    required,
    required_string,
    required_time,
    shown,
)
from consumer.insights.windows import Attributes, InsightSpec, Measure, field, number_of
from consumer.pipeline.keys import declare_keys
from kernel.errors import InvalidRecord
from kernel.handlers import Item

KEY = (("orderID", "S"),)
CENT = Decimal("0.01")
LARGE_TOTAL = 1000
LARGE_ORDER = f"total >= `{LARGE_TOTAL}`"
# Active ISO 4217 currency codes (2026), funds codes and precious metals left out.
CURRENCIES = frozenset(
    [
        "AED",
        "AFN",
        "ALL",
        "AMD",
        "ANG",
        "AOA",
        "ARS",
        "AUD",
        "AWG",
        "AZN",
        "BAM",
        "BBD",
        "BDT",
        "BGN",
        "BHD",
        "BIF",
        "BMD",
        "BND",
        "BOB",
        "BRL",
        "BSD",
        "BTN",
        "BWP",
        "BYN",
        "BZD",
        "CAD",
        "CDF",
        "CHF",
        "CLP",
        "CNY",
        "COP",
        "CRC",
        "CUP",
        "CVE",
        "CZK",
        "DJF",
        "DKK",
        "DOP",
        "DZD",
        "EGP",
        "ERN",
        "ETB",
        "EUR",
        "FJD",
        "FKP",
        "GBP",
        "GEL",
        "GHS",
        "GIP",
        "GMD",
        "GNF",
        "GTQ",
        "GYD",
        "HKD",
        "HNL",
        "HTG",
        "HUF",
        "IDR",
        "ILS",
        "INR",
        "IQD",
        "IRR",
        "ISK",
        "JMD",
        "JOD",
        "JPY",
        "KES",
        "KGS",
        "KHR",
        "KMF",
        "KPW",
        "KRW",
        "KWD",
        "KYD",
        "KZT",
        "LAK",
        "LBP",
        "LKR",
        "LRD",
        "LSL",
        "LYD",
        "MAD",
        "MDL",
        "MGA",
        "MKD",
        "MMK",
        "MNT",
        "MOP",
        "MRU",
        "MUR",
        "MVR",
        "MWK",
        "MXN",
        "MYR",
        "MZN",
        "NAD",
        "NGN",
        "NIO",
        "NOK",
        "NPR",
        "NZD",
        "OMR",
        "PAB",
        "PEN",
        "PGK",
        "PHP",
        "PKR",
        "PLN",
        "PYG",
        "QAR",
        "RON",
        "RSD",
        "RUB",
        "RWF",
        "SAR",
        "SBD",
        "SCR",
        "SDG",
        "SEK",
        "SGD",
        "SHP",
        "SLE",
        "SOS",
        "SRD",
        "SSP",
        "STN",
        "SVC",
        "SYP",
        "SZL",
        "THB",
        "TJS",
        "TMT",
        "TND",
        "TOP",
        "TRY",
        "TTD",
        "TWD",
        "TZS",
        "UAH",
        "UGX",
        "USD",
        "UYU",
        "UZS",
        "VED",
        "VES",
        "VND",
        "VUV",
        "WST",
        "XAF",
        "XCD",
        "XCG",
        "XOF",
        "XPF",
        "YER",
        "ZAR",
        "ZMW",
        "ZWG",
    ]
)


def _lines(order: dict[str, object]) -> tuple[Decimal, int]:
    """The exact sum of quantity times unit price over the lines, and the sum of quantities."""
    lines = required(order, "items")
    if not isinstance(lines, list):
        raise InvalidRecord("wrong_type", f"items must be a list, got {type(lines).__name__}")
    if not lines:
        raise InvalidRecord("no_items", "an order needs at least one line")
    amount, quantities = Decimal(0), 0
    for index, line in enumerate(lines):
        where = f"items[{index}]"
        if not isinstance(line, dict):
            raise InvalidRecord("wrong_type", f"{where} must be an object")
        try:
            required_string(line, "sku")
            quantity = integer(required(line, "quantity"), "quantity")
            price = number(line, "unitPrice")
        except InvalidRecord as exc:
            raise InvalidRecord(exc.reason, f"{where}: {exc.detail}") from None
        assert price is not None
        if quantity <= 0:
            raise InvalidRecord("bad_quantity", f"{where}.quantity must be > 0, got {quantity}")
        if price <= 0:
            raise InvalidRecord("bad_price", f"{where}.unitPrice must be > 0, got {price}")
        amount += quantity * price
        quantities += quantity
    return amount, quantities


@declare_keys("orderID")
def to_item(data: bytes) -> Item:
    order = decode_object(data)
    required_string(order, "orderID")
    required_string(order, "customerID")
    required_time(order, "createdAt")
    currency = required_string(order, "currency")
    if currency not in CURRENCIES:
        raise InvalidRecord("unknown_currency", f"currency {shown(currency)} is not ISO 4217")
    total = number(order, "total")
    assert total is not None
    if total.as_tuple().exponent < -2:  # type: ignore[operator]  # finite: from a JSON number
        raise InvalidRecord("bad_total", f"total {total} has fractions of a cent")
    amount, quantities = _lines(order)
    expected = amount.quantize(CENT, rounding=ROUND_HALF_UP)
    if total != expected:
        raise InvalidRecord("total_mismatch", f"total {total} but the lines sum to {expected}")
    count = order.get("itemCount")
    if count is not None and integer(count, "itemCount") != quantities:
        raise InvalidRecord(
            "item_count_mismatch", f"itemCount {shown(count)} but the lines hold {quantities}"
        )
    return item_of(order, data)


def large(item: Attributes) -> Decimal:
    """1 for a large order (the large_order alert's threshold), else 0."""
    total = number_of(item, "total")
    return Decimal(1) if total is not None and total >= LARGE_TOTAL else Decimal(0)


FEED = Feed(
    name="orders",
    to_item=to_item,
    key=KEY,
    table="orders",
    alerts={"large_order": LARGE_ORDER},
    # per hour: orders (the count), revenue (total's sum) and large orders (large's sum)
    insights=InsightSpec(
        window_s=3600,
        time_field="createdAt",
        group_fields=(),
        measures=(field("total"), Measure("large", large)),
    ),
    description="e-commerce orders: validated, stored by orderID, large ones alerted",
)
