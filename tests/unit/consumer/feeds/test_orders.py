"""The orders feed: what a shop checks before it stores an order (issue 13, feeds)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from consumer.feeds import orders
from consumer.feeds.orders import to_item
from kernel.errors import InvalidRecord
from producer.schemas import records


def order(**changes: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "orderID": "ORD-1",
        "customerID": "CUST-1",
        "createdAt": "2026-12-02T10:00:00Z",
        "currency": "EUR",
        "items": [
            {"sku": "SKU-1", "quantity": 3, "unitPrice": 0.1},
            {"sku": "SKU-2", "quantity": 1, "unitPrice": 19.99},
        ],
        "itemCount": 4,
        "total": 20.29,
    }
    value.update(changes)
    return {k: v for k, v in value.items() if v is not ...}


def reason_of(value: dict[str, Any] | bytes) -> tuple[str, str]:
    data = value if isinstance(value, bytes) else orjson.dumps(value)
    with pytest.raises(InvalidRecord) as caught:
        to_item(data)
    return caught.value.reason, caught.value.detail


def test_a_valid_order_is_stored_whole_keyed_by_order_id() -> None:
    item = to_item(orjson.dumps(order(shipping={"country": "DE"})))
    assert item["orderID"] == {"S": "ORD-1"}
    assert item["total"] == {"N": "20.29"}
    assert item["items"]["L"][0] == {
        "M": {"sku": {"S": "SKU-1"}, "quantity": {"N": "3"}, "unitPrice": {"N": "0.1"}}
    }
    assert item["shipping"] == {"M": {"country": {"S": "DE"}}}
    assert to_item.key_names == ("orderID",)  # type: ignore[attr-defined]


def test_the_sum_is_exact_decimal_not_binary_float() -> None:
    # 3 x 0.1 is 0.30000000000000004 in floats; exactly 0.3 in decimals
    assert 3 * 0.1 != 0.3
    lines = [{"sku": "S", "quantity": 3, "unitPrice": 0.1}]
    to_item(orjson.dumps(order(items=lines, itemCount=3, total=0.3)))
    assert reason_of(order(items=lines, itemCount=3, total=0.31))[0] == "total_mismatch"


def test_a_total_of_more_digits_than_a_float_keeps_is_still_exact() -> None:
    data = (
        b'{"orderID":"O","customerID":"C","createdAt":"2026-12-02T10:00:00Z","currency":"USD",'
        b'"items":[{"sku":"S","quantity":1,"unitPrice":12345678901234567.01}],'
        b'"total":12345678901234567.01}'
    )
    assert to_item(data)["total"] == {"N": "12345678901234567.01"}
    reason, _ = reason_of(
        data.replace(b'"total":12345678901234567.01', b'"total":12345678901234567.02')
    )
    assert reason == "total_mismatch"


def test_rounding_to_the_cent_is_half_up() -> None:
    lines = [{"sku": "S", "quantity": 1, "unitPrice": 0.125}]
    to_item(orjson.dumps(order(items=lines, itemCount=1, total=0.13)))
    assert reason_of(order(items=lines, itemCount=1, total=0.12))[0] == "total_mismatch"


@pytest.mark.parametrize(
    ("changes", "reason", "detail"),
    [
        ({"orderID": ...}, "missing_field", "orderID"),
        ({"orderID": 7}, "wrong_type", "orderID must be a string, got int"),
        ({"orderID": ""}, "empty_field", "orderID"),
        ({"customerID": ...}, "missing_field", "customerID"),
        ({"createdAt": "yesterday"}, "bad_timestamp", "createdAt 'yesterday' is not ISO-8601"),
        ({"currency": "XYZ"}, "unknown_currency", "currency 'XYZ' is not ISO 4217"),
        ({"currency": "eur"}, "unknown_currency", "currency 'eur' is not ISO 4217"),
        ({"items": ...}, "missing_field", "items"),
        ({"items": {}}, "wrong_type", "items must be a list, got dict"),
        ({"items": []}, "no_items", "an order needs at least one line"),
        ({"items": ["x"]}, "wrong_type", "items[0] must be an object"),
        (
            {"items": [{"quantity": 1, "unitPrice": 1}]},
            "missing_field",
            "items[0]: sku",
        ),
        (
            {"items": [{"sku": "S", "quantity": 0, "unitPrice": 1}], "total": 0},
            "bad_quantity",
            "items[0].quantity must be > 0, got 0",
        ),
        (
            {"items": [{"sku": "S", "quantity": 1.5, "unitPrice": 1}]},
            "wrong_type",
            "items[0]: quantity must be an integer, got 1.5",
        ),
        (
            {"items": [{"sku": "S", "quantity": 2, "unitPrice": -1}], "total": -2},
            "bad_price",
            "items[0].unitPrice must be > 0, got -1",
        ),
        (
            {"items": [{"sku": "S", "quantity": 2, "unitPrice": "1"}]},
            "wrong_type",
            "items[0]: unitPrice must be a number, got '1'",
        ),
        ({"total": ...}, "missing_field", "total"),
        ({"total": "20.29"}, "wrong_type", "total must be a number, got '20.29'"),
        ({"total": 20.291}, "bad_total", "total 20.291 has fractions of a cent"),
        ({"total": 20.3}, "total_mismatch", "total 20.3 but the lines sum to 20.29"),
        ({"itemCount": 5}, "item_count_mismatch", "itemCount 5 but the lines hold 4"),
        ({"itemCount": "4"}, "wrong_type", "itemCount must be an integer, got '4'"),
    ],
)
def test_every_violation_has_its_own_reason(
    changes: dict[str, Any], reason: str, detail: str
) -> None:
    assert reason_of(order(**changes)) == (reason, detail)


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"", "empty_record"), (b"{", "not_json"), (b"[1]", "not_object"), (b"\xff", "invalid_utf8")],
)
def test_undecodable_records(data: bytes, reason: str) -> None:
    assert reason_of(data)[0] == reason


def test_every_generated_order_is_valid_and_large_ones_exist() -> None:
    totals = [to_item(orjson.dumps(r))["total"]["N"] for r, _ in records("orders", 2000, seed=5)]
    assert sum(float(total) >= 1000 for total in totals) > 0


def test_the_feed_declares_its_key_tables_and_large_order_rule() -> None:
    feed = orders.FEED
    assert (feed.name, feed.key, feed.table) == ("orders", (("orderID", "S"),), "orders")
    assert (feed.dlq_table, feed.lease_table) == ("orders-deadletter", "orders-leases")
    assert dict(feed.alerts) == {"large_order": "total >= `1000`"}
